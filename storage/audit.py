"""The tamper-evident audit trail: one hash chain of AuditEvents per patient.

Audit volume equals read volume, so entries do not go through the generic
``resource`` table (and its search indexes): they are appended to
``audit_log`` and served from there. Each entry's ``hash`` covers the
previous entry's hash, its place in the patient's chain and the exact bytes
served, so editing, removing or reordering entries breaks the chain;
``audit_chain`` keeps each patient's newest hash, so that cutting off the
newest entries shows too. The chain cannot detect someone who rewrites the
whole tail *and* the head: anchoring heads elsewhere is the answer to that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    bindparam,
    false,
    func,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.tables import BigKey, ResourceId, table_of
from storage.upsert import conflict_insert

GENESIS = "0" * 64


class AuditLogRow(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("patient_id", "seq", name="uq_audit_patient_seq"),
        UniqueConstraint("event_id", name="uq_audit_event"),
        Index("ix_audit_patient_pk", "patient_id", "pk"),
    )

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    event_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    patient_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    recorded: int = Field(sa_column=Column(BigInteger, nullable=False))
    agent: str = Field(sa_column=Column(String(256), nullable=False))
    outcome: str = Field(sa_column=Column(String(2), nullable=False))
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class AuditChainRow(SQLModel, table=True):
    __tablename__ = "audit_chain"

    patient_id: str = Field(sa_column=Column(ResourceId, primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    head: str = Field(sa_column=Column(String(64), nullable=False))


AUDIT_LOG = table_of(AuditLogRow)
AUDIT_CHAIN = table_of(AuditChainRow)


@dataclass(frozen=True)
class AuditEntry:
    """One AuditEvent to append; ``content`` is exactly what will be served."""

    event_id: str
    patient_id: str
    recorded: int  # epoch microseconds
    agent: str  # "idnat:...", "ins:...", "app:..."
    outcome: str
    content: bytes


class StoredEntry(NamedTuple):
    pk: int
    event_id: str
    content: bytes


@dataclass(frozen=True)
class BrokenLink:
    patient_id: str
    seq: int
    problem: str


@dataclass
class VerifyReport:
    entries: int = 0
    patients: int = 0
    problems: list[BrokenLink] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def link_hash(prev_hash: str, patient_id: str, seq: int, recorded: int, content: bytes) -> str:
    """The one definition of a link, shared by append and verify."""
    digest = hashlib.sha256(f"{prev_hash}\n{patient_id}\n{seq}\n{recorded}\n".encode())
    digest.update(content)
    return digest.hexdigest()


def _insert_missing_chains(conn: AsyncConnection, patient_ids: list[str]) -> Any:
    rows = [{"patient_id": p, "seq": 0, "head": GENESIS} for p in patient_ids]
    return conflict_insert(conn, AUDIT_CHAIN).values(rows).on_conflict_do_nothing(
        index_elements=["patient_id"])


_INSERT_ENTRIES = AUDIT_LOG.insert().returning(AUDIT_LOG.c.pk, sort_by_parameter_order=True)
_UPDATE_HEAD = (update(AUDIT_CHAIN).where(AUDIT_CHAIN.c.patient_id == bindparam("chain"))
                .values(seq=bindparam("new_seq"), head=bindparam("new_head")))


# PostgreSQL: two plain statements for a whole batch (SQLAlchemy compiling the multi-row
# statements cost ~5 ms per batch, which every audited read waited for). Locking by
# upsert, in patient order: an existing chain's row is locked and returned as it is, a
# missing one created.
_PG_LOCK_CHAINS = """
INSERT INTO audit_chain (patient_id, seq, head)
SELECT p, 0, $2 FROM unnest($1::varchar[]) AS p ORDER BY p
ON CONFLICT (patient_id) DO UPDATE SET seq = audit_chain.seq
RETURNING patient_id, seq, head
"""
_PG_APPEND = """
WITH new_entries AS (
    INSERT INTO audit_log (event_id, patient_id, seq, recorded, agent, outcome, content,
                           prev_hash, hash)
    SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::bigint[], $4::bigint[],
                         $5::varchar[], $6::varchar[], $7::bytea[], $8::varchar[],
                         $9::varchar[])
    RETURNING pk, event_id
), new_heads AS (
    UPDATE audit_chain SET seq = h.seq, head = h.head
    FROM unnest($10::varchar[], $11::bigint[], $12::varchar[]) AS h(patient_id, seq, head)
    WHERE audit_chain.patient_id = h.patient_id
)
SELECT pk, event_id FROM new_entries
"""


async def append(conn: AsyncConnection, entries: Sequence[AuditEntry]) -> list[int]:
    """Chain ``entries`` in the caller's transaction; their keys, in input order.

    Chains are locked in patient order, so that two batches never wait on each
    other crosswise (SQLite serialises writers anyway); then every entry is
    inserted and the heads moved.
    """
    if not entries:
        return []
    by_patient: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_patient.setdefault(e.patient_id, []).append(i)
    patients = sorted(by_patient)
    fast = conn.dialect.name == "postgresql" and conn.dialect.driver == "asyncpg"
    chains: list[tuple[str, int, str]]
    if fast:  # plain SQL through the transaction's cursor: no statement compiled
        locked: Sequence[Any] = (await conn.exec_driver_sql(_PG_LOCK_CHAINS,
                                                            (patients, GENESIS))).all()
        chains = sorted((r[0], r[1], r[2]) for r in locked)
    else:
        await conn.execute(_insert_missing_chains(conn, patients))
        chains = [(r[0], r[1], r[2]) for r in (await conn.execute(
            select(AUDIT_CHAIN.c.patient_id, AUDIT_CHAIN.c.seq, AUDIT_CHAIN.c.head)
            .where(AUDIT_CHAIN.c.patient_id.in_(patients))
            .order_by(AUDIT_CHAIN.c.patient_id).with_for_update())).all()]
    rows: list[dict[str, Any]] = []
    order: list[int] = []  # input index of each row
    heads: list[dict[str, Any]] = []
    for patient_id, seq, head in chains:
        for i in by_patient[patient_id]:
            e = entries[i]
            seq += 1
            linked = link_hash(head, patient_id, seq, e.recorded, e.content)
            rows.append({"event_id": e.event_id, "patient_id": patient_id, "seq": seq,
                         "recorded": e.recorded, "agent": e.agent, "outcome": e.outcome,
                         "content": e.content, "prev_hash": head, "hash": linked})
            order.append(i)
            head = linked
        heads.append({"chain": patient_id, "new_seq": seq, "new_head": head})
    if fast:
        columns = ("event_id", "patient_id", "seq", "recorded", "agent", "outcome", "content",
                   "prev_hash", "hash")
        inserted: Sequence[Any] = (await conn.exec_driver_sql(_PG_APPEND, (
            *([row[c] for row in rows] for c in columns), [h["chain"] for h in heads],
            [h["new_seq"] for h in heads], [h["new_head"] for h in heads]))).all()
        pk_of: dict[str, int] = {r[1]: r[0] for r in inserted}
        pks = [pk_of[row["event_id"]] for row in rows]
    else:
        pks = list((await conn.execute(_INSERT_ENTRIES, rows)).scalars().all())
        await conn.execute(_UPDATE_HEAD, heads)
    found = [0] * len(entries)
    for i, pk in zip(order, pks, strict=True):
        found[i] = pk
    return found


@dataclass(frozen=True)
class AgentFilter:
    """Entries whose agent key starts with one of ``prefixes`` (``ins:``, ``idnat:``...),
    or, with ``exclude``, with none of them."""

    prefixes: tuple[str, ...]
    exclude: bool = False


def _filters(patient_id: str, since: int | None, until: int | None,
             agents: AgentFilter | None = None) -> list[Any]:
    conditions: list[Any] = [AUDIT_LOG.c.patient_id == patient_id]
    if since is not None:
        conditions.append(AUDIT_LOG.c.recorded >= since)
    if until is not None:
        conditions.append(AUDIT_LOG.c.recorded < until)
    if agents is not None and agents.prefixes:
        matches = or_(*(AUDIT_LOG.c.agent.startswith(prefix, autoescape=True)
                        for prefix in agents.prefixes))
        conditions.append(not_(matches) if agents.exclude else matches)
    elif agents is not None and not agents.exclude:
        conditions.append(false())  # only unknown kinds were asked for
    return conditions


async def patient_entries(conn: AsyncConnection, patient_id: str, *, since: int | None = None,
                          until: int | None = None, agents: AgentFilter | None = None,
                          before_pk: int | None = None, limit: int) -> list[StoredEntry]:
    """A patient's entries recorded in [since, until), newest first, below ``before_pk``."""
    conditions = _filters(patient_id, since, until, agents)
    if before_pk is not None:
        conditions.append(AUDIT_LOG.c.pk < before_pk)
    rows = (await conn.execute(
        select(AUDIT_LOG.c.pk, AUDIT_LOG.c.event_id, AUDIT_LOG.c.content).where(*conditions)
        .order_by(AUDIT_LOG.c.pk.desc()).limit(limit))).all()
    return [StoredEntry(*row) for row in rows]


