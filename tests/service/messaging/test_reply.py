"""The patient answers a message addressed to them, unless it was sent as no-reply; they do
not start conversations nor write notifications."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fhir_profiles.messaging import NO_REPLY_URL
from storage.db import Database
from storage.directory import InsIdentity
from tests.factories import give_consent
from tests.service.access.conftest import AUTHORISED, DOCTOR, as_professional
from tests.service.messaging.conftest import (
    IDNAT,
    Conversation,
    category,
    message,
    message_events,
    reply,
    rule_of,
    send,
    sent,
)
from tests.tokens import PATIENT, Tokens, bearer


async def test_the_patient_answers_the_sender_and_nobody_is_notified(
        anonymous: httpx.AsyncClient, as_patient: dict[str, str], database: Database,
        conversation: Conversation) -> None:
    patient_id = conversation.record.patient_id
    told = await message_events(database, patient_id)
    answer = await sent(anonymous, as_patient, reply(conversation.message, AUTHORISED))
    assert answer["sender"] == {"reference": f"Patient/{patient_id}"}
    assert answer["subject"] == {"reference": f"Patient/{patient_id}"}
    assert answer["recipient"] == [{"identifier": {"system": IDNAT, "value": AUTHORISED.idnat}}]
    assert await message_events(database, patient_id) == told  # a reply notifies nobody yet


async def test_the_sender_reads_the_answer(anonymous: httpx.AsyncClient, tokens: Tokens,
                                           conversation: Conversation) -> None:
    read = await anonymous.get(f"/fhir/Communication/{conversation.answer}",
                               headers=as_professional(tokens, AUTHORISED))
    assert read.status_code == 200, read.text


async def test_a_no_reply_message_cannot_be_answered(anonymous: httpx.AsyncClient,
                                                     tokens: Tokens,
                                                     as_patient: dict[str, str],
                                                     conversation: Conversation) -> None:
    response = await send(anonymous, as_patient, reply(conversation.no_reply, AUTHORISED))
    assert response.status_code == 403, response.text
    assert rule_of(response) == "message-no-reply"
    flagged = await sent(anonymous, as_professional(tokens, AUTHORISED), message(
        conversation.record.patient_id, extension=[{"url": NO_REPLY_URL,
                                                    "valueBoolean": True}]))
    response = await send(anonymous, as_patient, reply(flagged["id"], AUTHORISED))
    assert response.status_code == 403, response.text
    assert rule_of(response) == "message-no-reply"


async def test_a_message_marked_false_for_no_reply_can_be_answered(
        anonymous: httpx.AsyncClient, tokens: Tokens, as_patient: dict[str, str],
        conversation: Conversation) -> None:
    open_ = await sent(anonymous, as_professional(tokens, AUTHORISED), message(
        conversation.record.patient_id, extension=[{"url": NO_REPLY_URL,
                                                    "valueBoolean": False}]))
    await sent(anonymous, as_patient, reply(open_["id"], AUTHORISED))


Edit = Callable[[dict[str, Any], Conversation], dict[str, Any]]

REFUSED: dict[str, tuple[Edit, int, str]] = {
    "a new conversation": (lambda m, c: {k: v for k, v in m.items() if k != "inResponseTo"},
                           403, "message-patient-replies-only"),
    "a notification": (lambda m, c: {**m, "category": category("notification")},
                       403, "notification-by-carnet-only"),
    "to someone else than the sender": (
        lambda m, c: {**m, "recipient": [{"identifier": {"system": IDNAT,
                                                         "value": DOCTOR.idnat}}]},
        422, "message-reply-recipient"),
    "in another's name": (
        lambda m, c: {**m, "sender": {"reference": f"Patient/{c.record.other_patient_id}"}},
        403, "message-sender-is-the-caller"),
    "about another patient": (
        lambda m, c: {**m, "subject": {"reference": f"Patient/{c.record.other_patient_id}"}},
        422, "message-subject"),
    "to her own answer": (
        lambda m, c: {**m, "inResponseTo": [{"reference": f"Communication/{c.answer}"}]},
        422, "message-in-response-to"),
    "to a notification": (
        lambda m, c: {**m, "inResponseTo": [{"reference": f"Communication/{c.notification}"}]},
        422, "message-in-response-to"),
    "to two messages": (
        lambda m, c: {**m, "inResponseTo": [{"reference": f"Communication/{c.message}"},
                                            {"reference": f"Communication/{c.stranger}"}]},
        422, "message-in-response-to"),
    "with a document hidden from her": (
        lambda m, c: {**m, "payload": [{"contentReference": {
            "reference": f"DocumentReference/{c.record.documents['hidden']}"}}]},
        422, "message-attachment"),
    "with another patient's document": (
        lambda m, c: {**m, "payload": [{"contentReference": {
            "reference": f"DocumentReference/{c.record.documents['other']}"}}]},
        422, "message-attachment"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_bad_answer_is_refused_with_its_rule(case: str, anonymous: httpx.AsyncClient,
                                                     as_patient: dict[str, str],
                                                     conversation: Conversation) -> None:
    edit, status, rule = REFUSED[case]
    response = await send(anonymous, as_patient,
                          edit(reply(conversation.message, AUTHORISED), conversation))
    assert response.status_code == status, response.text
    assert rule_of(response) == rule


async def test_the_patient_attaches_her_own_documents(anonymous: httpx.AsyncClient,
                                                      as_patient: dict[str, str],
                                                      conversation: Conversation) -> None:
    document = {"reference": f"DocumentReference/{conversation.record.documents['lab']}"}
    answer = await sent(anonymous, as_patient, reply(
        conversation.message, AUTHORISED, payload=[{"contentReference": document}]))
    assert answer["payload"] == [{"contentReference": document}]


async def test_a_message_to_another_patient_cannot_be_answered(
        anonymous: httpx.AsyncClient, tokens: Tokens, as_patient: dict[str, str],
        conversation: Conversation) -> None:
    theirs = await sent(anonymous, as_professional(tokens, AUTHORISED),
                        message(conversation.record.other_patient_id))
    response = await send(anonymous, as_patient, reply(theirs["id"], AUTHORISED))
    assert response.status_code == 422, response.text
    assert rule_of(response) == "message-in-response-to"


async def test_an_app_answers_for_the_patient_only_with_her_grant(
        anonymous: httpx.AsyncClient, client: httpx.AsyncClient, tokens: Tokens,
        conversation: Conversation) -> None:
    app = bearer(tokens.app("system/Communication.cruds", client_id="granted-app"))
    patient = f"Patient/{conversation.record.patient_id}"
    response = await send(anonymous, app, reply(conversation.message, AUTHORISED))
    assert response.status_code == 403, response.text
    assert rule_of(response) == "app-not-granted"
    await give_consent(client, conversation.record.patient_id, "app", "permit",
                       apps=("granted-app",))
    answer = await sent(anonymous, app, reply(conversation.message, AUTHORISED))
    assert answer["sender"] == {"reference": patient}
    assert answer["subject"] == {"reference": patient}
    started = await send(anonymous, app, {**message(conversation.record.patient_id),
                                          "subject": {"reference": patient}})
    assert started.status_code == 403, started.text
    assert rule_of(started) == "message-patient-replies-only"


async def test_a_patient_without_a_record_answers_nothing(anonymous: httpx.AsyncClient,
                                                          tokens: Tokens,
                                                          conversation: Conversation) -> None:
    stranger = InsIdentity(PATIENT.system, "253072B07300470", "CORSE", ("Anne",), "female",
                           "1953-07-21", "2B073")
    headers = bearer(tokens.patient("openid patient/*.cruds", who=stranger))
    response = await send(anonymous, headers, reply(conversation.message, AUTHORISED))
    assert response.status_code == 403, response.text
    assert rule_of(response) == "patient-own-record-only"
