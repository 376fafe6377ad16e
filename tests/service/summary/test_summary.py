"""``Patient/$summary``: an IPS document Bundle built for the caller's eyes, audited, and
filed as a document that replaces the previous one (persist=true)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from fhir_profiles.access import access_category, open_categories
from fhir_profiles.ips import SECTIONS, summary_structure_issues
from service.documents.samples import document_bundle
from storage.db import Database
from tests.factories import FHIR_JSON
from tests.service.access.conftest import (
    AUTHORISED,
    DOCTOR,
    PHARMACIST,
    STRANGER,
    Record,
    as_professional,
    denial_rule,
)
from tests.tokens import PATIENT, Tokens

SNOMED, LOINC, ATC = "http://snomed.info/sct", "http://loinc.org", "http://www.whocc.no/atc"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.10"


def clinical(patient_id: str) -> list[dict[str, Any]]:
    """One resource per IPS section, with codes the clinical checks accept."""
    subject = {"reference": f"Patient/{patient_id}"}
    return [
        {"resourceType": "Condition", "subject": subject,
         "clinicalStatus": {"coding": [{
             "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
             "code": "active"}]},
         "code": {"coding": [{"system": SNOMED, "code": "44054006",
                              "display": "Diabète de type 2"}]}},
        {"resourceType": "AllergyIntolerance", "patient": subject,
         "code": {"coding": [{"system": SNOMED, "code": "91936005",
                              "display": "Allergie à la pénicilline"}]}},
        {"resourceType": "MedicationStatement", "subject": subject, "status": "active",
         "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "A10BA02",
                                                   "display": "metformine"}]}},
        {"resourceType": "Immunization", "patient": subject, "status": "completed",
         "occurrenceDateTime": "2025-10-01",
         "vaccineCode": {"coding": [{"system": ATC, "code": "J07BB02"}]}},
        {"resourceType": "Observation", "subject": subject, "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "4548-4", "display": "HbA1c"}]},
         "valueQuantity": {"value": 7.1, "unit": "%"}},
    ]


async def file_clinical(client: httpx.AsyncClient, resources: list[dict[str, Any]]) -> list[str]:
    ids = []
    for resource in resources:
        created = await client.post(f"/fhir/{resource['resourceType']}", headers=FHIR_JSON,
                                    content=orjson.dumps(resource))
        assert created.status_code == 201, created.text
        ids.append(f"{resource['resourceType']}/{created.json()['id']}")
    return ids


async def summary(anonymous: httpx.AsyncClient, headers: dict[str, str], patient_id: str,
                  **params: str) -> dict[str, Any]:
    answer = await anonymous.get(f"/fhir/Patient/{patient_id}/$summary", params=params,
                                 headers=headers)
    assert answer.status_code == 200, answer.text
    bundle: dict[str, Any] = answer.json()
    assert summary_structure_issues(bundle) == []
    return bundle


def summarised(bundle: dict[str, Any]) -> set[str]:
    """The stored clinical resources the summary shows (Type/id)."""
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]
            if e["resource"]["resourceType"] in {s.resource_type for s in SECTIONS}
            and e["fullUrl"].startswith("http")}


def sections(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    composition = bundle["entry"][0]["resource"]
    return {s["code"]["coding"][0]["code"]: s for s in composition["section"]}


async def test_a_full_record_gives_every_section_its_entries_and_narrative(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record) -> None:
    filed = await file_clinical(client, clinical(record.patient_id))
    bundle = await summary(anonymous, as_professional(tokens, DOCTOR), record.patient_id)

    assert bundle["type"] == "document" and bundle["identifier"]["value"] and bundle["timestamp"]
    composition = bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert composition["type"]["coding"][0]["code"] == "60591-5"
    assert composition["subject"]["reference"].endswith(f"Patient/{record.patient_id}")
    found = sections(bundle)
    assert set(found) == {s.loinc for s in SECTIONS}
    for section in SECTIONS:
        assert len(found[section.loinc]["entry"]) == 1, section
        assert "<div" in found[section.loinc]["text"]["div"]
    assert summarised(bundle) == set(filed)
    assert "Diabète de type 2" in found["11450-4"]["text"]["div"]


async def test_an_empty_record_keeps_its_required_sections(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    bundle = await summary(anonymous, as_professional(tokens, DOCTOR), record.patient_id)
    found = sections(bundle)
    for section in SECTIONS:
        if section.required:
            assert found[section.loinc].get("emptyReason") or found[section.loinc].get("entry")
    assert summarised(bundle) == set()


async def test_a_pharmacist_sees_what_the_matrix_opens_to_pharmacists(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record) -> None:
    """Not a psychiatric diagnosis, not an imaging result (fhir_profiles/data/
    access_matrix.json); the rest of the summary, yes."""
    subject = {"reference": f"Patient/{record.patient_id}"}
    resources = [*clinical(record.patient_id),
                 {"resourceType": "Condition", "subject": subject, "code": {"coding": [
                     {"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32.1",
                      "display": "Épisode dépressif moyen"}]}},
                 {"resourceType": "Observation", "subject": subject, "status": "final",
                  "category": [{"coding": [{
                      "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                      "code": "imaging"}]}],
                  "code": {"coding": [{"system": LOINC, "code": "24627-2",
                                       "display": "CT Chest"}]}}]
    filed = dict(zip(await file_clinical(client, resources), resources, strict=True))
    doctor = await summary(anonymous, as_professional(tokens, DOCTOR), record.patient_id)
    pharmacist = await summary(anonymous, as_professional(tokens, PHARMACIST),
                               record.patient_id)

    opened = open_categories([PHARMACIST.profession_code])
    expected = {ref for ref, resource in filed.items() if access_category(resource) in opened}
    assert summarised(doctor) == set(filed)
    assert summarised(pharmacist) == expected != set(filed)
    partial = "certaines informations peuvent ne pas figurer"
    assert all(partial in s["text"]["div"] for s in sections(pharmacist).values())


async def test_a_masked_diagnosis_stays_out_of_other_professionals_summaries(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record) -> None:
    condition = clinical(record.patient_id)[0]
    condition["meta"] = {"security": [{
        "system": "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                  "TRE-A07-StatutVisibiliteDocument", "code": "MASQUE_PS"}]}
    [masked] = await file_clinical(client, [condition])
    assert masked in summarised(await summary(anonymous, as_professional(tokens, DOCTOR),
                                              record.patient_id))  # the attending doctor
    assert masked not in summarised(await summary(
        anonymous, as_professional(tokens, AUTHORISED), record.patient_id))


async def test_the_summary_is_refused_or_hidden_as_the_record_is(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    stranger = await anonymous.get(f"/fhir/Patient/{record.patient_id}/$summary",
                                   headers=as_professional(tokens, STRANGER))
    assert denial_rule(stranger) == "not-authorised"
    other = await anonymous.get(f"/fhir/Patient/{record.other_patient_id}/$summary",
                                headers=as_patient)
    missing = await anonymous.get("/fhir/Patient/no-such-patient/$summary", headers=as_patient)
    assert other.status_code == missing.status_code == 404
    assert other.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"]
    assert (await summary(anonymous, as_patient, record.patient_id))["type"] == "document"


async def test_every_summary_is_in_the_patients_access_history(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record, as_patient: dict[str, str]) -> None:
    filed = await file_clinical(client, clinical(record.patient_id)[:1])
    await summary(anonymous, as_professional(tokens, DOCTOR), record.patient_id)
    trail = await anonymous.get("/fhir/AuditEvent", headers=as_patient)
    assert trail.status_code == 200, trail.text
    asked = base64.b64encode(f"Patient/{record.patient_id}/$summary".encode()).decode()
    summaries = [e["resource"] for e in trail.json()["entry"]
                 if asked in orjson.dumps(e["resource"]).decode()]
    assert len(summaries) == 1
    entities = orjson.dumps(summaries[0].get("entity", [])).decode()
    assert filed[0] in entities and "8" + DOCTOR.rpps in orjson.dumps(summaries[0]).decode()


async def test_the_summary_by_the_patients_ins(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    doctor = as_professional(tokens, DOCTOR)
    by_get = await anonymous.get("/fhir/Patient/$summary", headers=doctor,
                                 params={"identifier": f"{INS_SYSTEM}|{PATIENT.nir}"})
    by_post = await anonymous.post("/fhir/Patient/$summary", headers={**doctor, **FHIR_JSON},
                                   content=orjson.dumps({
        "resourceType": "Parameters", "parameter": [{"name": "identifier", "valueIdentifier": {
            "system": INS_SYSTEM, "value": PATIENT.nir}}]}))
    for answer in (by_get, by_post):
        assert answer.status_code == 200, answer.text
        assert answer.json()["entry"][0]["resource"]["subject"]["reference"].endswith(
            record.patient_id)


@pytest.mark.parametrize(("method", "path", "params", "body", "status"), [
    ("GET", "/fhir/Patient/$summary", {"identifier": "no-bar"}, None, 400),
    ("GET", "/fhir/Patient/$summary", {"identifier": f"{INS_SYSTEM}|000000000000000"}, None,
     404),
    ("GET", "/fhir/Patient/{id}/$summary", {"persist": "maybe"}, None, 400),
    ("POST", "/fhir/Patient/$summary", {}, {"resourceType": "Patient"}, 400),
    ("POST", "/fhir/Patient/$summary", {}, {"resourceType": "Parameters"}, 400),
])
async def test_bad_summary_requests_get_an_operation_outcome(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record, method: str, path: str,
        params: dict[str, str], body: dict[str, Any] | None, status: int) -> None:
    answer = await anonymous.request(
        method, path.format(id=record.patient_id), params=params,
        headers={**as_professional(tokens, DOCTOR), **FHIR_JSON},
        content=orjson.dumps(body) if body is not None else None)
    assert answer.status_code == status, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_persisted_summaries_replace_each_other_and_are_found_by_type(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record, as_patient: dict[str, str], database: Database) -> None:
    doctor = as_professional(tokens, DOCTOR)
    await file_clinical(client, clinical(record.patient_id))
    first = await anonymous.get(f"/fhir/Patient/{record.patient_id}/$summary",
                                params={"persist": "true"}, headers=doctor)
    second = await anonymous.get(f"/fhir/Patient/{record.patient_id}/$summary",
                                 params={"persist": "true"}, headers=doctor)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    first_id = first.headers["content-location"].rsplit("/", 1)[1]
    second_id = second.headers["content-location"].rsplit("/", 1)[1]

    # A VSM filed by a professional (PDF) is a summary too, and no generated one replaces it.
    vsm = await client.post("/fhir", headers=FHIR_JSON, content=orjson.dumps(document_bundle(
        f"Patient/{record.patient_id}", type_code="60591-5", class_code="11",
        title="Volet de synthèse médicale")))
    assert vsm.status_code == 200, vsm.text

    found = await anonymous.get("/fhir/DocumentReference", headers=doctor, params={
        "patient": record.patient_id, "type": f"{LOINC}|60591-5"})
    assert found.status_code == 200, found.text
    documents = {e["resource"]["id"]: e["resource"] for e in found.json()["entry"]}
    assert documents[first_id]["status"] == "superseded"
    assert documents[second_id]["status"] == "current"
    assert documents[second_id]["relatesTo"] == [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{first_id}"}}]
    assert len([d for d in documents.values() if d["status"] == "current"]) == 2  # + the VSM

    binary = documents[second_id]["content"][0]["attachment"]
    assert binary["contentType"] == "application/fhir+json"
    stored = await anonymous.get(f"/fhir/{binary['url']}", headers={**doctor, "Accept": "*/*"})
    assert stored.status_code == 200
    assert orjson.loads(stored.content)["type"] == "document"

    refused = await anonymous.get(f"/fhir/Patient/{record.patient_id}/$summary",
                                  params={"persist": "true"}, headers=as_patient)
    assert refused.status_code == 403
