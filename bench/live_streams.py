"""Outbox queries per poll interval with N open live streams, in process (no HTTP).

Opens N Server-Sent-Event streams of N different patients through
``service.notify.routes.patient_events`` with the app's per-process poller
(``service.notify.live.LiveEvents``), on a scratch SQLite database, and counts the
statements that read ``outbox_event`` during a window. One poller should make about
one query per poll interval whatever N is. Adds its section to RESULTS.md unless
``--no-results``.

    . /tmp/venv/bin/activate && python bench/live_streams.py [N ...] [--no-results]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from core.report import write_results
from sqlalchemy import event
from starlette.requests import Request

from service.notify.live import LiveEvents
from service.notify.routes import patient_events
from storage.db import Database

POLL_SECONDS = 0.2
SETTLE_SECONDS = 1.0
WINDOW_SECONDS = 3.0


def idle_request(app: Any) -> Request:
    """A request whose client stays connected and sends nothing."""
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "app": app},
                   receive)


async def queries_per_poll(streams: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        db = Database(f"sqlite+aiosqlite:///{scratch}/live.db")
        await db.migrate()
        counted = [0]

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            counted[0] += "outbox_event" in statement

        engines = {id(e): e for e in (db._reader, db._query, db._writer)}  # query is reader
        for engine in engines.values():
            event.listen(engine.sync_engine, "before_cursor_execute", count)
        hub = LiveEvents(db, poll_seconds=POLL_SECONDS)
        await hub.start()
        app = SimpleNamespace(state=SimpleNamespace(live_events=hub))
        bodies = [patient_events(idle_request(app), db, f"p{i}", 0, POLL_SECONDS).body_iterator
                  for i in range(streams)]

        async def drain(body: Any) -> None:
            async for _ in body:
                pass

        readers = [asyncio.create_task(drain(b)) for b in bodies]
        await asyncio.sleep(SETTLE_SECONDS)
        before, started = counted[0], time.monotonic()
        await asyncio.sleep(WINDOW_SECONDS)
        made, elapsed = counted[0] - before, time.monotonic() - started
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await hub.stop()
        await db.dispose()
    return made / (elapsed / POLL_SECONDS)


def main(argv: list[str]) -> int:
    publish = "--no-results" not in argv
    counts = [int(a) for a in argv if a != "--no-results"] or [10, 100, 1000]
    rows = []
    for streams in counts:
        per_poll = asyncio.run(queries_per_poll(streams))
        print(f"{streams:>6} streams: {per_poll:.1f} outbox queries per poll interval")
        rows.append(f"| {streams:,} | {per_poll:.1f} |")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        f"## {when}: live streams, outbox queries per poll interval (in process)", "",
        f"Command: `{' '.join(['python bench/live_streams.py', *argv])}`", "",
        f"- N streams of N patients through `patient_events` with the process's one poller "
        f"(`LiveEvents`), SQLite, poll {POLL_SECONDS} s, counted over {WINDOW_SECONDS:.0f} s "
        f"after {SETTLE_SECONDS:.0f} s; target: about 1 whatever N (one poller per process)", "",
        "| Open streams | Outbox queries per poll interval |", "|---|---|", *rows, ""])
    if publish:
        write_results(section)
        print("wrote bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