async def count_patient_entries(conn: AsyncConnection, patient_id: str, *,
                                since: int | None = None, until: int | None = None,
                                agents: AgentFilter | None = None) -> int:
    total: int = (await conn.execute(select(func.count()).select_from(AUDIT_LOG).where(
        *_filters(patient_id, since, until, agents)))).scalar_one()
    return total


async def entry_by_pk(conn: AsyncConnection, pk: int) -> tuple[str, bytes] | None:
    """(patient_id, content)."""
    row = (await conn.execute(select(AUDIT_LOG.c.patient_id, AUDIT_LOG.c.content)
                              .where(AUDIT_LOG.c.pk == pk))).first()
    return (row[0], row[1]) if row else None


async def entry_by_event_id(conn: AsyncConnection, event_id: str) -> tuple[str, bytes] | None:
    """(patient_id, content) of the AuditEvent with this id."""
    row = (await conn.execute(select(AUDIT_LOG.c.patient_id, AUDIT_LOG.c.content)
                              .where(AUDIT_LOG.c.event_id == event_id))).first()
    return (row[0], row[1]) if row else None


# -- verification ------------------------------------------------------------------

_CHAIN_PAGE = 500
_LOG_PAGE = 2000


@dataclass
class _Walk:
    """One patient's chain as read so far."""

    patient_id: str
    chain_seq: int | None  # the head's seq in audit_chain (None: no chain row)
    chain_head: str | None
    seq: int = 0
    prev: str = GENESIS
    broken: bool = False


