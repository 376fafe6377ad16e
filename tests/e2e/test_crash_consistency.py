"""Crash consistency: ``carnet serve`` killed with SIGKILL under ITI-65 load, several times.

Concurrent clients file the harness's documents (``service.simulate.corpus``) as fast as the
server answers; at a seeded moment the server is killed (SIGKILL: no shutdown, no flush, a
transaction possibly half-way) and started again on the same database and blob directory,
and the load goes on. After the last restart:

- every acknowledged submission (a 200 received) is there whole: its DocumentReference read
  back with the ``attachment.size``/``hash`` sent, its bytes retrieved (ITI-68) identical,
  its SubmissionSet List listing it, its create AuditEvents in the patient's chain and its
  outbox event; each read the clients got an answer to (they retrieve what they filed, as
  the harness's ``--reads`` does) has its AuditEvent, written by the group-commit writer;
- nothing is half-written, checked over every row of the store (not only the load's): no
  DocumentReference without its registry row, Binary, blob bytes, List, event or audit entry;
  no List entry, index row, outbox event, registry row or audit entry naming a resource that
  is not there; no Binary governed by no document; every current version in the history;
- each request cut by a kill is all there or not at all; re-sent, as the harness does when an
  answer was lost, it is filed once (answered from the first filing if that one committed);
- the audit hash chains verify.

The outbox dispatcher is off: what a crash must not lose is the event in the outbox, written
in the filing's transaction (its delivery after a crash is test_production's concern), and a
quiet server lets the checks read the store while it runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import random
import signal
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.simulate import corpus
from storage.audit import AUDIT_LOG, verify_chains
from storage.blobs import BlobStore, open_blob_store
from storage.db import Database
from storage.documents import BINARY_CONTENT, DOCUMENT_REGISTRY, SUBMISSIONS
from storage.errors import BlobNotFound
from storage.outbox import OUTBOX
from storage.tables import INDEX_TABLES, RESOURCES, VERSIONS
from tests.e2e.conftest import app_token, running_carnet
from tests.reliability import figures

pytestmark = pytest.mark.e2e

SEED = 20261126
KILLS = 3
CLIENTS = 5
MIN_ACKNOWLEDGED = 3  # filings acknowledged in each run of the load before its kill...
KILL_DELAY = (0.0, 0.5)  # ...then this many seconds more, drawn from the seed
MAX_BYTES = 24_000  # small documents: many filings, and many in flight, per second
OPERATOR_SCOPE = "system/*.cruds"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def sha1_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


@dataclass(frozen=True)
class Filed:
    """What a 200 answer named: the SubmissionSet, the document, its Binary."""

    list_id: str
    document_id: str
    binary_id: str


@dataclass
class Submission:
    """One ITI-65 request of the load, and what became of it."""

    body: bytes
    patient_id: str
    master: str  # the DocumentReference's masterIdentifier value (unique per document)
    content: bytes  # the document's bytes, as sent in the Binary
    filed: Filed | None = None  # acknowledged: the answer's ids
    cut: bool = False  # no answer: the server was killed with the request in flight
    retrieved: bool = False  # then its bytes retrieved (ITI-68): the read's audit is durable


class Harness:
    """The harness's submissions for the server's patients, by seeded professionals."""

    def __init__(self, seed: int, patients: list[tuple[str, corpus.Identity]]) -> None:
        self.rng = random.Random(seed)
        self.patients = patients
        self.authors = corpus.directory(self.rng, 8, 4)
        self.sent: list[Submission] = []

    def next(self) -> Submission:
        patient_id, identity = self.rng.choice(self.patients)
        author = self.rng.choice(self.authors)
        bundle, _size = corpus.submission(self.rng, patient_id, identity, author,
                                          corpus.pick_kind_for(self.rng, author, identity),
                                          max_bytes=MAX_BYTES)
        resources = [e["resource"] for e in bundle["entry"]]
        (document,) = [r for r in resources if r["resourceType"] == "DocumentReference"]
        (binary,) = [r for r in resources if r["resourceType"] == "Binary"]
        submission = Submission(orjson.dumps(bundle), patient_id,
                                document["masterIdentifier"]["value"],
                                base64.b64decode(binary["data"]))
        self.sent.append(submission)
        return submission

    @property
    def acknowledged(self) -> list[Submission]:
        return [s for s in self.sent if s.filed is not None]

    @property
    def cut(self) -> list[Submission]:
        return [s for s in self.sent if s.cut]


def filed_ids(answer: httpx.Response) -> Filed:
    locations = [e["response"]["location"] for e in answer.json()["entry"]]
    ids = {kind: [loc.split("/")[1] for loc in locations if loc.startswith(f"{kind}/")]
           for kind in ("List", "DocumentReference", "Binary")}
    assert all(len(found) == 1 for found in ids.values()), locations
    return Filed(ids["List"][0], ids["DocumentReference"][0], ids["Binary"][0])


class Server:
    """``carnet serve`` on one database and data directory, started again after each kill
    (on a new port: the tokens are fetched again)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.stack = contextlib.ExitStack()
        self.pids: list[int] = []
        self.base = ""
        self.token = ""

    def start(self, *args: str) -> None:
        log = self.log_dir / f"serve-{len(self.pids)}.log"
        self.base = self.stack.enter_context(
            running_carnet(["serve", *args], self.env, log, "/fhir/metadata", self.pids))
        self.token = app_token(self.base, OPERATOR_SCOPE)

    def kill(self) -> None:
        os.kill(self.pids[-1], signal.SIGKILL)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=30.0,
                                 headers={"Authorization": f"Bearer {self.token}"})

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.log_dir.glob("serve-*.log")))


