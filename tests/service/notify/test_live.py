"""The process's one live-stream poller (service/notify/live.py), on both databases: one
outbox query per poll whatever the number of open streams and none without a stream, each
event to its own record's streams only, catch-up from Last-Event-ID then live without a
duplicate, and an event committed after a higher pk still delivered."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from sqlalchemy import insert
from starlette.requests import Request

from service.errors import BadRequest
from service.fhir.http import now_micros
from service.notify.live import LiveEvents, Subscription
from service.notify.routes import patient_events
from storage import outbox
from storage.db import Database

FAST = 0.05


class Calls:
    """Counts the calls of one storage function (the stream's queries)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.count = 0
        real = getattr(outbox, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(outbox, name, counted)


async def add(database: Database, patient_id: str, *, facing: bool = True,
              count: int = 1) -> list[int]:
    async with database.write() as conn:
        return await outbox.add_events(
            conn, [("document", patient_id, {"document": f"d{i}", "patient_facing": facing})
                   for i in range(count)], now_micros())


async def add_with_pk(database: Database, patient_id: str, pk: int) -> None:
    """An event with a chosen pk: what a transaction that commits late looks like."""
    async with database.write() as conn:
        await conn.execute(insert(outbox.OUTBOX).values(
            pk=pk, topic="document", patient_id=patient_id, created_at=now_micros(),
            payload=orjson.dumps({"document": f"d{pk}", "patient_facing": True}),
            fanned_out=False))


async def latest(database: Database) -> int:
    async with database.read() as conn:
        return await outbox.latest_event_pk(conn)


async def take(sub: Subscription, count: int, within: float = 10.0) -> list[int]:
    got: list[int] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            got += [e.pk for e in await sub.next(FAST)]
    return got


async def more(sub: Subscription, during: float = 0.3) -> list[int]:
    """What else comes (nothing, when nothing is owed)."""
    got: list[int] = []
    deadline = time.monotonic() + during
    while time.monotonic() < deadline:
        got += [e.pk for e in await sub.next(FAST)]
    return got


async def until(condition: Any, within: float = 10.0) -> None:
    """Wait for the poller's state (its own, which no event signals)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_many_streams_share_one_query_per_poll(database: Database,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    polls = Calls(monkeypatch, "events_after")
    own = Calls(monkeypatch, "patient_events")
    streams = 200
    async with (LiveEvents.running(database, poll_seconds=30) as hub,
                contextlib.AsyncExitStack() as stack):
        subs = [await stack.enter_async_context(hub.subscribe(f"p{i % 50}", 0))
                for i in range(streams)]
        await until(lambda: hub.cursor is not None and polls.count >= 1)
        pks = await add(database, "p0", count=1)
        pks += [(await add(database, f"p{i}"))[0] for i in range(1, 50)]
        hub.wake()  # PostgreSQL's NOTIFY wakes it anyway; SQLite waits for the poll
        got = [await take(sub, 1) for sub in subs]
        assert got == [[pks[i % 50]] for i in range(streams)]
        # 200 streams served by a handful of reads of the whole outbox, none of their own
        # (the old stream: one query per stream per poll, 200 each second).
        assert polls.count <= 3 + 50  # the start, the wake-up, PostgreSQL's 50 NOTIFYs
        assert own.count == 0

        # Polling every 50 ms for half a second with 200 open streams: one query a poll.
        hub.poll_seconds = FAST
        hub.wake()
        before, started = polls.count, time.monotonic()
        await asyncio.sleep(0.5)
        per_poll = (polls.count - before) / ((time.monotonic() - started) / FAST)
        assert 0 < polls.count - before <= (time.monotonic() - started) / FAST + 2
        assert per_poll <= 1.2, per_poll


async def test_events_reach_only_their_own_records_streams(database: Database) -> None:
    async with (LiveEvents.running(database, poll_seconds=FAST) as hub,
                LiveEvents.running(database, poll_seconds=FAST) as other_process,
                hub.subscribe("p1", 0) as first_tab, hub.subscribe("p1", 0) as second_tab,
                hub.subscribe("p2", 0) as p2, other_process.subscribe("p1", 0) as elsewhere):
        await until(lambda: hub.cursor is not None and other_process.cursor is not None)
        [p1_event] = await add(database, "p1")
        [p2_event] = await add(database, "p2")
        await add(database, "p3")
        assert await take(first_tab, 1) == [p1_event]
        assert await take(second_tab, 1) == [p1_event]
        assert await take(p2, 1) == [p2_event]
        # Another process's poller serves the same events: they come from the database.
        assert await take(elsewhere, 1) == [p1_event]
        for sub in (first_tab, second_tab, p2, elsewhere):
            assert await more(sub, 0.2) == []
        assert hub.open_streams == 3 and other_process.open_streams == 1
    assert hub.open_streams == 0


async def test_catch_up_from_last_event_id_then_live_without_duplicates(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    own = Calls(monkeypatch, "patient_events")
    async with (LiveEvents.running(database, poll_seconds=FAST) as hub,
                hub.subscribe("someone-else", 0)):
        await until(lambda: hub.cursor is not None)
        e1, e2, e3 = await add(database, "p1", count=3)
        await until(lambda: (hub.cursor or 0) >= e3)  # the poller is past them
        async with hub.subscribe("p1", e1) as sub:  # Last-Event-ID: e1
            [e4] = await add(database, "p1")
            await until(lambda: (hub.cursor or 0) >= e4)  # e4 waits in the stream's queue
            # The catch-up reads e2, e3 and e4 from the database; the queued e4 is not
            # given twice.
            assert await take(sub, 3) == [e2, e3, e4]
            [e5] = await add(database, "p1")
            assert await take(sub, 1) == [e5]
            assert await more(sub) == []
        assert own.count == 1  # the one catch-up page; live events cost the stream nothing


async def test_a_stream_opened_before_the_poller_starts_misses_nothing(
        database: Database) -> None:
    e1, e2 = await add(database, "p1", count=2)
    async with (LiveEvents.running(database, poll_seconds=FAST) as hub,
                hub.subscribe("p1", e1) as sub):
        assert hub.cursor is None  # the poller's first read tells the stream to catch up
        [e3] = await add(database, "p1")
        assert await take(sub, 2) == [e2, e3]
        assert await more(sub) == []


async def test_an_event_committed_late_with_a_lower_pk_still_arrives(
        database: Database) -> None:
    base = await latest(database)
    async with (LiveEvents.running(database, poll_seconds=FAST) as hub,
                hub.subscribe("p1", base) as sub):
        await until(lambda: hub.cursor is not None)
        await add_with_pk(database, "p1", base + 2)  # committed first
        assert await take(sub, 1) == [base + 2]
        assert hub.gaps == [base + 1]  # stepped over: asked for again at each poll
        await add_with_pk(database, "p1", base + 1)  # its lower pk, committed later
        assert await take(sub, 1) == [base + 1]
        assert hub.gaps == []
        assert await more(sub) == []


async def test_a_transaction_committing_after_a_higher_pk_is_not_skipped(
        database: Database) -> None:
    if not database.is_postgresql:
        pytest.skip("SQLite's writers are serialised: they commit in pk order")
    async with (LiveEvents.running(database, poll_seconds=FAST) as hub,
                hub.subscribe("p1", await latest(database)) as sub):
        await until(lambda: hub.cursor is not None)
        async with database.write() as slow:
            late = await outbox.add_event(slow, "document", "p1", {"patient_facing": True},
                                          now_micros())
            [early] = await add(database, "p1")  # a higher pk, committed meanwhile
            assert early > late
            assert await take(sub, 1) == [early]
            assert late in hub.gaps
        assert await take(sub, 1) == [late]  # NOTIFY at its commit; the gap is read again
        # Only gaps below this test's first event may stay: the pks of rows that earlier
        # tests wrote and cleared (the sequence is not reset between tests).
        assert [gap for gap in hub.gaps if gap >= late] == []
        assert await more(sub) == []


async def test_a_gap_left_by_a_rollback_is_given_up_after_settling(database: Database) -> None:
    base = await latest(database)
    async with (LiveEvents.running(database, poll_seconds=FAST, settle_seconds=0.3) as hub,
                hub.subscribe("p1", base) as sub):
        await until(lambda: hub.cursor is not None)
        await add_with_pk(database, "p1", base + 3)  # base + 1, base + 2: never committed
        assert await take(sub, 1) == [base + 3]
        assert hub.gaps == [base + 1, base + 2]
        await until(lambda: hub.gaps == [], within=3)


async def test_the_poller_reads_nothing_while_no_stream_is_open(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    polls = Calls(monkeypatch, "events_after")
    starts = Calls(monkeypatch, "latest_event_pks")
    async with LiveEvents.running(database, poll_seconds=FAST) as hub:
        await asyncio.sleep(0.3)
        assert polls.count == starts.count == 0
        async with hub.subscribe("p1", 0):
            await until(lambda: polls.count >= 3)
        await until(lambda: hub.cursor is None, within=3)  # idle again
        idle = polls.count
        await add(database, "p1")  # PostgreSQL's NOTIFY wakes nothing to read
        await asyncio.sleep(0.3)
        assert polls.count == idle
        async with hub.subscribe("p1", await latest(database)) as sub:  # and it starts again
            [pk] = await add(database, "p1")
            assert await take(sub, 1) == [pk]
        assert starts.count == 2


async def test_a_stream_that_falls_behind_reads_the_rest_from_the_database(
        database: Database) -> None:
    async with (LiveEvents.running(database, poll_seconds=FAST, queue_size=2) as hub,
                hub.subscribe("p1", 0) as sub):
        await until(lambda: hub.cursor is not None)
        pks = await add(database, "p1", count=7)
        await until(lambda: (hub.cursor or 0) >= pks[-1])
        assert await take(sub, 7) == pks
        assert await more(sub) == []


async def test_stopping_ends_the_open_streams(database: Database) -> None:
    hub = LiveEvents(database, poll_seconds=FAST)
    await hub.start()
    async with hub.subscribe("p1", 0) as sub:
        await until(lambda: hub.cursor is not None)
        await hub.stop()
        assert sub.closed
        assert await sub.next(5) == []  # at once
    async with hub.subscribe("p1", 0) as late:
        assert late.closed
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("carnet-live")]


# -- the Server-Sent Events themselves (a served app's state; no socket needed)


def request(app: Any, last_event_id: str | None = None) -> Request:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never hangs up
        return {"type": "http.disconnect"}

    headers = [(b"last-event-id", last_event_id.encode())] if last_event_id else []
    return Request({"type": "http", "method": "GET", "path": "/notifications/stream",
                    "headers": headers, "app": app}, receive)


@contextlib.asynccontextmanager
async def sse(app: Any, database: Database, last: int,
              last_event_id: str | None = None) -> AsyncIterator[Any]:
    response = patient_events(request(app, last_event_id), database, "p1", last, FAST)
    body = response.body_iterator
    try:
        yield body
    finally:
        await body.aclose()  # type: ignore[attr-defined]


async def frames(body: Any, count: int) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            got.append(await anext(body))
    return got


async def test_the_wire_format_is_unchanged(database: Database) -> None:
    e1, e2 = await add(database, "p1", count=2)
    [hidden] = await add(database, "p1", facing=False)
    async with LiveEvents.running(database, poll_seconds=FAST) as hub:
        app = SimpleNamespace(state=SimpleNamespace(live_events=hub))
        async with sse(app, database, await latest(database), str(e1)) as body:
            assert await frames(body, 2) == [
                b"retry: 2000\n\n",
                f'id: {e2}\nevent: document\ndata: {{"topic":"document","document":"d1"}}'
                f"\n\n".encode()]
            assert hub.open_streams == 1
            [e4] = await add(database, "p1")
            assert await frames(body, 1) == [
                f'id: {e4}\nevent: document\ndata: {{"topic":"document","document":"d0"}}'
                f"\n\n".encode()]
            assert hidden < e4
        assert hub.open_streams == 0
        with pytest.raises(BadRequest):
            patient_events(request(app, "abc"), database, "p1", 0, FAST)


async def test_an_app_run_without_its_lifespan_gives_the_stream_its_own_poller(
        database: Database) -> None:
    app = SimpleNamespace(state=SimpleNamespace())
    async with sse(app, database, await latest(database)) as body:
        assert await frames(body, 1) == [b"retry: 2000\n\n"]
        [pk] = await add(database, "p1")
        [frame] = await frames(body, 1)
        assert frame.startswith(f"id: {pk}\n".encode())
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("carnet-live")]
