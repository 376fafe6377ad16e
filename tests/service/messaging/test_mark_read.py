"""Once sent, a message changes only when its patient marks it read; nobody else changes or
deletes it, not even its sender (Carnet itself excepted)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from service.access import Access
from service.fhir import interactions
from storage.db import Database
from tests.factories import FHIR_JSON
from tests.service.access.conftest import AUTHORISED, DOCTOR, as_professional
from tests.service.messaging.conftest import Conversation, rule_of
from tests.tokens import Tokens

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


async def current(http: httpx.AsyncClient, headers: dict[str, str],
                  message_id: str) -> dict[str, Any]:
    response = await http.get(f"/fhir/Communication/{message_id}", headers=headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def put(http: httpx.AsyncClient, headers: dict[str, str],
              resource: dict[str, Any]) -> httpx.Response:
    return await http.put(f"/fhir/Communication/{resource['id']}",
                          content=orjson.dumps(resource), headers={**FHIR_JSON, **headers})


async def patch(http: httpx.AsyncClient, headers: dict[str, str], message_id: str,
                operations: list[dict[str, Any]]) -> httpx.Response:
    return await http.patch(f"/fhir/Communication/{message_id}",
                            content=orjson.dumps(operations), headers={**JSON_PATCH, **headers})


async def test_the_patient_marks_a_message_read_with_put(anonymous: httpx.AsyncClient,
                                                         as_patient: dict[str, str],
                                                         conversation: Conversation) -> None:
    message = await current(anonymous, as_patient, conversation.message)
    assert message["status"] == "in-progress"
    response = await put(anonymous, as_patient, {**message, "status": "completed",
                                                 "received": "2026-01-02T08:00:00+01:00"})
    assert response.status_code == 200, response.text
    assert response.json()["received"] == "2026-01-02T08:00:00+01:00"
    assert response.json()["status"] == "completed"


async def test_the_patient_marks_messages_and_notifications_read_with_patch(
        anonymous: httpx.AsyncClient, as_patient: dict[str, str],
        conversation: Conversation) -> None:
    for message_id in (conversation.stranger, conversation.notification):
        response = await patch(anonymous, as_patient, message_id, [
            {"op": "add", "path": "/received", "value": "2026-01-05T10:00:00Z"}])
        assert response.status_code == 200, response.text
        assert response.json()["received"] == "2026-01-05T10:00:00Z"


@pytest.mark.parametrize(("operations", "status"), [
    ([{"op": "replace", "path": "/payload/0/contentString", "value": "autre chose"}], 403),
    ([{"op": "replace", "path": "/status", "value": "stopped"}], 403),
    ([{"op": "add", "path": "/note", "value": [{"text": "à revoir"}]}], 403),
    ([{"op": "add", "path": "/received", "value": "hier"}], 400),  # not a dateTime
])
async def test_the_patient_changes_nothing_else(operations: list[dict[str, Any]], status: int,
                                                anonymous: httpx.AsyncClient,
                                                as_patient: dict[str, str],
                                                conversation: Conversation) -> None:
    response = await patch(anonymous, as_patient, conversation.message, operations)
    assert response.status_code == status, response.text
    if status == 403:
        assert rule_of(response) == "message-patient-marks-read-only"


async def test_a_put_changing_the_text_is_refused(anonymous: httpx.AsyncClient,
                                                  as_patient: dict[str, str],
                                                  conversation: Conversation) -> None:
    message = await current(anonymous, as_patient, conversation.message)
    response = await put(anonymous, as_patient, {**message, "payload": [
        {"contentString": "Je n'ai rien reçu."}]})
    assert response.status_code == 403, response.text
    assert rule_of(response) == "message-patient-marks-read-only"


async def test_not_even_the_sender_changes_a_message(anonymous: httpx.AsyncClient,
                                                     tokens: Tokens,
                                                     conversation: Conversation) -> None:
    bernard = as_professional(tokens, AUTHORISED)
    message = await current(anonymous, bernard, conversation.message)
    for response in (await put(anonymous, bernard, {**message, "status": "completed"}),
                     await patch(anonymous, bernard, conversation.message, [
                         {"op": "add", "path": "/received", "value": "2026-01-05"}])):
        assert response.status_code == 403, response.text
        assert rule_of(response) == "message-sealed"


async def test_another_professional_is_told_nothing(anonymous: httpx.AsyncClient,
                                                    tokens: Tokens,
                                                    conversation: Conversation) -> None:
    response = await patch(anonymous, as_professional(tokens, DOCTOR), conversation.message,
                           [{"op": "add", "path": "/received", "value": "2026-01-05"}])
    assert response.status_code == 404, response.text


async def test_nobody_deletes_a_message(anonymous: httpx.AsyncClient, tokens: Tokens,
                                        as_patient: dict[str, str],
                                        conversation: Conversation) -> None:
    for headers, message_id in ((as_patient, conversation.message),
                                (as_patient, conversation.notification),
                                (as_professional(tokens, AUTHORISED), conversation.message)):
        response = await anonymous.delete(f"/fhir/Communication/{message_id}",
                                          headers=headers)
        assert response.status_code == 403, response.text
        assert rule_of(response) == "message-sealed"
    hidden = await anonymous.delete(f"/fhir/Communication/{conversation.message}",
                                    headers=as_professional(tokens, DOCTOR))
    assert hidden.status_code == 404, hidden.text


async def test_carnet_itself_may_change_a_message(database: Database,
                                                  conversation: Conversation) -> None:
    async with database.write() as conn:
        content, _, _ = await interactions.read(conn, "Communication", conversation.message,
                                                Access.of_carnet())
        message = orjson.loads(content)
        written = await interactions.update(conn, "Communication", conversation.message,
                                            {**message, "status": "entered-in-error"},
                                            access=Access.of_carnet())
    assert written.version_id == 2


async def test_a_message_carnet_withdrew_stays_withdrawn(anonymous: httpx.AsyncClient,
                                                            as_patient: dict[str, str],
                                                            database: Database,
                                                            conversation: Conversation) -> None:
    message = await current(anonymous, as_patient, conversation.message)
    async with database.write() as conn:
        await interactions.delete(conn, "Communication", conversation.message,
                                  access=Access.of_carnet())
    response = await put(anonymous, as_patient, {**message, "status": "completed"})
    assert response.status_code == 403, response.text
    assert rule_of(response) == "message-sealed"
