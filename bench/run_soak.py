#!/usr/bin/env python3
"""Sustained load (issue 11): the harness's mixed traffic at a steady rate for ten minutes,
with the server's memory and the latencies read minute by minute, on PostgreSQL.

1. creates a fresh database and loads ``--patients`` patients with
   ``--documents-per-patient`` documents through the bulk path (server stopped);
2. starts ``carnet serve --workers 2`` on it;
3. runs ``carnet simulate`` as a library for ``--minutes``: ITI-65 at ``--rate`` Bundles/s
   from ``--concurrency`` professionals' clients, each filing followed on average by
   ``--searches`` ITI-67 searches, ``--reads`` ITI-68 retrievals and ``--patient-reads``
   patient « Mes documents » reads;
4. at each ``--window`` seconds, records the window's requests, errors, p50/p99 per
   operation and the server's current resident memory (all its processes);
5. judges stability (no error; last window's p99 within ``--p99-growth`` x the first
   one's, or +20 ms; memory growth from the second window to the last below
   ``--rss-growth``) and adds a section to ``bench/RESULTS.md``.

    python bench/run_soak.py [--minutes 10] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import run_national
from core import BenchError, Config
from core.database import create_database, machine_facts, vacuum_analyze
from core.main import add_common_options, bench_main, check_database_name
from core.server import Server, log_problems, start_carnet

from service.simulate.report import OPERATIONS


@dataclass
class Window:
    ends_at: float  # seconds since the load started
    rss_bytes: int
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: dict[str, float] = field(default_factory=dict)
    p99_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Soak:
    windows: list[Window] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0
    server_log_problems: dict[str, int] = field(default_factory=dict)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="how long the load lasts")
    p.add_argument("--window", type=float, default=60.0, help="seconds per reading")
    p.add_argument("--rate", type=float, default=20.0, help="ITI-65 Bundles per second")
    p.add_argument("--concurrency", type=int, default=16, help="harness clients")
    p.add_argument("--searches", type=float, default=1.0, help="ITI-67 per filing")
    p.add_argument("--reads", type=float, default=1.0, help="ITI-68 per filing")
    p.add_argument("--patient-reads", type=float, default=0.5, help="patient reads per filing")
    p.add_argument("--max-bytes", type=int, default=64_000, help="largest document filed")
    p.add_argument("--patients", type=int, default=500, help="patients loaded first")
    p.add_argument("--documents-per-patient", type=int, default=4,
                   help="documents loaded per patient before the load")
    p.add_argument("--professionals", type=int, default=50, help="professionals of the corpus")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--p99-growth", type=float, default=1.5,
                   help="largest accepted last/first window p99 ratio")
    p.add_argument("--rss-growth", type=float, default=0.15,
                   help="largest accepted memory growth from the second window to the last")
    add_common_options(p, "carnet_bench_soak")
    args = p.parse_args(argv)
    check_database_name(p, args)
    if args.window <= 0 or args.minutes * 60 < 2 * args.window:
        p.error("--minutes must cover at least two --window readings")
    # What run_national.bulk_stage reads from its own options.
    args.bulk_tasks, args.bulk_processes, args.bulk_max_bytes = 4, 2, args.max_bytes
    args.app_factory = None
    return args


def resident_bytes(pid: int) -> int:
    """Current resident memory (VmRSS) of the server and its worker processes."""
    from service.simulate.memory import PROC, with_children

    total = 0
    for member in with_children({pid}):
        try:
            for line in (PROC / str(member) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class Readings:
    """Called by the harness every ``--window`` seconds with its report so far."""

    def __init__(self, server: Server, soak: Soak) -> None:
        self.server, self.soak = server, soak
        self.seen: dict[str, int] = {}
        self.started = time.monotonic()

    def __call__(self, report: Any) -> None:
        from service.simulate.report import percentile

        window = Window(time.monotonic() - self.started, resident_bytes(self.server.proc.pid))
        for name in OPERATIONS:
            stats = report.operations.get(name)
            if stats is None:
                continue
            start = self.seen.get(name, 0)
            fresh = sorted(stats.latencies[start:])
            self.seen[name] = len(stats.latencies)
            window.counts[name] = len(fresh)
            window.errors[name] = stats.errors  # cumulative: errors are never forgiven
            window.p50_ms[name] = 1000 * percentile(fresh, 0.50)
            window.p99_ms[name] = 1000 * percentile(fresh, 0.99)
        self.soak.windows.append(window)
        print(f"  {window.ends_at:6.0f}s  RSS {window.rss_bytes / 2**20:6.0f} MiB  "
              + "  ".join(f"{n} {window.counts.get(n, 0)} p99 {window.p99_ms.get(n, 0):.0f}ms"
                          for n in OPERATIONS), flush=True)


def run(args: argparse.Namespace) -> Soak:
    from service.demo import DEMO_APP_SECRET
    from service.simulate.login import Client
    from service.simulate.runner import Plan, SetupError, simulate

    soak = Soak()
    db_url = create_database(args)
    run_national.blob_dir(args).mkdir(parents=True, exist_ok=True)
    _, soak.load_seconds = run_national.bulk_stage(args, db_url, 0, args.patients)
    # The planner needs statistics (this machine's PostgreSQL runs without autovacuum):
    # without them ITI-67 drove from status=current, every document, and slowed as they grew.
    vacuum_analyze(args)
    asyncio.run(run_national.register_harness_client(db_url))
    server = start_carnet(args, Config(args.workers, args.pool_size), db_url,
                          extra_env=run_national.server_env(args))
    try:
        plan = Plan(url=server.url,
                    client=Client("demo-app", DEMO_APP_SECRET, run_national.HARNESS_REDIRECT),
                    duration=args.minutes * 60, concurrency=args.concurrency, rate=args.rate,
                    searches=args.searches, reads=args.reads,
                    patient_reads=args.patient_reads, max_bytes=args.max_bytes,
                    seed=args.seed, server_pids=(server.proc.pid,))
        print(f"soak: {args.minutes:g} min at {args.rate:g} ITI-65/s with {args.searches:g} "
              f"ITI-67, {args.reads:g} ITI-68 and {args.patient_reads:g} patient reads per "
              "filing", flush=True)
        readings = Readings(server, soak)
        try:
            report = asyncio.run(simulate(plan, readings, every=args.window))
        except SetupError as exc:
            raise BenchError(f"the harness could not start: {exc}") from exc
        soak.summary = report.summary()
        soak.server_log_problems = log_problems(server)
    finally:
        server.stop()
    return soak


def judged(args: argparse.Namespace, soak: Soak) -> list[tuple[str, bool, str]]:
    """(check, passed, measured) for each stability check."""
    full = [w for w in soak.windows if sum(w.counts.values())]
    if len(full) < 2:
        return [("two readings or more", False, f"{len(full)} reading(s)")]
    first, last = full[0], full[-1]
    checks = []
    errors = sum(last.errors.values())
    checks.append(("no failed request", errors == 0, f"{errors:,} failed"))
    # The last window may be cut short by the end of the run: judge the one before it.
    before, held = full[-3:-1] if len(full) > 2 else (first, last)
    seconds = held.ends_at - before.ends_at
    rate = held.counts.get("iti65", 0) / seconds if seconds > 0 else 0.0
    checks.append(("ITI-65 rate held (90 % of --rate)", rate >= 0.9 * args.rate,
                   f"{rate:,.1f}/s in the last full minute, {args.rate:g}/s asked"))
    for name in OPERATIONS:
        if name not in first.p99_ms or not first.counts.get(name):
            continue
        before, after = first.p99_ms[name], last.p99_ms[name]
        ok = after <= max(args.p99_growth * before, before + 20.0)
        checks.append((f"{name} p99 stable", ok, f"{before:.1f} -> {after:.1f} ms"))
    settled, end = full[1].rss_bytes, last.rss_bytes
    growth = (end - settled) / settled if settled else 0.0
    checks.append(("memory stable", growth <= args.rss_growth,
                   f"{settled / 2**20:,.0f} -> {end / 2**20:,.0f} MiB ({growth:+.1%})"))
    return checks


def section(args: argparse.Namespace, soak: Soak, wrk_version: str,
            started: dt.datetime) -> str:
    command = shlex.join(["python", "bench/run_soak.py", *sys.argv[1:]])
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC: sustained load (issue 11), {args.minutes:g} min "
             f"at {args.rate:g} ITI-65/s with searches and reads, "
             f"{Config(args.workers, args.pool_size).label()}", "",
             f"Command: `{command}`", ""]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_facts(args, wrk_version)]
    lines.append(f"- Before the load: {args.patients:,} patients x "
                 f"{args.documents_per_patient} documents through the bulk path "
                 f"({soak.load_seconds:.0f}s)")
    ops = soak.summary.get("operations", {})
    lines.append("- Whole run: " + ", ".join(
        f"{name} {o['requests']:,} ({o['errors']:,} errors)"
        for name, o in ops.items()))
    for name, o in ops.items():
        if o["first_errors"]:
            lines.append(f"- {name} errors by status {o['statuses']}; first: {o['first_errors']}")
    if soak.server_log_problems:
        lines.append(f"- Server log: {soak.server_log_problems}")
    lines += ["", "| check | result | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'PASS' if ok else 'FAIL'} | {value} |"
              for name, ok, value in judged(args, soak)]
    lines += ["", "| minute | RSS MiB | " + " | ".join(
        f"{n} req / p50 / p99 ms" for n in OPERATIONS) + " |",
        "|---:|---:|" + "---|" * len(OPERATIONS)]
    for w in soak.windows:
        cells = [f"{w.counts.get(n, 0):,} / {w.p50_ms.get(n, 0):.0f} / {w.p99_ms.get(n, 0):.0f}"
                 for n in OPERATIONS]
        lines.append(f"| {w.ends_at / 60:.1f} | {w.rss_bytes / 2**20:,.0f} | "
                     + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def failed(args: argparse.Namespace, soak: Soak) -> bool:
    return not all(ok for _, ok, _ in judged(args, soak))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return bench_main(args, lambda: run(args),
                      lambda soak, wrk_version, started: section(args, soak, wrk_version,
                                                                  started),
                      lambda soak: failed(args, soak),
                      cleanup=lambda: run_national.remove_blobs(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

