"""FR Core INS patient rules (``fr-core-patient-ins``); every broken rule is reported at once.

A Patient without an INS is allowed (an identity not qualified yet). The profile facts are data
(``data/fr_core_ins.json``) from FR Core 2.x, Interop-Sante/hl7.fhir.fr.core ``input/fsh/``:
FRCorePatientINSProfile, FRCorePatientIdentityReliabilityExtension, FRCorePatientBirthName,
FRCoreAddressInseeCodeExtension, FRCoreCodeSystemIdentityStatus, aliases (see its ``_sources``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from fhir_profiles.outcome import Issue

DATA_DIR = Path(__file__).parent / "data"
_FACTS: dict[str, Any] = json.loads((DATA_DIR / "fr_core_ins.json").read_text(encoding="utf-8"))
_SLICES: dict[str, dict[str, Any]] = _FACTS["slices"]
_EXT: dict[str, str] = _FACTS["extensions"]
_TYPE_SYSTEM: str = _FACTS["identifier_type_system"]
_STATUS_SYSTEM: str = _FACTS["identity_status"]["system"]
_STATUS_SUB: str = _FACTS["identity_reliability_sub_extensions"]["identity_status"]
_GENDERS: list[str] = _FACTS["ins_genders"]

INS_SLICES: dict[str, str] = {name: spec["system"] for name, spec in _SLICES.items()}
_SLICE_OF_SYSTEM = {system: name for name, system in INS_SLICES.items()}
QUALIFIED = "QUAL"

# sex (1-4; 7/8 temporary), year, month (01-12, or 20-99: INSEE's conventions for an unknown
# month), department (2 digits or Corsica's 2A/2B) + commune, serial, key.
_NIR = re.compile(r"[1-478]\d{2}(0[1-9]|1[0-2]|[2-9]\d)(\d{2}|2[AB])\d{3}\d{3}\d{2}", re.ASCII)
_INSEE = re.compile(r"(\d{2}|2[AB])\d{3}", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_NIR_SEX = {"1": "male", "2": "female"}
_FOLDED = re.compile(r"[-\u2010-\u2015'\u2019\u02bc`\s]+")


@dataclass(frozen=True)
class Ins:
    slice: str  # "INS-NIR", "INS-NIA", "INS-NIR-TEST" or "INS-NIR-DEMO"
    system: str
    value: str
    index: int  # position in Patient.identifier


@dataclass(frozen=True)
class InsTraits:
    """The identity traits that travel with an INS (as INSi returns them)."""

    birth_family_name: str
    first_given: str
    given_names: tuple[str, ...]  # full list of birth first names; () when unknown
    gender: str
    birth_date: str
    birth_place: str | None  # INSEE code of the commune (or 99xxx: country) of birth


def nir_key(first13: str) -> str:
    """The NIR key, ``97 - n mod 97`` on two digits; Corsica's 2A/2B count as 19/18."""
    digits = first13[:5] + first13[5:7].replace("2A", "19").replace("2B", "18") + first13[7:]
    if len(first13) != 13 or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not the first 13 characters of a NIR: {first13!r}")
    return f"{97 - int(digits) % 97:02d}"


def _format_problem(nir: str) -> str | None:
    if len(nir) != 15:
        return f"an INS has 15 characters, {nir!r} has {len(nir)}"
    if not _NIR.fullmatch(nir):
        return (f"{nir} is not shaped as an INS: sex digit, birth year, birth month, department "
                "(2 digits or 2A/2B) and commune, serial, key")
    return None


def _key_problem(nir: str) -> str | None:
    key = nir_key(nir[:13])
    return None if nir[13:] == key else f"INS key check failed for {nir}: the key should be {key}"


def nir_problem(nir: str) -> str | None:
    """None for a well-formed NIR whose key checks; otherwise what is wrong with it."""
    return _format_problem(nir) or _key_problem(nir)


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] \
        if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _extension(node: Any, url: str) -> tuple[int, dict[str, Any]] | None:
    extensions = _dicts(node.get("extension")) if isinstance(node, dict) else []
    return next(((i, e) for i, e in extensions if e.get("url") == url), None)


