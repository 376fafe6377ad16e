"""A professional writes to a patient: what is filled in, what is refused and by which rule,
and the notification event written with the message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from fhir_profiles.messaging import NO_REPLY_URL
from storage.db import Database
from tests.factories import FHIR_JSON, give_consent, patient
from tests.service.access.conftest import (
    AUTHORISED,
    BLOCKED,
    COLLEAGUE,
    DOCTOR,
    STRANGER,
    Record,
    as_professional,
)
from tests.service.messaging.conftest import (
    IDNAT,
    category,
    message,
    message_events,
    rule_of,
    send,
    sent,
)
from tests.tokens import PATIENT, Tokens

RPPS_SYSTEM = "https://rpps.esante.gouv.fr"


async def test_a_professional_writes_to_a_patient_and_the_patient_is_told(
        anonymous: httpx.AsyncClient, tokens: Tokens, database: Database,
        record: Record) -> None:
    stored = await sent(anonymous, as_professional(tokens, AUTHORISED),
                        message(record.patient_id))
    assert stored["sender"] == {"identifier": {"system": IDNAT, "value": AUTHORISED.idnat}}
    assert stored["subject"] == {"reference": f"Patient/{record.patient_id}"}
    assert stored["sent"]  # when Carnet received it
    assert await message_events(database, record.patient_id) == [stored["id"]]


async def test_a_professional_may_write_without_being_authorised_to_read_the_record(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    await sent(anonymous, as_professional(tokens, STRANGER), message(record.patient_id))


@pytest.mark.parametrize("sender", [
    {"identifier": {"system": IDNAT, "value": AUTHORISED.idnat}},
    {"identifier": {"system": RPPS_SYSTEM, "value": AUTHORISED.rpps}},
    {"reference": "Practitioner/bernard",
     "identifier": {"system": IDNAT, "value": AUTHORISED.idnat}},
])
async def test_the_sender_may_name_themselves(sender: dict[str, Any],
                                              anonymous: httpx.AsyncClient, tokens: Tokens,
                                              record: Record) -> None:
    stored = await sent(anonymous, as_professional(tokens, AUTHORISED),
                        message(record.patient_id, sender=sender))
    assert stored["sender"] == sender


async def test_a_patient_may_be_named_by_ins(anonymous: httpx.AsyncClient, tokens: Tokens,
                                            record: Record) -> None:
    by_ins = {"identifier": {"system": PATIENT.system, "value": PATIENT.nir}}
    stored = await sent(anonymous, as_professional(tokens, AUTHORISED),
                        {**message(record.patient_id), "recipient": [by_ins]})
    assert stored["recipient"] == [{**by_ins, "reference": f"Patient/{record.patient_id}"}]
    assert stored["subject"] == {"reference": f"Patient/{record.patient_id}"}


async def test_documents_the_patient_may_see_are_attached_by_reference(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    document = {"reference": f"DocumentReference/{record.documents['consultation']}"}
    stored = await sent(anonymous, as_professional(tokens, DOCTOR), message(
        record.patient_id, payload=[{"contentString": "Voici le compte rendu."},
                                    {"contentReference": document}]))
    assert stored["payload"][1] == {"contentReference": document}


@pytest.mark.parametrize("header", ["FIN", "fin", " Fin "])
async def test_the_mssante_header_stores_a_no_reply_message(
        header: str, anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    stored = await sent(anonymous, as_professional(tokens, AUTHORISED),
                        message(record.patient_id), **{"X-MSS-MES": header})
    assert {"url": NO_REPLY_URL, "valueBoolean": True} in stored["extension"]


async def test_the_no_reply_extension_is_kept(anonymous: httpx.AsyncClient, tokens: Tokens,
                                              record: Record) -> None:
    no_reply = [{"url": NO_REPLY_URL, "valueBoolean": True}]
    stored = await sent(anonymous, as_professional(tokens, AUTHORISED),
                        message(record.patient_id, extension=no_reply))
    assert stored["extension"] == no_reply


async def test_a_message_in_a_transaction_follows_the_same_rules(
        anonymous: httpx.AsyncClient, tokens: Tokens, database: Database,
        record: Record) -> None:
    bernard = as_professional(tokens, AUTHORISED)

    def bundle(resource: dict[str, Any], kind: str = "transaction") -> bytes:
        return orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": [
            {"fullUrl": "urn:uuid:6b3c7a8e-8a9f-4b3e-9a55-0c1d2e3f4a5b", "resource": resource,
             "request": {"method": "POST", "url": "Communication"}}]})

    response = await anonymous.post("/fhir", content=bundle(message(record.patient_id)),
                                    headers={**FHIR_JSON, **bernard})
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"]
    message_id = location.split("/")[1]
    assert await message_events(database, record.patient_id) == [message_id]
    stored = await anonymous.get(f"/fhir/Communication/{message_id}", headers=bernard)
    assert stored.json()["sender"]["identifier"]["value"] == AUTHORISED.idnat

    someone_else = message(record.patient_id, sender={"identifier": {
        "system": IDNAT, "value": DOCTOR.idnat}})
    refused = await anonymous.post("/fhir", content=bundle(someone_else),
                                   headers={**FHIR_JSON, **bernard})
    assert refused.status_code == 403, refused.text
    assert "message-sender-is-the-caller" in refused.text
    batch = await anonymous.post("/fhir", content=bundle(someone_else, "batch"),
                                 headers={**FHIR_JSON, **bernard})
    assert batch.status_code == 200, batch.text
    assert batch.json()["entry"][0]["response"]["status"].startswith("403")


# Each bad message: what is changed, the status and the rule it must name.
Edit = Callable[[dict[str, Any], Record], dict[str, Any]]


def _document(key: str) -> Edit:
    def edit(resource: dict[str, Any], record: Record) -> dict[str, Any]:
        return {**resource, "payload": [{"contentReference": {
            "reference": f"DocumentReference/{record.documents[key]}"}}]}
    return edit


REFUSED: dict[str, tuple[Edit, int, str]] = {
    "sender is another professional": (
        lambda m, r: {**m, "sender": {"identifier": {"system": IDNAT,
                                                     "value": AUTHORISED.idnat}}},
        403, "message-sender-is-the-caller"),
    "sender is the patient": (
        lambda m, r: {**m, "sender": {"reference": f"Patient/{r.patient_id}"}},
        403, "message-sender-is-the-caller"),
    "a notification": (lambda m, r: {**m, "category": category("notification")},
                       403, "notification-by-carnet-only"),
    "no category": (lambda m, r: {k: v for k, v in m.items() if k != "category"},
                    422, "message-category"),
    "an unknown category": (
        lambda m, r: {**m, "category": [{"coding": [{"system": "urn:x", "code": "message"}]}]},
        422, "message-category"),
    "two recipients": (lambda m, r: {**m, "recipient": m["recipient"] * 2},
                       422, "message-recipient"),
    "no payload": (lambda m, r: {k: v for k, v in m.items() if k != "payload"},
                   422, "message-payload"),
    "an inline attachment": (
        lambda m, r: {**m, "payload": [{"contentAttachment": {"contentType": "text/plain",
                                                              "data": "aGVsbG8="}}]},
        422, "message-payload"),
    "a reference to a Binary": (
        lambda m, r: {**m, "payload": [{"contentReference": {
            "reference": f"Binary/{r.binaries['consultation']}"}}]},
        422, "message-attachment"),
    "a document that does not exist": (
        lambda m, r: {**m, "payload": [{"contentReference": {
            "reference": "DocumentReference/0b7a3c4e-0000-4000-8000-000000000000"}}]},
        422, "message-attachment"),
    "another patient's document": (_document("other"), 422, "message-attachment"),
    "a document hidden from the patient": (_document("hidden"), 422,
                                           "message-attachment-invisible"),
    "a recipient that is not stored": (
        lambda m, r: {**m, "recipient": [{"reference": "Patient/nobody"}]},
        422, "message-recipient-unknown"),
    "a recipient that is not a patient": (
        lambda m, r: {**m, "recipient": [{"reference": f"Practitioner/{r.patient_id}"}]},
        422, "message-recipient-unknown"),
    "an unknown INS": (
        lambda m, r: {**m, "recipient": [{"identifier": {"system": PATIENT.system,
                                                         "value": "253072B07300470"}}]},
        422, "message-recipient-unknown"),
    "a subject that is another patient": (
        lambda m, r: {**m, "subject": {"reference": f"Patient/{r.other_patient_id}"}},
        422, "message-subject"),
    "an answer to a message that does not exist": (
        lambda m, r: {**m, "inResponseTo": [{"reference": f"Communication/{r.care_team_id}"}]},
        422, "message-in-response-to"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_bad_message_is_refused_with_its_rule(case: str, anonymous: httpx.AsyncClient,
                                                      tokens: Tokens, database: Database,
                                                      record: Record) -> None:
    edit, status, rule = REFUSED[case]
    response = await send(anonymous, as_professional(tokens, DOCTOR),
                          edit(message(record.patient_id), record))
    assert response.status_code == status, response.text
    assert rule_of(response) == rule
    assert response.json()["resourceType"] == "OperationOutcome"
    assert await message_events(database, record.patient_id) == []


async def test_a_patient_without_ins_gets_no_message(anonymous: httpx.AsyncClient,
                                                     tokens: Tokens, record: Record) -> None:
    plain = await anonymous.post("/fhir/Patient", content=orjson.dumps(patient()),
                                 headers=FHIR_JSON)
    assert plain.status_code == 201, plain.text
    response = await send(anonymous, as_professional(tokens, DOCTOR),
                          message(plain.json()["id"]))
    assert response.status_code == 422, response.text
    assert rule_of(response) == "message-recipient-unknown"


async def test_a_document_the_sender_may_not_see_is_not_attached(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    """Dr Girard may not see the document Marie masked: to him it does not exist."""
    response = await send(anonymous, as_professional(tokens, COLLEAGUE), _document("masked")(
        message(record.patient_id), record))
    assert response.status_code == 422, response.text
    assert rule_of(response) == "message-attachment"


async def test_an_answer_to_a_message_one_is_not_party_to_is_refused(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    first = await sent(anonymous, as_professional(tokens, AUTHORISED),
                       message(record.patient_id))
    response = await send(anonymous, as_professional(tokens, DOCTOR), message(
        record.patient_id, inResponseTo=[{"reference": f"Communication/{first['id']}"}]))
    assert response.status_code == 422, response.text
    assert rule_of(response) == "message-in-response-to"
    own = await sent(anonymous, as_professional(tokens, AUTHORISED), message(
        record.patient_id, inResponseTo=[{"reference": f"Communication/{first['id']}"}]))
    assert own["inResponseTo"] == [{"reference": f"Communication/{first['id']}"}]


async def test_a_malformed_mssante_header_is_a_bad_request(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    response = await send(anonymous, as_professional(tokens, AUTHORISED),
                          message(record.patient_id), **{"X-MSS-MES": "MAYBE"})
    assert response.status_code == 400, response.text
    assert rule_of(response) == "message-header"


async def test_a_blocked_professional_cannot_write(anonymous: httpx.AsyncClient,
                                                   tokens: Tokens, database: Database,
                                                   record: Record) -> None:
    response = await send(anonymous, as_professional(tokens, BLOCKED),
                          message(record.patient_id))
    assert response.status_code == 403, response.text
    assert rule_of(response) == "professional-blocked"
    assert await message_events(database, record.patient_id) == []


async def test_nobody_writes_into_a_closed_record(anonymous: httpx.AsyncClient,
                                                  client: httpx.AsyncClient, tokens: Tokens,
                                                  record: Record) -> None:
    await give_consent(client, record.patient_id, "record", "deny")
    for who in (DOCTOR, AUTHORISED):
        response = await send(anonymous, as_professional(tokens, who),
                              message(record.patient_id))
        assert response.status_code == 403, response.text
        assert rule_of(response) == "record-closed"
