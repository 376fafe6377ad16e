"""The engines behind one process: what they may open."""

from __future__ import annotations

import pytest

from storage.db import Database


@pytest.mark.parametrize("pool_size", [1, 2, 8, 20])
def test_a_process_opens_at_most_twice_its_pool_size_in_all(pool_size: int) -> None:
    """CARNET_DB_POOL_SIZE is per process, whatever the engines inside: two workers with
    the default 20 must stay within PostgreSQL's default 100 connections."""
    db = Database("postgresql+asyncpg://carnet@127.0.0.1:1/none", pool_size=pool_size)
    pools = [e.sync_engine.pool for e in (db._writer, db._reader)]
    most = sum(p.size() + p._max_overflow for p in pools)  # type: ignore[attr-defined]
    assert most <= max(4, 2 * pool_size)
    assert all(p.size() >= 1 for p in pools)
