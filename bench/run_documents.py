#!/usr/bin/env python3
"""Benchmark of the document service on PostgreSQL: ITI-65 filing, ITI-67 search, ITI-68 read.

    python bench/run_documents.py [--patients 100000] [--documents-per-patient 10]
                                  [--workers 2] [--duration 15] [--connections 16]

What it does, in order (see bench/README.md for what each figure means):

1. checks that ``wrk`` is on PATH and measures the HTTP floor (``bench/floor_app.py``);
2. creates a fresh PostgreSQL database (``carnet_bench_docs``) and starts ``carnet serve``;
3. loads the corpus through the public API: the INSi directory identities (the mock of a
   national service, seeded directly with ``storage.directory.put_identity``), the FR Core
   INS Patients (qualified) through ``POST /fhir`` transaction Bundles, one 20 kB PDF
   through ``POST /fhir/Binary``, then one ITI-65 Bundle of ``--documents-per-patient``
   DocumentReferences per Patient, all pointing at that Binary; counts the rows,
   ``VACUUM ANALYZE``, spot-checks the ITI-67 answers;
4. runs wrk, as doctor 0 (a professional token; each Patient's attending doctor is set at
   load, 1,000 patients per doctor) over doctor 0's patients: ITI-67 by patient, ITI-67 by
   patient + type + date, the audited read by id (checks that ``audit_log`` grew by at least
   the reads answered), ITI-65 filing (one new Bundle with its own 20 kB PDF and
   masterIdentifier per request, pre-generated) and ITI-68 (the raw bytes of the Binaries
   the ITI-65 run filed); counts the filed documents;
5. writes the figures, the load times, the machine facts and the exact command at the top
   of ``bench/RESULTS.md``; stops the server and drops the database, also on error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import random
import shlex
import sys
import time
from typing import Any
from urllib.parse import quote

from core import WORK, BenchError, Config
from core.bearer import doctor, mint_professional_token
from core.database import (
    admin,
    count_resources,
    create_database,
    database_size,
    machine_facts,
    vacuum_analyze,
)
from core.ins import PATIENTS_PER_DOCTOR, ins_patient, seed_insi
from core.load import post_bundles, post_resources
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
ITI65_P99_TARGET_MS = 100.0
ITI67_P99_TARGET_MS = 25.0
READ_RATE_TARGET = 2500.0  # audited reads by id per second
# Every Patient has an attending doctor (core.ins: doctor k = patient index //
# PATIENTS_PER_DOCTOR). The professional figures run as doctor 0 over doctor 0's patients.
PDF_SIZE = 20 * 1024
# The document types the load cycles through (LOINC, TRE_A03 class), and the ITI-67
# query on type and date: of each patient's documents j = 0..9 (dated 2015 + j), those of
# type 11488-4 (j = 0, 3, 6, 9) dated from 2020 on (j = 6, 9) match: 2 of 10.
DOC_TYPES = [("11488-4", "10"), ("11502-2", "10"), ("18842-5", "11")]
TYPE_QUERY = ("http://loinc.org|11488-4", "ge2020-01-01")
PHASES = ("floor", "iti67", "iti67-type", "read", "iti65", "iti68")

# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--patients", type=int, default=100_000, help="INS Patients to load")
    p.add_argument("--documents-per-patient", type=int, default=10,
                   help="DocumentReferences filed per Patient (one ITI-65 Bundle each)")
    p.add_argument("--light-connections", type=int, default=2,
                   help="also run ITI-67 by patient from N connections: its latency without "
                        "the queue 16 connections build on 2 cores (0: skip)")
    p.add_argument("--iti65-rate", type=float, default=600.0,
                   help="ITI-65 Bundles/s the pre-generated bodies must last for (x1.5 margin "
                        "over warm-up and measured run); a run that sends more is refused")
    p.add_argument("--bundle-size", type=int, default=500,
                   help="Patients per load transaction Bundle")
    p.add_argument("--loaders", type=int, default=4, help="concurrent clients loading Patients")
    p.add_argument("--document-loaders", type=int, default=6,
                   help="concurrent clients filing the corpus's ITI-65 Bundles")
    add_phases_option(p, PHASES)
    add_common_options(p, "carnet_bench_docs")
    args = p.parse_args(argv)
    args.phases = chosen_phases(p, args.only, PHASES)
    if "iti68" in args.phases and "iti65" not in args.phases:
        p.error("iti68 reads the Binaries the iti65 run files: keep iti65 in --only")
    if args.connections < args.threads:
        p.error("--connections must be >= --threads (wrk needs a connection per thread)")
    if args.pg_host not in ("127.0.0.1", "localhost", "::1"):
        p.error("this benchmark only talks to a loopback PostgreSQL")
    check_database_name(p, args)
    args.app_factory = None  # core.server.start_carnet: always `carnet serve` here
    return args


# ----------------------------------------------------------------------------- corpus

def pdf_bytes(rng: random.Random) -> bytes:
    """20 kB starting with %PDF, different each call."""
    head = b"%PDF-1.7\n%"
    return head + rng.randbytes(PDF_SIZE - len(head))


def corpus_bundle(patient_id: str, documents: int, binary_id: str,
                  content: bytes) -> dict[str, Any]:
    """One ITI-65 Bundle of ``documents`` DocumentReferences pointing at one stored Binary;
    document j has type DOC_TYPES[j % 3] and is dated 2015 + j."""
    from service.documents.samples import document_bundle

    bundle = document_bundle(f"Patient/{patient_id}", content=content, documents=documents,
                             binary_url=f"Binary/{binary_id}")
    docs = [e["resource"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == "DocumentReference"]
    for j, doc in enumerate(docs):
        loinc, class_code = DOC_TYPES[j % len(DOC_TYPES)]
        year = 2015 + j % 11
        doc["type"]["coding"][0]["code"] = loinc
        doc["category"][0]["coding"][0]["code"] = class_code
        doc["category"][0]["coding"][0].pop("display", None)
        doc["date"] = f"{year}-06-15T10:00:00+01:00"
        doc["content"][0]["attachment"]["creation"] = doc["date"]
        doc["context"]["period"]["start"] = f"{year}-06-15T09:30:00+01:00"
    return bundle


def upload_binary(server: Server, content: bytes) -> str:
    import httpx

    r = httpx.post(server.url + "/fhir/Binary", content=content, timeout=60,
                   headers={**server.headers, "Content-Type": "application/pdf",
                            "Accept": "application/fhir+json"})
    if r.status_code != 201:
        raise BenchError(f"POST /fhir/Binary answered {r.status_code}: {r.text[:1000]}")
    return str(r.headers["location"].split("/fhir/Binary/")[1].split("/")[0])


def load_corpus(args: argparse.Namespace, server: Server, db_url: str) -> dict[str, Any]:
    n, per = args.patients, args.documents_per_patient
    info: dict[str, Any] = {}
    started = time.perf_counter()
    print(f"seeding {n:,} INSi directory identities", flush=True)
    t = time.perf_counter()
    asyncio.run(seed_insi(db_url, n))
    info["insi_seconds"] = time.perf_counter() - t

    print(f"loading {n:,} FR Core INS Patients: transaction Bundles of {args.bundle_size}, "
          f"{args.loaders} concurrent loaders", flush=True)
    t = time.perf_counter()
    ids = asyncio.run(post_resources(server.url, server.headers, n, args.bundle_size,
                                     args.loaders, ins_patient))
    info["patients_seconds"] = time.perf_counter() - t

    content = pdf_bytes(random.Random(1))
    binary_id = upload_binary(server, content)
    info["binary_id"] = binary_id
    print(f"filing {n * per:,} DocumentReferences: one ITI-65 Bundle of {per} per Patient "
          f"(all pointing at Binary/{binary_id}), {args.document_loaders} concurrent loaders",
          flush=True)
    t = time.perf_counter()
    mine = min(n, PATIENTS_PER_DOCTOR)  # doctor 0's patients: indexes 0 .. 999
    doctor_docs: list[str] = []

    def on_answer(index: int, entries: list[dict[str, Any]]) -> None:
        if index < mine:
            doctor_docs.extend(
                e["response"]["location"].split("/")[1] for e in entries
                if e["response"]["location"].startswith("DocumentReference/"))

    asyncio.run(post_bundles(
        server.url, server.headers, n, args.document_loaders,
        lambda index, _rng: corpus_bundle(ids[index], per, binary_id, content), on_answer,
        unit="documents", size=lambda _index: per, total=n * per))
    if len(doctor_docs) != mine * per:
        raise BenchError(f"the load answered {len(doctor_docs):,} DocumentReference locations "
                         f"for doctor 0's {mine:,} patients; expected {mine * per:,}")
    info["documents_seconds"] = time.perf_counter() - t

    docs = count_resources(args, "DocumentReference")
    patients = count_resources(args, "Patient")
    if docs != n * per or patients != n:
        raise BenchError(f"after loading, the database holds {patients:,} Patients and "
                         f"{docs:,} DocumentReferences; expected {n:,} and {n * per:,}")
    info["vacuum_seconds"] = vacuum_analyze(args)
    info["seconds"] = time.perf_counter() - started
    info["db_size"] = database_size(args)
    info["documents_rate"] = n * per / info["documents_seconds"]
    info["patients_rate"] = n / info["patients_seconds"]
    print(f"  corpus: INSi {info['insi_seconds']:.1f}s, {n:,} Patients in "
          f"{info['patients_seconds']:.1f}s ({info['patients_rate']:,.0f}/s), {docs:,} "
          f"documents in {info['documents_seconds']:.1f}s ({info['documents_rate']:,.0f}/s), "
          f"VACUUM ANALYZE {info['vacuum_seconds']:.1f}s; {info['seconds']:.1f}s in all; "
          f"database {info['db_size']}", flush=True)

    # The professional figures: doctor 0 over doctor 0's patients and their documents.
    mine_ids = ids[:mine]
    rng = random.Random(7)
    shuffled = mine_ids[:]
    rng.shuffle(shuffled)
    info["iti67_paths"] = WORK / "iti67_paths.txt"
    info["iti67_paths"].write_text("".join(
        f"/fhir/DocumentReference?patient={pid}\n" for pid in shuffled))
    rng.shuffle(shuffled)
    system_code, date = TYPE_QUERY
    info["iti67_type_paths"] = WORK / "iti67_type_paths.txt"
    info["iti67_type_paths"].write_text("".join(
        f"/fhir/DocumentReference?patient={pid}&type={quote(system_code, safe='')}"
        f"&date={date}\n" for pid in shuffled))
    info["expected_type_matches"] = sum(
        1 for j in range(per) if j % len(DOC_TYPES) == 0 and 2015 + j % 11 >= 2020)
    rng.shuffle(doctor_docs)
    info["read_paths"] = WORK / "read_doc_paths.txt"
    info["read_paths"].write_text("".join(f"/fhir/DocumentReference/{d}\n"
                                          for d in doctor_docs))
    info["read_count"] = len(doctor_docs)
    info["doctor_patients"] = mine
    info["pro_token"] = mint_professional_token(server.url, CARNET_DATA / "keys", 0)
    spot_check(args, server, info["pro_token"], rng.sample(mine_ids, min(30, mine)),
               info["expected_type_matches"], ids[mine:][:10], doctor_docs[:20])
    info["patient_ids"] = ids
    info["doctor_patient_ids"] = mine_ids
    return info


def spot_check(args: argparse.Namespace, server: Server, token: str, sample: list[str],
               expected_type: int, others: list[str], docs: list[str]) -> None:
    """ITI-67 answers and reads, as doctor 0, must be right, not only fast; another doctor's
    patients must be closed to doctor 0 (the consent-scoped access is on)."""
    import httpx

    per = args.documents_per_patient
    system_code, date = TYPE_QUERY
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Accept": "application/fhir+json",
                               "Authorization": f"Bearer {token}"}) as client:
        for did in docs:
            r = client.get(f"/fhir/DocumentReference/{did}")
            if r.status_code != 200 or r.json().get("id") != did:
                raise BenchError(f"doctor 0 reading DocumentReference/{did} answered "
                                 f"{r.status_code}: {r.text[:500]}")
        for pid in others:
            r = client.get("/fhir/DocumentReference", params={"patient": pid})
            if r.status_code == 200 and r.json().get("entry"):
                raise BenchError(f"doctor 0 sees the documents of Patient/{pid}, another "
                                 "doctor's patient: is consent-scoped access off?")
            if r.status_code not in (200, 403, 404):
                raise BenchError(f"doctor 0's search of another doctor's patient {pid} "
                                 f"answered {r.status_code}: {r.text[:500]}")
        for pid in sample:
            for params, expected in (({"patient": pid}, per),
                                     ({"patient": pid, "type": system_code, "date": date},
                                      expected_type)):
                r = client.get("/fhir/DocumentReference", params=params)
                body = r.json()
                found = [e["resource"] for e in body.get("entry", [])
                         if e.get("search", {}).get("mode", "match") == "match"]
                if r.status_code != 200 or len(found) != expected or any(
                        d["subject"]["reference"] != f"Patient/{pid}" for d in found):
                    raise BenchError(f"ITI-67 {params} answered {r.status_code} with "
                                     f"{len(found)} documents, expected {expected}: "
                                     f"{r.text[:500]}")
    print(f"  spot check, as doctor 0: {len(sample)} patients' ITI-67 answers (both queries) "
          f"and {len(docs)} reads are right; {len(others)} other doctors' patients are closed",
          flush=True)


# ----------------------------------------------------------------------------- ITI-65 bodies


def write_iti65_bodies(args: argparse.Namespace, patient_ids: list[str], name: str,
                       seconds: int, seed: int) -> tuple[str, int]:
    """Bundles for ``seconds`` at ``--iti65-rate`` x 1.5, one file per wrk thread; returns
    the file prefix and the Bundles per thread."""
    import orjson

    from service.documents.samples import document_bundle

    per_thread = math.ceil(args.iti65_rate * seconds * 1.5 / args.threads)
    prefix = WORK / f"iti65-{name}"
    rng = random.Random(seed)
    for thread in range(args.threads):
        with open(f"{prefix}-{thread}.ndjson", "wb") as out:
            for _ in range(per_thread):
                bundle = document_bundle(f"Patient/{rng.choice(patient_ids)}",
                                         content=pdf_bytes(rng),
                                         title="Compte rendu (benchmark ITI-65)")
                out.write(orjson.dumps(bundle) + b"\n")
    return str(prefix), per_thread


def remove_iti65_bodies() -> None:
    for path in WORK.glob("iti65-*.ndjson"):
        path.unlink()


# ----------------------------------------------------------------------------- the run


def measure_all(args: argparse.Namespace, server: Server, info: dict[str, Any],
                result: ConfigResult) -> None:
    phases = args.phases
    pro = info["pro_token"]  # doctor 0's token: every measured request is a professional's
    who = info.get("who", f"doctor 0 (RPPS {doctor(0).rpps}, médecin)")
    print(f"measuring, as {who} over his "
          f"{info['doctor_patients']:,} patients: wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration}s (warm-up {args.warmup}s)", flush=True)
    if "iti67" in phases:
        result.measures["iti67"] = measure(
            args, server, "iti67", "get_cycle.lua",
            [str(info["iti67_paths"]), str(args.threads)], "GET /fhir/DocumentReference?patient=",
            token=pro)
        if args.light_connections:
            result.measures["iti67-light"] = measure(
                args, server, "iti67-light", "get_cycle.lua",
                [str(info["iti67_paths"]), str(min(args.threads, args.light_connections))],
                f"the same from {args.light_connections} connection(s)",
                connections=args.light_connections, token=pro)
    if "iti67-type" in phases:
        result.measures["iti67-type"] = measure(
            args, server, "iti67-type", "get_cycle.lua",
            [str(info["iti67_type_paths"]), str(args.threads)],
            "GET /fhir/DocumentReference?patient=&type=&date=ge", token=pro)
    if "read" in phases:
        before = audit_count(args)
        m = measure(args, server, "read", "get_cycle.lua",
                    [str(info["read_paths"]), str(args.threads)],
                    "GET /fhir/DocumentReference/<id>, audited", token=pro)
        answered = (m.requests + m.extra.get("warmup_requests", 0)) - m.error_count
        audited = audit_count(args) - before
        for _ in range(20):  # reads wait for their audit entries; in flight at wrk's cut-off
            time.sleep(0.5)
            now = audit_count(args) - before
            if now == audited:
                break
            audited = now
        m.extra.update(answered=answered, audited=audited)
        print(f"    audit_log grew by {audited:,} entries; wrk counted {answered:,} answered "
              "reads without error, warm-up included", flush=True)
        if audited < answered:
            raise BenchError(f"wrk counted {answered:,} successful reads but audit_log grew by "
                             f"only {audited:,}: some reads were not audited")
        result.measures["read"] = m
    if "iti65" in phases:
        t = time.perf_counter()
        warm_prefix, _ = write_iti65_bodies(args, info["doctor_patient_ids"], "warmup",
                                            max(args.warmup, 1), seed=11)
        prefix, per_thread = write_iti65_bodies(args, info["doctor_patient_ids"], "run",
                                                args.duration, seed=12)
        print(f"  wrote {per_thread * args.threads:,} unique ITI-65 Bundles for the run (plus "
              f"warm-up) in {time.perf_counter() - t:.1f}s", flush=True)
        docs_before = count_resources(args, "DocumentReference")
        binaries_before = set(binary_ids(args))
        m = measure(args, server, "iti65", "iti65.lua", [prefix],
                    "POST /fhir ITI-65, one 20 kB PDF each", warmup_script_args=[warm_prefix],
                    token=pro)
        filed = count_resources(args, "DocumentReference") - docs_before
        sent = m.requests + m.extra.get("warmup_requests", 0)
        m.extra.update(stored=filed, sent=sent, bodies=per_thread * args.threads)
        print(f"    {filed:,} DocumentReferences filed by the ITI-65 runs (wrk counted {sent:,} "
              "answers, warm-up included)", flush=True)
        if m.requests > per_thread * args.threads:
            raise BenchError(f"the ITI-65 run sent {m.requests:,} Bundles but only "
                             f"{per_thread * args.threads:,} were generated: some were re-sent; "
                             "raise --iti65-rate")
        if filed < sent - m.error_count:
            raise BenchError(f"wrk counted {sent:,} ITI-65 answers but only {filed:,} "
                             "documents were filed")
        result.measures["iti65"] = m
        remove_iti65_bodies()
        new_binaries = [b for b in binary_ids(args) if b not in binaries_before]
        random.Random(5).shuffle(new_binaries)
        info["iti68_paths"] = WORK / "iti68_paths.txt"
        info["iti68_paths"].write_text("".join(f"/fhir/Binary/{b}\n" for b in new_binaries))
        info["iti68_count"] = len(new_binaries)
        check_binaries(server, pro, new_binaries[:20])
    if "iti68" in phases:
        result.measures["iti68"] = measure(
            args, server, "iti68", "get_cycle.lua",
            [str(info["iti68_paths"]), str(args.threads), "application/pdf"],
            "GET /fhir/Binary/<id>, raw bytes", token=pro)
    result.server_log_errors = log_problems(server)


def binary_ids(args: argparse.Namespace) -> list[str]:
    rows = admin(args, database=args.db_name, fetch=(
        "SELECT resource_id FROM resource WHERE resource_type = 'Binary' AND NOT deleted"))
    return [str(r["resource_id"]) for r in rows]


def audit_count(args: argparse.Namespace) -> int:
    """AuditEvents in the audit trail (``audit_log``)."""
    return int(admin(args, database=args.db_name,
                     fetch="SELECT count(*) AS n FROM audit_log")[0]["n"])


def check_binaries(server: Server, token: str, ids: list[str]) -> None:
    import httpx

    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Accept": "application/pdf",
                               "Authorization": f"Bearer {token}"}) as client:
        for bid in ids:
            r = client.get(f"/fhir/Binary/{bid}")
            if r.status_code != 200 or len(r.content) != PDF_SIZE or \
                    not r.content.startswith(b"%PDF"):
                raise BenchError(f"ITI-68 Binary/{bid} answered {r.status_code}, "
                                 f"{len(r.content)} bytes")


def run(args: argparse.Namespace) -> tuple[ConfigResult, dict[str, Any]]:
    WORK.mkdir(exist_ok=True)
    config = Config(args.workers, args.pool_size)
    result = ConfigResult(config)
    if "floor" in args.phases:
        result.floor = measure_http_floor(args, args.workers)
    db_url = create_database(args)
    print(f"starting carnet serve ({config.label()}) on database {args.db_name}", flush=True)
    server = start_carnet(args, config, db_url)
    try:
        info = load_corpus(args, server, db_url)
        args.load_info = info
        measure_all(args, server, info, result)
    finally:
        server.stop()
    return result, info


# ----------------------------------------------------------------------------- report


def table(args: argparse.Namespace, r: ConfigResult, info: dict[str, Any]) -> str:
    docs = args.patients * args.documents_per_patient
    rows = ["| Figure | Target | Measured | p50 | p99 | max | Ratio to floor | Errors | Result |",
            "|---|---|---|---|---|---|---|---|---|"]

    def row(figure: str, target: str, m: Measure, result: str, unit: str = "req/s") -> None:
        rows.append(f"| {figure} | {target} | {m.rate:,.0f} {unit} | {m.p('p50'):.2f} ms | "
                    f"{m.p('p99'):.2f} ms | {m.p('max'):.1f} ms | {ratio(m, r.floor)} | "
                    f"{m.error_text()} | {result} |")

    if r.floor:
        row("HTTP floor: `GET /floor` (fixed bytes, bench/floor_app.py)", "-", r.floor,
            "reference" if not r.floor.error_count else "**FAIL** (errors)")
    if m := r.measures.get("iti65"):
        row("ITI-65 filing, as doctor 0 into his patients' records: `POST /fhir` Provide "
            "Document Bundle, one new 20 kB PDF (inline Binary) and masterIdentifier each",
            f">= {ITI65_RATE_TARGET:,.0f}/s, p99 < {ITI65_P99_TARGET_MS:.0f} ms", m,
            verdict(m.rate >= ITI65_RATE_TARGET and m.p("p99") < ITI65_P99_TARGET_MS, m),
            "Bundles/s")
    if m := r.measures.get("iti67"):
        row(f"ITI-67 by patient, as doctor 0 over his {info.get('doctor_patients', 0):,} "
            f"patients: `GET /fhir/DocumentReference?patient=<id>` ({docs:,} documents, "
            f"{args.documents_per_patient} per patient)", f"p99 < {ITI67_P99_TARGET_MS:.0f} ms",
            m, verdict(m.p("p99") < ITI67_P99_TARGET_MS, m))
    if m := r.measures.get("iti67-light"):
        row(f"ITI-67 by patient, the same from {args.light_connections} connection(s): the "
            "latency of one search without the queue", f"p99 < {ITI67_P99_TARGET_MS:.0f} ms",
            m, verdict(m.p("p99") < ITI67_P99_TARGET_MS, m))
    if m := r.measures.get("iti67-type"):
        row(f"(info) ITI-67 `patient` + `type=http://loinc.org\\|11488-4` + `date={TYPE_QUERY[1]}`"
            f" ({info.get('expected_type_matches', '?')} of "
            f"{args.documents_per_patient} match)", "-", m,
            "**FAIL** (errors)" if m.error_count else "info")
    if m := r.measures.get("read"):
        row(f"Audited read by id, as doctor 0: `GET /fhir/DocumentReference/<id>` over his "
            f"patients' {info.get('read_count', 0):,} documents (an AuditEvent each)",
            f">= {READ_RATE_TARGET:,.0f}/s", m, verdict(m.rate >= READ_RATE_TARGET, m))
    if m := r.measures.get("iti68"):
        row(f"(info) ITI-68, as doctor 0: `GET /fhir/Binary/<id>` raw 20 kB PDF (over the "
            f"{info.get('iti68_count', 0):,} Binaries the ITI-65 runs filed)", "-", m,
            "**FAIL** (errors)" if m.error_count else "info")
    return "\n".join(rows)


def section(args: argparse.Namespace, r: ConfigResult, info: dict[str, Any], wrk_version: str,
            started: dt.datetime, total_seconds: float) -> str:
    command = shlex.join(["python", "bench/run_documents.py", *sys.argv[1:]])
    effective = (f"--patients {args.patients} --documents-per-patient "
                 f"{args.documents_per_patient} --workers {args.workers} --duration "
                 f"{args.duration} --warmup {args.warmup} --connections {args.connections} "
                 f"--light-connections {args.light_connections} "
                 f"--threads {args.threads} --iti65-rate {args.iti65_rate:g} --bundle-size "
                 f"{args.bundle_size} --loaders {args.loaders} --document-loaders "
                 f"{args.document_loaders}")
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC: documents (ITI-65, ITI-67, ITI-68, audited "
             f"read) as a professional, consent-scoped access, {r.config.label()}", "",
             f"Command: `{command}`", "",
             f"Effective settings: `{effective}`", ""]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_facts(args, wrk_version)]
    n, docs = args.patients, args.patients * args.documents_per_patient
    lines.append(
        f"- Load, through the public API: {n:,} INSi directory identities (seeded directly, "
        f"{info['insi_seconds']:.1f}s); {n:,} qualified FR Core INS Patients through `POST "
        f"/fhir` transaction Bundles of {args.bundle_size} from {args.loaders} clients in "
        f"{info['patients_seconds']:.1f}s ({info['patients_rate']:,.0f}/s); {docs:,} "
        f"DocumentReferences as {n:,} ITI-65 Bundles of {args.documents_per_patient} (plus "
        f"their SubmissionSet), all pointing at one 20 kB Binary, from "
        f"{args.document_loaders} clients in {info['documents_seconds']:.1f}s "
        f"(**{info['documents_rate']:,.0f} documents/s**); `VACUUM ANALYZE` "
        f"{info['vacuum_seconds']:.1f}s; {info['seconds'] / 60:.1f} min in all; database "
        f"size {info['db_size']}")
    lines.append(f"- Whole run (floor, load, measures): {total_seconds / 60:.1f} min")
    lines.append(
        f"- Access: the loader is an operator app (`CARNET_OPERATOR_CLIENTS` names the "
        f"benchmark's client id); every Patient has an attending doctor "
        f"(`generalPractitioner` by idNat_PS, {PATIENTS_PER_DOCTOR:,} patients per doctor); "
        f"the measured requests carry doctor 0's professional token (médecin, profession 10, "
        f"`openid scope_all`) and touch only his {info.get('doctor_patients', 0):,} patients: "
        "the attending-doctor relation, the access matrix and the audit trail apply to each")
    lines += ["", table(args, r, info), ""]
    notes = []
    if m := r.measures.get("iti65"):
        notes.append(f"ITI-65 runs filed {m.extra['stored']:,} DocumentReferences (counted in "
                     f"the database; wrk counted {m.extra['sent']:,} answers, warm-up "
                     f"included); {m.extra['bodies']:,} unique Bundles were generated for the "
                     "measured run, none re-sent")
    if m := r.measures.get("read"):
        notes.append(f"audit trail: `audit_log` grew by {m.extra['audited']:,} AuditEvents "
                     f"during the audited-read runs; wrk counted {m.extra['answered']:,} reads "
                     "answered without error (warm-up included): every read was audited")
    notes += measure_notes(r)
    lines += [f"- {x}" for x in notes] + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    return bench_main(
        args, lambda: run(args),
        lambda ran, wrk_version, started: section(args, *ran, wrk_version, started,
                                                  time.perf_counter() - t0),
        lambda ran: any(m.error_count for m in ran[0].measures.values()),
        cleanup=remove_iti65_bodies)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
