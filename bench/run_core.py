#!/usr/bin/env python3
"""Benchmark of the FHIR R4 core on PostgreSQL: create/s, read-by-id/s, search/s.

    python bench/run_core.py [--resources 100000] [--workers 2] [--duration 15]
                             [--connections 16] [--pool-size 20] [--sweep 1:20,2:20,3:10]

What it does, in order (see bench/README.md for what each figure means):

1. checks that ``wrk`` is on PATH (it installs nothing: ``apt-get install wrk``);
2. measures the HTTP floor: ``bench/floor_app.py`` (FastAPI returning fixed bytes)
   under uvicorn with the same worker count, connections and wrk threads;
3. creates a fresh PostgreSQL database (``carnet_bench``), starts ``carnet serve``
   on a free loopback port and waits for ``/fhir/metadata`` and every worker;
4. bulk-loads N Patients (unique INS identifier, name, gender, birthDate) through
   ``POST /fhir`` transaction Bundles from several concurrent httpx loaders, checks
   the row counts, runs ``VACUUM ANALYZE`` (autovacuum may be off) and spot-checks
   read and search answers for correctness;
5. runs wrk (``--latency``, Lua scripts in ``bench/wrk/``) for read by id, token
   search on ``identifier`` and create, each after a short warm-up; every wrk error
   counter (non-2xx/3xx status, connect, read, write, timeout) is reported and a
   figure with errors is never a pass; the creates are counted back in the database;
6. writes the figures, machine facts and the exact command at the top of
   ``bench/RESULTS.md`` (earlier runs are kept below it);
7. stops the server and drops the database, also on error or Ctrl-C.

With ``--sweep W:P,...`` the same loaded database is measured under several
(worker count, pool size) configurations, one table each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
WRK_DIR = BENCH / "wrk"
RESULTS = BENCH / "RESULTS.md"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.10"
RUNS_MARKER = "<!-- runs: newest first; run_core.py inserts each new run below this line -->"

READ_TARGET = 3000.0  # req/s
CREATE_TARGET = 800.0  # req/s
SEARCH_P99_TARGET_MS = 20.0

FAMILIES = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
            "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
            "Bertrand", "Roux", "Vincent", "Fournier"]
GIVENS = ["Jean", "Marie", "Pierre", "Camille", "Louis", "Chloé", "Hugo", "Léa", "Jules",
          "Manon", "Gabriel", "Inès", "Arthur", "Jade", "Raphaël", "Zoé", "Adam", "Emma",
          "Noé", "Alice"]


class BenchError(RuntimeError):
    """A failure that stops the run (the message says what to do)."""


# ----------------------------------------------------------------------------- arguments


@dataclass(frozen=True)
class Config:
    workers: int
    pool_size: int | None  # None: the server's default (CARNET_DB_POOL_SIZE unset)

    def label(self) -> str:
        pool = self.pool_size if self.pool_size is not None else "default (20)"
        return f"{self.workers} worker(s), pool size {pool}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--resources", type=int, default=100_000, help="Patients to load")
    p.add_argument("--workers", type=int, default=2, help="carnet serve --workers")
    p.add_argument("--pool-size", type=int, default=None,
                   help="CARNET_DB_POOL_SIZE per worker (default: the server's default)")
    p.add_argument("--sweep", default=None,
                   help="measure several configurations on the same data: "
                        "'WORKERS:POOL,...' (POOL may be 'd' for the default); "
                        "overrides --workers/--pool-size")
    p.add_argument("--duration", type=int, default=15, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each run")
    p.add_argument("--connections", type=int, default=16, help="wrk concurrent connections")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--light-connections", type=int, default=2,
                   help="also measure the search from this few connections (latency without "
                        "queueing; informational, 0 to skip)")
    p.add_argument("--bundle-size", type=int, default=500, help="entries per load Bundle")
    p.add_argument("--loaders", type=int, default=4, help="concurrent loading clients")
    p.add_argument("--db-name", default="carnet_bench", help="database created and dropped")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--only", default="floor,read,search,create",
                   help="comma-separated subset of floor,read,search,create")
    p.add_argument("--profile", action="store_true",
                   help="record py-spy profiles of the server during each measured run into "
                        "bench/.work/ (needs py-spy; figures are then not written to RESULTS.md)")
    p.add_argument("--app-factory", default=None,
                   help="measure this ASGI app factory (module:function, importable from bench/) "
                        "under uvicorn instead of `carnet serve`, e.g. to A/B a change before "
                        "making it; such runs are labelled as experiments")
    p.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    p.add_argument("--note", default="", help="free text recorded with the run")
    args = p.parse_args(argv)
    if args.sweep:
        configs = []
        for item in args.sweep.split(","):
            w, _, pool = item.partition(":")
            configs.append(Config(int(w), None if pool in ("", "d") else int(pool)))
        args.configs = configs
    else:
        args.configs = [Config(args.workers, args.pool_size)]
    args.phases = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.phases) - {"floor", "read", "search", "create"}
    if unknown:
        p.error(f"unknown --only phase(s): {', '.join(sorted(unknown))}")
    if args.connections < args.threads:
        p.error("--connections must be >= --threads (wrk needs a connection per thread)")
    if args.pg_host not in ("127.0.0.1", "localhost", "::1"):
        p.error("this benchmark only talks to a loopback PostgreSQL")
    return args


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGINT the process group this script created (uvicorn shuts down gracefully)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log_file.close()


def start_process(name: str, cmd: list[str], env: dict[str, str], port: int) -> Server:
    log_path = WORK / f"{name}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by Server.stop
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: stopped as a whole
    return Server(name, proc, port, log_path, log_file)


def wait_ready(server: Server, path: str, workers: int, timeout: float = 60.0) -> None:
    """Wait for ``path`` to answer 200 and for every worker to log its startup."""
    import httpx

    deadline = time.monotonic() + timeout
    ok = False
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with code {server.proc.returncode}:\n"
                             f"{server.log_tail()}")
        if not ok:
            with contextlib.suppress(httpx.HTTPError):
                ok = httpx.get(server.url + path, timeout=2).status_code == 200
        if ok:
            started = server.log_path.read_text(errors="replace").count(
                "Application startup complete")
            if started >= workers:
                return
        time.sleep(0.2)
    raise BenchError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log_tail()}")


def carnet_command() -> list[str]:
    exe = Path(sys.executable).with_name("carnet")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("carnet")
    return [found] if found else [sys.executable, "-m", "service.cli"]


def start_carnet(args: argparse.Namespace, config: Config, db_url: str) -> Server:
    port = free_port()
    env = {**os.environ, "CARNET_DATABASE_URL": db_url, "CARNET_LOG_LEVEL": "info",
           "CARNET_DATA_DIR": str(WORK / "carnet-data")}
    env.pop("CARNET_DB_POOL_SIZE", None)
    if config.pool_size is not None:
        env["CARNET_DB_POOL_SIZE"] = str(config.pool_size)
    cmd = [*carnet_command(), "serve", "--workers", str(config.workers), "--host", "127.0.0.1",
           "--port", str(port)]
    if args.app_factory:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                          env.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-m", "uvicorn", args.app_factory, "--factory", "--app-dir",
               str(BENCH), "--workers", str(config.workers), "--host", "127.0.0.1", "--port",
               str(port), "--no-access-log", "--log-level", "info"]
    server = start_process("carnet", cmd, env, port)
    wait_ready(server, "/fhir/metadata", config.workers)
    return server


def start_floor(workers: int) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "floor_app:app", "--app-dir", str(BENCH),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--no-access-log", "--log-level", "info"]
    server = start_process("floor", cmd, dict(os.environ), port)
    wait_ready(server, "/floor", workers)
    return server


# ----------------------------------------------------------------------------- database


async def _admin(args: argparse.Namespace, *statements: str, fetch: str | None = None,
                 database: str = "postgres") -> Any:
    import asyncpg

    conn = await asyncpg.connect(host=args.pg_host, port=args.pg_port, user=args.pg_user,
                                 database=database)
    try:
        for statement in statements:
            await conn.execute(statement)
        return await conn.fetch(fetch) if fetch else None
    finally:
        await conn.close()


def admin(args: argparse.Namespace, *statements: str, fetch: str | None = None,
          database: str = "postgres") -> Any:
    return asyncio.run(_admin(args, *statements, fetch=fetch, database=database))


def create_database(args: argparse.Namespace) -> str:
    name = args.db_name
    admin(args, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://{args.pg_user}@{args.pg_host}:{args.pg_port}/{name}"


def drop_database(args: argparse.Namespace) -> None:
    admin(args, f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')


def pg_facts(args: argparse.Namespace) -> dict[str, str]:
    rows = admin(args, fetch="SELECT name, setting, unit FROM pg_settings WHERE name IN "
                             "('server_version', 'shared_buffers', 'synchronous_commit', 'fsync', "
                             "'autovacuum', 'max_connections', 'jit')")
    facts = {}
    for r in rows:
        value = r["setting"]
        if r["name"] == "shared_buffers" and r["unit"] == "8kB":
            value = f"{int(value) * 8 // 1024} MB"
        facts[r["name"]] = value
    return facts


# ----------------------------------------------------------------------------- loading


def patient(rng: random.Random, value: str) -> dict[str, Any]:
    year = rng.randint(1930, 2020)
    return {"resourceType": "Patient",
            "identifier": [{"system": INS_SYSTEM, "value": value}],
            "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVENS)]}],
            "gender": rng.choice(("male", "female")),
            "birthDate": f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}


async def _load(base: str, n: int, bundle_size: int, loaders: int) -> list[tuple[str, str]]:
    """POST transaction Bundles; returns (identifier value, assigned id) for every Patient."""
    import httpx
    import orjson

    values = [f"1{i:014d}" for i in range(n)]  # 15 digits, unique
    chunks = [range(start, min(start + bundle_size, n)) for start in range(0, n, bundle_size)]
    ids: list[str | None] = [None] * n
    queue: asyncio.Queue[range] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    done = 0
    next_report = 0.0
    started = time.perf_counter()

    async def loader(number: int, client: httpx.AsyncClient) -> None:
        nonlocal done, next_report
        rng = random.Random(number)
        while True:
            try:
                chunk = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            bundle = {"resourceType": "Bundle", "type": "transaction",
                      "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                                 "resource": patient(rng, values[i]),
                                 "request": {"method": "POST", "url": "Patient"}}
                                for i in chunk]}
            response = await client.post("/fhir", content=orjson.dumps(bundle))
            if response.status_code != 200:
                raise BenchError(f"load Bundle answered {response.status_code}: "
                                 f"{response.text[:2000]}")
            entries = response.json().get("entry", [])
            if len(entries) != len(chunk):
                raise BenchError(f"load Bundle of {len(chunk)} answered {len(entries)} entries")
            for i, e in zip(chunk, entries, strict=True):
                answer = e["response"]
                if not answer["status"].startswith("201"):
                    raise BenchError(f"load entry answered {answer}")
                ids[i] = answer["location"].split("/")[1]  # Patient/<id>/_history/1
            done += len(chunk)
            elapsed = time.perf_counter() - started
            if done / n >= next_report or done == n:
                print(f"  loaded {done:>9,}/{n:,} ({done / elapsed:,.0f} resources/s)",
                      flush=True)
                next_report += 0.1

    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        await asyncio.gather(*(loader(k, client) for k in range(loaders)))
    assert all(i is not None for i in ids)
    return list(zip(values, ids, strict=True))  # type: ignore[arg-type]


def load(args: argparse.Namespace, server: Server, db_url: str) -> dict[str, Any]:
    n = args.resources
    print(f"loading {n:,} Patients: transaction Bundles of {args.bundle_size}, "
          f"{args.loaders} concurrent loaders", flush=True)
    started = time.perf_counter()
    pairs = asyncio.run(_load(server.url, n, args.bundle_size, args.loaders))
    seconds = time.perf_counter() - started
    counts = admin(args, database=args.db_name, fetch=(
        "SELECT (SELECT count(*) FROM resource WHERE resource_type = 'Patient') AS resources, "
        "(SELECT count(*) FROM token_index WHERE resource_type = 'Patient' "
        f" AND param = 'identifier' AND system = '{INS_SYSTEM}') AS identifiers"))[0]
    if counts["resources"] != n or counts["identifiers"] != n:
        raise BenchError(f"after loading {n} Patients the database holds {counts['resources']} "
                         f"resources and {counts['identifiers']} identifier index rows")
    vacuum_started = time.perf_counter()
    admin(args, "VACUUM ANALYZE", database=args.db_name)
    vacuum_seconds = time.perf_counter() - vacuum_started
    size = admin(args, database=args.db_name,
                 fetch="SELECT pg_size_pretty(pg_database_size(current_database())) AS s")[0]["s"]
    print(f"  {n:,} Patients in {seconds:.1f}s ({n / seconds:,.0f}/s); VACUUM ANALYZE "
          f"{vacuum_seconds:.1f}s; database {size}", flush=True)

    rng = random.Random(7)
    shuffled = pairs[:]
    rng.shuffle(shuffled)
    read_paths = WORK / "read_paths.txt"
    search_paths = WORK / "search_paths.txt"
    read_paths.write_text("".join(f"/fhir/Patient/{rid}\n" for _, rid in shuffled))
    rng.shuffle(shuffled)
    search_paths.write_text("".join(
        f"/fhir/Patient?identifier={quote(INS_SYSTEM + '|' + value, safe='')}\n"
        for value, _ in shuffled))
    spot_check(server.url, rng.sample(pairs, min(50, n)))
    return {"seconds": seconds, "rate": n / seconds, "db_size": size,
            "read_paths": read_paths, "search_paths": search_paths}


def spot_check(base: str, sample: list[tuple[str, str]]) -> None:
    """Read and search answers must be right, not only fast."""
    import httpx

    with httpx.Client(base_url=base, headers={"Accept": "application/fhir+json"}) as client:
        for value, rid in sample:
            r = client.get(f"/fhir/Patient/{rid}")
            body = r.json()
            if r.status_code != 200 or body.get("id") != rid or \
                    body["identifier"][0]["value"] != value:
                raise BenchError(f"read Patient/{rid} answered {r.status_code}: {r.text[:500]}")
            r = client.get("/fhir/Patient", params={"identifier": f"{INS_SYSTEM}|{value}"})
            body = r.json()
            found = [e["resource"]["id"] for e in body.get("entry", [])]
            if r.status_code != 200 or body.get("total") != 1 or found != [rid]:
                raise BenchError(f"search identifier={value} answered {r.status_code} "
                                 f"total={body.get('total')} ids={found}, expected [{rid}]")
    print(f"  spot check: {len(sample)} reads and searches answered correctly", flush=True)


# ----------------------------------------------------------------------------- wrk


@dataclass
class Measure:
    name: str
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    warmup_errors: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    cpu: CpuUse | None = None
    spread: list[int] = field(default_factory=list)  # wrk connections held by each worker

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + sum(self.warmup_errors.values())

    def p(self, key: str) -> float:
        return self.latency_us[key] / 1000.0

    def error_text(self) -> str:
        parts = [f"{k} {v}" for k, v in self.errors.items() if v]
        parts += [f"warm-up {k} {v}" for k, v in self.warmup_errors.items() if v]
        return ", ".join(parts) if parts else "0"


def check_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not on PATH. Install it first, e.g. on Debian/Ubuntu:\n"
                         "    sudo apt-get install -y wrk\n"
                         "(see bench/README.md). This script installs nothing itself.")
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0].strip() if text else wrk


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot() -> tuple[float, dict[int, tuple[str, int, float, float]]]:
    """Busy CPU seconds of the machine; per process: name, process group, CPU seconds and
    seconds spent runnable but waiting for a CPU (``/proc/PID/schedstat``, main thread)."""
    busy = 0.0
    with contextlib.suppress(OSError):
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        busy = (sum(values[:8]) - values[3] - values[4]) / _TICK  # minus idle and iowait
    procs: dict[int, tuple[str, int, float, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = (entry / "stat").read_text()
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2:].split()
            waited = 0.0
            with contextlib.suppress(OSError, ValueError, IndexError):
                waited = int((entry / "schedstat").read_text().split()[1]) / 1e9
            procs[int(entry.name)] = (name, int(rest[2]), (int(rest[11]) + int(rest[12])) / _TICK,
                                      waited)
    return busy, procs


@dataclass
class CpuUse:
    """Where the machine's CPU went during one measured run (percent of one core)."""

    server: float
    wrk: float
    postgres: float
    other: float
    postgres_wait: float  # run-queue wait of PostgreSQL processes / their CPU time


