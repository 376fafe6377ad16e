"""``GET /fhir/AuditEvent``: the patient's access history, served from the audit log.

The trail is the patient's: they see their own entries, an app they granted
sees them with its scopes; professionals never do. Entries are never written,
changed or deleted through the API (405).
"""

from __future__ import annotations

from datetime import datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Interaction, Rule
from auth.principal import App, Patient, Professional
from service.access import Access, authorize, not_known
from service.audit import audit_search, read_audit_event
from service.errors import BadRequest, Forbidden
from service.fhir.interactions import ID_PATTERN
from storage.access import Relation

AUDIT_EVENT = "AuditEvent"


async def _may_read_trail(conn: AsyncConnection, access: Access, patient_id: str) -> bool:
    principal = access.principal
    if access.internal or access.operator:
        return True
    if isinstance(principal, Patient):
        return await access.own_record(conn) == patient_id
    if isinstance(principal, App):
        record = (await access.context(conn, patient_id)).record
        return record is not None and Relation.APP in record.relations
    return False


async def search(conn: AsyncConnection, access: Access, pairs: list[tuple[str, str]], *,
                 base: str, default_count: int, max_count: int) -> bytes:
    authorize(access.principal, Interaction.SEARCH, AUDIT_EVENT)
    if isinstance(access.principal, Professional):
        raise Forbidden.denied(Rule.AUDIT_TRAIL, "the access history is the patient's; "
                               "professionals do not read it")
    wanted = [value.rpartition("/")[2] for name, value in pairs if name == "patient"]
    patient_id = wanted[0] if len(set(wanted)) == 1 else None
    if patient_id is None and isinstance(access.principal, Patient):
        patient_id = await access.own_record(conn)
    if patient_id is None or not ID_PATTERN.match(patient_id):
        raise BadRequest("AuditEvent is searched for one patient: patient=<id>",
                         expression="patient")
    if not await _may_read_trail(conn, access, patient_id):
        raise Forbidden.denied(Rule.OWN_RECORD, "a patient reads their own access history only")
    return await audit_search(conn, patient_id, pairs, base=base,
                              default_count=default_count, max_count=max_count)


async def read(conn: AsyncConnection, access: Access, event_id: str) -> tuple[bytes, int, int]:
    """One entry: (content, version 1, lastUpdated); 404 unless the caller may read it."""
    found = await read_audit_event(conn, event_id)
    if found is None or not await _may_read_trail(conn, access, found[0]):
        raise not_known(AUDIT_EVENT, event_id)
    content = found[1]
    recorded = datetime.fromisoformat(orjson.loads(content)["recorded"])
    return content, 1, int(recorded.timestamp() * 1_000_000)
