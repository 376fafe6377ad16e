"""The notification outbox: events written with what causes them, delivered at least once.

- ``outbox_event``: one row per event (a document filed, a message sent, an emergency
  access), written in the transaction that causes it, so that an event exists if and
  only if its cause was committed. ``fanned_out`` says whether the dispatcher has
  turned it into deliveries yet.
- ``outbox_delivery``: one row per event and channel target (the patient's inbox,
  their e-mail, one app's Subscription). The unique key makes fanning out idempotent;
  a dispatcher *leases* a delivery before working on it (``lease_until``), so that two
  dispatchers never work on the same one, and a dispatcher killed mid-flight leaves a
  lease that expires and is taken again.
- ``outbox_attempt``: every try, with its error, for operators.

Rows are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
serialises writers (``BEGIN IMMEDIATE``), which gives the same exclusivity.
No health data is stored here: payloads carry ids, never titles or contents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.tables import BigKey, ResourceId, table_of
from storage.upsert import conflict_insert

NOTIFY_CHANNEL = "carnet_outbox"  # PostgreSQL: NOTIFY at each event's commit


class Channel(StrEnum):
    INBOX = "inbox"      # a Communication (category notification) in the patient's inbox
    EMAIL = "email"      # a fixed text, without health data, to the patient's address
    WEBHOOK = "webhook"  # a subscription-notification Bundle POSTed to an app's endpoint


class Status(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # gave up after the last allowed attempt


class OutboxEventRow(SQLModel, table=True):
    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_created", "created_at"),
                      Index("ix_outbox_fan_out", "fanned_out", "pk"),
                      Index("ix_outbox_patient", "patient_id", "pk"))

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    topic: str = Field(sa_column=Column(String(64), nullable=False))
    patient_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    fanned_out: bool = Field(default=False, sa_column=Column(Boolean, nullable=False,
                                                             server_default="0"))


class OutboxDeliveryRow(SQLModel, table=True):
    __tablename__ = "outbox_delivery"
    __table_args__ = (UniqueConstraint("event_pk", "channel", "target",
                                       name="uq_delivery_target"),
                      Index("ix_delivery_due", "status", "next_attempt_at"))

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    event_pk: int = Field(sa_column=Column(BigKey, nullable=False))
    channel: str = Field(sa_column=Column(String(16), nullable=False))
    target: str = Field(sa_column=Column(String(128), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    next_attempt_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    lease_until: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_error: str | None = Field(default=None, sa_column=Column(String(512), nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    done_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class OutboxAttemptRow(SQLModel, table=True):
    __tablename__ = "outbox_attempt"
    __table_args__ = (Index("ix_attempt_delivery", "delivery_pk"),)

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    delivery_pk: int = Field(sa_column=Column(BigKey, nullable=False))
    attempted_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    ok: bool = Field(sa_column=Column(Boolean, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(String(512), nullable=True))


OUTBOX = table_of(OutboxEventRow)
DELIVERIES = table_of(OutboxDeliveryRow)
ATTEMPTS = table_of(OutboxAttemptRow)


@dataclass(frozen=True)
class Event:
    pk: int
    topic: str
    patient_id: str
    payload: dict[str, Any]
    created_at: int


@dataclass(frozen=True)
class Delivery:
    pk: int
    channel: Channel
    target: str
    attempts: int  # before this one
    event: Event


def _event(row: Any) -> Event:
    return Event(row.pk, row.topic, row.patient_id, orjson.loads(row.payload), row.created_at)


async def add_event(conn: AsyncConnection, topic: str, patient_id: str,
                    payload: dict[str, Any], now: int) -> int:
    """In the caller's transaction: the event exists if and only if its cause commits."""
    (pk,) = await add_events(conn, [(topic, patient_id, payload)], now)
    return pk


async def add_events(conn: AsyncConnection, events: Sequence[tuple[str, str, dict[str, Any]]],
                     now: int) -> list[int]:
    """(topic, patient id, payload) events in one statement and one wake-up (a Bundle of
    ten documents: two round trips, not twenty); their ids in the order given."""
    if not events:
        return []
    rows = [{"topic": topic, "patient_id": patient_id, "payload": orjson.dumps(payload),
             "created_at": now, "fanned_out": False} for topic, patient_id, payload in events]
    pks = list((await conn.execute(
        insert(OUTBOX).returning(OUTBOX.c.pk, sort_by_parameter_order=True), rows)).scalars())
    if conn.dialect.name == "postgresql":  # delivered at commit, not at all on rollback
        await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
    return pks


