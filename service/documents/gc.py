"""Removing blobs that no Binary references.

Bytes reach the blob store before the database transaction that records them
(a large document is never held in memory to wait for it). A transaction that
then fails, or a process killed between the two, leaves an unreferenced blob:
invisible (no Binary points at it) and removed here once older than the grace
period. Writing a blob refreshes its age, so a request still on its way to
commit keeps its blob as long as it takes less than the grace period; and the
sweep removes a blob only under a lock that filings of it hold until they
commit, after checking their bytes are still there (``binaries.create_binary``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from service.fhir.http import now_micros
from storage import documents as registry
from storage import turns
from storage.blobs import BlobStore
from storage.db import Database

log = logging.getLogger("carnet.blobs")


async def collect_garbage(db: Database, blobs: BlobStore, grace_seconds: float) -> int:
    """Delete unreferenced blobs last written more than ``grace_seconds`` ago; how many."""
    removed = 0
    async for key in blobs.written_before(time.time() - grace_seconds):
        async with db.write() as conn:  # under the blob's lock: no filing of it in flight
            await registry.lock_blob_for_removal(conn, key)
            if not await registry.blob_is_referenced(conn, key):
                await blobs.delete(key)
                removed += 1
    return removed


SWEEP_JOB = "blob-sweep"


async def collect_periodically(db: Database, blobs: BlobStore, grace_seconds: float,
                               interval_seconds: float) -> None:
    """The API processes' background sweep (cancelled at shutdown): each process wakes
    every interval, and the first to find the deployment's period over sweeps; listing a
    national bucket once per period is enough, not once per process."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            async with db.write() as conn:
                mine = await turns.take_turn(conn, SWEEP_JOB, now_micros(),
                                             int(interval_seconds * 1e6))
            if not mine:
                continue
            removed = await collect_garbage(db, blobs, grace_seconds)
        except Exception:  # a failed sweep is retried at the next interval
            log.exception("blob garbage collection failed")
            continue
        if removed:
            log.info("removed %d unreferenced blob(s)", removed)
