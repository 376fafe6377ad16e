"""Emergency access (bris de glace, centre 15): a stated reason, a time limit, never past
MASQUE_PS, refused after the patient's opposition, always traced, and the patient told."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import orjson
from sqlalchemy import update

from service.notify.events import EMERGENCY_ACCESS as EMERGENCY_TOPIC
from storage.access import EMERGENCY_ACCESS
from storage.db import Database
from storage.outbox import patient_events
from tests.factories import give_consent
from tests.service.access.conftest import STRANGER, Record, as_professional, denial_rule
from tests.tokens import Tokens

REASON = "Patiente inconsciente aux urgences, antécédents inconnus"


def emergency(tokens: Tokens, mode: str = "bris_de_glace",
              reason: str | None = REASON) -> dict[str, str]:
    headers = {**as_professional(tokens, STRANGER), "X-Access-Mode": mode}
    if reason is not None:
        headers["X-Access-Reason"] = quote(reason)  # headers are ASCII
    return headers


async def trail(anonymous: httpx.AsyncClient, as_patient: dict[str, str]) -> list[dict[str, str]]:
    bundle = (await anonymous.get("/fhir/AuditEvent", headers=as_patient)).json()
    return [e["resource"] for e in bundle.get("entry", [])]


async def test_break_the_glass_opens_the_record_for_a_while_and_tells_the_patient(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record, database: Database,
        as_patient: dict[str, str]) -> None:
    stranger = as_professional(tokens, STRANGER)
    path = f"/fhir/DocumentReference/{record.documents['consultation']}"
    assert denial_rule(await anonymous.get(path, headers=stranger)) == "not-authorised"

    assert (await anonymous.get(path, headers=emergency(tokens))).status_code == 200
    masked = f"/fhir/DocumentReference/{record.documents['masked']}"
    assert (await anonymous.get(masked, headers=emergency(tokens))).status_code == 404
    assert (await anonymous.get(path, headers=stranger)).status_code == 200  # still open

    async with database.read() as conn:
        events = await patient_events(conn, record.patient_id, topics=[EMERGENCY_TOPIC])
    assert [event.topic for event in events] == [EMERGENCY_TOPIC]  # one opening, one notice
    payload = events[0].payload
    assert payload["mode"] == "bris_de_glace" and payload["actor"] == "idnat:8" + STRANGER.rpps
    assert REASON not in orjson.dumps(payload).decode()  # the notice carries no clinical text

    entries = await trail(anonymous, as_patient)
    emergency_reads = [e for e in entries if e["purposeOfEvent"][0]["coding"][0]["code"]
                       == "bris_de_glace" and e["outcome"] == "0"]
    assert len(emergency_reads) == 2
    assert all(e["purposeOfEvent"][0]["text"] == REASON for e in emergency_reads)
    assert all(e["agent"][0]["who"]["identifier"]["value"] == "8" + STRANGER.rpps
               for e in emergency_reads)

    async with database.write() as conn:  # two hours later
        await conn.execute(update(EMERGENCY_ACCESS).values(expires_at=1))
    assert denial_rule(await anonymous.get(path, headers=stranger)) == "not-authorised"


async def test_centre_15_searches_one_patients_record(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    found = await anonymous.get("/fhir/DocumentReference", params={
        "patient": record.patient_id}, headers=emergency(tokens, "centre_15"))
    assert found.status_code == 200, found.text
    assert found.json()["total"] == 5  # all hers but the masked one
    everywhere = await anonymous.get("/fhir/DocumentReference",
                                     headers=emergency(tokens, "centre_15"))
    assert everywhere.status_code == 400
    assert "[emergency-one-patient]" in everywhere.json()["issue"][0]["diagnostics"]


async def test_emergency_access_is_refused_after_the_patients_opposition(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        record: Record, database: Database) -> None:
    await give_consent(client, record.patient_id, "emergency")
    path = f"/fhir/DocumentReference/{record.documents['consultation']}"
    for mode in ("bris_de_glace", "centre_15"):
        assert denial_rule(await anonymous.get(path, headers=emergency(tokens, mode))) == \
            "emergency-opposed"
    async with database.read() as conn:
        assert await patient_events(conn, record.patient_id, topics=[EMERGENCY_TOPIC]) == []


async def test_an_emergency_access_states_its_mode_and_reason(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    path = f"/fhir/DocumentReference/{record.documents['consultation']}"
    no_reason = await anonymous.get(path, headers=emergency(tokens, reason=None))
    assert no_reason.status_code == 400
    assert "[emergency-reason-required]" in no_reason.json()["issue"][0]["diagnostics"]
    assert (await anonymous.get(path, headers=emergency(tokens, "urgence"))).status_code == 400
    patient = await anonymous.get(path, headers={**as_patient, "X-Access-Mode": "centre_15",
                                                 "X-Access-Reason": "x"})
    assert patient.status_code == 400