def _official_name(patient: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    return next(((i, n) for i, n in _dicts(patient.get("name")) if n.get("use") == "official"),
                None)


def _all_ins(patient: dict[str, Any]) -> list[Ins]:
    return [Ins(_SLICE_OF_SYSTEM[system], system, v if isinstance(v := ident.get("value"), str)
                else "", i)
            for i, ident in _dicts(patient.get("identifier"))
            if isinstance(system := ident.get("system"), str) and system in _SLICE_OF_SYSTEM]


def find_ins(patient: dict[str, Any]) -> Ins | None:
    """The first identifier whose system is one of the four INS systems."""
    found = _all_ins(patient)
    return found[0] if found else None


def _insee_code(patient: dict[str, Any]) -> tuple[str, Any]:
    """Where the birth place INSEE code is (or should be), and its value if any."""
    found = _extension(patient, _EXT["birth_place"])
    if found is None:
        return "Patient.extension", None
    path = f"Patient.extension[{found[0]}].valueAddress"
    code = _extension(found[1].get("valueAddress"), _EXT["insee_code"])
    if code is None:
        return f"{path}.extension", None
    coding = code[1].get("valueCoding")
    return (f"{path}.extension[{code[0]}].valueCoding.code",
            coding.get("code") if isinstance(coding, dict) else None)


def traits_of(patient: dict[str, Any]) -> InsTraits | None:
    """The INS traits a Patient carries; None when one of the required traits is missing."""
    found = _official_name(patient)
    name = found[1] if found else {}
    given = name.get("given") if isinstance(name.get("given"), list) else []
    family, first = _text(name.get("family")), _text(given[0]) if given else None
    gender, birth_date = _text(patient.get("gender")), _text(patient.get("birthDate"))
    if family is None or first is None or gender is None or birth_date is None:
        return None
    listed = _extension(name, _EXT["birth_list_given_name"])
    names = _text(listed[1].get("valueString")) if listed else None
    place = _insee_code(patient)[1]
    return InsTraits(family, first, tuple(names.split()) if names else (), gender, birth_date,
                     place if isinstance(place, str) else None)


def _reliability(patient: dict[str, Any]) -> tuple[str, Any]:
    """Where the identity status is (or should be), and its Coding if any."""
    found = _extension(patient, _EXT["identity_reliability"])
    if found is None:
        return "Patient.extension", None
    status = _extension(found[1], _STATUS_SUB)
    if status is None:
        return f"Patient.extension[{found[0]}].extension", None
    return f"Patient.extension[{found[0]}].extension[{status[0]}].valueCoding", \
        status[1].get("valueCoding")


def reliability_status(patient: dict[str, Any]) -> str | None:
    """The identityStatus code (PROV, RECUP, VALI, QUAL) from FR Core's code system, if any."""
    coding = _reliability(patient)[1]
    if not isinstance(coding, dict) or coding.get("system") != _STATUS_SYSTEM:
        return None
    code = coding.get("code")
    return code if isinstance(code, str) else None


def normalise_trait(text: str) -> str:
    """Uppercase without accents; hyphens, apostrophes and runs of spaces become one space."""
    text = text.replace("œ", "oe").replace("Œ", "OE").replace("æ", "ae").replace("Æ", "AE")
    bare = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _FOLDED.sub(" ", bare).strip().upper()


def _starts_with(names: str, first: str) -> bool:
    """A list of given names starts with a (possibly compound) first given name."""
    names, first = normalise_trait(names), normalise_trait(first)
    return names == first or names.startswith(first + " ")


def traits_match(given: InsTraits, reference: InsTraits) -> bool:
    """Traits compared as INS traits are; birth place and given list only when both known."""
    same = (normalise_trait(given.birth_family_name) == normalise_trait(reference.birth_family_name)
            and normalise_trait(given.first_given) == normalise_trait(reference.first_given)
            and given.gender == reference.gender and given.birth_date == reference.birth_date)
    if same and given.birth_place and reference.birth_place:
        same = given.birth_place.upper() == reference.birth_place.upper()
    if same and given.given_names and reference.given_names:
        same = (normalise_trait(" ".join(given.given_names))
                == normalise_trait(" ".join(reference.given_names)))
    return same


def _issue(rule: str, text: str, path: str) -> Issue:
    return Issue(f"[{rule}] {text}", code="invariant", expression=[path])


def _identifier_issues(patient: dict[str, Any], ins: Ins) -> list[Issue]:
    base, spec = f"Patient.identifier[{ins.index}]", _SLICES[ins.slice]
    ident = patient["identifier"][ins.index]
    problem = _format_problem(ins.value)
    issues = [_issue("ins-format", problem, f"{base}.value")] if problem else []
    if not problem:
        key = _key_problem(ins.value)
        issues += [_issue("ins-key", key, f"{base}.value")] if key else []
        issues += _nir_trait_issues(patient, ins)
    type_ = ident.get("type")
    codings = [c for _, c in _dicts(type_.get("coding"))] if isinstance(type_, dict) else []
    if not any(c.get("system") == _TYPE_SYSTEM and c.get("code") == spec["type_code"]
               for c in codings):
        issues.append(_issue("ins-type", f"an {ins.slice} identifier's type must carry the code "
                             f"{spec['type_code']} from {_TYPE_SYSTEM}", f"{base}.type"))
    if ident.get("use") not in spec["use"]:
        allowed = " or ".join(spec["use"])
        issues.append(_issue("ins-use", f"an {ins.slice} identifier's use must be {allowed}, "
                             f"not {ident.get('use')!r}", f"{base}.use"))
    return issues


def _nir_trait_issues(patient: dict[str, Any], ins: Ins) -> list[Issue]:
    """The NIR encodes sex and birth year; they must agree with the traits."""
    issues, gender, born = [], patient.get("gender"), patient.get("birthDate")
    expected = _NIR_SEX.get(ins.value[0])  # 7/8: temporary numbers, not checked
    if expected and gender in ("male", "female") and gender != expected:
        issues.append(_issue("ins-nir-gender", f"the INS {ins.value} starts with {ins.value[0]} "
                             f"({expected}) but gender is {gender}", "Patient.gender"))
    if isinstance(born, str) and re.match(r"\d{4}", born) and born[2:4] != ins.value[1:3]:
        issues.append(_issue("ins-nir-birth-year", f"the INS {ins.value} gives the birth year "
                             f"..{ins.value[1:3]} but birthDate is {born}", "Patient.birthDate"))
    return issues


def _name_issues(patient: dict[str, Any]) -> list[Issue]:
    found = _official_name(patient)
    if found is None:
        why = "an INS patient needs a name with use official (the birth name)"
        return [_issue(rule, why, "Patient.name")
                for rule in ("ins-birth-name", "ins-first-name", "ins-given-list")]
    path, name = f"Patient.name[{found[0]}]", found[1]
    issues = [] if _text(name.get("family")) else [
        _issue("ins-birth-name", "the official name must carry the birth family name",
               f"{path}.family")]
    given = name.get("given") if isinstance(name.get("given"), list) else []
    first = _text(given[0]) if given else None
    if first is None:
        issues.append(_issue("ins-first-name", "the official name's given[0] must be the first "
                             "birth first name", f"{path}.given[0]" if given else f"{path}.given"))
    return issues + _given_list_issues(name, path, first)


def _given_list_issues(name: dict[str, Any], path: str, first: str | None) -> list[Issue]:
    found = _extension(name, _EXT["birth_list_given_name"])
    if found is None:
        return [_issue("ins-given-list", "the official name must carry the birth list of given "
                       f"names ({_EXT['birth_list_given_name']})", f"{path}.extension")]
    listed, where = _text(found[1].get("valueString")), f"{path}.extension[{found[0]}].valueString"
    if listed is None:
        return [_issue("ins-given-list", "the birth list of given names is empty", where)]
    if first and not _starts_with(listed, first):
        return [_issue("ins-given-list", f"the birth list of given names {listed!r} must start "
                       f"with the first given name {first!r}", where)]
    return []


def _full_date(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(_DATE.fullmatch(value)) \
            and date.fromisoformat(value) is not None
    except ValueError:  # 2024-02-30
        return False


def _trait_issues(patient: dict[str, Any]) -> list[Issue]:
    issues = []
    if patient.get("gender") not in _GENDERS:
        issues.append(_issue("ins-gender", f"an INS patient's gender must be "
                             f"{' | '.join(_GENDERS)}", "Patient.gender"))
    born = patient.get("birthDate")
    if not _full_date(born):
        issues.append(_issue("ins-birth-date", "an INS patient needs a full birthDate "
                             f"(YYYY-MM-DD), not {born!r}", "Patient.birthDate"))
    path, code = _insee_code(patient)
    if not (isinstance(code, str) and _INSEE.fullmatch(code)):
        issues.append(_issue("ins-birth-place", "an INS patient needs a birth place "
                             f"({_EXT['birth_place']}) with an INSEE code of 5 characters, digits "
                             f"or 2A/2B then digits; found {code!r}", path))
    return issues


def _qualified_issues(patient: dict[str, Any]) -> list[Issue]:
    path, _ = _reliability(patient)
    if reliability_status(patient) == QUALIFIED:
        return []
    return [_issue("ins-qualified", "only a qualified identity may carry an INS used to file or "
                   f"share documents: the identity reliability extension needs {_STATUS_SUB} "
                   f"{QUALIFIED} from {_STATUS_SYSTEM}", path)]


def ins_issues(patient: dict[str, Any]) -> list[Issue]:
    """Every FR Core INS rule the Patient breaks; [] when it carries no INS."""
    found = _all_ins(patient)
    if not found:
        return []
    return [*(issue for ins in found for issue in _identifier_issues(patient, ins)),
            *_name_issues(patient), *_trait_issues(patient), *_qualified_issues(patient)]


def patient_with_ins(ins_slice_or_system: str, nir: str, traits: InsTraits,
                     status: str = QUALIFIED) -> dict[str, Any]:
    """A FR Core INS Patient (JSON) for seeding, the INSi mock and tests."""
    slice_ = _SLICE_OF_SYSTEM.get(ins_slice_or_system, ins_slice_or_system)
    if slice_ not in _SLICES or status not in _FACTS["identity_status"]["codes"]:
        raise ValueError(f"unknown INS slice/system {ins_slice_or_system!r} or status {status!r}")
    spec = _SLICES[slice_]
    extensions: list[dict[str, Any]] = [{"url": _EXT["identity_reliability"], "extension": [
        {"url": _STATUS_SUB, "valueCoding": {"system": _STATUS_SYSTEM, "code": status}}]}]
    if traits.birth_place:
        extensions.append({"url": _EXT["birth_place"], "valueAddress": {"extension": [
            {"url": _EXT["insee_code"], "valueCoding": {"system": _FACTS["insee_code_system"],
                                                        "code": traits.birth_place}}]}})
    names = " ".join(traits.given_names or (traits.first_given,))
    return {
        "resourceType": "Patient", "meta": {"profile": [_FACTS["profile"]]},
        "extension": extensions,
        "identifier": [{"use": spec["use"][0], "type": {"coding": [
            {"system": _TYPE_SYSTEM, "code": spec["type_code"]}]}, "system": spec["system"],
            "value": nir}],
        "name": [{"extension": [{"url": _EXT["birth_list_given_name"], "valueString": names}],
                  "use": "official", "family": traits.birth_family_name,
                  "given": [traits.first_given]}],
        "gender": traits.gender, "birthDate": traits.birth_date,
    }