async def load_until_killed(server: Server, harness: Harness, delay: float) -> None:
    """``CLIENTS`` clients filing until the server dies under them: ``delay`` s after it
    acknowledged ``MIN_ACKNOWLEDGED`` filings (however slow the machine)."""

    async def client() -> None:
        async with server.client() as http:
            while True:
                submission = harness.next()
                try:
                    answer = await http.post("/fhir", content=submission.body,
                                             headers=FHIR_JSON)
                except httpx.TransportError:
                    submission.cut = True
                    return
                assert answer.status_code == 200, answer.text[:500]
                submission.filed = filed_ids(answer)
                if len(harness.acknowledged) >= wanted:
                    enough.set()
                try:  # the harness reads back what it filed (its --reads)
                    read = await http.get(f"/fhir/Binary/{submission.filed.binary_id}",
                                          headers={"Accept": "*/*"})
                except httpx.TransportError:
                    return
                assert (read.status_code, read.content) == (200, submission.content)
                submission.retrieved = True

    wanted = len(harness.acknowledged) + MIN_ACKNOWLEDGED
    enough = asyncio.Event()
    tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    waiting = asyncio.create_task(enough.wait())
    await asyncio.wait([waiting, *tasks], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(delay)
    server.kill()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == [], f"{failures[0]!r}\n{server.logs()}"


# -- the store, read in one pass ---------------------------------------------------------


@dataclass
class Store:
    """Every row the invariants look at (the store is small: demo data plus the load)."""

    resources: dict[tuple[str, str], tuple[int, int, dict[str, Any] | None]]  # pk, version
    versions: set[tuple[int, int]]
    index_pks: set[int]
    binaries: dict[str, tuple[str, int, str, str | None]]  # blob key, size, sha1, document
    registry: dict[str, str]  # master value -> document id
    registry_rows: list[tuple[str, str, int | None]]  # master value, document id, submission
    submissions: set[int]
    events: list[tuple[str, dict[str, Any]]]  # (topic, payload)
    created: set[tuple[str, str]]  # (patient id, reference) of successful create audits
    read: set[tuple[str, str]]  # (patient id, reference) of successful read audits
    blob_bytes: dict[str, bytes] = field(default_factory=dict)

    def current(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        found = self.resources.get((resource_type, resource_id))
        return found[2] if found else None

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {rid: content for (rtype, rid), (_pk, _v, content) in self.resources.items()
                if rtype == resource_type and content is not None}


async def read_store(conn: AsyncConnection, blobs: BlobStore) -> Store:
    resources = {(t, i): (pk, v, orjson.loads(c) if c is not None and not d else None)
                 for pk, t, i, v, d, c in (await conn.execute(select(
                     RESOURCES.c.pk, RESOURCES.c.resource_type, RESOURCES.c.resource_id,
                     RESOURCES.c.version_id, RESOURCES.c.deleted, RESOURCES.c.content))).all()}
    versions = {(pk, v) for pk, v in (await conn.execute(
        select(VERSIONS.c.resource_pk, VERSIONS.c.version_id))).all()}
    index_pks: set[int] = set()
    for table in INDEX_TABLES:
        index_pks |= set((await conn.execute(select(table.c.resource_pk).distinct())).scalars())
    binaries = {b: (k, s, h, d) for b, k, s, h, d in (await conn.execute(select(
        BINARY_CONTENT.c.binary_id, BINARY_CONTENT.c.blob_key, BINARY_CONTENT.c.size,
        BINARY_CONTENT.c.sha1, BINARY_CONTENT.c.document_id))).all()}
    registry_rows = [(m, d, s) for m, d, s in (await conn.execute(select(
        DOCUMENT_REGISTRY.c.master_value, DOCUMENT_REGISTRY.c.document_id,
        DOCUMENT_REGISTRY.c.submission_pk))).all()]
    submissions = set((await conn.execute(select(SUBMISSIONS.c.pk))).scalars())
    events = [(t, orjson.loads(p)) for t, p in (await conn.execute(
        select(OUTBOX.c.topic, OUTBOX.c.payload))).all()]
    audited: dict[str, set[tuple[str, str]]] = {"C": set(), "R": set()}
    for patient_id, content in (await conn.execute(select(
            AUDIT_LOG.c.patient_id, AUDIT_LOG.c.content))).all():
        event = orjson.loads(content)
        if event.get("action") in audited and event.get("outcome") == "0":
            audited[event["action"]] |= {
                (patient_id, e["what"]["reference"]) for e in event.get("entity", [])
                if "role" not in e and "reference" in e.get("what", {})}
    store = Store(resources, versions, index_pks, binaries,
                  {m: d for m, d, _s in registry_rows}, registry_rows, submissions, events,
                  audited["C"], audited["R"])
    for key, _size, _sha1, _document in binaries.values():
        with contextlib.suppress(BlobNotFound):
            store.blob_bytes[key] = b"".join([chunk async for chunk in blobs.read(key)])
    return store


def half_written(store: Store, seeded: frozenset[str] = frozenset()) -> list[str]:
    """Every trace of a write that is not whole, over the whole store. The ``seeded`` documents
    (the demo data, filed by Carnet itself at start) have no AuditEvent: nobody accessed
    anything."""
    problems = []
    pks = {pk for pk, _v, _c in store.resources.values()}
    for (rtype, rid), (pk, version, _content) in store.resources.items():
        if (pk, version) not in store.versions:
            problems.append(f"{rtype}/{rid}: version {version} missing from the history")
    problems += [f"index rows of resource pk {pk}, which is not stored"
                 for pk in sorted(store.index_pks - pks)]
    problems += [f"history of resource pk {pk}, which is not stored"
                 for pk in sorted({pk for pk, _v in store.versions} - pks)]
    documents = store.of_type("DocumentReference")
    lists = store.of_type("List")
    listed = {(e.get("item") or {}).get("reference") for content in lists.values()
              for e in content.get("entry") or []}
    noticed = Counter(p["document"] for t, p in store.events if t == "document"
                      and "document" in p and not p.get("made_visible"))
    audited = {reference for _patient, reference in store.created}
    registered = {d for _m, d, _s in store.registry_rows}
    for did, document in documents.items():
        where = f"DocumentReference/{did}"
        if did not in registered:
            problems.append(f"{where}: no document_registry row")
        if where not in listed:
            problems.append(f"{where}: in no List")
        if noticed[did] != 1:
            problems.append(f"{where}: {noticed[did]} outbox events")
        if where not in audited and did not in seeded:
            problems.append(f"{where}: no create AuditEvent")
        for item in document.get("content") or []:
            attachment = item["attachment"]
            binary_id = str(attachment.get("url", "")).rpartition("Binary/")[2]
            stored = store.binaries.get(binary_id)
            if store.current("Binary", binary_id) is None or stored is None:
                problems.append(f"{where}: Binary/{binary_id} or its binary_content missing")
                continue
            key, size, sha1, _governor = stored
            data = store.blob_bytes.get(key)
            if data is None:
                problems.append(f"{where}: the blob {key} of Binary/{binary_id} is missing")
            elif (len(data), sha1_base64(data)) != (attachment.get("size"),
                                                    attachment.get("hash")) \
                    or (size, sha1) != (len(data), sha1_base64(data)):
                problems.append(f"{where}: blob {key} holds {len(data)} bytes "
                                f"{sha1_base64(data)}, attachment says {attachment.get('size')} "
                                f"{attachment.get('hash')}, binary_content {size} {sha1}")
    for lid, content in lists.items():
        for entry in content.get("entry") or []:
            rtype, _, rid = str((entry.get("item") or {}).get("reference")).partition("/")
            if store.current(rtype, rid) is None:
                problems.append(f"List/{lid}: entry {rtype}/{rid} is not stored")
    for bid in store.of_type("Binary"):
        if bid not in store.binaries:
            problems.append(f"Binary/{bid}: no binary_content row")
    for bid, (_key, _size, _sha1, governor) in store.binaries.items():
        if store.current("Binary", bid) is None:
            problems.append(f"binary_content {bid}: no Binary resource")
        if governor is None or governor not in documents:
            problems.append(f"Binary/{bid}: governed by no stored document ({governor})")
    for master, did, submission_pk in store.registry_rows:
        if did not in documents:
            problems.append(f"registry {master}: DocumentReference/{did} is not stored")
        if submission_pk is not None and submission_pk not in store.submissions:
            problems.append(f"registry {master}: submission {submission_pk} is not stored")
    for topic, payload in store.events:
        if topic == "document" and payload.get("document") not in documents:
            problems.append(f"outbox event about absent DocumentReference/{payload}")
    for patient_id, reference in store.created:
        rtype, _, rid = reference.partition("/")
        if store.current(rtype, rid) is None:
            problems.append(f"create AuditEvent in Patient/{patient_id}'s chain for {reference}, "
                            "which is not stored")
    return problems


def damaged(store: Store, submission: Submission) -> list[str]:
    """What is wrong, in the store, with one acknowledged submission (empty: it is whole)."""
    assert submission.filed is not None
    filed = submission.filed
    where = f"DocumentReference/{filed.document_id}"
    document = store.current("DocumentReference", filed.document_id)
    if document is None:
        return [f"{where}: not stored"]
    wrong = []
    attachment = document["content"][0]["attachment"]
    if (attachment.get("url"), attachment.get("size"), attachment.get("hash")) != (
            f"Binary/{filed.binary_id}", len(submission.content),
            sha1_base64(submission.content)):
        wrong.append(f"{where}: attachment {attachment} is not what was sent")
    if store.registry.get(submission.master) != filed.document_id:
        wrong.append(f"{where}: registry says {store.registry.get(submission.master)}")
    entries = {(e.get("item") or {}).get("reference")
               for e in (store.current("List", filed.list_id) or {}).get("entry") or []}
    if where not in entries:
        wrong.append(f"List/{filed.list_id}: missing, or does not list {where}")
    for reference in (where, f"List/{filed.list_id}"):
        if (submission.patient_id, reference) not in store.created:
            wrong.append(f"{reference}: no create AuditEvent in the patient's chain")
    if submission.retrieved and (submission.patient_id, f"Binary/{filed.binary_id}") \
            not in store.read:
        wrong.append(f"Binary/{filed.binary_id}: retrieved, but no read AuditEvent")
    return wrong


def outbox_missing(store: Store, submissions: Iterable[Submission]) -> list[str]:
    """The acknowledged documents the outbox holds no event about (the patient's notice)."""
    documents = {p.get("document") for t, p in store.events if t == "document"}
    return [f"DocumentReference/{s.filed.document_id}" for s in submissions
            if s.filed is not None and s.filed.document_id not in documents]


async def snapshot(database: Database, blobs: BlobStore) -> Store:
    async with database.query() as conn:
        return await read_store(conn, blobs)


async def retrieval_problems(server: Server, acknowledged: list[Submission]) -> list[str]:
    """Each acknowledged document read, and its bytes retrieved (ITI-68), through the API."""
    limit = asyncio.Semaphore(CLIENTS)

    async def check(http: httpx.AsyncClient, submission: Submission) -> list[str]:
        assert submission.filed is not None
        filed = submission.filed
        async with limit:
            read = await http.get(f"/fhir/DocumentReference/{filed.document_id}",
                                  headers=FHIR_JSON)
            raw = await http.get(f"/fhir/Binary/{filed.binary_id}", headers={"Accept": "*/*"})
        if read.status_code != 200:
            return [f"DocumentReference/{filed.document_id}: {read.status_code}"]
        attachment = read.json()["content"][0]["attachment"]
        wrong = []
        if (attachment.get("size"), attachment.get("hash")) != (
                len(submission.content), sha1_base64(submission.content)):
            wrong.append(f"DocumentReference/{filed.document_id}: size/hash {attachment}")
        if raw.status_code != 200 or raw.content != submission.content:
            wrong.append(f"Binary/{filed.binary_id}: {raw.status_code}, {len(raw.content)} "
                         f"bytes, sent {len(submission.content)}")
        return wrong

    async with server.client() as http:
        found = await asyncio.gather(*(check(http, s) for s in acknowledged))
    return [problem for problems in found for problem in problems]


# -- the test ----------------------------------------------------------------------------


async def test_acknowledged_filings_survive_sigkills_whole_and_cut_ones_are_all_or_nothing(
        database: Database, tmp_path: Path) -> None:
    """Three SIGKILLs under load; then the store is checked as the kills left it, the cut
    requests are re-sent, and it is checked again."""
    data_dir = tmp_path / "data"
    env = {"CARNET_DATABASE_URL": database.url, "CARNET_DATA_DIR": str(data_dir),
           "CARNET_OPERATOR_CLIENTS": '["demo-app"]', "CARNET_DISPATCHER_ENABLED": "false"}
    server = Server(env, tmp_path)
    blobs = open_blob_store(None, data_dir)
    kill_times = random.Random(SEED)
    try:
        server.start("--demo")
        async with server.client() as http:
            found = await http.get("/fhir/Patient", headers=FHIR_JSON, params={"_count": "50"})
        assert found.status_code == 200, found.text
        patients = [(e["resource"]["id"], identity) for e in found.json()["entry"]
                    if (identity := corpus.identity_from_patient(e["resource"])) is not None]
        assert patients, found.text
        before = await snapshot(database, blobs)
        seeded = frozenset(before.of_type("DocumentReference"))
        demo_documents = len(seeded)
        harness = Harness(SEED, patients)

        for kill in range(KILLS):
            if kill:
                server.start()
            await load_until_killed(server, harness, kill_times.uniform(*KILL_DELAY))
        server.start()

        # Right after the last restart: the store as the kills left it.
        acknowledged, cut = harness.acknowledged, harness.cut
        assert len(acknowledged) >= KILLS * MIN_ACKNOWLEDGED and cut, len(cut)
        assert len(acknowledged) + len(cut) == len(harness.sent)
        retrieved = sum(s.retrieved for s in acknowledged)
        assert retrieved > 0
        after_crash = await snapshot(database, blobs)
        lost = {s.master: wrong for s in acknowledged if (wrong := damaged(after_crash, s))}
        assert lost == {}, f"{len(lost)} acknowledged submissions damaged: {lost}"
        half = half_written(after_crash, seeded)
        assert half == [], f"{len(half)} half-written traces after the kills: {half[:20]}"
        missing_events = outbox_missing(after_crash, acknowledged)
        assert missing_events == [], missing_events
        stored = {d["masterIdentifier"]["value"]
                  for d in after_crash.of_type("DocumentReference").values()}
        committed = {s.master for s in cut if s.master in after_crash.registry}
        for s in cut:  # all there (the invariants above say whole) or no trace at all
            assert (s.master in stored) == (s.master in committed), s.master
        assert len(after_crash.of_type("DocumentReference")) == \
            demo_documents + len(acknowledged) + len(committed)
        problems = await retrieval_problems(server, acknowledged)
        assert problems == [], f"{len(problems)} acknowledged documents not served whole: " \
                               f"{problems[:10]}"

        # The harness re-sends what it got no answer to: filed once, never twice.
        async with server.client() as http:
            answers = await asyncio.gather(*(http.post("/fhir", content=s.body,
                                                       headers=FHIR_JSON) for s in cut))
        for s, answer in zip(cut, answers, strict=True):
            assert answer.status_code == 200, answer.text[:500]
            statuses = {e["response"]["status"] for e in answer.json()["entry"]}
            if s.master in committed:  # answered from the filing that committed before the kill
                assert statuses == {"200 OK"}, statuses
                assert filed_ids(answer).document_id == after_crash.registry[s.master]
            else:
                assert statuses == {"201 Created"}, statuses
        final = await snapshot(database, blobs)
        assert half_written(final, seeded) == []
        per_master = Counter(d["masterIdentifier"]["value"]
                             for d in final.of_type("DocumentReference").values())
        duplicates = {m: n for m, n in per_master.items() if n > 1}
        assert duplicates == {}
        assert {s.master for s in harness.sent} <= set(per_master)
        assert len(per_master) == demo_documents + len(harness.sent)
        async with database.query() as conn:
            chains = await verify_chains(conn)
        assert chains.problems == [], chains.problems[:10]
        assert chains.entries > 0
    except BaseException:
        print(server.logs())  # shown when the test fails
        raise
    finally:
        server.stack.close()
        await blobs.close()

    print(f"\n{database.dialect}: {KILLS} kills, {len(harness.sent)} submissions sent, "
          f"{len(acknowledged)} acknowledged, {len(cut)} cut by a kill ({len(committed)} of "
          f"them committed before it), {retrieved} read back before the kills, "
          f"{chains.entries} audit entries verified")
    figures.add("crash.kills", KILLS)
    figures.add("crash.acknowledged", len(acknowledged))
    figures.add("crash.unacknowledged", len(cut))
    figures.add("crash.acknowledged_reads", retrieved)
    figures.add("crash.resends", len(cut))
    figures.add("crash.resends_replayed", len(committed))
    figures.add("crash.duplicates", 0)
    figures.add("crash.lost", 0)
    figures.add("crash.half_visible", 0)
    figures.add("crash.audit_broken_links", 0)
    figures.add("crash.outbox_missing", 0)
