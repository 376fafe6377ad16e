"""The run's section of ``bench/RESULTS.md``: tables, notes, and inserting it.

The section is plain text built from the measures, so it can be printed with
``--no-results`` exactly as it would be written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys

from . import RESULTS
from .database import machine_facts
from .wrk import ConfigResult, Measure

RUNS_MARKER = "<!-- runs: newest first; run_core.py inserts each new run below this line -->"

READ_TARGET = 3000.0  # req/s
CREATE_TARGET = 800.0  # req/s
SEARCH_P99_TARGET_MS = 20.0


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
        notes += measure_notes(r)
        lines += [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def measure_notes(r: ConfigResult) -> list[str]:
    """Notes shared by every benchmark script: latency detail, CPU use, connection spread,
    server log tracebacks."""
    notes = []
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
    return notes


def write_results(new_section: str) -> None:
    header = ("# Carnet benchmark results\n\n"
              "Written by `bench/run_core.py` and `bench/run_documents.py` (see "
              "bench/README.md for what each figure means and how to run it). Each run is "
              "added at the top; earlier runs stay below so regressions show.\n\n"
              + RUNS_MARKER + "\n")
    if RESULTS.exists():
        text = RESULTS.read_text()
        if RUNS_MARKER in text:
            head, _, rest = text.partition(RUNS_MARKER)
            RESULTS.write_text(head + RUNS_MARKER + "\n\n" + new_section + "\n"
                               + rest.lstrip("\n"))
            return
        RESULTS.write_text(header + "\n" + new_section + "\n" + text)
        return
    RESULTS.write_text(header + "\n" + new_section)

