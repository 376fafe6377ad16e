"""Request counters shared by every process: the rate limits on login and on tokens.

Fixed windows of a minute. A row counts the hits of one bucket in one window; the bucket is
a SHA-256 of what is limited (``token``, a client id, an address), so that the table never
holds an address. Taking a slot is one statement (``INSERT ... ON CONFLICT DO UPDATE SET
hits = hits + 1 RETURNING hits``): however many requests arrive together, in however many
processes, each gets its own rank, and exactly ``limit`` of them get through.

A request that succeeds may give its slot back: the limits then count what failed (a
wrong client secret, a refused login), not a busy client's traffic. The request that opens
a bucket's window deletes the rows of windows before the previous one (a range on the
primary key's first column), so that the table holds about two minutes of buckets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Integer, String, delete, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.tables import table_of
from storage.upsert import conflict_insert

WINDOW_SECONDS = 60


class RateLimitRow(SQLModel, table=True):
    __tablename__ = "rate_limit"

    window_start: int = Field(sa_column=Column(BigInteger, primary_key=True))  # epoch seconds
    bucket: str = Field(sa_column=Column(String(64), primary_key=True))  # SHA-256, hex
    hits: int = Field(sa_column=Column(Integer, nullable=False))


RATE_LIMITS = table_of(RateLimitRow)


def bucket_of(*parts: str) -> str:
    """The key a limit counts under: a hash, so that no address is stored."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def window_of(now: float) -> int:
    return int(now) // WINDOW_SECONDS * WINDOW_SECONDS


@dataclass(frozen=True)
class Slot:
    """One request's place in its bucket's window."""

    bucket: str
    window_start: int
    rank: int  # 1 for the window's first hit
    limit: int
    now: float

    @property
    def allowed(self) -> bool:
        return self.rank <= self.limit

    @property
    def retry_after(self) -> int:
        """Whole seconds until the window ends (at least 1), for ``Retry-After``."""
        return max(1, int(self.window_start + WINDOW_SECONDS - self.now + 0.999))


async def take_slot(conn: AsyncConnection, bucket: str, limit: int, now: float) -> Slot:
    """Count one hit (commit at once: other processes must see it)."""
    start = window_of(now)
    statement = (conflict_insert(conn, RATE_LIMITS)
                 .values(window_start=start, bucket=bucket, hits=1))
    statement = statement.on_conflict_do_update(
        index_elements=["window_start", "bucket"], set_={"hits": RATE_LIMITS.c.hits + 1},
    ).returning(RATE_LIMITS.c.hits)
    rank = int((await conn.execute(statement)).scalar_one())
    if rank == 1:
        await prune(conn, now)
    return Slot(bucket, start, rank, limit, now)


async def give_back(conn: AsyncConnection, bucket: str, window_start: int) -> None:
    """Uncount one hit of that window (a request that succeeded); never below zero."""
    await conn.execute(update(RATE_LIMITS)
                       .where(RATE_LIMITS.c.window_start == window_start,
                              RATE_LIMITS.c.bucket == bucket, RATE_LIMITS.c.hits > 0)
                       .values(hits=RATE_LIMITS.c.hits - 1))


async def prune(conn: AsyncConnection, now: float) -> int:
    """Delete the windows before the previous one (the previous one may still get slots
    back); returns how many rows went."""
    done = await conn.execute(delete(RATE_LIMITS).where(
        RATE_LIMITS.c.window_start < window_of(now) - WINDOW_SECONDS))
    return int(done.rowcount or 0)


async def hits(conn: AsyncConnection, bucket: str, now: float) -> int:
    """The bucket's count in the window of ``now`` (0 when it has none)."""
    found = await conn.execute(RATE_LIMITS.select().with_only_columns(RATE_LIMITS.c.hits)
                               .where(RATE_LIMITS.c.window_start == window_of(now),
                                      RATE_LIMITS.c.bucket == bucket))
    return int(found.scalar_one_or_none() or 0)
