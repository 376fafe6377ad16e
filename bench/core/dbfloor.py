"""The database floor: how many single-row commits PostgreSQL itself sustains on this machine.

``N`` asyncpg connections each loop ``BEGIN; INSERT one row; COMMIT`` into a scratch table
of the benchmark database for a few seconds, no HTTP and no Carnet code in between. Every
Carnet write (an ITI-65 filing is one transaction) pays at least one such commit (a WAL
flush with ``synchronous_commit`` on), so this is the ceiling of any write figure measured
the same way; ``run_national.py`` divides the ITI-65 rate by it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time

from .wrk import Measure

TABLE = "bench_db_floor"
PAYLOAD = os.urandom(200)  # about the size of an index row batch's key columns


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[max(0, min(len(ordered), math.ceil(q * len(ordered))) - 1)]


async def _floor(args: argparse.Namespace, connections: int, seconds: float,
                 warmup: float) -> tuple[int, float, list[float], int]:
    import asyncpg

    dsn = dict(host=args.pg_host, port=args.pg_port, user=args.pg_user, database=args.db_name)
    admin = await asyncpg.connect(**dsn)
    await admin.execute(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} "
                        "(id bigserial PRIMARY KEY, payload bytea NOT NULL)")
    conns = [await asyncpg.connect(**dsn) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    measuring = False

    async def loop(conn: asyncpg.Connection, until: float) -> None:
        nonlocal errors
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {TABLE} (payload) VALUES ($1)", PAYLOAD)
            except asyncpg.PostgresError:
                errors += 1
                continue
            if measuring:
                latencies.append(time.monotonic() - started)

    try:
        if warmup > 0:
            await asyncio.gather(*(loop(c, time.monotonic() + warmup) for c in conns))
        measuring = True
        started = time.monotonic()
        await asyncio.gather(*(loop(c, started + seconds) for c in conns))
        elapsed = time.monotonic() - started
    finally:
        for c in conns:
            await c.close()
        await admin.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await admin.close()
    return len(latencies), elapsed, latencies, errors


def db_floor(args: argparse.Namespace, connections: int | None = None,
             seconds: float | None = None) -> Measure:
    """Single-row ``INSERT`` + ``COMMIT`` from ``connections`` concurrent asyncpg connections
    for ``seconds`` (default: ``--connections``, ``--duration``, after ``--warmup``) into a
    scratch table of ``args.db_name`` (dropped afterwards); a ``Measure`` of commits."""
    connections = connections or args.connections
    seconds = seconds or args.duration
    count, elapsed, latencies, errors = asyncio.run(
        _floor(args, connections, seconds, args.warmup))
    ordered = sorted(latencies)
    latency_us = {key: 1e6 * _percentile(ordered, q) for key, q in
                  (("p50", .5), ("p90", .9), ("p99", .99), ("p999", .999), ("max", 1.0))}
    m = Measure("dbfloor", count, elapsed, {"errors": errors} if errors else {}, latency_us)
    m.extra["connections"] = connections
    print(f"  {'dbfloor':<12} {m.rate:>9,.0f} commits/s  p50 {m.p('p50'):6.2f} ms  "
          f"p99 {m.p('p99'):6.2f} ms  errors {m.error_text()}   (INSERT + COMMIT, "
          f"{connections} asyncpg connections)", flush=True)
    return m
