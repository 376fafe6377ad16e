"""CPU cost of one FHIR search, in process (no HTTP): µs of CPU and wall per search.

Creates a scratch PostgreSQL database, loads 2,000 Patients (and 2,000
DocumentReferences, 20 of them for one patient) through
``service.fhir.interactions.create``, times N calls of
``service.fhir.search.search`` for two searches on one held autocommit
connection, then drops the database.

    . /tmp/venv/bin/activate && python bench/search_cpu.py [N] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service.fhir.interactions import create
from service.fhir.search import SearchRequest, search
from storage.db import Database

SERVER = os.environ.get("CARNET_BENCH_SERVER", "postgresql+asyncpg://postgres@127.0.0.1:5432")
SYSTEM = "http://example.org/mrn"


async def _admin(statement: str) -> None:
    engine = create_async_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(statement))
    await engine.dispose()


async def _load(db: Database) -> None:
    async with db.write() as conn:
        for i in range(2000):
            await create(conn, {"resourceType": "Patient",
                                "identifier": [{"system": SYSTEM, "value": f"mrn-{i}"}],
                                "name": [{"family": f"Family{i % 97}", "given": ["Ann"]}]},
                         resource_id=f"p{i}")
        for i in range(2000):
            patient = "p7" if i < 20 else f"p{i % 2000}"
            await create(conn, {"resourceType": "DocumentReference", "status": "current",
                                "subject": {"reference": f"Patient/{patient}"},
                                "date": f"2024-01-{1 + i % 28:02d}T10:00:00Z",
                                "content": [{"attachment": {"url": f"http://x/{i}"}}]})


async def _time(db: Database, label: str, resource_type: str,
                pairs: list[list[tuple[str, str]]], n: int) -> float:
    async with db.read() as conn:
        async def one(i: int) -> bytes:
            return await search(conn, SearchRequest(resource_type, pairs[i % len(pairs)],
                                                    "http://x/fhir", False, 20, 500))
        for i in range(200):
            await one(i)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(n):
            await one(i)
        cpu_us = (time.process_time() - cpu) / n * 1e6
        wall_us = (time.perf_counter() - wall) / n * 1e6
    print(f"  {label:44s} cpu {cpu_us:7.1f} µs  wall {wall_us:7.1f} µs", flush=True)
    return cpu_us


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    name = f"carnet_bench_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    db = Database(f"{SERVER}/{name}", pool_size=2)
    try:
        await db.migrate()
        await _load(db)
        token = [[("identifier", f"{SYSTEM}|mrn-{i}")] for i in range(2000)]
        docs = [[("patient", f"Patient/p{i}"), ("_sort", "-date")] for i in range(2000)]
        for r in range(rounds):
            print(f"round {r + 1} (N={n})")
            await _time(db, "Patient?identifier=system|code", "Patient", token, n)
            await _time(db, "DocumentReference?patient=..&_sort=-date", "DocumentReference",
                        docs, n)
    finally:
        await db.dispose()
        await _admin(f'DROP DATABASE "{name}"')


if __name__ == "__main__":
    asyncio.run(main())
