"""Auditing every access to patient data as FHIR R4 AuditEvents (IHE BALP style).

Writes record their AuditEvents in their own transaction (``record_in``), so
the audit entry commits with the data. Reads go through ``AuditWriter``: a
single background task writes whatever is queued in one transaction (group
commit), and each read waits until its entries are durable; when they cannot
be written the read fails with ``AuditUnavailable`` (503) rather than answer
unaudited.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from service.errors import BadRequest
from service.fhir.http import fhir_instant, is_plain_number, now_micros
from storage import audit as audit_log
from storage.audit import AuditEntry
from storage.db import Database
from storage.errors import InvalidSearch
from storage.search.query import decode_cursor, encode_cursor
from storage.search.values import date_range

log = logging.getLogger("carnet.audit")

AgentKind = Literal["professional", "patient", "app", "system"]

ACCESS_MODE_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.248"  # TRE_R248 ModeAcces
_ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_AGENT_TYPES: dict[str, dict[str, str]] = {
    "professional": {"system": _ROLE_CLASS, "code": "PROV", "display": "healthcare provider"},
    "patient": {"system": _ROLE_CLASS, "code": "PAT", "display": "patient"},
    "app": {"system": _DCM, "code": "110150", "display": "Application"},
    "system": {"system": _DCM, "code": "110150", "display": "Application"},
}
_AGENT_SYSTEMS: dict[str, str] = {
    "professional": "urn:oid:1.2.250.1.71.4.2.1",  # idNat_PS
    "patient": "urn:oid:1.2.250.1.213.1.4.8",  # INS-NIR
    "app": "urn:ietf:params:oauth:client-id",
    "system": "urn:ietf:params:oauth:client-id",
}
_AGENT_PREFIXES = {"professional": "idnat", "patient": "ins", "app": "app", "system": "system"}
_SOURCE = {"observer": {"display": "Carnet"},
           "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                     "code": "4", "display": "Application Server"}]}




class AuditUnavailable(Exception):
    """The audit trail could not be written: the access must fail (503)."""


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One access to one patient's record, permitted or denied."""

    patient_id: str
    interaction: str  # FHIR restful-interaction code: read, search-type, create...
    action: str  # C R U D E
    outcome: str  # "0" success, "4" denied / minor failure, "8" serious failure
    agent_kind: AgentKind
    agent_id: str  # idNat_PS, NIR or client_id
    agent_name: str | None = None
    entities: tuple[str, ...] = ()  # "DocumentReference/abc"
    query: str | None = None  # a search's query string
    access_mode: str = "normal"  # normal, bris_de_glace, centre_15
    reason: str | None = None  # the stated emergency reason
    rule: str | None = None  # the policy rule that denied the access
    recorded: int = field(default_factory=now_micros)  # epoch microseconds


def audit_event(record: AuditRecord, event_id: str | None = None) -> dict[str, Any]:
    """The AuditEvent, built in canonical element order (what validation would return)."""
    instant = fhir_instant(record.recorded)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id or str(uuid.uuid4()),
        "meta": {"versionId": "1", "lastUpdated": instant},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                 "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction",
                     "code": record.interaction}],
        "action": record.action,
        "recorded": instant,
        "outcome": record.outcome,
    }
    if record.rule:
        event["outcomeDesc"] = f"access denied [{record.rule}]"
    purpose: dict[str, Any] = {"coding": [{"system": ACCESS_MODE_SYSTEM,
                                           "code": record.access_mode}]}
    if record.reason:
        purpose["text"] = record.reason
    event["purposeOfEvent"] = [purpose]
    who: dict[str, Any] = {"identifier": {"system": _AGENT_SYSTEMS[record.agent_kind],
                                          "value": record.agent_id}}
    if record.agent_name:
        who["display"] = record.agent_name
    event["agent"] = [{"type": {"coding": [_AGENT_TYPES[record.agent_kind]]}, "who": who,
                       "requestor": True}]
    event["source"] = _SOURCE
    entities: list[dict[str, Any]] = [{"what": {"reference": reference}}
                                      for reference in record.entities]
    entities.append({"what": {"reference": f"Patient/{record.patient_id}"},
                     "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"}})
    if record.query is not None:
        entities.append({
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                     "code": "2", "display": "System Object"},
            "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
            "query": base64.b64encode(record.query.encode()).decode()})
    event["entity"] = entities
    return event