async def verify_chains(conn: AsyncConnection) -> VerifyReport:
    """Recompute every chain; report the first broken link of each patient.

    Pages through ``audit_chain`` by patient and, for each page, through the
    entries of that range of patients in (patient, seq) order, so memory stays
    bounded. A page of heads is read before its entries: entries committed
    later can only extend a chain past its head, never make it look cut.
    """
    report = VerifyReport()
    after: str | None = None
    while True:
        query = select(AUDIT_CHAIN.c.patient_id, AUDIT_CHAIN.c.seq, AUDIT_CHAIN.c.head)
        if after is not None:
            query = query.where(AUDIT_CHAIN.c.patient_id > after)
        heads = (await conn.execute(query.order_by(AUDIT_CHAIN.c.patient_id)
                                    .limit(_CHAIN_PAGE))).all()
        last_page = len(heads) < _CHAIN_PAGE
        upto = None if last_page else heads[-1][0]
        await _verify_range(conn, report, {p: (s, h) for p, s, h in heads}, after, upto)
        if last_page:
            return report
        after = upto


async def _verify_range(conn: AsyncConnection, report: VerifyReport,
                        heads: dict[str, tuple[int, str]], after: str | None,
                        upto: str | None) -> None:
    """The entries of patients in (after, upto], checked against these heads."""
    bounds: list[Any] = []
    if after is not None:
        bounds.append(AUDIT_LOG.c.patient_id > after)
    if upto is not None:
        bounds.append(AUDIT_LOG.c.patient_id <= upto)
    seen: set[str] = set()
    walk: _Walk | None = None
    cursor: tuple[str, int] | None = None
    while True:
        conditions = list(bounds)
        if cursor is not None:
            conditions.append(tuple_(AUDIT_LOG.c.patient_id, AUDIT_LOG.c.seq) > cursor)
        rows = (await conn.execute(
            select(AUDIT_LOG.c.patient_id, AUDIT_LOG.c.seq, AUDIT_LOG.c.recorded,
                   AUDIT_LOG.c.content, AUDIT_LOG.c.prev_hash, AUDIT_LOG.c.hash)
            .where(*conditions).order_by(AUDIT_LOG.c.patient_id, AUDIT_LOG.c.seq)
            .limit(_LOG_PAGE))).all()
        for patient_id, seq, recorded, content, prev_hash, stored in rows:
            if walk is None or walk.patient_id != patient_id:
                if walk is not None:
                    _finish(report, walk)
                chain = heads.get(patient_id)
                if chain is None:  # entries without a head: or a chain begun since?
                    chain = await _current_head(conn, patient_id)
                walk = (_Walk(patient_id, chain[0], chain[1]) if chain is not None
                        else _Walk(patient_id, None, None))
                seen.add(patient_id)
                report.patients += 1
                if chain is None:
                    _broken(report, walk, seq, "no audit_chain row for these entries")
            report.entries += 1
            if not walk.broken:
                _check_link(report, walk, seq, recorded, content, prev_hash, stored)
        if len(rows) < _LOG_PAGE:
            break
        cursor = (rows[-1][0], rows[-1][1])
    if walk is not None:
        _finish(report, walk)
    for patient_id in sorted(heads.keys() - seen):
        chain_seq, chain_head = heads[patient_id]
        report.patients += 1
        if chain_seq > 0:
            _broken(report, _Walk(patient_id, chain_seq, chain_head), 1,
                    f"truncated: audit_chain is at seq {chain_seq} but no entry is left")


