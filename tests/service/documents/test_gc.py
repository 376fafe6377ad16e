"""The API process's periodic sweep of unreferenced blobs."""

from __future__ import annotations

import asyncio

import pytest

from service.documents import gc
from storage import documents as registry
from storage.blobs import open_blob_store
from storage.db import Database
from storage.documents import BinaryContent


async def test_the_sweep_runs_every_interval_and_survives_a_failure(
        database: Database, tmp_path: object, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    blobs = open_blob_store(None, tmp_path)  # type: ignore[arg-type]
    orphan = await blobs.put_bytes(b"nobody references me")
    real = gc.collect_garbage
    calls = 0

    async def flaky(*args: object, **kwargs: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store briefly unreachable")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gc, "collect_garbage", flaky)
    sweeper = asyncio.create_task(gc.collect_periodically(database, blobs, -60, 0.01))
    for _ in range(200):
        if await blobs.size(orphan.key) is None:
            break
        await asyncio.sleep(0.01)
    sweeper.cancel()
    assert await blobs.size(orphan.key) is None
    assert calls >= 2
    assert "blob garbage collection failed" in caplog.text


async def test_the_sweep_waits_for_a_filing_of_the_blob_in_flight(
        database: Database, tmp_path: object) -> None:
    blobs = open_blob_store(None, tmp_path)  # type: ignore[arg-type]
    blob = await blobs.put_bytes(b"a document being filed")
    async with database.write() as conn:  # a filing, not yet committed
        await registry.put_binary_content(conn, BinaryContent("b1", blob.key, blob.size, "x",
                                                              "text/plain"))
        sweep = asyncio.create_task(gc.collect_garbage(database, blobs, -60))
        await asyncio.sleep(0.3)
        assert not sweep.done()  # it waits for the blob's lock (the writer, on SQLite)
    assert await sweep == 0  # the filing committed: its blob is referenced
    assert await blobs.size(blob.key) == blob.size


async def test_several_processes_sweep_once_per_period_between_them(
        database: Database, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = open_blob_store(None, tmp_path)  # type: ignore[arg-type]
    sweeps = 0

    async def counted(*_args: object, **_kwargs: object) -> int:
        nonlocal sweeps
        sweeps += 1
        return 0

    monkeypatch.setattr(gc, "collect_garbage", counted)
    interval = 0.2
    sweepers = [asyncio.create_task(gc.collect_periodically(database, blobs, 3600, interval))
                for _ in range(3)]  # three API processes' sweepers
    await asyncio.sleep(interval * 5.5)
    for sweeper in sweepers:
        sweeper.cancel()
    await asyncio.gather(*sweepers, return_exceptions=True)
    # Three sweepers alone would sweep about 15 times; sharing turns, at most once a period.
    assert 2 <= sweeps <= 5