def _skip_locked(conn: AsyncConnection, stmt: Any) -> Any:
    return stmt.with_for_update(skip_locked=True) if conn.dialect.name == "postgresql" else stmt


async def events_to_fan_out(conn: AsyncConnection, limit: int) -> list[Event]:
    """The oldest events not yet fanned out, locked for this transaction (others skip them)."""
    stmt = (select(OUTBOX).where(OUTBOX.c.fanned_out == False)  # noqa: E712
            .order_by(OUTBOX.c.pk).limit(limit))
    return [_event(r) for r in (await conn.execute(_skip_locked(conn, stmt))).all()]


async def fan_out(conn: AsyncConnection, event_pk: int,
                  targets: Iterable[tuple[Channel, str]], now: int) -> None:
    """Add the event's deliveries (again: nothing new) and mark it fanned out."""
    rows = [{"event_pk": event_pk, "channel": channel.value, "target": target,
             "status": Status.PENDING.value, "attempts": 0, "next_attempt_at": now,
             "lease_until": 0, "created_at": now} for channel, target in targets]
    if rows:
        await conn.execute(conflict_insert(conn, DELIVERIES).on_conflict_do_nothing(
            index_elements=["event_pk", "channel", "target"]), rows)
    await conn.execute(update(OUTBOX).where(OUTBOX.c.pk == event_pk).values(fanned_out=True))


async def lease_due(conn: AsyncConnection, now: int, lease_micros: int,
                    limit: int) -> list[Delivery]:
    """Pending deliveries whose time has come and whose lease (if any) ran out, leased to
    the caller until ``now + lease_micros``. Commit at once: the lease is the claim."""
    due = (select(DELIVERIES.c.pk, DELIVERIES.c.channel, DELIVERIES.c.target,
                  DELIVERIES.c.attempts, DELIVERIES.c.event_pk)
           .where(DELIVERIES.c.status == Status.PENDING.value,
                  DELIVERIES.c.next_attempt_at <= now, DELIVERIES.c.lease_until <= now)
           .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.pk).limit(limit))
    rows = (await conn.execute(_skip_locked(conn, due))).all()
    if not rows:
        return []
    await conn.execute(update(DELIVERIES).where(DELIVERIES.c.pk.in_([r.pk for r in rows]))
                       .values(lease_until=now + lease_micros))
    events = {r.pk: _event(r) for r in (await conn.execute(
        select(OUTBOX).where(OUTBOX.c.pk.in_({r.event_pk for r in rows})))).all()}
    return [Delivery(r.pk, Channel(r.channel), r.target, r.attempts, events[r.event_pk])
            for r in rows]


async def record_attempt(conn: AsyncConnection, delivery: Delivery, now: int, *,
                         error: str | None, retry_at: int | None) -> Status:
    """One try: done, retried at ``retry_at``, or failed for good (``retry_at`` None)."""
    attempts = delivery.attempts + 1
    status = (Status.DONE if error is None
              else Status.PENDING if retry_at is not None else Status.FAILED)
    values: dict[str, Any] = {"attempts": attempts, "status": status.value, "lease_until": 0,
                              "last_error": error[:512] if error else None}
    if status is Status.DONE:
        values["done_at"] = now
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    await conn.execute(update(DELIVERIES).where(DELIVERIES.c.pk == delivery.pk).values(**values))
    await conn.execute(insert(ATTEMPTS).values(delivery_pk=delivery.pk, attempted_at=now,
                                               ok=error is None,
                                               error=error[:512] if error else None))
    return status


@dataclass(frozen=True)
class DeliveryView:
    """A delivery as operators see it (``carnet outbox``)."""

    pk: int
    event_pk: int
    topic: str
    channel: str
    target: str
    status: str
    attempts: int
    next_attempt_at: int
    last_error: str | None


async def deliveries(conn: AsyncConnection, *, status: Status | None = None,
                     event_pk: int | None = None, limit: int = 100) -> list[DeliveryView]:
    conditions = []
    if status is not None:
        conditions.append(DELIVERIES.c.status == status.value)
    if event_pk is not None:
        conditions.append(DELIVERIES.c.event_pk == event_pk)
    rows = (await conn.execute(
        select(DELIVERIES.c.pk, DELIVERIES.c.event_pk, OUTBOX.c.topic, DELIVERIES.c.channel,
               DELIVERIES.c.target, DELIVERIES.c.status, DELIVERIES.c.attempts,
               DELIVERIES.c.next_attempt_at, DELIVERIES.c.last_error)
        .join(OUTBOX, OUTBOX.c.pk == DELIVERIES.c.event_pk).where(*conditions)
        .order_by(DELIVERIES.c.pk.desc()).limit(limit))).all()
    return [DeliveryView(*r) for r in rows]


