#!/usr/bin/env python3
"""Benchmark of the patient portal's pages (``/portal``) on PostgreSQL.

1. creates a fresh database and starts ``carnet serve`` on it;
2. loads, through the public API, ``--patients`` qualified INS Patients (attending doctor:
   doctor 0, who is also in the FHIR directory as a Practitioner), ``--documents-per-patient``
   documents each (one ITI-65 Bundle per patient, as ``run_documents.py`` files them) and
   ``--messages-per-patient`` secure messages from doctor 0 (``POST /fhir/Communication``
   with his professional token);
3. logs each patient into the portal as a browser does (``/portal/connexion``, the
   provider's login form for ``ins:<NIR>``, ``/portal/callback``) and keeps their
   ``carnet_portal`` session cookie; checks every patient's pages;
4. runs wrk over the patients' sessions (one cookie per request, rotating over the
   patients): ``GET /portal/documents`` (first page), ``GET /portal/documents/<id>``,
   ``GET /portal/messages`` and ``GET /portal/historique``, and, for comparison, the bare
   API call the documents page makes, with each patient's own bearer token; each from
   ``--light-connections`` (latency) and ``--connections`` (throughput);
5. adds a section to ``bench/RESULTS.md``; stops the server and drops the database.

    python bench/run_portal.py [--patients 20] [--documents-per-patient 50]
                               [--messages-per-patient 20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from core import WORK, BenchError, Config
from core.bearer import doctor, mint_patient_token, mint_professional_token
from core.database import admin, count_resources, create_database, machine_facts, vacuum_analyze
from core.ins import IDNAT_SYSTEM, identity, ins_patient, seed_insi
from core.load import post_bundles, post_resources
from core.main import (
    add_common_options,
    add_phases_option,
    bench_main,
    check_database_name,
    chosen_phases,
)
from core.report import measure_notes
from core.server import CARNET_DATA, Server, log_problems, start_carnet
from core.wrk import ConfigResult, Measure, measure
from run_documents import corpus_bundle, pdf_bytes, upload_binary

COOKIE = "carnet_portal"  # service.portal.session.COOKIE
PAGE_SIZE = 10  # service.portal.documents.PAGE_SIZE, service.portal.messages.PAGE_SIZE
TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
FHIR_JSON = "application/fhir+json"
# (key, what wrk requests, label in the table); the API call first: the pages' reference.
FIGURES = [
    ("api", "`GET /fhir/DocumentReference?patient=<id>&status=current&_sort=-date&_count=10` "
            "with the patient's bearer token (the documents page's API call, bare)"),
    ("documents", "« Mes documents » `GET /portal/documents` (first page: the 10 newest)"),
    ("document", "one document `GET /portal/documents/<id>`"),
    ("messages", "« Messagerie » `GET /portal/messages` (first page: 10 messages)"),
    ("history", "« Historique des accès » `GET /portal/historique`"),
]
DOC_LINK = re.compile(r'/portal/documents/([A-Za-z0-9\-.]{1,64})"')
MESSAGE_LINK = re.compile(r'/portal/messages/([A-Za-z0-9\-.]{1,64})"')


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--patients", type=int, default=20, help="INS Patients loaded and logged in")
    p.add_argument("--documents-per-patient", type=int, default=50,
                   help="DocumentReferences filed per patient (one ITI-65 Bundle each)")
    p.add_argument("--messages-per-patient", type=int, default=20,
                   help="secure messages from doctor 0 to each patient")
    p.add_argument("--light-connections", type=int, default=2,
                   help="connections of the latency figures")
    p.add_argument("--loaders", type=int, default=4, help="concurrent loading clients")
    add_phases_option(p, [k for k, _ in FIGURES])
    add_common_options(p, "carnet_bench_portal")
    args = p.parse_args(argv)
    check_database_name(p, args)
    if not 1 <= args.patients <= 200:
        p.error("--patients: 1 to 200 (the provider's login page lists 200 identities)")
    if args.documents_per_patient < PAGE_SIZE or args.messages_per_patient < PAGE_SIZE:
        p.error(f"--documents-per-patient and --messages-per-patient: at least {PAGE_SIZE} "
                "(a full first page)")
    args.only = chosen_phases(p, args.only, [k for k, _ in FIGURES])
    args.app_factory = None  # core.server.start_carnet: always `carnet serve` here
    return args


# ----------------------------------------------------------------------------- corpus

def document_bundle(patient_id: str, per: int, binary_id: str, content: bytes) -> dict[str, Any]:
    """``run_documents.corpus_bundle``, with every document on its own month (2015-01, 2015-02,
    ...), so that « the 10 newest » is one well-defined set."""
    bundle = corpus_bundle(patient_id, per, binary_id, content)
    docs = [e["resource"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == "DocumentReference"]
    for j, doc in enumerate(docs):
        month = f"{2015 + j // 12}-{j % 12 + 1:02d}"
        doc["date"] = f"{month}-15T10:00:00+01:00"
        doc["content"][0]["attachment"]["creation"] = doc["date"]
        doc["context"]["period"]["start"] = f"{month}-15T09:30:00+01:00"
    return bundle


def practitioner() -> dict[str, Any]:
    """Doctor 0 in the FHIR directory, so that the pages name the sender of his messages."""
    pro = doctor(0)
    return {"resourceType": "Practitioner", "active": True,
            "identifier": [{"system": IDNAT_SYSTEM, "value": pro.idnat}],
            "name": [{"family": pro.family_name, "given": [pro.given_name]}],
            "qualification": [{"code": {"coding": [{"system": TRE_G15,
                                                    "code": pro.profession_code}]}}]}


async def send_messages(base: str, token: str, patient_ids: list[str], per: int,
                        loaders: int) -> None:
    """``per`` secure messages from doctor 0 to each patient, as
    ``tests/e2e/test_portal_browser.py`` ``Professional.write`` sends one."""
    from fhir_profiles.messaging import CATEGORY_SYSTEM, MESSAGE

    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for pid in patient_ids:
        for k in range(per):
            queue.put_nowait((pid, k))
    total, done, started = len(patient_ids) * per, 0, time.perf_counter()

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal done
        while True:
            try:
                pid, k = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            r = await client.post("/fhir/Communication", content=orjson.dumps({
                "resourceType": "Communication", "status": "completed",
                "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": MESSAGE}]}],
                "recipient": [{"reference": f"Patient/{pid}"}],
                "payload": [{"contentString": f"Message {k + 1} du Dr MEDECIN0\n"
                                              "Bonjour, vos résultats sont disponibles."}]}))
            if r.status_code != 201:
                raise BenchError(f"POST /fhir/Communication as doctor 0 answered "
                                 f"{r.status_code}: {r.text[:1000]}")
            done += 1
            if done % max(1, total // 5) == 0 or done == total:
                print(f"  sent {done:>6,}/{total:,} messages "
                      f"({done / (time.perf_counter() - started):,.0f}/s)", flush=True)

    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON,
               "Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        await asyncio.gather(*(sender(client) for _ in range(loaders)))


def load(args: argparse.Namespace, server: Server, db_url: str) -> dict[str, Any]:
    n, per, msgs = args.patients, args.documents_per_patient, args.messages_per_patient
    info: dict[str, Any] = {}
    started = time.perf_counter()
    print(f"seeding {n} INSi identities, loading {n} FR Core INS Patients", flush=True)
    asyncio.run(seed_insi(db_url, n))
    ids = asyncio.run(post_resources(server.url, server.headers, n, min(500, n), args.loaders,
                                     ins_patient))
    r = httpx.post(server.url + "/fhir/Practitioner", content=orjson.dumps(practitioner()),
                   headers={**server.headers, "Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
                   timeout=60)
    if r.status_code != 201:
        raise BenchError(f"POST /fhir/Practitioner answered {r.status_code}: {r.text[:1000]}")
    content = pdf_bytes(random.Random(1))
    binary_id = upload_binary(server, content)
    docs: dict[int, list[str]] = {}

    def on_answer(index: int, entries: list[dict[str, Any]]) -> None:
        docs[index] = [e["response"]["location"].split("/")[1] for e in entries
                       if e["response"]["location"].startswith("DocumentReference/")]

    t = time.perf_counter()
    print(f"filing {n * per:,} DocumentReferences (one ITI-65 Bundle of {per} per patient), "
          f"{n * msgs:,} messages from doctor 0", flush=True)
    asyncio.run(post_bundles(server.url, server.headers, n, args.loaders,
                             lambda index, _rng: document_bundle(ids[index], per, binary_id,
                                                                 content),
                             on_answer, unit="documents", size=lambda _i: per, total=n * per))
    info["documents_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    pro_token = mint_professional_token(server.url, CARNET_DATA / "keys", 0)
    asyncio.run(send_messages(server.url, pro_token, ids, msgs, args.loaders))
    info["messages_seconds"] = time.perf_counter() - t
    counted = {kind: count_resources(args, kind) for kind in ("Patient", "DocumentReference")}
    expected = {"Patient": n, "DocumentReference": n * per}
    if counted != expected or any(len(docs.get(i, [])) != per for i in range(n)):
        raise BenchError(f"after loading, the database holds {counted}; expected {expected}")
    # Each document filed and each message written also puts a notice from Carnet in the
    # patient's inbox (a Communication of category notification), delivered by the outbox
    # dispatcher after the answer: wait until they are all there.
    info["inbox"] = settled_communications(args, n * (msgs + msgs + per))
    info["vacuum_seconds"] = vacuum_analyze(args)
    info["load_seconds"] = time.perf_counter() - started
    info["patient_ids"] = ids
    # Document j is dated month j: the newest page is the last PAGE_SIZE, newest first.
    info["newest"] = [docs[i][::-1][:PAGE_SIZE] for i in range(n)]
    print(f"  loaded in {info['load_seconds']:.1f}s (documents {info['documents_seconds']:.1f}s, "
          f"messages {info['messages_seconds']:.1f}s)", flush=True)
    return info


def settled_communications(args: argparse.Namespace, expected: int) -> int:
    """Communications once the dispatcher has delivered the inbox notices (the count reaches
    ``expected``, or stops growing for 5 s: then it is reported as it is)."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + 120
    while time.monotonic() < deadline:
        now = count_resources(args, "Communication")
        if now >= expected:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 5:
            break
        time.sleep(0.5)
    print(f"  warning: {last:,} Communications, not the {expected:,} expected (messages and "
          "their notices, document notices)", flush=True)
    return last


