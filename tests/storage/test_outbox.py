"""Events written in the caller's transaction: several at once keep their order and payloads,
and a rolled-back transaction leaves none."""

from __future__ import annotations

import pytest

from storage import outbox
from storage.db import Database


async def test_a_submissions_events_are_written_in_one_go_in_order(database: Database) -> None:
    events = [("document", "p1", {"document": f"d{i}", "patient_facing": i % 2 == 0})
              for i in range(10)]
    async with database.write() as conn:
        pks = await outbox.add_events(conn, events, now=1_000)
        assert await outbox.add_events(conn, [], now=1_000) == []
    assert pks == sorted(pks) and len(set(pks)) == 10
    async with database.read() as conn:
        stored = await outbox.patient_events(conn, "p1")
    assert [e.pk for e in stored] == pks
    assert [e.payload for e in stored] == [payload for _, _, payload in events]


async def test_no_event_survives_its_causes_rollback(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.write() as conn:
            await outbox.add_events(conn, [("document", "p2", {"document": "d"})], now=1)
            raise RuntimeError("the filing failed")
    async with database.read() as conn:
        assert await outbox.patient_events(conn, "p2") == []
