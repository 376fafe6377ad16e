"""Resource factories shared by the tests (plain dicts, as a client would send)."""

from __future__ import annotations

from typing import Any

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


def document_reference(patient_id: str, *, loinc: str = "11488-4", date: str = "2026-01-15",
                       status: str = "current", author: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": status,
        "type": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": f"{date}T10:00:00+01:00",
        "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}],
    }
    if author:
        resource["author"] = [{"reference": author}]
    return resource


def observation(patient_id: str, code: str = "2339-0", value: float = 5.5,
                effective: str = "2026-02-01") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": effective,
            "valueQuantity": {"value": value, "unit": "mmol/L"}}