# ----------------------------------------------------------------------------- portal

def log_in(base: str, nir: str) -> str:
    """A browser's login: « Se connecter », the provider's form for ``ins:<NIR>``, back to the
    portal; returns the ``carnet_portal`` session key the callback sets."""
    from html.parser import HTMLParser

    class Forms(HTMLParser):  # as tests/service/portal/conftest.py forms_of reads a page
        def __init__(self) -> None:
            super().__init__()
            self.forms: list[tuple[str, dict[str, str]]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if tag == "form":
                self.forms.append((values.get("action") or "", {}))
            elif tag in ("input", "button", "textarea", "select") and self.forms \
                    and values.get("name"):
                self.forms[-1][1].setdefault(values["name"] or "", values.get("value") or "")

    subject = f"ins:{nir}"
    with httpx.Client(base_url=base, timeout=60) as browser:
        started = browser.get("/portal/connexion")
        if started.status_code != 303 or COOKIE not in started.cookies:
            raise BenchError(f"GET /portal/connexion answered {started.status_code} "
                             f"(location {started.headers.get('location')}): "
                             f"{started.text[:500]}")
        page = browser.get(started.headers["location"])
        if page.status_code != 200:
            raise BenchError(f"the provider's login page answered {page.status_code}: "
                             f"{page.text[:500]}")
        parser = Forms()
        parser.feed(page.text)
        fields = next((f for _, f in parser.forms if f.get("subject") == subject), None)
        if fields is None:
            raise BenchError(f"the provider's login page does not list {subject} (is the "
                             "identity in the INSi directory mock?)")
        chosen = browser.post("/idp/authorize", data=fields)
        if chosen.status_code != 303 or "/portal/callback" not in chosen.headers.get(
                "location", ""):
            raise BenchError(f"POST /idp/authorize answered {chosen.status_code} "
                             f"(location {chosen.headers.get('location')}): {chosen.text[:500]}")
        landed = browser.get(chosen.headers["location"])
        key = landed.cookies.get(COOKIE)
        if landed.status_code != 303 or not key or \
                not landed.headers.get("location", "").endswith("/portal/documents"):
            raise BenchError(f"/portal/callback answered {landed.status_code} (location "
                             f"{landed.headers.get('location')}): {landed.text[:500]}")
        return str(key)


def check_pages(server: Server, info: dict[str, Any], args: argparse.Namespace) -> None:
    """Every patient's pages, before measuring: the right documents and messages, and the
    bare API call the same documents."""
    msgs = args.messages_per_patient
    info["unread"] = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i, (key, token, newest) in enumerate(zip(info["cookies"], info["tokens"],
                                                     info["newest"], strict=True)):
            cookie = {"Cookie": f"{COOKIE}={key}"}

            def page(path: str, i: int = i, cookie: dict[str, str] = cookie) -> str:
                r = client.get(path, headers=cookie)
                if r.status_code != 200:
                    raise BenchError(f"patient {i}: GET {path} answered {r.status_code} "
                                     f"(location {r.headers.get('location')}): {r.text[:500]}")
                return r.text

            shown = list(dict.fromkeys(DOC_LINK.findall(page("/portal/documents"))))
            if shown != newest:
                raise BenchError(f"patient {i}: « Mes documents » lists {shown}, expected the "
                                 f"{PAGE_SIZE} newest {newest}")
            bearer = {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}
            r = client.get("/fhir/Communication", headers=bearer, params={
                "recipient": f"Patient/{info['patient_ids'][i]}", "received:missing": "true",
                "_summary": "count"})
            unread = r.json().get("total") if r.status_code == 200 else None
            inbox = page("/portal/messages")
            listed = set(MESSAGE_LINK.findall(inbox))
            if len(listed) != PAGE_SIZE or f'aria-label="{unread} non lus"' not in inbox \
                    or not isinstance(unread, int) or unread < msgs:
                raise BenchError(f"patient {i}: « Messagerie » lists {len(listed)} messages "
                                 f"(expected {PAGE_SIZE}), the API counts {unread} unread "
                                 f"(expected at least {msgs}, and the same in the menu)")
            info["unread"].append(unread)
            if newest[0] not in page(f"/portal/documents/{newest[0]}"):
                raise BenchError(f"patient {i}: the document page does not name {newest[0]}")
            if "Historique des accès" not in page("/portal/historique"):
                raise BenchError(f"patient {i}: the history page has no title")
            r = client.get(api_path(info["patient_ids"][i]), headers=bearer)
            found = [e["resource"]["id"] for e in r.json().get("entry") or []] \
                if r.status_code == 200 else None
            if found != newest:
                raise BenchError(f"patient {i}: the bare API call answered {r.status_code} "
                                 f"{found}, expected {newest}")
    print(f"  checked every page of {len(info['cookies'])} patients and their API call",
          flush=True)


def api_path(patient_id: str) -> str:
    return (f"/fhir/DocumentReference?patient={patient_id}&status=current&_sort=-date"
            f"&_count={PAGE_SIZE}")


def write_cycles(info: dict[str, Any]) -> dict[str, Path]:
    """One ``VALUE<TAB>PATH`` file per figure for ``bench/wrk/header_cycle.lua``, patients in a
    shuffled order; owner-only (they hold sessions and tokens), deleted after the run."""
    order = list(range(len(info["cookies"])))
    random.Random(5).shuffle(order)
    lines: dict[str, list[str]] = {k: [] for k, _ in FIGURES}
    for i in order:
        cookie = f"{COOKIE}={info['cookies'][i]}"
        lines["api"].append(f"Bearer {info['tokens'][i]}\t{api_path(info['patient_ids'][i])}")
        lines["documents"].append(f"{cookie}\t/portal/documents")
        lines["document"].append(f"{cookie}\t/portal/documents/{info['newest'][i][0]}")
        lines["messages"].append(f"{cookie}\t/portal/messages")
        lines["history"].append(f"{cookie}\t/portal/historique")
    paths = {}
    for key, rows in lines.items():
        path = WORK / f"portal_{key}.tsv"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(row + "\n" for row in rows))
        paths[key] = path
    return paths


