"""Where the service asks the access-policy decision point, audits, and answers a denial.

One ``Access`` per request: the caller, the access mode they declared, and the
AuditEvents their request produced. Every check on patient data goes through
``Access.check`` (one resource) or ``Access.viewer`` (a search, in SQL), and
leaves an audit record; ``audited`` writes those records before the response
goes out, through the group-commit writer for reads, or inside the write's
own transaction (``Access.transaction``).

A hidden resource answers exactly as a missing one (``not_known``); a denial
of the whole record answers 403 with the rule's name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

import orjson
from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import (
    RECORD_LEVEL,
    SUBSCRIPTION,
    AccessContext,
    AccessMode,
    Deny,
    Interaction,
    Permit,
    Target,
    Viewer,
    actor_key,
    attends,
    decide,
    scope_decision,
    with_parties,
)
from auth.principal import App, Patient, Principal, Professional
from auth.scopes import ScopeSet
from fhir_profiles.subscriptions import owner_of
from service.audit import AgentKind, AuditRecord, AuditUnavailable, AuditWriter, record_in
from service.errors import BadRequest, FhirError, Forbidden, NotFound, ServiceUnavailable
from service.fhir.http import now_micros
from service.notify import events
from storage import access as records
from storage.db import Database
from storage.resources import AccessFacts
from storage.search.criteria import Criterion, SearchQuery
from storage.search.parameters import SUPPORTED_TYPES, params_for

# Carnet's own work (seeding the demo data) runs as this app; no token ever maps to it.
INTERNAL = App(subject="carnet-internal", scopes=ScopeSet.parse("system/*.cruds"),
               token_id="internal", client_id="carnet-internal")
_ACTION_CODES = {Interaction.READ: "R", Interaction.VREAD: "R",
                 Interaction.HISTORY_INSTANCE: "R", Interaction.HISTORY_TYPE: "E",
                 Interaction.SEARCH: "E", Interaction.CREATE: "C", Interaction.UPDATE: "U",
                 Interaction.DELETE: "D", Interaction.INS_LOOKUP: "E"}
_REASON_LIMIT = 1000


def not_known(resource_type: str, resource_id: str) -> NotFound:
    """The one answer for a resource that is missing or that the caller may not see."""
    return unknown(f"{resource_type}/{resource_id}")


def unknown(reference: str) -> NotFound:
    """``not_known`` for a reference already written out (``Binary/<id>``)."""
    return NotFound(f"{reference} is not known")



def authorize(principal: Principal, interaction: Interaction, resource_type: str) -> None:
    """The SMART-scope gate, before anything is read."""
    decision = scope_decision(principal, interaction, resource_type)
    if isinstance(decision, Deny):
        raise Forbidden.denied(decision.rule, decision.reason)


def authorize_search(principal: Principal, query: SearchQuery) -> None:
    """A search reads its own type and every type it chains into or includes."""
    for resource_type in sorted({query.resource_type, *_reached_types(query)}):
        authorize(principal, Interaction.SEARCH, resource_type)


def _reached_types(query: SearchQuery) -> Iterable[str]:
    yield from _chained_types(query.criteria)
    for spec in query.includes:
        if spec.reverse:
            yield spec.source_type
        elif spec.target_type:
            yield spec.target_type
        else:
            targets = params_for(spec.source_type)[spec.param].targets or SUPPORTED_TYPES
            yield from (t for t in targets if t in SUPPORTED_TYPES)


def _chained_types(criteria: Iterable[Criterion]) -> Iterable[str]:
    for criterion in criteria:
        if criterion.either is not None:
            yield from _chained_types(criterion.either)
        if criterion.chain is not None:
            targets, inner = criterion.chain
            yield from targets.split(",")
            yield from _chained_types(inner)


@dataclass(frozen=True)
class EmergencyRequest:
    mode: AccessMode
    reason: str


def emergency_request(request: Request) -> EmergencyRequest | None:
    """``X-Access-Mode`` (TRE_R248) and the mandatory ``X-Access-Reason`` (percent-encoded
    UTF-8 when not ASCII); 400 if malformed."""
    mode_text = request.headers.get("x-access-mode")
    if mode_text is None or mode_text == AccessMode.NORMAL.value:
        return None
    try:
        mode = AccessMode(mode_text)
    except ValueError:
        raise BadRequest(f"X-Access-Mode must be one of {', '.join(m.value for m in AccessMode)}",
                         expression="X-Access-Mode") from None
    # HTTP headers are ASCII: a reason in French arrives percent-encoded (UTF-8).
    reason = unquote(request.headers.get("x-access-reason") or "").strip()
    if not reason:
        raise BadRequest("[emergency-reason-required] an emergency access states its reason in "
                         "X-Access-Reason", expression="X-Access-Reason")
    return EmergencyRequest(mode, reason[:_REASON_LIMIT])


class Access:
    """The policy, the audit trail and the access mode of one request."""

    def __init__(self, principal: Principal, database: Database | None = None,
                 writer: AuditWriter | None = None, *, emergency: EmergencyRequest | None = None,
                 emergency_seconds: int = 7200, operators: Iterable[str] = ()) -> None:
        if emergency is not None and not isinstance(principal, Professional):
            raise BadRequest("emergency access (X-Access-Mode) is for professionals",
                             expression="X-Access-Mode")
        self.principal = principal
        self.internal = principal is INTERNAL
        self.operator = (isinstance(principal, App) and not self.internal
                         and principal.client_id in set(operators))
        self.emergency = emergency
        self._database = database
        self._writer = writer
        self._emergency_seconds = emergency_seconds
        self._own_record: str | None = None
        self._own_record_known = False
        self.records: list[AuditRecord] = []
        # Each record's state, read once per request (a Bundle touches one record many times).
        self._states: dict[str, records.RecordState] = {}
        self._read_along: dict[str, records.RecordState] = {}
        self._written = 0

    @classmethod
    def of_carnet(cls) -> Access:
        """Carnet's own work: no policy applies, nothing is audited."""
        return cls(INTERNAL)

    @property
    def is_patient(self) -> bool:
        return isinstance(self.principal, Patient)

    @property
    def mode(self) -> AccessMode:
        return self.emergency.mode if self.emergency else AccessMode.NORMAL

    # ------------------------------------------------------------------- the policy

    async def own_record(self, conn: AsyncConnection) -> str | None:
        """A patient's own record id (the Patient resource carrying their INS)."""
        if not self._own_record_known and isinstance(self.principal, Patient):
            self._own_record = await records.record_of_identifier(
                conn, self.principal.ins_system, self.principal.ins)
            self._own_record_known = True
        return self._own_record

    async def context(self, conn: AsyncConnection, patient_id: str) -> AccessContext:
        if self.internal:
            return AccessContext(internal=True)
        if self.operator:
            return AccessContext(operator=True)
        own = await self.own_record(conn)
        if isinstance(self.principal, Patient):
            return AccessContext(own_record=own)
        state = self._states.get(patient_id)
        if state is None:
            now = now_micros()
            state = self._read_along.pop(patient_id, None) or await records.record_state(
                conn, patient_id, actor_key(self.principal), now)
            if self.emergency is not None and state.emergency is None:
                state = await self._open_emergency(patient_id, state, now)
            self._states[patient_id] = state
        return AccessContext(own_record=own, record=state, mode=self.mode)

    def state_wanted(self) -> tuple[str, int] | None:
        """(actor key, now) if deciding for this caller needs the record's state: a read by
        id then fetches it in the same statement (``read_along``)."""
        if self.internal or self.operator or isinstance(self.principal, Patient):
            return None
        return actor_key(self.principal), now_micros()

    def read_along(self, patient_id: str | None, state: records.RecordState | None) -> None:
        """The record's state, read with a resource: ``context`` uses it instead of asking."""
        if patient_id is not None and state is not None and patient_id not in self._states:
            self._read_along[patient_id] = state

    def forget(self, patient_id: str) -> None:
        """The record's choices changed in this request: read them again."""
        self._states.pop(patient_id, None)
        self._read_along.pop(patient_id, None)

    async def open_emergency_before(self, patient_id: str) -> None:
        """Open the emergency access before a search reads: its SQL must see the grant
        (a read transaction that started earlier would not, on SQLite)."""
        if self.emergency is None or self._database is None:
            return
        async with self._database.read() as conn:
            await self.context(conn, patient_id)

    async def _open_emergency(self, patient_id: str, state: records.RecordState,
                              now: int) -> records.RecordState:
        """Open a time-limited emergency access, unless the record refuses it anyway."""
        assert self.emergency is not None and self._database is not None
        choices = state.choices
        if (choices.closed or choices.emergency_opposed
                or records.Relation.BLOCKED in state.relations):
            return state  # decide() names the rule that refuses it
        expires = now + self._emergency_seconds * 1_000_000
        actor = actor_key(self.principal)
        async with self._database.write() as conn:
            await records.open_emergency_access(conn, patient_id, actor,
                                                mode=self.emergency.mode.value,
                                                reason=self.emergency.reason, now=now,
                                                expires_at=expires)
            # No health data and no reason text in the event: the notification says who and when.
            await events.emergency_access_opened(conn, patient_id, actor=actor,
                                                 mode=self.emergency.mode.value,
                                                 expires_at=expires, now=now)
        return replace(state, emergency=records.Emergency(self.emergency.mode.value,
                                                          self.emergency.reason, expires))

    async def check(self, conn: AsyncConnection, action: Interaction, resource_type: str,
                    resource_id: str, facts: AccessFacts, content: bytes | None = None, *,
                    entity: str | None = None) -> Permit:
        """Permit, or raise: 404 for a hidden resource, 403 naming the rule otherwise.

        ``entity`` is what the caller asked for when another resource's rules govern it
        (a Binary's bytes follow their DocumentReference).
        """
        asked = entity or f"{resource_type}/{resource_id}"
        authored = False
        labels = facts.labels
        if isinstance(self.principal, Professional) and content is not None:
            if labels.masked:
                authored = is_author(self.principal, orjson.loads(content))
            labels = with_parties(labels, content)  # a stored row keeps no message parties
        elif resource_type == SUBSCRIPTION and content is not None:
            authored = owner_of(orjson.loads(content)) == actor_key(self.principal)
        target = Target(resource_type, facts.patient_id, labels, authored)
        context = (await self.context(conn, facts.patient_id)
                   if facts.patient_id is not None
                   else AccessContext(internal=self.internal, operator=self.operator))
        decision = decide(self.principal, action, target, context)
        if facts.patient_id is not None and not self.internal:
            self.note(facts.patient_id, action, decision, (asked,), context=context)
        if isinstance(decision, Deny):
            if decision.hidden:
                raise unknown(asked)
            raise Forbidden.denied(decision.rule, decision.reason)
        return decision

    async def check_record(self, conn: AsyncConnection, action: Interaction, resource_type: str,
                           patient_id: str, query: str | None = None) -> Viewer:
        """A search aimed at one record: 403 naming the rule if it is closed to the caller;
        else who views it (a professional's view then names the record decide opened)."""
        context = await self.context(conn, patient_id)
        decision = decide(self.principal, action, Target(resource_type, patient_id,
                                                         records.AccessLabels(RECORD_LEVEL)),
                          context)
        if isinstance(decision, Deny) and not decision.hidden:
            self.note(patient_id, action, decision, (), query=query, context=context)
            raise Forbidden.denied(decision.rule, decision.reason)
        viewer = await self.viewer(conn)
        if isinstance(decision, Permit) and isinstance(self.principal, Professional):
            viewer = replace(viewer, open_record=patient_id,
                             attending=attends(self.principal, context.record))
        return viewer

    async def is_attending(self, conn: AsyncConnection, patient_id: str | None) -> bool:
        """Whether the caller is the patient's declared attending doctor."""
        if patient_id is None or not isinstance(self.principal, Professional):
            return False
        return attends(self.principal, (await self.context(conn, patient_id)).record)

    async def viewer(self, conn: AsyncConnection) -> Viewer:
        return Viewer(self.principal, await self.own_record(conn), now_micros(), self.internal,
                      self.operator)

    # ------------------------------------------------------------------ the audit

    def note(self, patient_id: str, action: Interaction, decision: Permit | Deny,
             entities: tuple[str, ...], *, query: str | None = None,
             context: AccessContext | None = None) -> None:
        """Remember one access to one record for the audit trail."""
        if self.internal:
            return
        mode, reason = self.mode.value, self.emergency.reason if self.emergency else None
        live = context.record.emergency if context and context.record else None
        if isinstance(decision, Permit) and decision.emergency and live is not None:
            mode, reason = live.mode, live.reason
        kind, agent_id = _agent(self.principal)
        denied = isinstance(decision, Deny)
        self.records.append(AuditRecord(
            patient_id=patient_id, interaction=action.value, action=_ACTION_CODES[action],
            outcome="4" if denied else "0", agent_kind=kind, agent_id=agent_id,
            entities=entities, query=query, access_mode=mode, reason=reason,
            rule=decision.rule if isinstance(decision, Deny) else None))

    def note_results(self, action: Interaction, returned: Iterable[tuple[str | None, str]],
                     query: str, decided_for: str | None = None) -> None:
        """A search or history: one record per patient whose data it returned."""
        by_patient: dict[str, list[str]] = {}
        for patient_id, reference in returned:
            if patient_id is not None:
                by_patient.setdefault(patient_id, []).append(reference)
        if decided_for is not None:
            by_patient.setdefault(decided_for, [])
        for patient_id, references in sorted(by_patient.items()):
            self.note(patient_id, action, Permit(), tuple(references), query=query)

    def _pending(self) -> list[AuditRecord]:
        return self.records[self._written:]

    def failed_since(self, start: int, status: int) -> None:
        """What did not happen is not audited as a success."""
        outcome = "8" if status >= 500 else "4"
        start = max(start, self._written)
        self.records[start:] = [r if r.outcome != "0" else replace(r, outcome=outcome)
                                for r in self.records[start:]]

    async def flush(self) -> None:
        """Make the pending audit records durable (group commit); 503 if they cannot be."""
        pending = self._pending()
        if not pending:
            return
        self._written = len(self.records)
        try:
            if self._writer is not None:
                await self._writer.record(pending)
            elif self._database is not None:
                async with self._database.write() as conn:
                    await record_in(conn, pending)
        except (AuditUnavailable, OSError, SQLAlchemyError) as exc:
            raise ServiceUnavailable("the access could not be recorded in the audit trail; "
                                     "try again") from exc

    @asynccontextmanager
    async def transaction(self, database: Database) -> AsyncIterator[AsyncConnection]:
        """A write transaction that commits the request's audit records with its data."""
        async with database.write() as conn:
            yield conn
            pending = self._pending()
            if pending:
                await record_in(conn, pending)
            written = len(self.records)
        self._written = written