def audit_entry(record: AuditRecord) -> AuditEntry:
    """What the audit log stores for ``record``, under a fresh id."""
    event_id = str(uuid.uuid4())
    return AuditEntry(event_id=event_id, patient_id=record.patient_id, recorded=record.recorded,
                      agent=f"{_AGENT_PREFIXES[record.agent_kind]}:{record.agent_id}",
                      outcome=record.outcome,
                      content=orjson.dumps(audit_event(record, event_id)))


async def record_in(conn: AsyncConnection, records: Sequence[AuditRecord]) -> None:
    """Audit inside the caller's write transaction: the entries commit with the data."""
    await audit_log.append(conn, [audit_entry(r) for r in records])


@dataclass
class _Waiting:
    entries: list[AuditEntry]
    done: asyncio.Future[None]


class AuditWriter:
    """Group commit for the audit entries of reads.

    One background task takes everything queued (up to ``max_batch`` entries,
    whole calls only), writes it in one transaction and then releases every
    caller of that batch; what arrives meanwhile waits for the next batch. No
    timer: a lone read is written at once, and batches grow with the load.
    """

    def __init__(self, database: Database, *, max_batch: int = 512, writers: int = 2) -> None:
        self._database = database
        self._max_batch = max_batch
        self._writers = writers
        self._queue: deque[_Waiting] = deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """``writers`` batches may be in flight at once: while one waits for its commit's
        fsync, the next is written (chains are locked in patient order: no deadlock)."""
        if self._task is None:
            self._stopping = False
            self._tasks = [asyncio.create_task(self._run(), name=f"carnet-audit-writer-{i}")
                           for i in range(self._writers)]
            self._task = self._tasks[0]

    async def stop(self) -> None:
        """Write what is queued, then end the background tasks."""
        tasks, self._tasks, self._task = self._tasks, [], None
        if not tasks:
            return
        self._stopping = True
        self._wakeup.set()
        await asyncio.gather(*tasks)

    async def record(self, records: Sequence[AuditRecord]) -> None:
        """Returns once ``records`` are durable; ``AuditUnavailable`` if they cannot be."""
        if not records:
            return
        if self._task is None or self._task.done() or self._stopping:
            raise AuditUnavailable("the audit writer is not running")
        waiting = _Waiting([audit_entry(r) for r in records],
                           asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        self._wakeup.set()
        await waiting.done

    def _take(self) -> list[_Waiting]:
        batch = [self._queue.popleft()]
        size = len(batch[0].entries)
        while self._queue and size + len(self._queue[0].entries) <= self._max_batch:
            size += len(self._queue[0].entries)
            batch.append(self._queue.popleft())
        return batch

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if not self._queue:  # another writer took it
                    continue
                await self._write(self._take())
        finally:  # cancelled or stopped: nobody may wait forever
            while self._queue:
                _fail(self._queue.popleft(), None)

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            async with self._database.write() as conn:
                await audit_log.append(conn, [e for waiting in batch for e in waiting.entries])
        except Exception as exc:
            log.error("audit entries could not be written: %s", exc)
            for waiting in batch:
                _fail(waiting, exc)
        except BaseException:
            for waiting in batch:
                _fail(waiting, None)
            raise
        else:
            for waiting in batch:
                if not waiting.done.done():
                    waiting.done.set_result(None)


def _fail(waiting: _Waiting, cause: BaseException | None) -> None:
    if not waiting.done.done():
        error = AuditUnavailable("the audit trail is unavailable; retry later")
        error.__cause__ = cause
        waiting.done.set_exception(error)


# -- reading the trail -----------------------------------------------------------

_IGNORED = frozenset({"patient", "_format", "_pretty"})
AGENT_KIND = "agent-kind"  # Carnet's own: professional, patient, app, system (and :not)
_KNOWN = frozenset({"date", "_count", "_cursor", "_total", AGENT_KIND, f"{AGENT_KIND}:not",
                    *_IGNORED})


def _agent_filter(pairs: list[tuple[str, str]]) -> audit_log.AgentFilter | None:
    """``agent-kind=professional,app`` or ``agent-kind:not=patient`` (one of the two)."""
    given = [(name, value) for name, value in pairs if name.startswith(AGENT_KIND)]
    if not given:
        return None
    if len(given) > 1:
        raise BadRequest(f"give {AGENT_KIND} once", expression=AGENT_KIND)
    name, value = given[0]
    # As any token search: a code that names no kind matches nothing.
    return audit_log.AgentFilter(tuple(f"{_AGENT_PREFIXES[kind]}:" for kind in value.split(",")
                                       if kind in _AGENT_PREFIXES),
                                 exclude=name.endswith(":not"))


def _date_bounds(values: list[str]) -> tuple[int | None, int | None]:
    """``date`` (any number of times, all must hold) as a half-open [since, until)."""
    since: int | None = None
    until: int | None = None
    for raw in values:
        prefix, text = (raw[:2], raw[2:]) if raw[:2].isalpha() else ("eq", raw)
        if prefix not in ("eq", "ge", "gt", "le", "lt"):
            raise BadRequest(f"date: prefix {prefix!r} is not supported (eq, ge, gt, le, lt)",
                             expression="date")
        try:
            low, high = date_range(text)
        except ValueError as exc:
            raise BadRequest(f"date: {exc}", expression="date") from exc
        lower = {"eq": low, "ge": low, "gt": high}.get(prefix)
        upper = {"eq": high, "le": high, "lt": low}.get(prefix)
        if lower is not None:
            since = lower if since is None else max(since, lower)
        if upper is not None:
            until = upper if until is None else min(until, upper)
    return since, until


async def audit_search(conn: AsyncConnection, patient_id: str, pairs: list[tuple[str, str]], *,
                       base: str, default_count: int, max_count: int) -> bytes:
    """A searchset of the patient's AuditEvents, newest first (``patient`` is the caller's)."""
    # Here, not at the top: service.access imports this module, and bundles imports
    # service.fhir.interactions, which imports service.access.
    from service.fhir.bundles import bundle, entry

    for name, _ in pairs:
        if name not in _KNOWN:
            raise BadRequest(f"unknown or unsupported AuditEvent search parameter {name!r} "
                             f"(date, {AGENT_KIND}, _count, _cursor, _total)",
                             expression=name)
    params = dict(pairs)
    count = params.get("_count", str(default_count))
    if not is_plain_number(count):
        raise BadRequest("_count must be a non-negative integer", expression="_count")
    total_mode = params.get("_total", "accurate")
    if total_mode not in ("none", "estimate", "accurate"):
        raise BadRequest("_total must be none, estimate or accurate", expression="_total")
    since, until = _date_bounds([v for k, v in pairs if k == "date"])
    agents = _agent_filter(pairs)
    before: int | None = None
    if "_cursor" in params:
        try:
            values, _ = decode_cursor(params["_cursor"], 1)
        except InvalidSearch as exc:
            raise BadRequest(str(exc), expression="_cursor") from exc
        if not isinstance(values[0], int):
            raise BadRequest("the paging cursor is not valid", expression="_cursor")
        before = values[0]

    limit = min(int(count), max_count)
    rows = await audit_log.patient_entries(conn, patient_id, since=since, until=until,
                                           agents=agents, before_pk=before, limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    total: int | None = None
    if total_mode != "none":
        # A first page that holds every match is its own count: no second query.
        total = (len(rows) if before is None and not has_more else
                 await audit_log.count_patient_entries(conn, patient_id, since=since,
                                                       until=until, agents=agents))
    entries = [entry(f"{base}/AuditEvent/{row.event_id}", row.content,
                     search={"mode": "match"}) for row in rows]
    path = f"{base}/AuditEvent"
    plain = [(k, v) for k, v in pairs if k != "_cursor"]
    links = [("self", path + (f"?{urlencode(pairs)}" if pairs else ""))]
    if has_more and rows:
        cursor = encode_cursor([rows[-1].pk], False)
        links.append(("next", f"{path}?{urlencode([*plain, ('_cursor', cursor)])}"))
    return bundle("searchset", entries, total=total, links=links)


async def read_audit_event(conn: AsyncConnection, event_id: str) -> tuple[str, bytes] | None:
    """(patient_id, stored AuditEvent) for ``GET /AuditEvent/{id}``; the caller checks access."""
    return await audit_log.entry_by_event_id(conn, event_id)
