"""The API process's periodic sweep of unreferenced blobs."""

from __future__ import annotations

import asyncio

import pytest

from service.documents import gc
from storage.blobs import open_blob_store
from storage.db import Database


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