def _cpu_use(before: tuple[float, dict[int, tuple[str, int, float, float]]],
             after: tuple[float, dict[int, tuple[str, int, float, float]]], server_group: int,
             wrk_cpu: float, seconds: float) -> CpuUse:
    def delta(select: Any, wait: bool = False) -> float:
        total = 0.0
        for pid, (name, group, cpu, waited) in after[1].items():
            if select(name, group):
                old = before[1].get(pid, (name, group, 0.0, 0.0))
                total += (waited - old[3]) if wait else (cpu - old[2])
        return total

    def is_postgres(name: str, _group: int) -> bool:
        return name.startswith("postgres")

    server = delta(lambda _n, g: g == server_group)
    postgres = delta(is_postgres)
    postgres_wait = delta(is_postgres, wait=True)
    other = max(0.0, after[0] - before[0] - server - wrk_cpu - postgres)
    return CpuUse(server=100 * server / seconds, wrk=100 * wrk_cpu / seconds,
                  postgres=100 * postgres / seconds, other=100 * other / seconds,
                  postgres_wait=postgres_wait / postgres if postgres > 0 else 0.0)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def connection_spread(server: Server) -> list[int]:
    """Established client connections held by each worker of ``server``, largest first.

    uvicorn's workers share one listening socket and a worker accepts whatever
    connections arrive while it is free, so wrk's connections (opened together at
    the start of a run) can be spread unevenly; a skewed spread caps throughput.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port == server.port and fields[3] == "01":  # ESTABLISHED, server side
                    inodes.add(fields[9])
    counts = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == server.proc.pid:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[2]) != server.proc.pid or \
                    b"resource_tracker" in (entry / "cmdline").read_bytes():
                continue
            held = 0
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        held += 1
            counts.append(held)
    if not counts:  # a single worker serves in the main process
        counts = [len(inodes)]
    return sorted(counts, reverse=True)


def run_wrk(args: argparse.Namespace, name: str, server: Server, script: str,
            script_args: list[str], duration: int,
            connections: int) -> tuple[dict[str, Any], str, CpuUse, list[int]]:
    threads = min(args.threads, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
           "--timeout", "10s", "--latency", "-s", str(WRK_DIR / script), server.url, "--",
           *script_args]
    before, children_before = _cpu_snapshot(), _children_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    spread: list[int] = []
    try:
        text, _ = proc.communicate(timeout=min(1.5, duration / 2))
    except subprocess.TimeoutExpired:
        spread = connection_spread(server)
        text, _ = proc.communicate()
    after, wrk_cpu = _cpu_snapshot(), _children_cpu() - children_before  # wrk is reaped
    use = _cpu_use(before, after, server.proc.pid, wrk_cpu, time.monotonic() - started)
    (WORK / f"wrk-{name}.txt").write_text(shlex.join(cmd) + "\n\n" + text)
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}):\n{shlex.join(cmd)}\n{text}")
    return json.loads(line[len("BENCH_JSON "):]), text, use, spread


def measure(args: argparse.Namespace, server: Server, name: str, script: str,
            script_args: list[str], path_hint: str, connections: int | None = None) -> Measure:
    connections = connections or args.connections
    warm: dict[str, Any] = {"errors": {}}
    if args.warmup > 0:
        warm, _, _, _ = run_wrk(args, f"{name}-warmup", server, script, script_args, args.warmup,
                             connections)
    profiler = start_profiler(args, server, name)
    data, text, cpu, spread = run_wrk(args, name, server, script, script_args,
                                      args.duration, connections)
    stop_profiler(profiler)
    m = Measure(name, data["requests"], data["duration_us"] / 1e6, data["errors"],
                data["latency_us"], warmup_errors=warm["errors"], cpu=cpu, spread=spread)
    print(f"  {name:<12} {m.rate:>9,.0f} req/s  p50 {m.p('p50'):6.2f} ms  "
          f"p99 {m.p('p99'):6.2f} ms  errors {m.error_text()}   ({path_hint})\n"
          f"          CPU (% of one core): server {cpu.server:.0f}, wrk {cpu.wrk:.0f}, "
          f"postgres {cpu.postgres:.0f}, other processes {cpu.other:.0f}; postgres waited "
          f"{cpu.postgres_wait:.1f} s for a CPU per s of CPU; connections per worker "
          f"{'/'.join(map(str, m.spread)) or '?'}", flush=True)
    if m.error_count:
        print("    wrk reported errors; its output:\n" + text, flush=True)
    if server.proc.poll() is not None:
        raise BenchError(f"{server.name} died during {name}:\n{server.log_tail()}")
    return m


def start_profiler(args: argparse.Namespace, server: Server,
                   name: str) -> subprocess.Popen[bytes] | None:
    if not args.profile:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    out = WORK / f"profile-{server.name}-{name}.txt"
    return subprocess.Popen([spy, "record", "--pid", str(server.proc.pid), "--subprocesses",
                             "--nonblocking", "--rate", "250", "--duration",
                             str(args.duration), "--format", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()


def count_created(args: argparse.Namespace, nonce: int) -> int:
    prefix = f"9{nonce:03d}"
    rows = admin(args, database=args.db_name, fetch=(
        "SELECT count(*) AS n FROM token_index WHERE resource_type = 'Patient' "
        f"AND param = 'identifier' AND system = '{INS_SYSTEM}' AND code LIKE '{prefix}%'"))
    return int(rows[0]["n"])


# ----------------------------------------------------------------------------- the run


@dataclass
class ConfigResult:
    config: Config
    floor: Measure | None = None
    measures: dict[str, Measure] = field(default_factory=dict)
    server_log_errors: dict[str, int] = field(default_factory=dict)


def measure_config(args: argparse.Namespace, config: Config, server: Server,
                   load_info: dict[str, Any], result: ConfigResult) -> None:
    phases = args.phases
    print(f"measuring {config.label()}: wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration}s (warm-up {args.warmup}s)", flush=True)
    if "read" in phases:
        result.measures["read"] = measure(
            args, server, "read", "read.lua",
            [str(load_info["read_paths"]), str(args.threads)], "GET /fhir/Patient/<id>")
    if "search" in phases:
        result.measures["search"] = measure(
            args, server, "search", "search.lua",
            [str(load_info["search_paths"]), str(args.threads)],
            "GET /fhir/Patient?identifier=system|value")
    if "search" in phases and args.light_connections:
        result.measures["search-light"] = measure(
            args, server, "search-light", "search.lua",
            [str(load_info["search_paths"]), str(min(args.threads, args.light_connections))],
            f"the same search from {args.light_connections} connection(s)",
            connections=args.light_connections)
    if "create" in phases:
        nonce = random.Random().randrange(1000)
        m = measure(args, server, "create", "create.lua", [str(nonce)], "POST /fhir/Patient")
        stored = count_created(args, nonce)
        m.extra["stored"] = stored
        # stored >= counted: the warm-up also creates, and wrk stops counting at the
        # deadline while a few requests are still in flight.
        if stored < m.requests - m.error_count:
            raise BenchError(f"wrk counted {m.requests:,} creates (plus warm-up) but only "
                             f"{stored:,} are stored")
        print(f"    {stored:,} Patients stored by the create runs (warm-up included)",
              flush=True)
        result.measures["create"] = m
    result.server_log_errors = log_problems(server)


def log_problems(server: Server) -> dict[str, int]:
    """Tracebacks in the server log, by exception; counted, never hidden.

    ``ClientDisconnect`` is expected a few times per wrk run: wrk closes its
    connections at the deadline while requests are in flight.
    """
    lines = server.log_path.read_text(errors="replace").splitlines()
    problems: dict[str, int] = {}
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line.startswith((" ", "\t", "Traceback",
                                                              "During handling", "The above")):
            name = line.split(":", 1)[0].strip()
            problems[name] = problems.get(name, 0) + 1
            in_traceback = False
    return problems


def run(args: argparse.Namespace) -> list[ConfigResult]:
    WORK.mkdir(exist_ok=True)
    results = [ConfigResult(c) for c in args.configs]
    floors: dict[int, Measure] = {}
    if "floor" in args.phases:
        for workers in sorted({c.workers for c in args.configs}):
            print(f"HTTP floor: bench/floor_app.py under uvicorn --workers {workers}", flush=True)
            floor = start_floor(workers)
            try:
                floors[workers] = measure(args, floor, "floor", "get_cycle.lua",
                                          [str(write_floor_paths()), str(args.threads)],
                                          "GET /floor, fixed bytes")
            finally:
                floor.stop()
    for r in results:
        r.floor = floors.get(r.config.workers)

    db_url = create_database(args)
    server: Server | None = None
    load_info: dict[str, Any] = {}
    try:
        for index, result in enumerate(results):
            print(f"starting {args.app_factory or 'carnet serve'} ({result.config.label()}) "
                  f"on database {args.db_name}", flush=True)
            server = start_carnet(args, result.config, db_url)
            try:
                if index == 0:
                    load_info = load(args, server, db_url)
                    args.load_info = load_info
                measure_config(args, result.config, server, load_info, result)
            finally:
                server.stop()
                server = None
    finally:
        if server is not None:
            server.stop()
    return results


def write_floor_paths() -> Path:
    path = WORK / "floor_paths.txt"
    path.write_text("/floor\n")
    return path


# ----------------------------------------------------------------------------- report


def machine_facts(args: argparse.Namespace, wrk_version: str) -> list[tuple[str, str]]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True,
                           check=False).stdout.strip() or str(os.cpu_count())
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    pg = pg_facts(args)
    versions = []
    for package in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy",
                    "asyncpg", "orjson", "fhir.resources"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    return [
        ("Code", code_version()),
        ("CPU", f"nproc {nproc} ({cpu}){mem}; server, PostgreSQL and wrk share it"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("PostgreSQL", f"{pg.get('server_version', '?')} (shared_buffers "
                       f"{pg.get('shared_buffers', '?')}, synchronous_commit "
                       f"{pg.get('synchronous_commit', '?')}, fsync {pg.get('fsync', '?')}, "
                       f"autovacuum {pg.get('autovacuum', '?')}, jit {pg.get('jit', '?')}, "
                       f"max_connections {pg.get('max_connections', '?')})"),
        ("Load generator", f"{wrk_version}, {args.threads} threads, {args.connections} "
                           f"connections, {args.duration}s per figure after {args.warmup}s "
                           "warm-up"),
        ("Packages", ", ".join(versions)),
    ]


def code_version() -> str:
    """The commit measured, and which files differed from it (read-only git commands)."""
    def git(*argv: str) -> str:
        with contextlib.suppress(OSError):
            out = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                                 check=False)
            if out.returncode == 0:
                return out.stdout.rstrip()
        return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout?)"
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
               .splitlines() if line[3:] and not line[3:].startswith("bench/")]
    return f"commit {head}" + (f" plus uncommitted changes to {', '.join(changed)}"
                               if changed else "")


def ratio(m: Measure, floor: Measure | None) -> str:
    return f"{m.rate / floor.rate:.2f}" if floor and floor.rate else "n/a"


def verdict(ok: bool, m: Measure) -> str:
    if m.error_count:
        return "**FAIL** (errors)"
    return "pass" if ok else "**miss**"


def config_table(args: argparse.Namespace, r: ConfigResult) -> str:
    n = args.resources
    rows = ["| Figure | Target | Measured | p50 | p99 | Ratio to floor | Errors | Result |",
            "|---|---|---|---|---|---|---|---|"]

    def row(figure: str, target: str, m: Measure, result: str) -> None:
        rows.append(f"| {figure} | {target} | {m.rate:,.0f} req/s | {m.p('p50'):.2f} ms | "
                    f"{m.p('p99'):.2f} ms | {ratio(m, r.floor)} | {m.error_text()} | {result} |")

    if r.floor:
        row("HTTP floor: `GET /floor` (fixed bytes, bench/floor_app.py)", "-", r.floor,
            "reference" if not r.floor.error_count else "**FAIL** (errors)")
    if m := r.measures.get("create"):
        row("Create: `POST /fhir/Patient` (unique identifier each)", f">= {CREATE_TARGET:,.0f}/s",
            m, verdict(m.rate >= CREATE_TARGET, m))
    if m := r.measures.get("read"):
        row(f"Read by id: `GET /fhir/Patient/<id>` over {n:,} ids", f">= {READ_TARGET:,.0f}/s",
            m, verdict(m.rate >= READ_TARGET, m))
    if m := r.measures.get("search"):
        row(f"Token search: `GET /fhir/Patient?identifier=system\\|value` over {n:,} Patients",
            f"p99 < {SEARCH_P99_TARGET_MS:.0f} ms", m,
            verdict(m.p("p99") < SEARCH_P99_TARGET_MS, m))
    if m := r.measures.get("search-light"):
        row(f"(info) the same search from {args.light_connections} connection(s) only",
            "-", m, "**FAIL** (errors)" if m.error_count else "info")
    return "\n".join(rows)


def section(args: argparse.Namespace, results: list[ConfigResult], wrk_version: str,
            started: dt.datetime) -> str:
    command = shlex.join(["python", "bench/run_core.py", *sys.argv[1:]])
    effective = (f"--resources {args.resources} --duration {args.duration} --warmup "
                 f"{args.warmup} --connections {args.connections} --threads {args.threads} "
                 f"--light-connections {args.light_connections} "
                 f"--bundle-size {args.bundle_size} --loaders {args.loaders}")
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC: {', '.join(r.config.label() for r in results)}",
             "", f"Command: `{command}`", "", f"Effective settings: `{effective}`", ""]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    if args.app_factory:
        lines += [f"**Experiment: the server was `uvicorn {args.app_factory} --factory`, not "
                  "`carnet serve`.**", ""]
    lines += [f"- {k}: {v}" for k, v in machine_facts(args, wrk_version)]
    info = getattr(args, "load_info", None)
    if info:
        lines.append(f"- Load: {args.resources:,} Patients through `POST /fhir` transaction "
                     f"Bundles of {args.bundle_size} from {args.loaders} concurrent clients in "
                     f"{info['seconds']:.1f}s ({info['rate']:,.0f} resources/s), then "
                     f"`VACUUM ANALYZE`; database size {info['db_size']}")
    lines.append("")
    for r in results:
        lines += [f"### {r.config.label()}", "", config_table(args, r), ""]
        notes = []
        if m := r.measures.get("create"):
            notes.append(f"create runs stored {m.extra.get('stored', 0):,} Patients "
                         f"(wrk counted {m.requests:,} in the measured run, plus warm-up)")
        all_m = [*(r.measures.values()), *([r.floor] if r.floor else [])]
        latency_detail = "; ".join(
            f"{m.name} p90 {m.p('p90'):.2f} / p99.9 {m.p('p999'):.2f} / max {m.p('max'):.1f} ms"
            for m in all_m)
        notes.append(latency_detail)
        cpu_rows = [f"{m.name}: server {m.cpu.server:.0f}, wrk {m.cpu.wrk:.0f}, postgres "
                    f"{m.cpu.postgres:.0f} (run-queue wait {m.cpu.postgres_wait:.1f} s per "
                    f"CPU s), other processes {m.cpu.other:.0f}"
                    for m in all_m if m.cpu]
        if cpu_rows:
            notes.append("CPU during each measured run, in % of one core (the machine has "
                         f"{os.cpu_count() or '?'} cores): " + "; ".join(cpu_rows))
            notes.append("wrk connections held by each worker during each run (uvicorn's "
                         "workers share one listening socket, so the spread varies from run "
                         "to run and caps throughput when skewed): " + "; ".join(
                             f"{m.name} {'/'.join(map(str, m.spread)) or '?'}" for m in all_m))
            noisy = [m.name for m in all_m if m.cpu and m.cpu.other >= 15]
            if noisy:
                notes.append("**other processes used >= 15% of a core during "
                             f"{', '.join(noisy)}: those figures are pessimistic**")
        if r.server_log_errors:
            notes.append("server log tracebacks: " + ", ".join(
                f"{name} x{count}" for name, count in sorted(r.server_log_errors.items()))
                + (" (ClientDisconnect: wrk closing connections with requests in flight at "
                   "the end of a run)" if "starlette.requests.ClientDisconnect"
                   in r.server_log_errors else ""))
        else:
            notes.append("server log: no tracebacks")
        lines += [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write_results(new_section: str) -> None:
    header = ("# Carnet benchmark results\n\n"
              "Written by `bench/run_core.py` (see bench/README.md for what each figure means "
              "and how to run it). Each run is added at the top; earlier runs stay below so "
              "regressions show.\n\n" + RUNS_MARKER + "\n")
    if RESULTS.exists():
        text = RESULTS.read_text()
        if RUNS_MARKER in text:
            head, _, rest = text.partition(RUNS_MARKER)
            RESULTS.write_text(head + RUNS_MARKER + "\n\n" + new_section + "\n" + rest.lstrip("\n"))
            return
        RESULTS.write_text(header + "\n" + new_section + "\n" + text)
        return
    RESULTS.write_text(header + "\n" + new_section)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        wrk_version = check_wrk()
        results = run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(Exception):
            drop_database(args)
            print(f"dropped database {args.db_name}", file=sys.stderr)
    text = section(args, results, wrk_version, started)
    print("\n" + text)
    if args.profile:
        print(f"profiles (py-spy raw/collapsed stacks) are in {WORK}; "
              "RESULTS.md left alone (profiling slows the server)")
    elif not args.no_results:
        write_results(text)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    failed = any(m.error_count for r in results for m in r.measures.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
