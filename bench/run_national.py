#!/usr/bin/env python3
"""The national-scale benchmark of issue 9: one command, every figure, next to the floors.

    python bench/run_national.py [--patients 100000] [--documents-per-patient 10]
                                 [--stages 1000,10000,100000] [--duration 15]

What it does, in order (see bench/README.md, "National scale"):

1. the floors of the machine: the HTTP floor (``bench/floor_app.py`` under wrk, as every
   script measures it) and the database floor (``core.dbfloor``: single-row INSERT + COMMIT
   from N asyncpg connections);
2. a fresh PostgreSQL database, loaded in stages by the bulk path
   (``service.simulate.bulk.bulk_load``: the same validation and indexing code as the API,
   not raw SQL) with the server stopped: patients 0 .. stage 1, then up to stage 2, ...;
   after each stage ``VACUUM ANALYZE``, ``carnet serve`` starts and ITI-67 by patient is
   measured from ``--light-connections`` connections (the growth curve);
3. at the final size, with ``carnet serve`` up: ITI-67 by patient and by patient + type +
   date, the audited read by id and ITI-68, all as one attending médecin over his patients
   (wrk, ``run_documents.measure_all``); ITI-65 filing by the harness (``carnet simulate``:
   professionals log in at the provider and file realistic documents as fast as the server
   answers), with the server's peak RSS under that load;
4. ``$summary`` (``run_summary.run``) and the notification latency (``run_notify.run``),
   each on its own small database (they load their own patients: coded clinical resources,
   e-mail addresses and Subscriptions);
5. one section at the top of ``bench/RESULTS.md``: figure, target, measured, ratio to its
   floor, result; the growth curve; the load rates; the exact command. Every database is
   dropped at the end (unless ``--keep-database``), also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import random
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import run_documents
import run_notify
import run_summary
from core import WORK, BenchError, Config
from core.bearer import mint_token_for
from core.cpu import cpu_snapshot, cpu_use
from core.database import admin, create_database, database_size, machine_facts, vacuum_analyze
from core.dbfloor import db_floor
from core.main import (
    add_common_options,
    add_phases_option,
    bench_main,
    check_database_name,
    chosen_phases,
)
from core.report import measure_notes, ratio, verdict
from core.server import CARNET_DATA, Server, log_problems, start_carnet
from core.wrk import ConfigResult, Measure, measure, measure_http_floor

ITI65_RATE_TARGET = 400.0  # Bundles/s
ITI67_P99_TARGET_MS = 25.0
READ_RATE_TARGET = 2500.0
NOTIFY_P99_TARGET_MS = 1000.0
SUMMARY_P99_TARGET_MS = run_summary.P99_TARGET_MS
RSS_TARGET_BYTES = 500 * 2**20
FLAT_FACTOR = 1.5  # "flat": ITI-67 p99 at the largest size within 1.5x of the smallest's
PATIENTS_PER_PATH_FILE = 1000  # ITI-67 cycles over at most this many of the doctor's patients
PHASES = ("floor", "dbfloor", "growth", "iti67", "iti67-type", "read", "iti68", "iti65",
          "summary", "notify")
HARNESS_REDIRECT = "http://127.0.0.1:8765/callback"


def blob_dir(args: argparse.Namespace) -> Path:
    """The national corpus's own blob store (tens of GB at full size), removed with its
    database: not the shared ``bench/.work/carnet-data/blobs`` the other scripts use."""
    return WORK / f"blobs-{args.db_name}"


def server_env(args: argparse.Namespace) -> dict[str, str]:
    return {"CARNET_BLOB_URL": blob_dir(args).as_uri()}


def remove_blobs(args: argparse.Namespace) -> None:
    if args.keep_database:
        print(f"kept blob store {blob_dir(args)}", file=sys.stderr)
    else:
        shutil.rmtree(blob_dir(args), ignore_errors=True)


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--patients", type=int, default=100_000,
                   help="patients at the final size (the last stage)")
    p.add_argument("--documents-per-patient", type=int, default=10,
                   help="documents the bulk path files per patient")
    p.add_argument("--stages", default="1000,10000,100000",
                   help="cumulative patient counts at which ITI-67 is measured (the growth "
                        "curve); --patients is added as the last stage if missing")
    p.add_argument("--light-connections", type=int, default=2,
                   help="connections of the latency figures (ITI-67 growth, ITI-67 light)")
    add_phases_option(p, PHASES)
    p.add_argument("--bulk-tasks", type=int, default=4, help="bulk_load's concurrent tasks")
    p.add_argument("--bulk-processes", type=int, default=2,
                   help="bulk_load's filing processes (one per core: the filing is CPU-bound)")
    p.add_argument("--professionals", type=int, default=200,
                   help="professionals of the bulk corpus (RPPS directory)")
    p.add_argument("--seed", type=int, default=1, help="the bulk corpus's and harness's seed")
    p.add_argument("--bulk-max-bytes", type=int, default=64_000,
                   help="largest document content the bulk path generates")
    p.add_argument("--iti65-concurrency", type=int, default=16,
                   help="concurrent clients of the ITI-65 harness run")
    p.add_argument("--iti65-max-bytes", type=int, default=64_000,
                   help="largest document the ITI-65 harness run generates")
    p.add_argument("--summary-patients", type=int, default=50,
                   help="run_summary.py --patients (its own database)")
    p.add_argument("--notify-duration", type=int, default=30,
                   help="run_notify.py --duration at 100 documents/s (its own database)")
    add_common_options(p, "carnet_bench_national")
    args = p.parse_args(argv)
    args.phases = chosen_phases(p, args.only, PHASES)
    try:
        stages = sorted({int(x) for x in args.stages.split(",") if x.strip()})
    except ValueError:
        p.error("--stages: comma-separated patient counts")
    stages = [s for s in stages if 0 < s < args.patients] + [args.patients]
    args.stage_list = stages
    if args.connections < args.threads:
        p.error("--connections must be >= --threads (wrk needs a connection per thread)")
    if args.pg_host not in ("127.0.0.1", "localhost", "::1"):
        p.error("this benchmark only talks to a loopback PostgreSQL")
    check_database_name(p, args)
    if args.profile:
        p.error("--profile: profile the single figures with run_documents.py instead")
    args.app_factory = None  # core.server.start_carnet: always `carnet serve`
    return args


# ----------------------------------------------------------------------------- loading


@dataclass
class Stage:
    patients: int  # cumulative
    documents: int  # cumulative, counted in the database
    load_seconds: float
    loaded_documents: int  # by this stage's load
    vacuum_seconds: float
    db_size: str
    iti67: Measure | None = None
    doctor_patients: int = 0

    @property
    def load_rate(self) -> float:
        return self.loaded_documents / self.load_seconds if self.load_seconds else 0.0


def bulk_stage(args: argparse.Namespace, db_url: str, first: int, patients: int) -> tuple[int,
                                                                                      float]:
    """Patients ``first`` .. ``first + patients - 1`` and their documents through the bulk
    path, the server stopped; returns (documents loaded, seconds)."""
    try:
        from service.simulate.bulk import bulk_load
    except ImportError as exc:
        raise BenchError(f"the bulk path is missing (service.simulate.bulk: {exc})") from exc
    from storage.blobs import open_blob_store
    from storage.db import Database

    total = patients * args.documents_per_patient
    next_report = [0.0]
    started = time.perf_counter()

    def progress(done: int, of: int) -> None:
        if of and (done / of >= next_report[0] or done == of):
            elapsed = time.perf_counter() - started
            print(f"  bulk: {done:>9,}/{of:,} ({done / elapsed if elapsed else 0:,.0f}/s)",
                  flush=True)
            next_report[0] = done / of + 0.1

    async def go() -> Any:
        db = Database(db_url, pool_size=args.bulk_tasks + 2)
        blobs = open_blob_store(blob_dir(args).as_uri(), CARNET_DATA)
        try:
            await db.migrate()
            return await bulk_load(db, blobs, first_patient=first, patients=patients,
                                   documents_per_patient=args.documents_per_patient,
                                   professionals=args.professionals, seed=args.seed,
                                   tasks=args.bulk_tasks, max_bytes=args.bulk_max_bytes,
                                   processes=args.bulk_processes, progress=progress)
        finally:
            with contextlib.suppress(Exception):
                await blobs.close()
            await db.dispose()

    print(f"bulk load: patients {first:,} .. {first + patients - 1:,}, "
          f"{args.documents_per_patient} documents each ({total:,}), {args.bulk_tasks} tasks, "
          f"{args.bulk_processes} process(es), "
          "server stopped", flush=True)
    stats = asyncio.run(go())
    print(f"  {stats.documents:,} documents for {stats.patients:,} patients in "
          f"{stats.seconds:.1f}s ({stats.documents_per_second:,.0f} documents/s)", flush=True)
    return int(stats.documents), float(stats.seconds)


def count_documents(args: argparse.Namespace) -> int:
    return int(admin(args, database=args.db_name, fetch=(
        "SELECT count(*) AS n FROM resource WHERE resource_type = 'DocumentReference' "
        "AND NOT deleted"))[0]["n"])


# ----------------------------------------------------------------------------- who measures


@dataclass
class Cast:
    """The professional every measured request is made as, and what is open to him."""

    label: str
    token: str
    patient_ids: list[str]
    documents: list[str] = field(default_factory=list)
    binaries: list[str] = field(default_factory=list)
    type_paths: list[str] = field(default_factory=list)
    type_matches: int = 0
    paths: dict[str, Path] = field(default_factory=dict)


def pick_cast(args: argparse.Namespace, server: Server) -> Cast:
    """The médecin who attends the most (open) records, and up to 1,000 of his patients, with
    their documents, Binaries and one type + date query each, read from the database."""
    from storage.directory import Professional

    rows = admin(args, database=args.db_name, fetch=(
        "SELECT p.attending, count(*) AS n, h.rpps, h.family_name, h.given_name, "
        "h.profession_code, h.category_code, h.savoir_faire, h.organisation "
        "FROM record_policy p LEFT JOIN health_professional h "
        "ON p.attending = 'idnat:8' || h.rpps WHERE p.attending IS NOT NULL AND NOT p.closed "
        "GROUP BY p.attending, h.rpps, h.family_name, h.given_name, h.profession_code, "
        "h.category_code, h.savoir_faire, h.organisation ORDER BY n DESC, p.attending"))
    if not rows:
        raise BenchError("no patient record names an attending doctor: nobody to measure as")
    chosen = next((r for r in rows if r["profession_code"] == "10"), rows[0])
    if chosen["rpps"] is not None:
        pro = Professional(chosen["rpps"], chosen["family_name"], chosen["given_name"],
                           chosen["profession_code"], chosen["category_code"],
                           chosen["savoir_faire"], chosen["organisation"])
    else:  # not in the directory: a token can still be minted for his idNat_PS
        pro = Professional(chosen["attending"].removeprefix("idnat:8"), "MEDECIN", "Bench",
                           "10", "C", None, "Cabinet de benchmark")
    patients = [str(r["patient_id"]) for r in admin(args, database=args.db_name, fetch=(
        "SELECT patient_id FROM record_policy WHERE attending = "
        f"'{chosen['attending']}' AND NOT closed ORDER BY patient_id "
        f"LIMIT {PATIENTS_PER_PATH_FILE}"))]
    token = mint_token_for(server.url, CARNET_DATA / "keys", pro)
    label = (f"{pro.given_name} {pro.family_name} (RPPS {pro.rpps}, profession "
             f"{pro.profession_code}), attending doctor of {chosen['n']:,} records")
    cast = Cast(label, token, patients)
    documents(args, cast)
    write_paths(cast)
    return cast


def documents(args: argparse.Namespace, cast: Cast) -> None:
    """The cast's patients' documents not masked from professionals, their Binaries, and
    per patient one ITI-67 type + date query (a type of his, from the date of one document
    of that type: at least one match)."""
    import orjson

    from storage.search.values import date_range

    ids = ",".join(f"'{p}'" for p in cast.patient_ids)
    rows = admin(args, database=args.db_name, fetch=(
        "SELECT resource_id, patient_id, content FROM resource WHERE resource_type = "
        f"'DocumentReference' AND NOT deleted AND NOT masked AND patient_id IN ({ids})"))
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        cast.documents.append(str(r["resource_id"]))
        doc = orjson.loads(r["content"])
        by_patient.setdefault(str(r["patient_id"]), []).append(doc)
        for content in doc.get("content") or []:
            url = (content.get("attachment") or {}).get("url") or ""
            if "Binary/" in url:
                cast.binaries.append(url.rsplit("Binary/", 1)[1].split("/")[0])
    rng = random.Random(3)
    matches = 0
    for pid, docs in by_patient.items():
        typed = [d for d in docs if d.get("type", {}).get("coding") and d.get("date")]
        if not typed:
            continue
        doc = rng.choice(typed)
        coding = doc["type"]["coding"][0]
        day = doc["date"][:10]
        low = date_range(day)[0]
        matches += sum(1 for d in typed if d["type"]["coding"][0].get("code") == coding["code"]
                       and date_range(d["date"])[1] > low)
        cast.type_paths.append(
            f"/fhir/DocumentReference?patient={pid}&type="
            f"{quote(coding['system'] + '|' + coding['code'], safe='')}&date=ge{day}")
    cast.type_matches = round(matches / len(cast.type_paths)) if cast.type_paths else 0
    cast.binaries = sorted(set(cast.binaries))


def write_paths(cast: Cast) -> None:
    rng = random.Random(7)

    def shuffled(items: list[str]) -> list[str]:
        out = items[:]
        rng.shuffle(out)
        return out

    def write(name: str, lines: list[str]) -> Path:
        path = WORK / f"national-{name}.txt"
        path.write_text("".join(f"{line}\n" for line in lines))
        return path

    cast.paths["iti67"] = write("iti67", [f"/fhir/DocumentReference?patient={p}"
                                          for p in shuffled(cast.patient_ids)])
    cast.paths["iti67-type"] = write("iti67-type", shuffled(cast.type_paths))
    cast.paths["read"] = write("read", [f"/fhir/DocumentReference/{d}"
                                        for d in shuffled(cast.documents)])
    cast.paths["iti68"] = write("iti68", [f"/fhir/Binary/{b}" for b in shuffled(cast.binaries)])


def spot_check(server: Server, cast: Cast) -> None:
    """Answers must be right, not only fast: ITI-67 names the patient's documents only, the
    type + date query finds at least one, reads and ITI-68 answer 200 with content."""
    import httpx

    rng = random.Random(5)
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {cast.token}"}) as client:
        for pid in rng.sample(cast.patient_ids, min(20, len(cast.patient_ids))):
            r = client.get("/fhir/DocumentReference", params={"patient": pid},
                           headers={"Accept": "application/fhir+json"})
            found = [e["resource"] for e in r.json().get("entry", [])
                     if e.get("search", {}).get("mode", "match") == "match"] \
                if r.status_code == 200 else []
            if r.status_code != 200 or not found or any(
                    d["subject"]["reference"] != f"Patient/{pid}" for d in found):
                raise BenchError(f"ITI-67 patient={pid} answered {r.status_code} with "
                                 f"{len(found)} documents: {r.text[:500]}")
        for path in rng.sample(cast.type_paths, min(10, len(cast.type_paths))):
            r = client.get(path, headers={"Accept": "application/fhir+json"})
            if r.status_code != 200 or not r.json().get("entry"):
                raise BenchError(f"ITI-67 {path} answered {r.status_code}: {r.text[:500]}")
        for did in rng.sample(cast.documents, min(20, len(cast.documents))):
            r = client.get(f"/fhir/DocumentReference/{did}",
                           headers={"Accept": "application/fhir+json"})
            if r.status_code != 200 or r.json().get("id") != did:
                raise BenchError(f"reading DocumentReference/{did} answered {r.status_code}: "
                                 f"{r.text[:500]}")
        for bid in rng.sample(cast.binaries, min(10, len(cast.binaries))):
            r = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "*/*"})
            if r.status_code != 200 or not r.content:
                raise BenchError(f"ITI-68 Binary/{bid} answered {r.status_code}: "
                                 f"{r.text[:300]}")
    print(f"  spot check as {cast.label}: ITI-67 (both queries), reads and ITI-68 are right",
          flush=True)


# ----------------------------------------------------------------------------- the harness


async def register_harness_client(db_url: str) -> None:
    """The registered client the harness's users log in through (the demo's ``demo-app``),
    in the benchmark database only."""
    from service.demo import DEMO_APP
    from storage import oauth
    from storage.db import Database

    db = Database(db_url, pool_size=1)
    try:
        async with db.write() as conn:
            if await oauth.client_by_id(conn, DEMO_APP.client_id) is None:
                await oauth.put_client(conn, DEMO_APP)
    finally:
        await db.dispose()


def harness_iti65(args: argparse.Namespace, server: Server) -> tuple[Measure, dict[str, Any]]:
    """``carnet simulate`` as a library: professionals log in at the provider and file
    realistic documents as fast as the server answers, for ``--duration`` seconds."""
    from service.demo import DEMO_APP_SECRET
    from service.simulate.login import Client
    from service.simulate.runner import Plan, SetupError, simulate

    plan = Plan(url=server.url, client=Client("demo-app", DEMO_APP_SECRET, HARNESS_REDIRECT),
                duration=float(args.duration), concurrency=args.iti65_concurrency,
                max_bytes=args.iti65_max_bytes, seed=args.seed,
                server_pids=(server.proc.pid,))
    print(f"  ITI-65 by the harness: {args.iti65_concurrency} clients, as fast as possible, "
          f"{args.duration}s, documents up to {args.iti65_max_bytes:,} bytes", flush=True)
    before, own_before, started = cpu_snapshot(), run_notify.own_cpu(), time.monotonic()
    try:
        report = asyncio.run(simulate(plan, lambda r: print("   " + r.progress_line(),
                                                            flush=True), every=5.0))
    except SetupError as exc:
        raise BenchError(f"the harness could not start: {exc}") from exc
    # The harness runs in this process: its CPU (log-ins, document generation, HTTP) is
    # the "wrk" share of the CPU note.
    cpu = cpu_use(before, cpu_snapshot(), server.groups, run_notify.own_cpu() - own_before,
                  time.monotonic() - started)
    summary = report.summary()
    stats = report.operations["iti65"]
    ordered = sorted(stats.latencies)

    def pct(q: float) -> float:  # nearest rank, in microseconds as wrk's
        return 1e6 * ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0

    errors = {status: n for status, n in stats.statuses.items() if not status.startswith("2")}
    m = Measure("iti65", stats.ok, report.elapsed, errors,
                {"p50": pct(.5), "p90": pct(.9), "p99": pct(.99), "p999": pct(.999),
                 "max": 1e6 * ordered[-1] if ordered else 0.0})
    m.cpu = cpu
    m.extra.update(requests=stats.count, bytes=stats.bytes_sent,
                   first_errors=dict(stats.examples), setup=dict(report.setup))
    print(f"  {'iti65':<12} {m.rate:>9,.0f} Bundles/s  p50 {m.p('p50'):6.2f} ms  "
          f"p99 {m.p('p99'):6.2f} ms  errors {m.error_text()}   "
          f"(peak RSS {(report.server_peak_rss_bytes or 0) / 2**20:,.0f} MiB)\n"
          f"          CPU (% of one core): server {cpu.server:.0f}, harness (this process) "
          f"{cpu.wrk:.0f}, postgres {cpu.postgres:.0f}, other processes {cpu.other:.0f}",
          flush=True)
    return m, summary


# ----------------------------------------------------------------------------- the run


@dataclass
class National:
    result: ConfigResult
    stages: list[Stage] = field(default_factory=list)
    cast: Cast | None = None
    harness: dict[str, Any] = field(default_factory=dict)
    peak_rss: int | None = None
    summary: tuple[ConfigResult, dict[str, Any]] | None = None
    notify: dict[str, Any] | None = None
    seconds: float = 0.0
    # Figures that could not be taken (after a long load, the others are still reported).
    failures: dict[str, str] = field(default_factory=dict)


def attempt(national: National, name: str, step: Any) -> Any:
    """``step()``, or None with the reason kept in ``national.failures``."""
    try:
        return step()
    except BenchError as exc:
        print(f"error: {name} could not be measured: {exc}", file=sys.stderr, flush=True)
        national.failures[name] = str(exc).splitlines()[0][:300].replace("|", "\\|")
        return None


def light_iti67(args: argparse.Namespace, server: Server, cast: Cast, name: str) -> Measure:
    return measure(args, server, name, "get_cycle.lua",
                   [str(cast.paths["iti67"]), str(min(args.threads, args.light_connections))],
                   f"GET /fhir/DocumentReference?patient=, {args.light_connections} "
                   "connection(s)", connections=args.light_connections, token=cast.token)


def run(args: argparse.Namespace) -> National:
    WORK.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    config = Config(args.workers, args.pool_size)
    national = National(ConfigResult(config))
    result = national.result
    phases = args.phases
    if "floor" in phases:
        result.floor = measure_http_floor(args, args.workers)
    db_url = create_database(args)
    shutil.rmtree(blob_dir(args), ignore_errors=True)  # a fresh database, fresh blobs
    blob_dir(args).mkdir(parents=True)
    if "dbfloor" in phases:
        print(f"database floor: INSERT + COMMIT from {args.connections} connections", flush=True)
        result.measures["dbfloor"] = db_floor(args)
    loaded = 0
    server: Server | None = None
    try:
        for size in args.stage_list:
            loaded_docs, seconds = bulk_stage(args, db_url, loaded, size - loaded)
            loaded = size
            vacuum = vacuum_analyze(args)
            stage = Stage(size, count_documents(args), seconds, loaded_docs, vacuum,
                          database_size(args))
            national.stages.append(stage)
            print(f"  stage {size:,} patients: {stage.documents:,} documents in the database "
                  f"({stage.db_size}); VACUUM ANALYZE {vacuum:.1f}s", flush=True)
            last = size == args.stage_list[-1]
            if not last and "growth" not in phases:
                continue
            if last:
                asyncio.run(register_harness_client(db_url))
            server = start_carnet(args, config, db_url, extra_env=server_env(args))
            cast = pick_cast(args, server)
            spot_check(server, cast)
            stage.doctor_patients = len(cast.patient_ids)
            if "growth" in phases:
                stage.iti67 = light_iti67(args, server, cast, f"iti67-{size}")
            if not last:
                server.stop()
                server = None
        assert server is not None
        national.cast = cast
        final_measures(args, server, national)
        national.peak_rss = server_peak_rss(server)
        server.stop()
        server = None
    finally:
        if server is not None:
            server.stop()
    if "summary" in phases:
        national.summary = attempt(national, "summary", lambda: sub_run(args, "summary"))
    if "notify" in phases:  # last: it renices this process's threads
        national.notify = attempt(national, "notify", lambda: sub_run(args, "notify"))
    national.seconds = time.perf_counter() - t0
    return national


def final_measures(args: argparse.Namespace, server: Server, national: National) -> None:
    cast = national.cast
    assert cast is not None
    result = national.result
    info = {"iti67_paths": cast.paths["iti67"], "iti67_type_paths": cast.paths["iti67-type"],
            "read_paths": cast.paths["read"], "iti68_paths": cast.paths["iti68"],
            "pro_token": cast.token, "doctor_patients": len(cast.patient_ids),
            "who": cast.label}
    wanted = [p for p in ("iti67", "iti67-type", "read", "iti68") if p in args.phases]
    print(f"measuring at {national.stages[-1].documents:,} documents as {cast.label}, over "
          f"{len(cast.patient_ids):,} of his patients", flush=True)
    if wanted:
        phases, args.phases = args.phases, wanted  # run_documents.measure_all's selector
        try:
            run_documents.measure_all(args, server, info, result)
        finally:
            args.phases = phases
    if "iti65" in args.phases:
        taken = attempt(national, "iti65", lambda: harness_iti65(args, server))
        if taken is not None:
            result.measures["iti65"], national.harness = taken
    result.server_log_errors = log_problems(server)


def server_peak_rss(server: Server) -> int | None:
    """Peak resident memory of ``carnet serve`` and its workers over its whole life."""
    from service.simulate.memory import peak_rss

    return peak_rss((server.proc.pid,), server.url)


def sub_run(args: argparse.Namespace, which: str) -> Any:
    """``run_summary.run`` or ``run_notify.run`` with their own options and database."""
    common = ["--workers", str(args.workers), "--pg-host", args.pg_host, "--pg-port",
              str(args.pg_port), "--pg-user", args.pg_user, "--threads", str(args.threads)]
    if args.pool_size is not None:
        common += ["--pool-size", str(args.pool_size)]
    if which == "summary":
        sub = run_summary.parse_args([*common, "--patients", str(args.summary_patients),
                                      "--duration", str(args.duration), "--warmup",
                                      str(args.warmup), "--connections", str(args.connections),
                                      "--light-connections", str(args.light_connections)])
        print(f"$summary: bench/run_summary.py's run on {sub.db_name}", flush=True)
        try:
            result, info = run_summary.run(sub)
            info["args"] = sub
            return result, info
        finally:
            drop_sub(sub)
    sub = run_notify.parse_args([*common, "--duration", str(args.notify_duration)])
    print(f"notifications: bench/run_notify.py's run on {sub.db_name}", flush=True)
    try:
        info = run_notify.run(sub)
        info["args"] = sub
        info["figures"] = run_notify.figures(info)
        return info
    finally:
        drop_sub(sub)


def drop_sub(sub: argparse.Namespace) -> None:
    from core.database import drop_database

    with contextlib.suppress(Exception):
        drop_database(sub)


# ----------------------------------------------------------------------------- report


def row(figure: str, target: str, measured: str, p50: str, p99: str, floor_ratio: str,
        errors: str, result: str) -> str:
    return f"| {figure} | {target} | {measured} | {p50} | {p99} | {floor_ratio} | {errors} | " \
           f"{result} |"


def ms(value: float) -> str:
    return f"{value:,.2f} ms"


def table(args: argparse.Namespace, n: National) -> str:
    r = n.result
    floor, dbf = r.floor, r.measures.get("dbfloor")
    final = n.stages[-1] if n.stages else None
    docs = final.documents if final else 0
    rows = ["| Figure | Target | Measured | p50 | p99 | Ratio to floor | Errors | Result |",
            "|---|---|---|---|---|---|---|---|"]

    def wrk_row(figure: str, target: str, m: Measure, ok: bool | None, unit: str = "req/s",
                floor_ratio: str | None = None) -> None:
        result = ("**FAIL** (errors)" if m.error_count else "info") if ok is None \
            else verdict(ok, m)
        rows.append(row(figure, target, f"{m.rate:,.0f} {unit}", ms(m.p("p50")),
                        ms(m.p("p99")), floor_ratio or ratio(m, floor), m.error_text(), result))

    if floor:
        wrk_row("HTTP floor: `GET /floor`, fixed bytes (bench/floor_app.py)", "-", floor, None)
        rows[-1] = rows[-1].replace("| info |", "| reference |")
    if dbf:
        wrk_row(f"Database floor: single-row `INSERT` + `COMMIT` from {dbf.extra['connections']}"
                " asyncpg connections", "-", dbf, None, "commits/s", "-")
        rows[-1] = rows[-1].replace("| info |", "| reference |")
    if m := r.measures.get("iti65"):
        dbr = f"{m.rate / dbf.rate:.2f} of the DB floor" if dbf and dbf.rate else "n/a"
        wrk_row(f"ITI-65 filing by the harness (`carnet simulate`, {args.iti65_concurrency} "
                f"clients, realistic documents up to {args.iti65_max_bytes:,} bytes)",
                f">= {ITI65_RATE_TARGET:,.0f}/s", m, m.rate >= ITI65_RATE_TARGET, "Bundles/s",
                dbr)
    if m := r.measures.get("iti67"):
        wrk_row(f"ITI-67 by patient at {docs:,} documents, {args.connections} connections",
                f"p99 < {ITI67_P99_TARGET_MS:.0f} ms", m, m.p("p99") < ITI67_P99_TARGET_MS)
    if m := r.measures.get("iti67-light"):
        wrk_row(f"ITI-67 by patient at {docs:,} documents, {args.light_connections} "
                "connection(s)", f"p99 < {ITI67_P99_TARGET_MS:.0f} ms", m,
                m.p("p99") < ITI67_P99_TARGET_MS)
    curve = [s for s in n.stages if s.iti67]
    if len(curve) >= 2:
        first, last = curve[0].iti67, curve[-1].iti67
        assert first and last
        growth = last.p("p99") / first.p("p99") if first.p("p99") else float("inf")
        errors = sum(s.iti67.error_count for s in curve if s.iti67)
        result = "**FAIL** (errors)" if errors else (
            "pass" if growth <= FLAT_FACTOR else "**miss**")
        rows.append(row(f"ITI-67 growth, {args.light_connections} connection(s): p99 at "
                        f"{curve[-1].documents:,} / p99 at {curve[0].documents:,} documents",
                        f"flat (<= {FLAT_FACTOR:g}x)", f"{growth:.2f}x",
                        ms(last.p("p50")), ms(last.p("p99")), "-", str(errors), result))
    if m := r.measures.get("iti67-type"):
        matches = n.cast.type_matches if n.cast else "?"
        wrk_row(f"(info) ITI-67 by patient + type + `date=ge` (~{matches} match per query)",
                "-", m, None)
    if m := r.measures.get("read"):
        wrk_row(f"Audited read by id: `GET /fhir/DocumentReference/<id>` over "
                f"{len(n.cast.documents) if n.cast else 0:,} documents (an AuditEvent each)",
                f">= {READ_RATE_TARGET:,.0f}/s", m, m.rate >= READ_RATE_TARGET)
    if m := r.measures.get("iti68"):
        wrk_row(f"(info) ITI-68: `GET /fhir/Binary/<id>`, the raw bytes, over "
                f"{len(n.cast.binaries) if n.cast else 0:,} bulk-loaded documents", "-", m, None)
    if n.summary:
        sr = n.summary[0]
        light, busy = sr.measures["light"], sr.measures["busy"]
        per = n.summary[1]["args"].resources_per_patient
        wrk_row(f"`$summary` of a patient with {per} clinical resources, "
                f"{args.light_connections} connection(s) (run_summary.py's own database)",
                f"p99 < {SUMMARY_P99_TARGET_MS:.0f} ms", light,
                light.p("p99") < SUMMARY_P99_TARGET_MS)
        wrk_row(f"(info) `$summary`, {args.connections} connections", "-", busy, None)
    if n.notify:
        fig = n.notify["figures"]
        failed = len(fig["iti65_errors"])
        for key, label in (("email", "e-mail received"), ("webhook", "webhook received")):
            c = fig[key]
            errors = run_notify.channel_errors(c, failed)
            rows.append(row(
                f"Notification latency: ITI-65 answer to {label}, at "
                f"{n.notify['args'].rate:g} documents/s (run_notify.py's own database)",
                f"p99 < {NOTIFY_P99_TARGET_MS / 1000:g} s",
                f"{c.received:,} / {c.expected:,} received", run_notify.fmt(c.p(50)),
                run_notify.fmt(c.p(99)), "-", str(errors),
                run_notify.channel_verdict(c, errors, fig["achieved"])))
    for name, reason in n.failures.items():
        rows.append(row(f"{name}: not measured ({reason})", "-", "-", "-", "-", "-", "1",
                        "**FAIL** (could not run)"))
    if n.peak_rss is not None and set(r.measures) - {"dbfloor"}:
        rows.append(row("Server peak RSS (`carnet serve` and its workers, sum of VmHWM) after "
                        "every figure above on the national database", f"< "
                        f"{RSS_TARGET_BYTES / 2**20:,.0f} MB", f"{n.peak_rss / 2**20:,.0f} MiB",
                        "-", "-", "-", "0",
                        "pass" if n.peak_rss < RSS_TARGET_BYTES else "**miss**"))
    return "\n".join(rows)


def growth_table(n: National) -> str:
    rows = ["| Patients | Documents | Bulk load | Documents/s | VACUUM ANALYZE | Database | "
            "Measured over | ITI-67 p50 | ITI-67 p99 | ITI-67 req/s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for s in n.stages:
        m = s.iti67
        rows.append(f"| {s.patients:,} | {s.documents:,} | {s.load_seconds:,.1f} s | "
                    f"{s.load_rate:,.0f} | {s.vacuum_seconds:.1f} s | {s.db_size} | "
                    + (f"{s.doctor_patients:,} patients | " if m else "- | ")
                    + (f"{ms(m.p('p50'))} | {ms(m.p('p99'))} | {m.rate:,.0f} |" if m
                       else "- | - | - |"))
    return "\n".join(rows)


def section(args: argparse.Namespace, n: National, wrk_version: str,
            started: dt.datetime) -> str:
    command = shlex.join(["python", "bench/run_national.py", *sys.argv[1:]])
    effective = (f"--patients {args.patients} --documents-per-patient "
                 f"{args.documents_per_patient} --stages "
                 f"{','.join(map(str, args.stage_list))} --duration {args.duration} --warmup "
                 f"{args.warmup} --connections {args.connections} --light-connections "
                 f"{args.light_connections} --threads {args.threads} --workers {args.workers} "
                 f"--bulk-tasks {args.bulk_tasks} --bulk-processes {args.bulk_processes} "
                 f"--professionals {args.professionals} --seed "
                 f"{args.seed} --bulk-max-bytes {args.bulk_max_bytes} --iti65-concurrency "
                 f"{args.iti65_concurrency} --iti65-max-bytes {args.iti65_max_bytes} "
                 f"--summary-patients {args.summary_patients} --notify-duration "
                 f"{args.notify_duration} --only {','.join(args.phases)}")
    final = n.stages[-1] if n.stages else None
    title = (f"## {started:%Y-%m-%d %H:%M} UTC: national scale (issue 9), "
             f"{final.documents if final else 0:,} documents for {args.patients:,} patients, "
             f"{n.result.config.label()}")
    lines = [title, "", f"Command: `{command}`", "", f"Effective settings: `{effective}`", ""]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_facts(args, wrk_version)]
    loader = (f"the bulk path (`service.simulate.bulk.bulk_load`, {args.bulk_tasks} tasks, "
              f"{args.bulk_processes} filing process(es), "
              f"{args.professionals} professionals, seed {args.seed}, documents up to "
              f"{args.bulk_max_bytes:,} bytes), with the server stopped")
    total_load = sum(s.load_seconds for s in n.stages)
    loaded = sum(s.loaded_documents for s in n.stages)
    lines.append(f"- Load: {loaded:,} documents in {len(n.stages)} stage(s) through {loader}: "
                 f"{total_load / 60:.1f} min, **{loaded / total_load if total_load else 0:,.0f} "
                 f"documents/s** overall; `VACUUM ANALYZE` after each stage")
    if n.cast:
        lines.append(f"- Measured as {n.cast.label}: a médecin's professional token (consent-"
                     f"scoped access, access matrix and audit trail apply), over "
                     f"{len(n.cast.patient_ids):,} of his patients, their "
                     f"{len(n.cast.documents):,} documents not masked from professionals and "
                     f"{len(n.cast.binaries):,} Binaries")
    lines.append(f"- Whole run: {n.seconds / 60:.1f} min")
    lines += ["", table(args, n), "", "Growth (ITI-67 by patient from "
              f"{args.light_connections} connection(s) after each stage; the server restarted "
              "on the grown database):", "", growth_table(n), ""]
    notes = []
    if m := n.result.measures.get("iti65"):
        setup = m.extra.get("setup", {})
        notes.append(f"ITI-65 harness: {m.extra['requests']:,} Bundles sent, {m.requests:,} "
                     f"answered 2xx in {m.seconds:.1f}s, {m.extra['bytes'] / 1e6:,.1f} MB of "
                     f"document content; {setup.get('professionals', '?')} professionals logged "
                     f"in at the provider, {setup.get('patients', '?')} patients, "
                     f"{setup.get('refused_pairs', 0)} refused (professional, patient) pairs"
                     + (f"; first errors: {m.extra['first_errors']}"
                        if m.extra.get("first_errors") else "")
                     + "; ratio = Bundles/s over the database floor's commits/s (each filing "
                       "is one transaction); the harness runs in the benchmark's process: its "
                       "CPU is the `wrk` share of iti65's CPU note below")
    if m := n.result.measures.get("read"):
        notes.append(f"audit trail: `audit_log` grew by {m.extra['audited']:,} during the "
                     f"audited-read runs; wrk counted {m.extra['answered']:,} reads answered")
    if n.peak_rss is not None and n.harness.get("server_peak_rss_bytes"):
        notes.append(f"server peak RSS at the end of the ITI-65 harness run: "
                     f"{n.harness['server_peak_rss_bytes'] / 2**20:,.0f} MiB")
    if n.result.floor or n.result.measures:
        notes += measure_notes(n.result)
    if n.summary:
        sr, sinfo = n.summary
        notes.append(f"$summary (run_summary.py's run, {args.summary_patients} patients, load "
                     f"{sinfo['load_seconds']:.1f}s): " + "; ".join(measure_notes(sr)))
    if n.notify:
        info, fig = n.notify, n.notify["figures"]
        lat = fig["iti65_ms"]
        notes.append(f"notifications (run_notify.py's run, {info['args'].patients:,} patients "
                     f"with Subscriptions, open loop for {info['args'].duration}s after "
                     f"{info['args'].warmup}s warm-up): achieved {fig['achieved']:,.1f} "
                     f"documents/s, ITI-65 p99 {run_notify.fmt(run_notify.percentile(lat, 99))}; "
                     f"its threads ran at {info['priority']}")
    lines += [f"- {x}" for x in notes] + [""]
    return "\n".join(lines)


def errors_of(n: National) -> int:
    total = len(n.failures) + sum(m.error_count for m in n.result.measures.values())
    total += sum(s.iti67.error_count for s in n.stages if s.iti67)
    if n.summary:
        total += sum(m.error_count for m in n.summary[0].measures.values())
    if n.notify:
        fig = n.notify["figures"]
        total += len(fig["iti65_errors"]) + len(fig["email"].missing) + len(
            fig["webhook"].missing)
    return total


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return bench_main(
        args, lambda: run(args),
        lambda national, wrk_version, started: section(args, national, wrk_version, started),
        lambda national: bool(errors_of(national)), cleanup=lambda: remove_blobs(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
