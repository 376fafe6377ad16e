"""The rate-limit counters: ranked hits, slots given back, old windows pruned, no address kept."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from storage import ratelimits
from storage.db import Database
from storage.ratelimits import RATE_LIMITS, WINDOW_SECONDS, bucket_of, take_slot
from tests.reliability import figures

NOW = 1_800_000_030.5  # 30.5 s into a window
BUCKET = bucket_of("token", "demo-app", "203.0.113.7")


async def take(database: Database, limit: int, now: float = NOW,
               bucket: str = BUCKET) -> ratelimits.Slot:
    async with database.write() as conn:
        return await take_slot(conn, bucket, limit, now)


async def rows(database: Database) -> list[tuple[int, str, int]]:
    async with database.read() as conn:
        found = await conn.execute(select(RATE_LIMITS.c.window_start, RATE_LIMITS.c.bucket,
                                          RATE_LIMITS.c.hits).order_by(RATE_LIMITS.c.window_start))
        return [(row[0], row[1], row[2]) for row in found.all()]


async def test_each_hit_gets_its_rank_and_the_one_past_the_limit_is_refused(
        database: Database) -> None:
    slots = [await take(database, limit=2) for _ in range(3)]
    assert [s.rank for s in slots] == [1, 2, 3]
    assert [s.allowed for s in slots] == [True, True, False]
    assert slots[2].retry_after == 30  # the window ends 29.5 s later: whole seconds, rounded up
    assert (await take(database, limit=2, now=NOW + WINDOW_SECONDS)).allowed  # a new window


async def test_a_slot_given_back_is_taken_again_and_the_count_never_goes_below_zero(
        database: Database) -> None:
    first = await take(database, limit=1)
    async with database.write() as conn:
        await ratelimits.give_back(conn, first.bucket, first.window_start)
        await ratelimits.give_back(conn, first.bucket, first.window_start)
        assert await ratelimits.hits(conn, BUCKET, NOW) == 0
    assert (await take(database, limit=1)).allowed
    assert not (await take(database, limit=1)).allowed


async def test_opening_a_window_deletes_the_windows_before_the_previous_one(
        database: Database) -> None:
    for minutes_ago in (3, 2, 1):
        await take(database, limit=5, now=NOW - minutes_ago * WINDOW_SECONDS)
    await take(database, limit=5, bucket=bucket_of("login", "198.51.100.1"))
    start = ratelimits.window_of(NOW)
    assert [row[0] for row in await rows(database)] == [start - WINDOW_SECONDS, start]


async def test_the_table_holds_a_hash_never_the_address_or_the_client(
        database: Database) -> None:
    await take(database, limit=5)
    [(_, stored, hits)] = await rows(database)
    assert hits == 1
    assert len(stored) == 64 and int(stored, 16) >= 0
    assert "203.0.113.7" not in stored and "demo-app" not in stored
    assert bucket_of("token", "demo-app", "203.0.113.7") != bucket_of("token", "demo-app",
                                                                     "203.0.113.8")


async def test_concurrent_hits_are_each_counted_once_and_only_the_limit_gets_through(
        database: Database) -> None:
    """The point of counting in the database: processes hitting one bucket together (20
    transactions at once here) never lose a hit nor let one more through."""
    sent, limit = 20, 19
    slots = await asyncio.gather(*(take(database, limit) for _ in range(sent)))
    assert sorted(s.rank for s in slots) == list(range(1, sent + 1))
    assert sum(not s.allowed for s in slots) == 1
    async with database.read() as conn:
        stored = (await conn.execute(select(func.sum(RATE_LIMITS.c.hits)))).scalar_one()
    assert stored == sent
    figures.add("access.rate_limit_concurrent_hits", sent)
    figures.add("access.rate_limit_hits_lost", 0)
