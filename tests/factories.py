"""Resource factories shared by the tests (plain dicts, as a client would send), and the
helpers that create INS patients and file documents through the API."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from fhir_profiles.consent import patient_choice
from fhir_profiles.ins import INS_SLICES, InsTraits, nir_key, patient_with_ins
from service.documents.samples import PDF, document_bundle
from service.identity import name_key
from storage import directory
from storage.db import Database
from storage.directory import InsIdentity

FHIR_JSON = {"Content-Type": "application/fhir+json"}
# A hospital's local patient number (IPP): an identifier with no INS rules attached, for the
# FHIR core tests. INS patients are built with fhir_profiles.ins.patient_with_ins.
IPP_SYSTEM = "urn:oid:1.2.250.1.999.1.1.1"


def patient(family: str = "Dupont", given: str = "Jean", *, ipp: str | None = None,
            birth_date: str = "1970-01-01", gender: str = "male", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth_date,
        **extra,
    }
    if ipp:
        resource["identifier"] = [{"system": IPP_SYSTEM, "value": ipp}]
    return resource


def practitioner(family: str = "Martin", rpps: str = "10000000001") -> dict[str, Any]:
    return {"resourceType": "Practitioner",
            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "8" + rpps}],
            "name": [{"family": family, "given": ["Claire"]}]}


def observation(patient_id: str, code: str = "2339-0", value: float = 5.5,
                effective: str = "2026-02-01") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": effective,
            "valueQuantity": {"value": value, "unit": "mmol/L"}}


# ------------------------------------------------------------------ INS patients, documents

_NIR_ORDER = itertools.count(1)  # the NIR's birth order number: a fresh one per patient


def ins_nir(gender: str = "male", birth_date: str = "1970-01-01",
            birth_place: str = "75056") -> str:
    """A fresh NIR consistent with the traits (sex, year and month of birth, birth place)."""
    first13 = ("2" if gender == "female" else "1") + birth_date[2:4] + birth_date[5:7] \
        + birth_place + f"{next(_NIR_ORDER) % 999 + 1:03d}"
    return first13 + nir_key(first13)


async def ins_patient_resource(database: Database, family: str = "DUPONT",
                               given: str = "Jean", *, gender: str = "male",
                               birth_date: str = "1970-01-01", birth_place: str = "75056",
                               nir: str | None = None, ipp: str | None = None,
                               ins_slice: str = "INS-NIR-TEST", **extra: Any) -> dict[str, Any]:
    """A Patient with a qualified INS, as documents need, its identity put in the INSi
    directory mock first (the Patient itself is not stored: see :func:`ins_patient`).

    ``ipp`` adds a local patient number (IPP_SYSTEM) after the INS; ``extra`` elements are
    added to the resource as they are.
    """
    nir = nir or ins_nir(gender, birth_date, birth_place)
    async with database.write() as conn:
        await directory.put_identity(conn, InsIdentity(
            INS_SLICES[ins_slice], nir, family, (given,), gender, birth_date, birth_place),
            name_key(family))
    resource = patient_with_ins(ins_slice, nir, InsTraits(family, given, (given,), gender,
                                                          birth_date, birth_place))
    if ipp:
        resource["identifier"].append({"system": IPP_SYSTEM, "value": ipp})
    resource.update(extra)
    return resource


async def ins_patient(client: httpx.AsyncClient, database: Database, family: str = "DUPONT",
                      given: str = "Jean", **options: Any) -> str:
    """Create a qualified INS Patient (see :func:`ins_patient_resource` for the options)
    through the API, known to INSi; returns its id."""
    resource = await ins_patient_resource(database, family, given, **options)
    response = await client.post("/fhir/Patient", content=orjson.dumps(resource),
                                 headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    patient_id: str = response.json()["id"]
    return patient_id


async def stored_binary(client: httpx.AsyncClient, content: bytes = PDF,
                        content_type: str = "application/pdf") -> str:
    """Upload a document's bytes as a Binary; returns ``Binary/<id>`` for attachment.url."""
    response = await client.post("/fhir/Binary", content=content,
                                 headers={"Content-Type": content_type,
                                          "Accept": "application/fhir+json"})
    assert response.status_code == 201, response.text
    return f"Binary/{response.json()['id']}"


async def file_document(client: httpx.AsyncClient, patient_id: str, *,
                        status: str | None = None,
                        edit: Callable[[dict[str, Any]], None] | None = None,
                        **options: Any) -> dict[str, Any]:
    """File one document for the Patient (an ITI-65 transaction built by
    ``service.documents.samples.document_bundle(**options)``) and return the stored
    DocumentReference. ``edit`` changes the DocumentReference before it is sent. A new
    document is current: another ``status`` is set afterwards by a JSON Patch, as its
    author would."""
    bundle = document_bundle(f"Patient/{patient_id}", **options)
    if edit is not None:
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "DocumentReference":
                edit(entry["resource"])
    response = await client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    location = next(e["response"]["location"] for e in response.json()["entry"]
                    if e["response"]["location"].startswith("DocumentReference/"))
    path = f"/fhir/{location.split('/_history')[0]}"
    if status is not None:
        patched = await client.patch(path, content=orjson.dumps(
            [{"op": "replace", "path": "/status", "value": status}]),
            headers={"Content-Type": "application/json-patch+json"})
        assert patched.status_code == 200, patched.text
    stored = await client.get(path)
    assert stored.status_code == 200, stored.text
    document: dict[str, Any] = stored.json()
    return document


def consent(patient_id: str, choice: str, provision: str = "deny", *,
            rpps: tuple[str, ...] = (), apps: tuple[str, ...] = (),
            status: str = "active") -> dict[str, Any]:
    """One of the patient's choices, as Carnet reads them (fhir_profiles/consent.py)."""
    return patient_choice(f"Patient/{patient_id}", choice, provision, rpps=rpps, apps=apps,
                          status=status)


async def give_consent(client: httpx.AsyncClient, patient_id: str, choice: str,
                       provision: str = "deny", **actors: Any) -> str:
    """Record a choice for the patient (with the client's token); returns the Consent id."""
    response = await client.post("/fhir/Consent", headers=FHIR_JSON, content=orjson.dumps(
        consent(patient_id, choice, provision, **actors)))
    assert response.status_code == 201, response.text
    consent_id: str = response.json()["id"]
    return consent_id


async def authorise(client: httpx.AsyncClient, patient_id: str, *rpps: str) -> str:
    """The patient authorises professionals (by RPPS) to open their record."""
    return await give_consent(client, patient_id, "professional", "permit", rpps=rpps)
