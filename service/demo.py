"""Demo data for ``carnet serve --demo`` and ``carnet seed --demo``.

Seeded through the same transaction code as any client's Bundle, with
conditional creates, so seeding twice changes nothing.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from service.fhir.transaction import BundleContext, process
from storage.db import Database

INS_NIR_TEST = "urn:oid:1.2.250.1.213.1.4.10"
IDNAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"


def nir_key(first13: str) -> str:
    """INS key: 97 - (n mod 97); Corsica's 2A/2B count as 19/18."""
    digits = first13.upper().replace("2A", "19", 1).replace("2B", "18", 1)
    return f"{97 - int(digits) % 97:02d}"


def _nir(first13: str) -> str:
    return first13 + nir_key(first13)


ORGANIZATIONS = [
    ("org-chu-demo", "1750000018", "CHU de Démonstration"),
    ("org-pharma-demo", "1750000026", "Pharmacie du Carnet"),
]
PRACTITIONERS = [
    # (local key, RPPS, family, given, profession code TRE_G15)
    ("ps-martin", "10000000001", "MARTIN", "Claire", "10"),
    ("ps-bernard", "10000000002", "BERNARD", "Paul", "10"),
    ("ps-petit", "10000000003", "PETIT", "Sophie", "21"),
    ("ps-durand", "10000000004", "DURAND", "Luc", "60"),
    ("ps-moreau", "10000000005", "MOREAU", "Anne", "70"),
]
PATIENTS = [
    # (local key, NIR, birth family name, first names, gender, birth date, INSEE birthplace)
    ("pat-1", "253072A07300443", "CORSE", ["Marie", "Ange"], "female", "1953-07-21", "2A073"),
    ("pat-2", _nir("2850575056123"), "LEROY", ["Julie"], "female", "1985-05-12", "75056"),
    ("pat-3", _nir("1721169123045"), "GARNIER", ["Jean", "Pierre"], "male", "1972-11-03", "69123"),
]


def _entry(key: str, resource: dict[str, Any], if_none_exist: str) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{key}", "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"],
                        "ifNoneExist": if_none_exist}}


def demo_bundle() -> dict[str, Any]:
    entries = []
    for key, finess, name in ORGANIZATIONS:
        entries.append(_entry(key, {"resourceType": "Organization", "name": name, "active": True,
                                    "identifier": [{"system": FINESS, "value": finess}]},
                              f"identifier={FINESS}|{finess}"))
    for key, rpps, family, given, profession in PRACTITIONERS:
        entries.append(_entry(key, {
            "resourceType": "Practitioner", "active": True,
            "identifier": [{"system": IDNAT_PS, "value": "8" + rpps}],
            "name": [{"family": family, "given": [given]}],
            "qualification": [{"code": {"coding": [{
                "system": "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/"
                          "TRE-G15-ProfessionSante", "code": profession}]}}],
        }, f"identifier={IDNAT_PS}|8{rpps}"))
    for key, nir, family, first_names, gender, birth, _place in PATIENTS:
        entries.append(_entry(key, {
            "resourceType": "Patient",
            "identifier": [{"system": INS_NIR_TEST, "value": nir, "use": "official"}],
            "name": [{"use": "official", "family": family, "given": first_names}],
            "gender": gender, "birthDate": birth,
            "generalPractitioner": [{"reference": "urn:uuid:ps-martin"}] if key == "pat-1" else [],
        }, f"identifier={INS_NIR_TEST}|{nir}"))
    note = base64.b64encode("Compte rendu de consultation (démonstration).".encode()).decode()
    documents = [("pat-1", "11488-4", "Compte rendu de consultation"),
                 ("pat-1", "11502-2", "Résultats de biologie"),
                 ("pat-2", "18842-5", "Lettre de liaison")]
    for i, (patient, loinc, title) in enumerate(documents):
        entries.append(_entry(f"doc-{i}", {
            "resourceType": "DocumentReference", "status": "current",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                                 "value": f"urn:oid:1.2.250.1.999.1.{i + 1}"},
            "type": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": f"urn:uuid:{patient}"},
            "author": [{"reference": "urn:uuid:ps-martin"}],
            "custodian": {"reference": "urn:uuid:org-chu-demo"},
            "date": f"2026-0{i + 1}-15T10:00:00+01:00",
            "content": [{"attachment": {"contentType": "text/plain", "language": "fr-FR",
                                        "title": title, "data": note}}],
        }, f"identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.1.{i + 1}"))
    for entry in entries:
        if not entry["resource"].get("generalPractitioner", True):
            del entry["resource"]["generalPractitioner"]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def seed_demo(db: Database, base: str = "http://127.0.0.1:8000/fhir") -> dict[str, Any]:
    """Seed (idempotently) and return the transaction-response as JSON."""
    context = BundleContext(base, 20, 100, return_representation=False)
    response: dict[str, Any] = orjson.loads(await process(db, demo_bundle(), context))
    return response
