"""A record with one document of each kind the policy tells apart, and the people around it.

Marie CORSE (the tests' patient token) has:
- an attending doctor (Dr Martin), who wrote most of her documents;
- doctors she authorised: Dr Bernard, author of the document she masked, and Dr Girard;
- a care team with a nurse (Durand);
- an authorised pharmacist (Petit) and an authorised masseur-kinésithérapeute (Moreau);
- a doctor she blocked (Roux); and there is a doctor who is none of these (Lefèvre).
Another patient (Julie LEROY) has one document, and no relation with anyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from storage.db import Database
from storage.directory import Professional
from tests.factories import (
    FHIR_JSON,
    authorise,
    file_document,
    give_consent,
    ins_patient,
)
from tests.tokens import PATIENT, Tokens, bearer

DOCTOR = Professional("10000000001", "MARTIN", "Claire", "10", "C", "SM54", "CHU")
AUTHORISED = Professional("10000000002", "BERNARD", "Paul", "10", "C", "SM26", "CHU")
PHARMACIST = Professional("10000000003", "PETIT", "Sophie", "21", "C", None, "Pharmacie")
NURSE = Professional("10000000004", "DURAND", "Luc", "60", "C", None, "CHU")
PHYSIO = Professional("10000000005", "MOREAU", "Anne", "70", "C", None, "Cabinet")
BLOCKED = Professional("10000000006", "ROUX", "Marc", "10", "C", None, "Clinique")
STRANGER = Professional("10000000007", "LEFEVRE", "Inès", "10", "C", None, "Clinique")
COLLEAGUE = Professional("10000000008", "GIRARD", "Emma", "10", "C", None, "CHU")
IDNAT = "urn:oid:1.2.250.1.71.4.2.1"

# Document key -> what it is: (LOINC type, TRE_A03 class, security labels, author).
DOCUMENTS: dict[str, tuple[str, str, tuple[str, ...], Professional]] = {
    "consultation": ("11488-4", "10", ("N",), DOCTOR),
    "lab": ("11502-2", "10", ("N",), DOCTOR),
    "imaging": ("18748-4", "31", ("N",), DOCTOR),
    "psychiatric": ("28635-1", "10", ("N",), DOCTOR),
    "masked": ("11488-4", "10", ("N", "MASQUE_PS"), AUTHORISED),
    "hidden": ("11488-4", "10", ("N", "INVISIBLE_PATIENT"), DOCTOR),
}


@dataclass
class Record:
    patient_id: str
    other_patient_id: str
    documents: dict[str, str]  # key -> DocumentReference id ("other" is the other patient's)
    binaries: dict[str, str]  # key -> Binary id
    care_team_id: str
    consents: dict[str, str] = field(default_factory=dict)

    def key_of(self, document_id: str) -> str:
        return next(key for key, value in self.documents.items() if value == document_id)


async def _document(client: httpx.AsyncClient, patient_id: str, key: str) -> dict[str, Any]:
    loinc, class_code, security, author = DOCUMENTS.get(key, ("11488-4", "10", ("N",), DOCTOR))
    return await file_document(client, patient_id, type_code=loinc, class_code=class_code,
                               security=security, title=f"Document {key}",
                               author_rpps=author.rpps, author_given=author.given_name,
                               author_family=author.family_name)


def _binary_id(document: dict[str, Any]) -> str:
    url: str = document["content"][0]["attachment"]["url"]
    return url.rpartition("/")[2]


@pytest.fixture
async def record(client: httpx.AsyncClient, database: Database) -> Record:
    """Built by the operator app (the ``client`` fixture), as a hospital system would."""
    patient_id = await ins_patient(
        client, database, PATIENT.birth_family_name, PATIENT.given_names[0], gender="female",
        birth_date=PATIENT.birth_date, birth_place=PATIENT.birth_place, nir=PATIENT.nir,
        generalPractitioner=[{"identifier": {"system": IDNAT, "value": "8" + DOCTOR.rpps}}])
    other_patient_id = await ins_patient(client, database, "LEROY", "Julie", gender="female",
                                         birth_date="1985-05-12")
    documents: dict[str, str] = {}
    binaries: dict[str, str] = {}
    for key in DOCUMENTS:
        document = await _document(client, patient_id, key)
        documents[key], binaries[key] = document["id"], _binary_id(document)
    other = await _document(client, other_patient_id, "other")
    documents["other"], binaries["other"] = other["id"], _binary_id(other)
    await authorise(client, patient_id, AUTHORISED.rpps, COLLEAGUE.rpps, PHARMACIST.rpps,
                    PHYSIO.rpps)
    await give_consent(client, patient_id, "professional", "deny", rpps=(BLOCKED.rpps,))
    team = await client.post("/fhir/CareTeam", headers=FHIR_JSON, content=orjson.dumps({
        "resourceType": "CareTeam", "status": "active",
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"member": {"identifier": {"system": IDNAT,
                                                   "value": "8" + NURSE.rpps}}}]}))
    assert team.status_code == 201, team.text
    return Record(patient_id, other_patient_id, documents, binaries, team.json()["id"])


@pytest.fixture
def as_patient(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.patient("openid patient/*.cruds"))


def as_professional(tokens: Tokens, who: Professional) -> dict[str, str]:
    return bearer(tokens.professional("openid scope_all", who=who))


def ids_of(bundle: dict[str, Any], resource_type: str = "DocumentReference",
           mode: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == resource_type
            and (mode is None or e["search"]["mode"] == mode)}


def denial_rule(response: httpx.Response) -> str:
    """The rule a 403 names (``access denied [<rule>]``)."""
    assert response.status_code == 403, response.text
    diagnostics: str = response.json()["issue"][0]["diagnostics"]
    return diagnostics.split("access denied [", 1)[1].split("]", 1)[0]


MISSING_ID = "0b7a3c4e-0000-4000-8000-000000000000"  # an id nothing has


async def answer_without_id(client: httpx.AsyncClient, path: str, headers: dict[str, str],
                            resource_id: str) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of a GET, the asked id masked: what must be identical for a
    resource the caller may not see and for one that does not exist."""
    response = await client.get(path, headers=headers)
    # The request id is new for every request, whatever it asks.
    kept = {k: v for k, v in response.headers.items()
            if k not in ("content-length", "date", "x-request-id")}
    return response.status_code, kept, response.text.replace(resource_id, "<id>")