async def _current_head(conn: AsyncConnection, patient_id: str) -> tuple[int, str] | None:
    row = (await conn.execute(select(AUDIT_CHAIN.c.seq, AUDIT_CHAIN.c.head)
                              .where(AUDIT_CHAIN.c.patient_id == patient_id))).first()
    return (row[0], row[1]) if row else None


def _broken(report: VerifyReport, walk: _Walk, seq: int, problem: str) -> None:
    walk.broken = True
    report.problems.append(BrokenLink(walk.patient_id, seq, problem))


def _check_link(report: VerifyReport, walk: _Walk, seq: int, recorded: int, content: bytes,
                prev_hash: str, stored: str) -> None:
    expected = walk.seq + 1
    if seq != expected:
        _broken(report, walk, expected, f"seq gap: entry {expected} is missing (next is {seq})")
        return
    if prev_hash != walk.prev:
        _broken(report, walk, seq, "prev_hash mismatch: does not match the previous entry's hash")
        return
    if link_hash(prev_hash, walk.patient_id, seq, recorded, content) != stored:
        _broken(report, walk, seq, "hash mismatch: the entry was altered")
        return
    if seq == walk.chain_seq and stored != walk.chain_head:
        _broken(report, walk, seq, "head mismatch: audit_chain's head is not this entry's hash")
        return
    walk.seq, walk.prev = seq, stored


def _finish(report: VerifyReport, walk: _Walk) -> None:
    """After the patient's last entry: the chain must reach its recorded head."""
    if not walk.broken and walk.chain_seq is not None and walk.seq < walk.chain_seq:
        _broken(report, walk, walk.seq + 1,
                f"truncated: audit_chain is at seq {walk.chain_seq} but the entries end at "
                f"seq {walk.seq}")
