"""A conversation in Marie CORSE's record (the access tests' ``record``), and how to write one.

- Dr Bernard (authorised) wrote to her; she answered him;
- Dr Lefèvre (no relation with her: he may not open her record) wrote to her too;
- Dr Bernard also sent her a no-reply message (``X-MSS-MES: FIN``);
- Carnet put a notification in her inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from fhir_profiles.messaging import CATEGORY_SYSTEM, MESSAGE, NOTIFICATION
from service.access import Access
from service.fhir import interactions
from storage import outbox
from storage.db import Database
from storage.directory import Professional
from tests.factories import FHIR_JSON
from tests.service.access.conftest import (  # noqa: F401 - fixtures, used by name
    AUTHORISED,
    STRANGER,
    Record,
    as_patient,
    as_professional,
    record,
)
from tests.tokens import Tokens

IDNAT = "urn:oid:1.2.250.1.71.4.2.1"


def category(code: str = MESSAGE) -> list[dict[str, Any]]:
    return [{"coding": [{"system": CATEGORY_SYSTEM, "code": code}]}]


def message(patient_id: str, text: str = "Bonjour, vos résultats sont arrivés.",
            **extra: Any) -> dict[str, Any]:
    """A professional's message to the patient, as a client would send it (no sender)."""
    return {"resourceType": "Communication", "status": "completed", "category": category(),
            "recipient": [{"reference": f"Patient/{patient_id}"}],
            "payload": [{"contentString": text}], **extra}


def reply(to: str, professional: Professional, text: str = "Merci docteur.",
          **extra: Any) -> dict[str, Any]:
    """The patient's answer to message ``to`` (no sender, no subject)."""
    return {"resourceType": "Communication", "status": "completed", "category": category(),
            "inResponseTo": [{"reference": f"Communication/{to}"}],
            "recipient": [{"identifier": {"system": IDNAT, "value": professional.idnat}}],
            "payload": [{"contentString": text}], **extra}


async def send(http: httpx.AsyncClient, headers: dict[str, str], resource: dict[str, Any],
               **more: str) -> httpx.Response:
    return await http.post("/fhir/Communication", content=orjson.dumps(resource),
                           headers={**FHIR_JSON, **headers, **more})


async def sent(http: httpx.AsyncClient, headers: dict[str, str], resource: dict[str, Any],
               **more: str) -> dict[str, Any]:
    response = await send(http, headers, resource, **more)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def rule_of(response: httpx.Response) -> str:
    """The rule an error names: ``[rule]`` in its first issue's diagnostics."""
    diagnostics: str = response.json()["issue"][0]["diagnostics"]
    return diagnostics.split("[", 1)[1].split("]", 1)[0]


async def message_events(database: Database, patient_id: str) -> list[str]:
    """The ids of the messages the patient was told about (outbox events)."""
    async with database.read() as conn:
        found = await outbox.patient_events(conn, patient_id, topics=["message"])
    return [str(event.payload["communication"]) for event in found]


async def carnet_notification(database: Database, patient_id: str) -> str:
    """An inbox notification, written by Carnet itself."""
    patient = {"reference": f"Patient/{patient_id}"}
    async with database.write() as conn:
        written = await interactions.create(conn, {
            "resourceType": "Communication", "status": "completed",
            "category": category(NOTIFICATION), "subject": patient, "recipient": [patient],
            "sent": "2026-01-02T10:00:00Z",
            "payload": [{"contentString": "Un nouveau document est disponible."}]},
            access=Access.of_carnet())
    return written.resource_id


@dataclass
class Conversation:
    record: Record
    message: str       # Dr Bernard -> Marie
    answer: str        # Marie -> Dr Bernard
    stranger: str      # Dr Lefèvre -> Marie
    no_reply: str      # Dr Bernard -> Marie, not to be answered
    notification: str  # Carnet -> Marie's inbox

    def ids(self, *keys: str) -> set[str]:
        return {getattr(self, key) for key in keys}


@pytest.fixture
async def conversation(anonymous: httpx.AsyncClient, tokens: Tokens, database: Database,
                       record: Record,  # noqa: F811 - the access tests' fixture
                       as_patient: dict[str, str]) -> Conversation:  # noqa: F811
    bernard = as_professional(tokens, AUTHORISED)
    first = await sent(anonymous, bernard, message(record.patient_id, status="in-progress",
                                                   sent="2026-01-01T09:00:00Z"))
    answer = await sent(anonymous, as_patient, reply(first["id"], AUTHORISED,
                                                     sent="2026-01-01T12:00:00Z"))
    stranger = await sent(anonymous, as_professional(tokens, STRANGER),
                          message(record.patient_id, sent="2026-01-03T09:00:00Z"))
    no_reply = await sent(anonymous, bernard, message(record.patient_id,
                                                      sent="2026-01-04T09:00:00Z"),
                          **{"X-MSS-MES": "FIN"})
    notification = await carnet_notification(database, record.patient_id)
    return Conversation(record, first["id"], answer["id"], stranger["id"], no_reply["id"],
                        notification)
