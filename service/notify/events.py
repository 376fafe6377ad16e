"""The events that notify a patient, written in the transaction that causes them.

Payloads hold ids only: no title, type, author or content ever reaches the
outbox, so no channel can leak them by mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from storage import outbox

DOCUMENT = "document"                  # a document filed, replaced, or made visible
MESSAGE = "message"                    # a professional wrote to the patient
EMERGENCY_ACCESS = "emergency-access"  # break-the-glass or SAMU opened the record
TOPICS = (DOCUMENT, MESSAGE, EMERGENCY_ACCESS)


@dataclass(frozen=True)
class FiledNotice:
    """A document a submission filed, as its event tells it (ids only)."""

    patient_id: str
    document_id: str
    hidden_from_patient: bool
    replaces: list[str]


async def documents_filed(conn: AsyncConnection, filed: Sequence[FiledNotice], *,
                          by_patient: bool, now: int) -> list[int]:
    """One event per document of a submission, in one statement. A document labelled
    INVISIBLE_PATIENT tells the patient's side nothing yet (only operators' apps hear of it;
    ``document_visible`` follows the label's end). One the patient filed themselves gets
    them no inbox notice or e-mail (their apps still hear)."""
    return await outbox.add_events(conn, [
        (DOCUMENT, notice.patient_id, {"document": notice.document_id,
                                       "replaces": notice.replaces,
                                       "patient_facing": not notice.hidden_from_patient,
                                       "by_patient": by_patient})
        for notice in filed], now)


async def document_visible(conn: AsyncConnection, patient_id: str, document_id: str,
                           now: int) -> int:
    return await outbox.add_event(conn, DOCUMENT, patient_id, {
        "document": document_id, "replaces": [], "patient_facing": True,
        "made_visible": True}, now)


async def message_sent(conn: AsyncConnection, patient_id: str, communication_id: str,
                       now: int) -> int:
    return await outbox.add_event(conn, MESSAGE, patient_id, {
        "communication": communication_id, "patient_facing": True}, now)


async def emergency_access_opened(conn: AsyncConnection, patient_id: str, *, actor: str,
                                  mode: str, expires_at: int, now: int) -> int:
    """Who and until when; never the stated reason (the patient reads it in the trail)."""
    return await outbox.add_event(conn, EMERGENCY_ACCESS, patient_id, {
        "actor": actor, "mode": mode, "expires_at": expires_at, "patient_facing": True}, now)
