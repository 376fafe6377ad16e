"""One outbox poller per API process for all its open live streams (issue 10).

Each open stream (``GET /notifications/stream``, the portal's ``/portal/evenements``)
subscribes with its record and the event pk it starts after. One background task reads
the outbox for *every* record (``outbox.events_after``: ``pk > cursor ORDER BY pk``) and
hands each event to the streams of that event's record: one query per poll interval
(CARNET_DISPATCHER_POLL_SECONDS) whatever the number of streams, and none while no
stream is open. On PostgreSQL it also wakes at each ``NOTIFY carnet_outbox`` (sent at the
commit of each event), falling back to polling alone when LISTEN fails, as on SQLite.
The fan-out still goes through the database: this process serves the events whichever
process committed them, and nothing is shared through memory between processes.

Catch-up. A stream that starts below the poller's cursor (a browser's ``Last-Event-ID``,
or a latest pk read before the poller caught up) first reads its own missed events with
``outbox.patient_events``, *after* subscribing, so that whatever the poller reads from
then on is queued meanwhile; a stream that subscribed before the poller's first read is
told to catch up once that read has set the cursor. Each stream delivers a pk at most
once (the catch-up and the queue may both hold it).

Late commits. A pk is assigned at insert and becomes visible at commit, so a transaction
can commit after a higher pk was already read (PostgreSQL; SQLite's serialised writers
commit in pk order). A bare ``pk > cursor`` would skip it for good. The poller therefore
remembers the *gaps* below its cursor (pks it stepped over) and asks for them again with
each poll (``pk > cursor OR pk IN (gaps)``) until they show up (a late commit: delivered
to the streams, which accept it even below their starting pk) or for ``settle_seconds``
(a rollback, which leaves a gap for ever). That costs nothing while there is no gap,
keeps the query's LIMIT meaningful (no window of old rows read again at each poll), and
is exact for any transaction shorter than ``settle_seconds``. At start-up the poller
takes the gaps among the latest pks as open too. What remains out of reach: a late event
below a stream's starting point that commits before the poller noticed its gap, and one
below a reconnecting browser's ``Last-Event-ID`` (SSE ids are a single cursor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from service.notify.dispatcher import halt
from storage import outbox
from storage.db import Database
from storage.outbox import Event

log = logging.getLogger("carnet.live")

CATCH_UP_PAGE = 100  # a stream's own catch-up, one page per call
START_WINDOW = 200  # latest pks whose gaps count as open when the poller starts
MAX_GAPS = 1000  # the newest kept (bind parameters); older ones are given up


class Subscription:
    """One open stream: ``next()`` gives its record's events, each at most once."""

    def __init__(self, hub: LiveEvents, patient_id: str, after_pk: int,
                 queue_size: int) -> None:
        self.patient_id = patient_id
        self.after_pk = after_pk
        self.closed = False
        self._hub = hub
        self._queue_size = queue_size
        self._pending: deque[tuple[Event, bool]] = deque()
        self._signal = asyncio.Event()
        self._overflowed = False
        self._catch_up_from: int | None = None
        self._sent: set[int] = set()
        self._high = after_pk  # the highest pk given

    # -- the poller's side

    def _offer(self, event: Event, late: bool) -> None:
        if self.closed or self._overflowed:
            return
        if len(self._pending) >= self._queue_size:
            # A reader this far behind reads the rest from the database (next()).
            self._overflowed = True
        else:
            self._pending.append((event, late))
        self._signal.set()

    def _catch_up(self, after_pk: int) -> None:
        self._catch_up_from = after_pk
        self._signal.set()

    def _close(self) -> None:
        self.closed = True
        self._signal.set()

    # -- the stream's side

    async def next(self, wait_seconds: float) -> list[Event]:
        """The events not given yet, oldest first; waits up to ``wait_seconds`` for one,
        and returns ``[]`` if none came (or once the hub stopped: see ``closed``)."""
        if not self._pending and self._catch_up_from is None and not self.closed:
            self._signal.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):
                    await self._signal.wait()
        if not self._pending and self._overflowed and self._catch_up_from is None:
            self._overflowed = False
            self._catch_up_from = self._high
        if self._catch_up_from is not None:
            return self._fresh((e, False) for e in await self._read_own(self._catch_up_from))
        items = list(self._pending)
        self._pending.clear()
        return self._fresh(items)

    async def _read_own(self, after_pk: int) -> list[Event]:
        async with self._hub.database.read() as conn:
            page = await outbox.patient_events(conn, self.patient_id, after_pk=after_pk,
                                               limit=CATCH_UP_PAGE)
        self._catch_up_from = page[-1].pk if len(page) == CATCH_UP_PAGE else None
        return page

    def _fresh(self, items: Iterable[tuple[Event, bool]]) -> list[Event]:
        fresh = []
        for event, late in items:
            if event.pk in self._sent or (event.pk <= self.after_pk and not late):
                continue
            self._sent.add(event.pk)
            self._high = max(self._high, event.pk)
            fresh.append(event)
        if len(self._sent) > 4096:  # only overlaps near the newest need remembering
            self._sent = set(sorted(self._sent)[-2048:])
        return fresh