def remove_cycles() -> None:
    for key, _ in FIGURES:
        (WORK / f"portal_{key}.tsv").unlink(missing_ok=True)


def audit_count(args: argparse.Namespace) -> int:
    """AuditEvents in the audit trail, once it stops growing (the writer commits in groups)."""
    last = -1
    for _ in range(50):
        now = int(admin(args, database=args.db_name,
                        fetch="SELECT count(*) AS n FROM audit_log")[0]["n"])
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    return last


# ----------------------------------------------------------------------------- run

def run(args: argparse.Namespace) -> tuple[ConfigResult, dict[str, Any]]:
    config = Config(args.workers, args.pool_size)
    result = ConfigResult(config)
    WORK.mkdir(exist_ok=True)
    db_url = create_database(args)
    server = start_carnet(args, config, db_url)
    try:
        info = load(args, server, db_url)
        t = time.perf_counter()
        info["cookies"] = [log_in(server.url, identity(i).nir) for i in range(args.patients)]
        info["login_seconds"] = time.perf_counter() - t
        info["tokens"] = [mint_patient_token(server.url, CARNET_DATA / "keys", identity(i))
                          for i in range(args.patients)]
        print(f"  {args.patients} patients logged in through the portal in "
              f"{info['login_seconds']:.1f}s", flush=True)
        check_pages(server, info, args)
        cycles = write_cycles(info)
        info["audit_per_request"] = {}
        for key, _ in FIGURES:
            if key not in args.only:
                continue
            header, accept = (("Authorization", FHIR_JSON) if key == "api"
                              else ("Cookie", "text/html"))
            script_args = [str(cycles[key]), str(args.threads), header, accept]
            before = audit_count(args)
            if key == "history":
                info["audit_before_history"] = before
                # Per patient: their own entries (agent ins:<NIR>) newer than anyone else's.
                info["audit_least_own"] = int(admin(args, database=args.db_name, fetch=(
                    "SELECT min(n) AS n FROM (SELECT count(*) AS n FROM audit_log a "
                    "WHERE a.agent LIKE 'ins:%' AND a.pk > (SELECT coalesce(max(o.pk), 0) "
                    "FROM audit_log o WHERE o.patient_id = a.patient_id "
                    "AND o.agent NOT LIKE 'ins:%') GROUP BY a.patient_id) AS own"))[0]["n"]
                    or 0)
            light = measure(args, server, key, "header_cycle.lua", script_args, key,
                            connections=args.light_connections)
            busy = measure(args, server, f"{key}-{args.connections}", "header_cycle.lua",
                           script_args, key)
            result.measures[key], result.measures[f"{key}-busy"] = light, busy
            served = sum(m.requests + int(m.extra.get("warmup_requests", 0))
                         for m in (light, busy))
            info["audit_per_request"][key] = (audit_count(args) - before) / max(served, 1)
        result.server_log_errors = log_problems(server)
    finally:
        remove_cycles()
        server.stop()
    return result, info