async def backlog(conn: AsyncConnection) -> dict[str, int]:
    """Counts for operators and /metrics: events not fanned out, deliveries by status."""
    counts = {"events_waiting": (await conn.execute(
        select(func.count()).select_from(OUTBOX)
        .where(OUTBOX.c.fanned_out == False))).scalar_one()}  # noqa: E712
    for status, n in (await conn.execute(select(DELIVERIES.c.status, func.count())
                                         .group_by(DELIVERIES.c.status))).all():
        counts[f"deliveries_{status}"] = n
    return counts


@dataclass(frozen=True)
class Backlog:
    """What still waits, counted over the due-work indexes only (cheap at any size)."""

    events_waiting: int
    deliveries_pending: int
    deliveries_failed: int
    oldest_waiting_at: int | None  # created_at (epoch microseconds) of the oldest waiting work


async def waiting_work(conn: AsyncConnection) -> Backlog:
    waiting_events = (await conn.execute(
        select(func.count(), func.min(OUTBOX.c.created_at))
        .where(OUTBOX.c.fanned_out == False))).one()  # noqa: E712
    by_status: dict[str, int] = dict((await conn.execute(
        select(DELIVERIES.c.status, func.count())
        .where(DELIVERIES.c.status.in_([Status.PENDING, Status.FAILED]))
        .group_by(DELIVERIES.c.status))).all())
    oldest_pending = (await conn.execute(
        select(func.min(DELIVERIES.c.created_at))
        .where(DELIVERIES.c.status == Status.PENDING))).scalar_one()
    oldest = [t for t in (waiting_events[1], oldest_pending) if t is not None]
    return Backlog(waiting_events[0], by_status.get(Status.PENDING, 0),
                   by_status.get(Status.FAILED, 0), min(oldest) if oldest else None)


async def attempts_of(conn: AsyncConnection, delivery_pk: int) -> list[tuple[int, bool,
                                                                             str | None]]:
    rows = (await conn.execute(select(ATTEMPTS.c.attempted_at, ATTEMPTS.c.ok, ATTEMPTS.c.error)
                               .where(ATTEMPTS.c.delivery_pk == delivery_pk)
                               .order_by(ATTEMPTS.c.pk))).all()
    return [(r[0], bool(r[1]), r[2]) for r in rows]


async def patient_events(conn: AsyncConnection, patient_id: str, *, after_pk: int = 0,
                         topics: Iterable[str] | None = None,
                         limit: int = 100) -> list[Event]:
    """A record's events after ``after_pk``, oldest first (the portal's live stream)."""
    conditions = [OUTBOX.c.patient_id == patient_id, OUTBOX.c.pk > after_pk]
    if topics is not None:
        conditions.append(OUTBOX.c.topic.in_(list(topics)))
    rows = (await conn.execute(select(OUTBOX).where(*conditions).order_by(OUTBOX.c.pk)
                               .limit(limit))).all()
    return [_event(r) for r in rows]


async def events_after(conn: AsyncConnection, after_pk: int, limit: int, *,
                       also: Iterable[int] = ()) -> list[Event]:
    """Every record's events after ``after_pk`` (and those of the pks in ``also``, below it),
    oldest first: the one query of a process's live-stream poller (service.notify.live)."""
    wanted = sorted(also)
    condition = OUTBOX.c.pk > after_pk
    if wanted:
        condition = condition | OUTBOX.c.pk.in_(wanted)
    rows = (await conn.execute(select(OUTBOX).where(condition).order_by(OUTBOX.c.pk)
                               .limit(limit))).all()
    return [_event(r) for r in rows]


async def latest_event_pks(conn: AsyncConnection, limit: int) -> list[int]:
    """The ``limit`` highest event pks, highest first (where a live-stream poller starts)."""
    return list((await conn.execute(select(OUTBOX.c.pk).order_by(OUTBOX.c.pk.desc())
                                    .limit(limit))).scalars())


async def latest_event_pk(conn: AsyncConnection) -> int:
    found: int | None = (await conn.execute(select(func.max(OUTBOX.c.pk)))).scalar_one()
    return found or 0