class LiveEvents:
    """The process's poller and its subscriptions (``app.state.live_events``)."""

    def __init__(self, database: Database, *, poll_seconds: float = 1.0, batch: int = 500,
                 settle_seconds: float = 60.0, queue_size: int = 256,
                 name: str = "live-events") -> None:
        self.database = database
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.settle_seconds = settle_seconds
        self.queue_size = queue_size
        self.name = name
        self._streams: dict[str, set[Subscription]] = {}
        self._cursor: int | None = None  # the highest pk read; None: not polling
        self._gaps: dict[int, float] = {}  # pk stepped over -> when (monotonic)
        self._wakeup = asyncio.Event()
        self._active = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._listen_tried = False
        self._stopped = False

    @classmethod
    @asynccontextmanager
    async def running(cls, database: Database, **options: Any) -> AsyncIterator[LiveEvents]:
        hub = cls(database, **options)
        await hub.start()
        try:
            yield hub
        finally:
            await hub.stop()

    @property
    def open_streams(self) -> int:
        return sum(len(subs) for subs in self._streams.values())

    @property
    def cursor(self) -> int | None:
        return self._cursor

    @property
    def gaps(self) -> list[int]:
        return sorted(self._gaps)

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        if self._task is None:
            self._stopped = False
            self._task = asyncio.create_task(self._run(), name=f"carnet-{self.name}")

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        listener, self._listener = self._listener, None
        await halt(task, listener)
        self._listen_tried = False
        for subs in self._streams.values():
            for sub in subs:
                sub._close()
        self._cursor = None
        self._gaps.clear()

    @asynccontextmanager
    async def subscribe(self, patient_id: str, after_pk: int) -> AsyncIterator[Subscription]:
        """A stream of ``patient_id``'s events after ``after_pk``, while the block runs."""
        sub = Subscription(self, patient_id, after_pk, self.queue_size)
        if self._stopped or self._task is None:
            sub._close()
        elif self._cursor is not None and after_pk < self._cursor:
            sub._catch_up(after_pk)  # read from here on the poller's queue meanwhile
        # else: the poller's next read covers pk > after_pk (the first read, when it
        # starts, tells each stream below it to catch up).
        self._streams.setdefault(patient_id, set()).add(sub)
        self._active.set()
        try:
            yield sub
        finally:
            subs = self._streams.get(patient_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._streams[patient_id]
            if not self._streams:
                self._wakeup.set()  # the poller goes idle now, not after its interval

    # -- the poller

    async def _run(self) -> None:
        while True:
            if not self._streams:  # idle: no query until a stream opens
                self._cursor = None
                self._gaps.clear()
                self._active.clear()
                await self._active.wait()
            self._wakeup.clear()  # a NOTIFY during the read means: read again
            try:
                more = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away: try again at the next poll
                log.exception("live events poll failed")
                more = False
            if more or not self._streams:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wakeup.wait()

    async def _pass(self) -> bool:
        """One read for every stream; whether a full batch came (read again at once)."""
        if self._cursor is None:
            await self._start_cursor()
        assert self._cursor is not None
        async with self.database.read() as conn:
            found = await outbox.events_after(conn, self._cursor, self.batch,
                                              also=self._gaps)
        now = time.monotonic()
        for event in found:
            if event.pk in self._gaps:
                del self._gaps[event.pk]
                late = True
            elif event.pk > self._cursor:
                for missing in range(max(self._cursor + 1, event.pk - MAX_GAPS), event.pk):
                    self._gaps[missing] = now
                self._cursor = event.pk
                late = False
            else:
                continue
            for sub in self._streams.get(event.patient_id, ()):
                sub._offer(event, late)
        self._forget_gaps(now)
        return len(found) >= self.batch

    async def _start_cursor(self) -> None:
        await self._listen()
        async with self.database.read() as conn:
            latest = await outbox.latest_event_pks(conn, START_WINDOW)
        now = time.monotonic()
        cursor = latest[0] if latest else 0
        seen = set(latest)
        self._gaps = {pk: now for pk in range(latest[-1], cursor) if pk not in seen
                      } if latest else {}
        self._cursor = cursor
        for subs in self._streams.values():
            for sub in subs:
                if sub.after_pk < cursor:
                    sub._catch_up(sub.after_pk)

    def _forget_gaps(self, now: float) -> None:
        if not self._gaps:
            return
        settled = now - self.settle_seconds
        gaps = {pk: seen for pk, seen in self._gaps.items() if seen > settled}
        if len(gaps) > MAX_GAPS:
            gaps = {pk: gaps[pk] for pk in sorted(gaps)[-MAX_GAPS:]}
        self._gaps = gaps

    async def _listen(self) -> None:
        """PostgreSQL: wake on ``NOTIFY carnet_outbox``; opened with the first stream, kept
        until ``stop()``."""
        if self._listen_tried or not self.database.is_postgresql:
            return
        self._listen_tried = True
        try:
            self._listener = await self.database.listen(outbox.NOTIFY_CHANNEL, self.wake)
        except Exception:  # polling still delivers
            log.exception("LISTEN %s failed; live streams poll every %.1f s",
                          outbox.NOTIFY_CHANNEL, self.poll_seconds)