# ----------------------------------------------------------------------------- report

def section(args: argparse.Namespace, r: ConfigResult, info: dict[str, Any], wrk_version: str,
            started: dt.datetime) -> str:
    command = shlex.join(["python", "bench/run_portal.py", *sys.argv[1:]])
    n, per, msgs = args.patients, args.documents_per_patient, args.messages_per_patient
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC: patient portal pages (`/portal`), "
             f"{r.config.label()}", "", f"Command: `{command}`", "",
             f"Effective settings: `--patients {n} --documents-per-patient {per} "
             f"--messages-per-patient {msgs} --duration {args.duration} --warmup {args.warmup} "
             f"--connections {args.connections} --light-connections {args.light_connections} "
             f"--threads {args.threads} --workers {args.workers}`", ""]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_facts(args, wrk_version)]
    lines.append(f"- Load, through the public API: {n} qualified INS Patients (attending "
                 f"doctor: doctor 0, also a `Practitioner` in the FHIR directory), {per} "
                 f"documents each (one ITI-65 Bundle per patient, one month apart, all pointing "
                 f"at one 20 kB PDF Binary) and {msgs} secure messages each from doctor 0 "
                 f"(`POST /fhir/Communication` with his professional token), then `VACUUM "
                 f"ANALYZE`; {info['load_seconds']:.1f}s")
    lines.append(f"- Sessions: each patient logged in through the portal as a browser does "
                 f"(`/portal/connexion`, the provider's form for `ins:<NIR>`, "
                 f"`/portal/callback`; {info['login_seconds']:.1f}s for {n}); every page of "
                 "every patient was checked first (the 10 newest documents; 10 messages, and "
                 "the menu's unread count equal to the API's; the document; the history), and "
                 "the bare API call answers the same 10 documents")
    unread = info.get("unread") or [0]
    lines.append(f"- Inbox: {info['inbox']:,} Communications in all: each patient's {msgs} "
                 f"messages, plus Carnet's inbox notice of each message and of each of the {per} "
                 "documents (outbox dispatcher, waited for before measuring); "
                 + (f"{min(unread)}" if min(unread) == max(unread)
                    else f"{min(unread)}-{max(unread)}")
                 + " unread per patient, so the inbox's first page "
                 "mixes the doctor's messages (sender named through one `Practitioner` search) "
                 "and Carnet's notices")
    lines.append("- wrk sends one patient's `Cookie: carnet_portal=<key>` per request, rotating "
                 f"over the {n} patients (`bench/wrk/header_cycle.lua`); any status but 200 "
                 "is an error (a lost session answers 303). The bare API call rotates the same "
                 "way over the patients' own bearer tokens, minted in process for client "
                 "`carnet-portal` with the portal's scope (`openid offline_access "
                 "patient/*.cruds`): the token the portal's session holds")
    api, api_busy = r.measures.get("api"), r.measures.get("api-busy")
    rows = ["| Figure | Connections | Target | Measured | p50 | p99 | max | Ratio to the API "
            "call | Errors | Result |", "|---|---|---|---|---|---|---|---|---|---|"]

    def row(label: str, m: Measure, conns: int, ratio: str) -> None:
        rows.append(f"| {label} | {conns} | no target (info) | {m.rate:,.0f} req/s | "
                    f"{m.p('p50'):.2f} ms | {m.p('p99'):.2f} ms | {m.p('max'):.1f} ms | {ratio} "
                    f"| {m.error_text()} | {'**FAIL** (errors)' if m.error_count else 'info'} |")

    for key, label in FIGURES:
        light, busy = r.measures.get(key), r.measures.get(f"{key}-busy")
        if light is None or busy is None:
            continue
        if key == "api" or api is None or api_busy is None:
            row(label, light, args.light_connections, "reference" if key == "api" else "n/a")
            row(label, busy, args.connections, "reference" if key == "api" else "n/a")
            continue
        row(label, light, args.light_connections,
            f"p50 x{light.p('p50') / api.p('p50'):.1f}, p99 x{light.p('p99') / api.p('p99'):.1f}")
        row(label, busy, args.connections,
            f"req/s x{busy.rate / api_busy.rate:.2f}" if api_busy.rate else "n/a")
    lines += ["", *rows, ""]
    notes = [f"ratio to the API call: at {args.light_connections} connections the page's "
             "p50 (p99) over the bare API call's; at "
             f"{args.connections} connections the page's req/s over the API call's (the share "
             "of the API call's throughput a page keeps)"]
    per_request = info.get("audit_per_request", {})
    if per_request:
        notes.append("AuditEvents written per request (audit_log growth over a figure's "
                     "warm-ups and measured runs / the requests wrk counted in them): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in per_request.items())
                     + " (each page's read of the record as the patient is audited, as an "
                     "app's would be; the menu's unread count and the history's reads of the "
                     "trail add none)")
    if "audit_before_history" in info:
        least = info["audit_least_own"]
        notes.append(f"the audit trail held {info['audit_before_history']:,} entries when the "
                     "history runs started; the newest of each patient's were the portal's own "
                     f"reads as the patient (the earlier figures' requests), at least {least:,} "
                     "in a row: the page asks the trail for the others only "
                     "(`agent-kind:not=patient`, filtered in the query) and shows the 20 "
                     "newest of them")
    lines += [f"- {x}" for x in notes + measure_notes(r)] + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return bench_main(
        args, lambda: run(args),
        lambda ran, wrk_version, started: section(args, *ran, wrk_version, started),
        lambda ran: any(m.error_count for m in ran[0].measures.values()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
