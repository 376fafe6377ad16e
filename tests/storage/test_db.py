"""The engines behind one process: what they may open."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
from sqlalchemy import text

from storage.db import Database
from storage.errors import DatabaseBusy


@pytest.mark.parametrize("pool_size", [1, 2, 8, 20])
def test_a_process_opens_at_most_twice_its_pool_size_in_all(pool_size: int) -> None:
    """CARNET_DB_POOL_SIZE is per process, whatever the engines inside: two workers with
    the default 20 must stay within PostgreSQL's default 100 connections."""
    db = Database("postgresql+asyncpg://carnet@127.0.0.1:1/none", pool_size=pool_size)
    pools = [e.sync_engine.pool for e in (db._writer, db._reader)]
    most = sum(p.size() + p._max_overflow for p in pools)  # type: ignore[attr-defined]
    assert most <= max(4, 2 * pool_size)
    assert all(p.size() >= 1 for p in pools)


def test_point_reads_wait_for_a_connection_rather_than_open_one() -> None:
    """An overflow connection is closed as soon as it is given back: under 16 concurrent
    readers that meant a new PostgreSQL connection (backend start, type introspection) for
    about one read in thirty."""
    db = Database("postgresql+asyncpg://carnet@127.0.0.1:1/none", pool_size=20)
    pool = db._reader.sync_engine.pool
    assert (pool.size(), pool._max_overflow) == (5, 0)  # type: ignore[attr-defined]


async def test_a_pool_that_gives_no_connection_in_time_says_the_database_is_busy(
        database: Database) -> None:
    """SQLAlchemy's pool timeout, left alone, was a 500 under overload (bench/run_notify.py
    at 100 documents/s): the service answers DatabaseBusy with a 503."""
    busy = Database(database.url, pool_size=1, pool_timeout=0.1)
    try:
        async with AsyncExitStack() as held:
            with pytest.raises(DatabaseBusy):
                for _ in range(10):  # 1 connection on SQLite, 1 + 1 overflow on PostgreSQL
                    await held.enter_async_context(busy.write())
        async with busy.write() as conn:  # given back: usable again
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await busy.dispose()
