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
4. bulk-loads N Patients (unique IPP identifier, name, gender, birthDate) through
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
import random
import sys
from typing import Any

from core import WORK, BenchError, Config
from core.database import count_created, create_database
from core.load import load
from core.main import (
    add_common_options,
    add_phases_option,
    bench_main,
    chosen_phases,
)
from core.report import section
from core.server import Server, log_problems, start_carnet
from core.wrk import ConfigResult, Measure, measure, measure_http_floor

PHASES = ("floor", "read", "search", "create")

# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--resources", type=int, default=100_000, help="Patients to load")
    p.add_argument("--sweep", default=None,
                   help="measure several configurations on the same data: "
                        "'WORKERS:POOL,...' (POOL may be 'd' for the default); "
                        "overrides --workers/--pool-size")
    p.add_argument("--light-connections", type=int, default=2,
                   help="also measure the search from this few connections (latency without "
                        "queueing; informational, 0 to skip)")
    p.add_argument("--bundle-size", type=int, default=500, help="entries per load Bundle")
    p.add_argument("--loaders", type=int, default=4, help="concurrent loading clients")
    add_phases_option(p, PHASES)
    p.add_argument("--app-factory", default=None,
                   help="measure this ASGI app factory (module:function, importable from bench/) "
                        "under uvicorn instead of `carnet serve`, e.g. to A/B a change before "
                        "making it; such runs are labelled as experiments")
    add_common_options(p, "carnet_bench")
    args = p.parse_args(argv)
    if args.sweep:
        configs = []
        for item in args.sweep.split(","):
            w, _, pool = item.partition(":")
            configs.append(Config(int(w), None if pool in ("", "d") else int(pool)))
        args.configs = configs
    else:
        args.configs = [Config(args.workers, args.pool_size)]
    args.phases = chosen_phases(p, args.only, PHASES)
    if args.connections < args.threads:
        p.error("--connections must be >= --threads (wrk needs a connection per thread)")
    if args.pg_host not in ("127.0.0.1", "localhost", "::1"):
        p.error("this benchmark only talks to a loopback PostgreSQL")
    return args



# ----------------------------------------------------------------------------- the run


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



def run(args: argparse.Namespace) -> list[ConfigResult]:
    WORK.mkdir(exist_ok=True)
    results = [ConfigResult(c) for c in args.configs]
    floors: dict[int, Measure] = {}
    if "floor" in args.phases:
        for workers in sorted({c.workers for c in args.configs}):
            floors[workers] = measure_http_floor(args, workers)
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



def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return bench_main(
        args, lambda: run(args),
        lambda results, wrk_version, started: section(args, results, wrk_version, started),
        lambda results: any(m.error_count for r in results for m in r.measures.values()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
