"""The patient's choices (Consents) take effect on the very next request; what each may write."""

from __future__ import annotations

from collections.abc import Awaitable

import httpx
import orjson
import pytest

from fhir_profiles.consent import patient_choice
from service.documents.samples import document_bundle
from storage.directory import Professional
from tests.factories import FHIR_JSON, consent, give_consent
from tests.service.access.conftest import (
    AUTHORISED,
    COLLEAGUE,
    DOCTOR,
    NURSE,
    STRANGER,
    Record,
    as_professional,
    denial_rule,
    ids_of,
)
from tests.tokens import Tokens

PATCH = {"Content-Type": "application/json-patch+json"}


async def test_an_authorisation_and_its_withdrawal_apply_to_the_next_request(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    stranger = as_professional(tokens, STRANGER)
    path = f"/fhir/DocumentReference/{record.documents['consultation']}"
    assert denial_rule(await anonymous.get(path, headers=stranger)) == "not-authorised"

    granted = await anonymous.post("/fhir/Consent", headers={**FHIR_JSON, **as_patient},
                                   content=orjson.dumps(consent(
                                       record.patient_id, "professional", "permit",
                                       rpps=(STRANGER.rpps,))))
    assert granted.status_code == 201, granted.text
    assert (await anonymous.get(path, headers=stranger)).status_code == 200

    withdrawn = {**granted.json(), "status": "inactive"}
    changed = await anonymous.put(f"/fhir/Consent/{withdrawn['id']}", content=orjson.dumps(
        withdrawn), headers={**FHIR_JSON, **as_patient})
    assert changed.status_code == 200, changed.text
    assert denial_rule(await anonymous.get(path, headers=stranger)) == "not-authorised"
    history = await anonymous.get(f"/fhir/Consent/{withdrawn['id']}/_history",
                                  headers=as_patient)
    assert len(history.json()["entry"]) == 2  # the choice and its withdrawal are both kept


async def test_a_block_wins_over_an_authorisation_but_not_over_the_attending_doctor(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    def block(who: Professional) -> Awaitable[httpx.Response]:
        return anonymous.post("/fhir/Consent", headers={**FHIR_JSON, **as_patient},
                              content=orjson.dumps(consent(record.patient_id, "professional",
                                                           "deny", rpps=(who.rpps,))))

    assert (await block(COLLEAGUE)).status_code == 201
    refused = await block(DOCTOR)  # the policy would not apply it: said, not stored
    assert refused.status_code == 422, refused.text
    assert "[consent-attending-doctor]" in refused.text
    path = f"/fhir/DocumentReference/{record.documents['consultation']}"
    assert denial_rule(await anonymous.get(path, headers=as_professional(tokens, COLLEAGUE))) == \
        "professional-blocked"
    assert (await anonymous.get(path, headers=as_professional(tokens, DOCTOR))).status_code \
        == 200


async def test_a_closed_record_is_closed_to_every_professional(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record) -> None:
    await give_consent(client, record.patient_id, "record")
    for who in (DOCTOR, AUTHORISED, NURSE):
        search = await anonymous.get("/fhir/DocumentReference",
                                     params={"patient": record.patient_id},
                                     headers=as_professional(tokens, who))
        assert denial_rule(search) == "record-closed"
    filing = await anonymous.post("/fhir", content=orjson.dumps(document_bundle(
        f"Patient/{record.patient_id}")), headers={**FHIR_JSON, **as_professional(tokens,
                                                                                   DOCTOR)})
    assert denial_rule(filing) == "record-closed"


async def test_the_care_team_reads_until_the_patient_objects(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record) -> None:
    nurse = as_professional(tokens, NURSE)
    path = f"/fhir/DocumentReference/{record.documents['lab']}"
    assert (await anonymous.get(path, headers=nurse)).status_code == 200
    objection = await give_consent(client, record.patient_id, "care-team")
    assert denial_rule(await anonymous.get(path, headers=nurse)) == "care-team-objection"
    removed = await client.delete(f"/fhir/Consent/{objection}")
    assert removed.status_code == 204
    assert (await anonymous.get(path, headers=nurse)).status_code == 200


async def test_the_patient_masks_and_unmasks_a_document_from_professionals(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    colleague = as_professional(tokens, COLLEAGUE)
    document_id = record.documents["consultation"]
    path = f"/fhir/DocumentReference/{document_id}"
    document = (await anonymous.get(path, headers=as_patient)).json()
    mask = [{"op": "add", "path": "/securityLabel/-", "value": {"coding": [{
        "system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "MASQUE_PS"}]}}]
    masked = await anonymous.patch(path, content=orjson.dumps(mask),
                                   headers={**PATCH, **as_patient})
    assert masked.status_code == 200, masked.text
    assert (await anonymous.get(path, headers=colleague)).status_code == 404
    found = await anonymous.get("/fhir/DocumentReference", params={
        "patient": record.patient_id}, headers=colleague)
    assert document_id not in ids_of(found.json())
    assert (await anonymous.get(path, headers=as_professional(tokens, DOCTOR))).status_code \
        == 200  # the attending doctor still reads it
    unmask = [{"op": "replace", "path": "/securityLabel",
               "value": document["securityLabel"]}]
    unmasked = await anonymous.patch(path, content=orjson.dumps(unmask),
                                     headers={**PATCH, **as_patient})
    assert unmasked.status_code == 200, unmasked.text
    assert (await anonymous.get(path, headers=colleague)).status_code == 200


async def test_only_the_author_or_attending_doctor_shows_a_hidden_document_to_the_patient(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    path = f"/fhir/DocumentReference/{record.documents['hidden']}"
    assert (await anonymous.get(path, headers=as_patient)).status_code == 404
    show = [{"op": "replace", "path": "/securityLabel", "value": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}]}]
    refused = await anonymous.patch(path, content=orjson.dumps(show),
                                    headers={**PATCH, **as_professional(tokens, COLLEAGUE)})
    assert denial_rule(refused) == "document-label-change"
    shown = await anonymous.patch(path, content=orjson.dumps(show),
                                  headers={**PATCH, **as_professional(tokens, DOCTOR)})
    assert shown.status_code == 200, shown.text
    assert (await anonymous.get(path, headers=as_patient)).status_code == 200


async def test_the_patient_files_only_their_own_documents_of_class_90(
        anonymous: httpx.AsyncClient, record: Record, as_patient: dict[str, str]) -> None:
    own = document_bundle(f"Patient/{record.patient_id}", class_code="90", type_code="11488-4",
                          authors=[f"Patient/{record.patient_id}"])
    filed = await anonymous.post("/fhir", content=orjson.dumps(own),
                                 headers={**FHIR_JSON, **as_patient})
    assert filed.status_code == 200, filed.text
    report = document_bundle(f"Patient/{record.patient_id}", class_code="10",
                             authors=[f"Patient/{record.patient_id}"])
    refused = await anonymous.post("/fhir", content=orjson.dumps(report),
                                   headers={**FHIR_JSON, **as_patient})
    assert denial_rule(refused) == "patient-files-own-documents-only"
    elsewhere = document_bundle(f"Patient/{record.other_patient_id}", class_code="90",
                                authors=[f"Patient/{record.other_patient_id}"])
    assert (await anonymous.post("/fhir", content=orjson.dumps(elsewhere),
                                 headers={**FHIR_JSON, **as_patient})).status_code == 404
    condition = {"resourceType": "Condition",
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                 "subject": {"reference": f"Patient/{record.patient_id}"}}
    assert denial_rule(await anonymous.post("/fhir/Condition", content=orjson.dumps(condition),
                                        headers={**FHIR_JSON, **as_patient})) == \
        "patient-writes-limited"


async def test_the_patients_choices_are_theirs_alone(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    doctor = as_professional(tokens, DOCTOR)
    block_me = patient_choice(f"Patient/{record.patient_id}", "professional", "permit",
                              rpps=(STRANGER.rpps,))
    assert denial_rule(await anonymous.post("/fhir/Consent", content=orjson.dumps(block_me),
                                        headers={**FHIR_JSON, **doctor})) == \
        "consent-by-patient-only"
    mine = await anonymous.post("/fhir/Consent", content=orjson.dumps(block_me),
                                headers={**FHIR_JSON, **as_patient})
    assert mine.status_code == 201
    assert (await anonymous.get(f"/fhir/Consent/{mine.json()['id']}",
                                headers=doctor)).status_code == 404
    found = await anonymous.get("/fhir/Consent", params={"patient": record.patient_id},
                                headers=doctor)
    assert found.status_code == 200 and found.json()["total"] == 0
    others = patient_choice(f"Patient/{record.other_patient_id}", "record")
    assert (await anonymous.post("/fhir/Consent", content=orjson.dumps(others),
                                 headers={**FHIR_JSON, **as_patient})).status_code == 404


async def test_only_the_patient_declares_their_attending_doctor(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    stranger = as_professional(tokens, STRANGER)
    path = f"/fhir/Patient/{record.patient_id}"
    patient = (await anonymous.get(path, headers=as_patient)).json()
    declared = {**patient, "generalPractitioner": [{"identifier": {
        "system": "urn:oid:1.2.250.1.71.4.2.1", "value": "8" + STRANGER.rpps}}]}
    assert denial_rule(await anonymous.put(path, content=orjson.dumps(declared),
                                       headers={**FHIR_JSON, **stranger})) == \
        "attending-doctor-declared-by-patient"
    changed = await anonymous.put(path, content=orjson.dumps(declared),
                                  headers={**FHIR_JSON, **as_patient})
    assert changed.status_code == 200, changed.text
    document = f"/fhir/DocumentReference/{record.documents['masked']}"
    assert (await anonymous.get(document, headers=stranger)).status_code == 200
    assert denial_rule(await anonymous.get(document, headers=as_professional(tokens, DOCTOR))) == \
        "not-authorised"


async def test_a_consent_that_is_not_a_carnet_choice_is_refused(
        anonymous: httpx.AsyncClient, record: Record, as_patient: dict[str, str]) -> None:
    unknown = patient_choice(f"Patient/{record.patient_id}", "professional", "permit")
    response = await anonymous.post("/fhir/Consent", content=orjson.dumps(unknown),
                                    headers={**FHIR_JSON, **as_patient})
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Consent.provision.actor"]
    nobody = patient_choice(f"Patient/{record.patient_id}", "professional", "deny")
    nobody["provision"]["actor"] = [{"role": {"text": "x"}, "reference": {
        "reference": "Practitioner/unknown"}}]
    response = await anonymous.post("/fhir/Consent", content=orjson.dumps(nobody),
                                    headers={**FHIR_JSON, **as_patient})
    assert response.status_code == 422
    assert "[consent-actor]" in response.json()["issue"][0]["diagnostics"]


async def test_every_active_choice_counts_however_many_there_are(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record, monkeypatch: pytest.MonkeyPatch) -> None:
    """The projection reads the patient's Consents page after page (pages of 2 here)."""
    monkeypatch.setattr("service.consent._PAGE", 2)
    for who in (NURSE, COLLEAGUE, STRANGER):
        await give_consent(client, record.patient_id, "professional", "deny",
                           rpps=(who.rpps,))
    path = f"/fhir/DocumentReference/{record.documents['consultation']}"
    for who in (COLLEAGUE, STRANGER):
        assert denial_rule(await anonymous.get(path, headers=as_professional(tokens, who))) \
            == "professional-blocked"