def _agent(principal: Principal) -> tuple[AgentKind, str]:
    if isinstance(principal, Professional):
        return "professional", principal.idnat
    if isinstance(principal, Patient):
        return "patient", principal.ins
    return "app", principal.client_id or principal.subject


@asynccontextmanager
async def audited(access: Access) -> AsyncIterator[Access]:
    """Write the request's audit records before it answers, whatever the answer."""
    try:
        yield access
    except FhirError as exc:
        access.failed_since(0, exc.status)
        await access.flush()
        raise
    except Exception:
        access.failed_since(0, 500)
        await access.flush()
        raise
    await access.flush()


def is_author(principal: Principal, document: dict[str, Any]) -> bool:
    """A professional named among the document's contained authors (RPPS or idNat_PS)."""
    if not isinstance(principal, Professional):
        return False
    wanted = {principal.idnat} | ({principal.rpps} if principal.rpps else set())
    authors = {a.get("reference") for a in document.get("author") or [] if isinstance(a, dict)}
    for contained in document.get("contained") or []:
        if not isinstance(contained, dict) or f"#{contained.get('id')}" not in authors:
            continue
        people = [contained] + [c for c in document.get("contained") or []
                                if isinstance(c, dict) and f"#{c.get('id')}" ==
                                (contained.get("practitioner") or {}).get("reference")]
        for person in people:
            for identifier in person.get("identifier") or []:
                if isinstance(identifier, dict) and identifier.get("value") in wanted:
                    return True
    return False
