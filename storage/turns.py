"""Whose turn it is to run a periodic job, decided in the database.

Every API process runs the same background jobs (the blob sweep); one run per period is
enough for the whole deployment, however many processes there are. The first process to
find the period over takes the turn and pushes the next one a period ahead, in one
conditional UPDATE: the others find it taken and skip.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.tables import table_of
from storage.upsert import conflict_insert


class JobTurnRow(SQLModel, table=True):
    __tablename__ = "job_turn"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    next_run_at: int = Field(sa_column=Column(BigInteger, nullable=False))  # epoch microseconds


TURNS = table_of(JobTurnRow)


async def take_turn(conn: AsyncConnection, job: str, now: int, period_micros: int) -> bool:
    """True for exactly one caller per period (commit at once: the update is the claim)."""
    await conn.execute(conflict_insert(conn, TURNS).values(name=job, next_run_at=0)
                       .on_conflict_do_nothing(index_elements=["name"]))
    taken = await conn.execute(update(TURNS)
                               .where(TURNS.c.name == job, TURNS.c.next_run_at <= now)
                               .values(next_run_at=now + period_micros))
    return taken.rowcount == 1
