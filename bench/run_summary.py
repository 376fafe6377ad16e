#!/usr/bin/env python3
"""Benchmark of the patient summary: ``GET /fhir/Patient/<id>/$summary`` on PostgreSQL.

1. creates a fresh database and starts ``carnet serve`` on it;
2. loads, through the public API, ``--patients`` qualified INS Patients (attending
   doctor: doctor 0) and ``--resources-per-patient`` coded clinical resources each (one
   transaction Bundle per patient: Conditions, AllergyIntolerances, MedicationStatements,
   Immunizations and Observations in equal parts);
3. runs wrk as doctor 0 over his patients' summaries: from ``--light-connections``
   connections (the latency of one summary, the issue's target: p99 < 100 ms with 200
   resources) and from ``--connections`` (throughput, info);
4. adds a section to ``bench/RESULTS.md``; stops the server and drops the database.

    python bench/run_summary.py [--patients 50] [--resources-per-patient 200]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import shlex
import sys
import time
from typing import Any

import httpx
import orjson
from core import WORK, BenchError, Config
from core.bearer import mint_professional_token
from core.database import create_database, machine_facts
from core.ins import ins_patient, seed_insi
from core.load import post_bundles, post_resources
from core.main import (
    add_common_options,
    bench_main,
    check_database_name,
)
from core.report import measure_notes, verdict
from core.server import CARNET_DATA, Server, log_problems, start_carnet
from core.wrk import ConfigResult, Measure, measure

P99_TARGET_MS = 100.0
SNOMED, LOINC, ATC = "http://snomed.info/sct", "http://loinc.org", "http://www.whocc.no/atc"
# Real codes the clinical checks accept (check digits included).
CONDITIONS = ["44054006", "38341003", "195967001", "35489007", "73211009"]
ALLERGIES = ["91936005", "91935009", "300913006"]
MEDICINES = ["A10BA02", "C09AA05", "N02BE01", "C10AA05", "B01AC06"]
VACCINES = ["J07BB02", "J07AM51", "J07BX03"]
RESULTS = ["4548-4", "2339-0", "2093-3", "718-7", "2160-0"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--patients", type=int, default=50, help="INS Patients to load")
    p.add_argument("--resources-per-patient", type=int, default=200,
                   help="coded clinical resources per patient")
    p.add_argument("--light-connections", type=int, default=2,
                   help="connections of the latency figure")
    p.add_argument("--loaders", type=int, default=4, help="concurrent loading clients")
    add_common_options(p, "carnet_bench_summary")
    args = p.parse_args(argv)
    check_database_name(p, args)
    if not 1 <= args.patients <= 1000:
        p.error("--patients: 1 to 1000 (doctor 0 attends patients 0 to 999)")
    args.app_factory = None
    return args


def clinical_bundle(patient_id: str, count: int, rng: random.Random) -> dict[str, Any]:
    """A transaction Bundle of ``count`` coded clinical resources for the patient."""
    subject = {"reference": f"Patient/{patient_id}"}
    makers = [
        lambda: {"resourceType": "Condition", "subject": subject, "code": {"coding": [
            {"system": SNOMED, "code": rng.choice(CONDITIONS)}]},
            "onsetDateTime": f"{rng.randint(1990, 2026)}-0{rng.randint(1, 9)}-15"},
        lambda: {"resourceType": "AllergyIntolerance", "patient": subject, "code": {"coding": [
            {"system": SNOMED, "code": rng.choice(ALLERGIES)}]}},
        lambda: {"resourceType": "MedicationStatement", "subject": subject, "status": "active",
                 "medicationCodeableConcept": {"coding": [
                     {"system": ATC, "code": rng.choice(MEDICINES)}]}},
        lambda: {"resourceType": "Immunization", "patient": subject, "status": "completed",
                 "occurrenceDateTime": f"{rng.randint(2000, 2026)}-10-01",
                 "vaccineCode": {"coding": [{"system": ATC, "code": rng.choice(VACCINES)}]}},
        lambda: {"resourceType": "Observation", "subject": subject, "status": "final",
                 "code": {"coding": [{"system": LOINC, "code": rng.choice(RESULTS)}]},
                 "effectiveDateTime": f"{rng.randint(2015, 2026)}-05-20",
                 "valueQuantity": {"value": round(rng.uniform(1, 10), 1), "unit": "mmol/L"}},
    ]
    entries = []
    for i in range(count):
        resource = makers[i % len(makers)]()
        entries.append({"resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def load(args: argparse.Namespace, server: Server, db_url: str) -> dict[str, Any]:
    info: dict[str, Any] = {}
    started = time.perf_counter()
    asyncio.run(seed_insi(db_url, args.patients))
    ids = asyncio.run(post_resources(server.url, server.headers, args.patients,
                                     min(500, args.patients), args.loaders, ins_patient))
    rng = random.Random(11)
    per = args.resources_per_patient
    asyncio.run(post_bundles(server.url, server.headers, args.patients, args.loaders,
                             lambda index, _rng: clinical_bundle(ids[index], per, rng),
                             unit="clinical resources", size=lambda _i: per,
                             total=args.patients * per))
    info["load_seconds"] = time.perf_counter() - started
    info["patient_ids"] = ids
    info["token"] = mint_professional_token(server.url, CARNET_DATA / "keys", 0)
    check(server, info["token"], ids[0], per)
    paths = WORK / "summary_paths.txt"
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    paths.write_text("".join(f"/fhir/Patient/{pid}/$summary\n" for pid in shuffled))
    info["paths"] = paths
    return info


def check(server: Server, token: str, patient_id: str, per: int) -> None:
    """One summary before measuring: it must hold every resource (the doctor sees all)."""
    r = httpx.get(f"{server.url}/fhir/Patient/{patient_id}/$summary", timeout=60,
                  headers={"Authorization": f"Bearer {token}",
                           "Accept": "application/fhir+json"})
    if r.status_code != 200:
        raise BenchError(f"$summary answered {r.status_code}: {r.text[:500]}")
    bundle = orjson.loads(r.content)
    stored = sum(1 for e in bundle["entry"] if e["fullUrl"].startswith("http")
                 and e["resource"]["resourceType"] not in ("Patient",))
    if stored != per:
        raise BenchError(f"the summary holds {stored} stored clinical resources, not {per}")


def run(args: argparse.Namespace) -> tuple[ConfigResult, dict[str, Any]]:
    config = Config(args.workers, args.pool_size)
    result = ConfigResult(config)
    db_url = create_database(args)
    server = start_carnet(args, config, db_url)
    try:
        info = load(args, server, db_url)
        script_args = [str(info["paths"]), str(args.threads)]
        result.measures["light"] = measure(
            args, server, "summary", "get_cycle.lua", script_args,
            "GET /fhir/Patient/<id>/$summary", connections=args.light_connections,
            token=info["token"])
        result.measures["busy"] = measure(
            args, server, "summary-16", "get_cycle.lua", script_args,
            "GET /fhir/Patient/<id>/$summary", token=info["token"])
        result.server_log_errors = log_problems(server)
    finally:
        server.stop()
    return result, info


def section(args: argparse.Namespace, r: ConfigResult, info: dict[str, Any], wrk_version: str,
            started: dt.datetime) -> str:
    command = shlex.join(["python", "bench/run_summary.py", *sys.argv[1:]])
    per = args.resources_per_patient
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC: patient summary (IPS $summary), "
             f"{r.config.label()}", "", f"Command: `{command}`", ""]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_facts(args, wrk_version)]
    lines.append(f"- Load, through the public API: {args.patients} qualified INS Patients "
                 f"(attending doctor: doctor 0), {per} coded clinical resources each (Condition, "
                 "AllergyIntolerance, MedicationStatement, Immunization, Observation in equal "
                 f"parts) in one transaction Bundle per patient; {info['load_seconds']:.1f}s")
    lines.append("- Each summary is built as doctor 0 (médecin: every category), under the SQL "
                 "policy, checked against the IPS structure rules, and audited")
    rows = ["| Figure | Target | Measured | p50 | p99 | max | Errors | Result |",
            "|---|---|---|---|---|---|---|---|"]

    def row(figure: str, target: str, m: Measure, result: str) -> None:
        rows.append(f"| {figure} | {target} | {m.rate:,.0f} req/s | {m.p('p50'):.2f} ms | "
                    f"{m.p('p99'):.2f} ms | {m.p('max'):.1f} ms | {m.error_text()} | {result} |")

    light, busy = r.measures["light"], r.measures["busy"]
    row(f"`$summary` of a patient with {per} clinical resources, from "
        f"{args.light_connections} connection(s)", f"p99 < {P99_TARGET_MS:.0f} ms", light,
        verdict(light.p("p99") < P99_TARGET_MS, light))
    row(f"(info) the same from {args.connections} connections", "-", busy,
        "**FAIL** (errors)" if busy.error_count else "info")
    lines += ["", *rows, ""]
    lines += [f"- {x}" for x in measure_notes(r)] + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return bench_main(
        args, lambda: run(args),
        lambda ran, wrk_version, started: section(args, *ran, wrk_version, started),
        lambda ran: any(m.error_count for m in ran[0].measures.values()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
