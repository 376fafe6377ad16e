"""What the access policy reads: each patient's choices, emergency accesses, the outbox.

The patient's choices are FHIR ``Consent`` resources (kept with their history in
the resource tables); this module holds their projection, rewritten in the
same transaction as the Consent, so that the next request sees the change and
a search can apply it in SQL:

- ``record_policy``: one row per patient record: closed, emergency access
  opposed, care-team access objected to, and the attending doctor;
- ``record_actor``: who the patient blocked or authorised, who is in their care
  team, which apps they granted;
- ``emergency_access``: break-the-glass and SAMU (centre 15) accesses, each
  with its stated reason and end;

The notification outbox (an emergency access notifies the patient) is
``storage.outbox``.

Actors are keys such as ``idnat:810001234567`` or ``app:<client_id>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    String,
    Text,
    UniqueConstraint,
    delete,
    false,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.driver import autocommit_driver, driver_call
from storage.tables import RESOURCES, TOKENS, BigKey, ResourceId, table_of
from storage.upsert import put_row


class Relation(StrEnum):
    BLOCKED = "blocked"
    AUTHORISED = "authorised"
    CARE_TEAM = "care-team"
    APP = "app"


@dataclass(frozen=True)
class AccessLabels:
    """What a stored resource tells the policy beyond its record (``patient_id`` is indexed)."""

    category: str | None = None
    masked: bool = False
    hidden_from_patient: bool = False


NO_LABELS = AccessLabels()


class RecordPolicyRow(SQLModel, table=True):
    __tablename__ = "record_policy"
    __table_args__ = (Index("ix_record_policy_attending", "attending"),)

    patient_id: str = Field(sa_column=Column(ResourceId, primary_key=True))
    closed: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=false()))
    emergency_opposed: bool = Field(sa_column=Column(Boolean, nullable=False,
                                                     server_default=false()))
    care_team_objection: bool = Field(sa_column=Column(Boolean, nullable=False,
                                                       server_default=false()))
    attending: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))


class RecordActorRow(SQLModel, table=True):
    __tablename__ = "record_actor"
    __table_args__ = (
        UniqueConstraint("patient_id", "actor", "relation", name="uq_record_actor"),
        Index("ix_record_actor_actor", "actor", "relation", "patient_id"),
    )

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    patient_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    actor: str = Field(sa_column=Column(String(128), nullable=False))
    relation: str = Field(sa_column=Column(String(16), nullable=False))


class EmergencyAccessRow(SQLModel, table=True):
    __tablename__ = "emergency_access"
    __table_args__ = (Index("ix_emergency_actor", "actor", "patient_id", "expires_at"),)

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    patient_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    actor: str = Field(sa_column=Column(String(128), nullable=False))
    mode: str = Field(sa_column=Column(String(16), nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    granted_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))


RECORD_POLICY = table_of(RecordPolicyRow)
RECORD_ACTORS = table_of(RecordActorRow)
EMERGENCY_ACCESS = table_of(EmergencyAccessRow)


@dataclass(frozen=True)
class RecordChoices:
    """A record's policy row, as the projection of the patient's Consents writes it."""

    closed: bool = False
    emergency_opposed: bool = False
    care_team_objection: bool = False
    attending: str | None = None


@dataclass(frozen=True)
class Emergency:
    mode: str
    reason: str
    expires_at: int


@dataclass(frozen=True)
class RecordState:
    """Everything the policy needs about one record for one caller, read in one go."""

    choices: RecordChoices
    relations: frozenset[Relation]
    emergency: Emergency | None


async def replace_record_choices(conn: AsyncConnection, patient_id: str,
                                 choices: RecordChoices,
                                 actors: Iterable[tuple[str, Relation]]) -> None:
    """Rewrite a record's projection (the caller holds the record's lock)."""
    await put_row(conn, RECORD_POLICY, {"patient_id": patient_id},
                  {"closed": choices.closed, "emergency_opposed": choices.emergency_opposed,
                   "care_team_objection": choices.care_team_objection,
                   "attending": choices.attending})
    await conn.execute(delete(RECORD_ACTORS).where(RECORD_ACTORS.c.patient_id == patient_id))
    rows = [{"patient_id": patient_id, "actor": actor, "relation": relation.value}
            for actor, relation in sorted(set(actors))]
    if rows:
        await conn.execute(insert(RECORD_ACTORS), rows)


# One round trip, one plain statement. The emergency access is encoded as
# "mode|expires_at|reason" so that the whole state fits one row. The columns also
# follow a resource read by id (storage.resources.current_content): a professional's
# read then costs one statement, not two.
_JOINED = {"sqlite": "group_concat(ra.relation, ',')", "postgresql": "string_agg(ra.relation, ',')"}


def state_columns(dialect: str, patient: str, actor: str, now: str) -> str:
    """The SQL columns of a record's state, for ``patient`` (an SQL expression) and the
    ``actor`` and ``now`` placeholders; ``record_policy`` must be joined as ``rp``."""
    return f"""rp.closed, rp.emergency_opposed, rp.care_team_objection, rp.attending,
       (SELECT {_JOINED[dialect]} FROM record_actor ra
         WHERE ra.patient_id = {patient} AND ra.actor = {actor}),
       (SELECT em.mode || '|' || CAST(em.expires_at AS VARCHAR) || '|' || em.reason
          FROM emergency_access em
         WHERE em.patient_id = {patient} AND em.actor = {actor} AND em.expires_at > {now}
         ORDER BY em.expires_at DESC LIMIT 1)"""


STATE_WIDTH = 6  # columns state_columns() adds


def state_of_row(row: Any, start: int) -> RecordState:
    """The RecordState in ``row[start:start + STATE_WIDTH]`` (no record_policy row: open)."""
    choices = RecordChoices(bool(row[start]), bool(row[start + 1]), bool(row[start + 2]),
                            row[start + 3])
    found = frozenset(Relation(r) for r in (row[start + 4] or "").split(",") if r)
    live = None
    if row[start + 5] is not None:
        mode, expires_at, reason = str(row[start + 5]).split("|", 2)
        live = Emergency(mode, reason, int(expires_at))
    return RecordState(choices, found, live)


def _record_state_sql(dialect: str, p: str, a: str, now: str) -> str:
    return (f"SELECT {state_columns(dialect, p, a, now)}\n"
            f"FROM (SELECT 1 AS one) AS one LEFT JOIN record_policy rp ON rp.patient_id = {p}")


_PG_RECORD_STATE = _record_state_sql("postgresql", "$1", "$2", "$3")
_BOUND_RECORD_STATE = {  # through SQLAlchemy: SQLite, or inside a PostgreSQL transaction
    dialect: text(_record_state_sql(dialect, ":p", ":a", ":now")) for dialect in _JOINED}


async def record_state(conn: AsyncConnection, patient_id: str, actor: str,
                       now: int) -> RecordState:
    """The record's choices, the actor's relations, a live emergency access: one query."""
    driver = await autocommit_driver(conn)
    if driver is not None:
        row = await driver_call(conn, driver.fetchrow(_PG_RECORD_STATE, patient_id, actor, now))
    else:
        row = (await conn.execute(_BOUND_RECORD_STATE[conn.dialect.name],
                                  {"p": patient_id, "a": actor, "now": now})).one()
    return state_of_row(row, 0)


async def open_emergency_access(conn: AsyncConnection, patient_id: str, actor: str, *,
                                mode: str, reason: str, now: int, expires_at: int) -> None:
    await conn.execute(insert(EMERGENCY_ACCESS).values(
        patient_id=patient_id, actor=actor, mode=mode, reason=reason, granted_at=now,
        expires_at=expires_at))


async def record_of_identifier(conn: AsyncConnection, system: str, value: str) -> str | None:
    """The Patient resource carrying this identifier (an INS): the patient's record id."""
    pks = select(TOKENS.c.resource_pk).where(TOKENS.c.resource_type == "Patient",
                                             TOKENS.c.param == "identifier",
                                             TOKENS.c.code == value, TOKENS.c.system == system)
    rows = (await conn.execute(
        select(RESOURCES.c.resource_id).where(RESOURCES.c.pk.in_(pks),
                                              RESOURCES.c.deleted == false()).limit(2))).all()
    return rows[0][0] if len(rows) == 1 else None
