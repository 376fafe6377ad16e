"""Patient identity against the national directory: the INSi mock and the INS checks on write.

INSi (the national teleservice) answers an INS and its traits for given
traits, or checks that an INS and traits belong together. Carnet mocks it
with a seeded directory; a Patient carrying an INS is stored only if the
directory confirms it, so that no document is ever filed under someone
else's INS.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from fhir_profiles.ins import (
    InsTraits,
    find_ins,
    nir_problem,
    normalise_trait,
    patient_with_ins,
    traits_match,
    traits_of,
)
from fhir_profiles.structure import parameter_list
from service.errors import BadRequest, NotFound, Unprocessable
from storage import directory
from storage.directory import InsIdentity

# What INSi returns is "recovered" (RECUP) until the professional checks an identity
# document; only then may they set the status to qualified (QUAL).
INSI_STATUS = "RECUP"


def directory_traits(identity: InsIdentity) -> InsTraits:
    return InsTraits(identity.birth_family_name, identity.given_names[0], identity.given_names,
                     identity.gender, identity.birth_date, identity.birth_place)


def name_key(birth_family_name: str) -> str:
    return normalise_trait(birth_family_name)


async def check_patient_identity(conn: AsyncConnection, patient: dict[str, Any]) -> None:
    """422 unless a Patient's INS is in the directory with the same traits."""
    ins = find_ins(patient)
    if ins is None:
        return
    path = f"Patient.identifier[{ins.index}].value"
    identity = await directory.identity_by_nir(conn, ins.value)
    if identity is None or identity.system != ins.system:
        raise Unprocessable(f"[insi-unknown] INSi knows no identity with INS {ins.value} under "
                            f"{ins.system}: look the patient up with Patient/$ins-lookup",
                            expression=path)
    given = traits_of(patient)
    reference = directory_traits(identity)
    if given is None or not traits_match(given, reference):
        differing = _differing_traits(given, reference)
        raise Unprocessable(f"[insi-traits] the patient's traits disagree with INSi's for INS "
                            f"{ins.value} ({', '.join(differing)})", expression=path)


def _differing_traits(given: InsTraits | None, reference: InsTraits) -> list[str]:
    if given is None:
        return ["traits missing"]
    pairs = {"birth family name": (given.birth_family_name, reference.birth_family_name),
             "first birth first name": (given.first_given, reference.first_given),
             "gender": (given.gender, reference.gender),
             "birth date": (given.birth_date, reference.birth_date)}
    differing = [name for name, (a, b) in pairs.items()
                 if normalise_trait(a) != normalise_trait(b)]
    return differing or ["birth place or list of birth first names"]


def _parameter(listed: list[Any], name: str) -> Any:
    found = [p for p in listed if isinstance(p, dict) and p.get("name") == name]
    if len(found) > 1:
        raise BadRequest(f"parameter {name!r} is repeated", expression=f"Parameters.{name}")
    if not found:
        return None
    value = next((v for k, v in found[0].items() if k.startswith("value")), None)
    return value


async def ins_lookup(conn: AsyncConnection, parameters: dict[str, Any]) -> dict[str, Any]:
    """The INSi mock: ``ins`` (an Identifier) or traits in, the identity as a Patient out."""
    listed = parameter_list(parameters, "$ins-lookup")
    ins = _parameter(listed, "ins")
    if ins is not None:
        identity = await _by_ins(conn, ins)
    else:
        identity = await _by_traits(conn, listed)
    patient = patient_with_ins(identity.system, identity.nir, directory_traits(identity),
                               INSI_STATUS)
    return {"resourceType": "Parameters", "parameter": [
        {"name": "result", "valueCode": "found"}, {"name": "patient", "resource": patient}]}


async def _by_ins(conn: AsyncConnection, ins: Any) -> InsIdentity:
    if not isinstance(ins, dict) or not isinstance(ins.get("value"), str):
        raise BadRequest("ins must be a valueIdentifier with system and value",
                         expression="Parameters.ins")
    problem = nir_problem(ins["value"])
    if problem:
        raise BadRequest(f"[ins-key] {problem}", expression="Parameters.ins.value")
    identity = await directory.identity_by_nir(conn, ins["value"])
    if identity is None or ins.get("system", identity.system) != identity.system:
        raise NotFound("INSi: no identity has this INS")
    return identity


async def _by_traits(conn: AsyncConnection, parameters: list[Any]) -> InsIdentity:
    names = ("family", "given", "gender", "birthDate")
    values = {name: _parameter(parameters, name) for name in (*names, "birthPlace")}
    missing = [n for n in names if not isinstance(values[n], str) or not values[n]]
    if missing:
        raise BadRequest(f"$ins-lookup needs ins, or the traits family, given, gender and "
                         f"birthDate (missing: {', '.join(missing)})",
                         expression=f"Parameters.{missing[0]}")
    asked = InsTraits(values["family"], values["given"].split(" ")[0],
                      tuple(values["given"].split()), values["gender"], values["birthDate"],
                      values["birthPlace"] if isinstance(values["birthPlace"], str) else None)
    candidates = await directory.identities_by_name_and_birth_date(
        conn, name_key(asked.birth_family_name), asked.birth_date)
    # A caller may give only the first birth first name: compare the full list only if
    # they gave several.
    if len(asked.given_names) < 2:
        asked = InsTraits(asked.birth_family_name, asked.first_given, (), asked.gender,
                          asked.birth_date, asked.birth_place)
    matches = [c for c in candidates if traits_match(asked, directory_traits(c))]
    if not matches:
        raise NotFound("INSi: no identity matches these traits")
    if len(matches) > 1:
        raise Unprocessable("INSi: several identities match these traits; add the birth place "
                            "or every birth first name")
    return matches[0]
