"""The production shape without containers: separate processes sharing PostgreSQL and S3.

One ``carnet idp`` signs every token; two API processes (A and B, ``carnet serve`` with the
embedded provider and dispatcher off) check them against its JWKS over HTTP; one ``carnet
dispatcher`` delivers the notifications; document bytes live in S3 (moto's server), the
e-mails go to an SMTP sink. A document filed through A is read back through B, and notified
by the dispatcher. Then A is killed (SIGKILL) in the middle of concurrent ITI-65 filings:
every filing it acknowledged must be readable through B, bytes included, and notified.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from auth.idp.claims import patient_subject
from service.demo import INS_NIR_TEST, PATIENTS, demo_email
from service.documents.samples import document_bundle
from storage.db import Database
from tests.e2e.conftest import app_token, free_port, log_in
from tests.endpoints import SmtpServer

pytestmark = pytest.mark.e2e

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
OPERATOR_SCOPE = "system/*.cruds"
CLIENTS = 4  # concurrent filers against A
KILL_AFTER = 16  # acknowledged filings before A is killed
MAX_LOAD_SECONDS = 20.0


class Process:
    """One ``python -m service.cli <args>`` process, its log in ``log_dir/<name>.log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path,
                 port: int | None = None, listens: bool = True) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.port = (port or free_port()) if listens else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listen = ["--host", "127.0.0.1", "--port", str(self.port)] if self.port else []
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", *self.args, *listen],
                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT)

    def wait_until_up(self, path: str, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n"
                                     f"{self.tail()}")
            try:
                if httpx.get(f"{self.base}{path}", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not answer {path} within {timeout} s:\n"
                             f"{self.tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"--- {self.name}: no log"
        return "\n".join([f"--- {self.name} ({self.log_path}), last lines:", *text[-lines:]])


@dataclass
class Cluster:
    idp: Process
    a: Process
    b: Process
    dispatcher: Process
    env: dict[str, str]

    @property
    def issuer(self) -> str:
        return f"{self.idp.base}/idp"

    def tails(self) -> str:
        return "\n".join(p.tail() for p in (self.idp, self.a, self.b, self.dispatcher))


@pytest.fixture
def cluster(database: Database, tmp_path: Path, s3_server: str, aws_env: None,
            smtp_server: SmtpServer) -> Iterator[Cluster]:
    if not database.is_postgresql:
        pytest.skip("several processes share one database: PostgreSQL only")
    idp_port = free_port()
    idp_base = f"http://127.0.0.1:{idp_port}"  # where the test's clients reach the provider
    # The name browsers and the tokens' iss use; the API processes cannot resolve it and
    # must reach the provider's JWKS through CARNET_ISSUER_INTERNAL_URL, as in a container
    # network.
    idp_public = f"http://idp.carnet.invalid:{idp_port}"
    bucket = f"carnet-prod-{uuid.uuid4().hex[:12]}"
    shared = {  # what every process of the deployment is given (aws_env: dummy credentials)
        "CARNET_DATABASE_URL": database.url,
        "CARNET_BLOB_URL": f"s3://{bucket}/blobs?endpoint_url={s3_server}",
        "AWS_DEFAULT_REGION": "eu-west-3",
        "CARNET_SMTP_URL": smtp_server.url,
        "CARNET_ISSUER_URL": f"{idp_public}/idp",
        "CARNET_ISSUER_INTERNAL_URL": f"{idp_base}/idp",
        "CARNET_IDP_ENABLED": "false",
        "CARNET_DISPATCHER_ENABLED": "false",
        "CARNET_OPERATOR_CLIENTS": '["demo-app"]',
        "CARNET_DISPATCHER_POLL_SECONDS": "0.2",
        "CARNET_DISPATCHER_BACKOFF_SECONDS": "0.2",
        "CARNET_LOG_LEVEL": "warning",
    }

    def data_dir(name: str) -> dict[str, str]:
        path = tmp_path / name
        path.mkdir()
        return {"CARNET_DATA_DIR": str(path)}

    began = time.monotonic()
    seeded = subprocess.run([sys.executable, "-m", "service.cli", "seed", "--demo"],
                            env={**os.environ, **shared, **data_dir("seed")},
                            capture_output=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr.decode(errors="replace")
    seeded_after = time.monotonic()

    idp = Process("idp", ["idp"], {**shared, **data_dir("idp"),
                                   "CARNET_PUBLIC_URL": idp_public}, tmp_path, port=idp_port)
    a = Process("api-a", ["serve"], {**shared, **data_dir("api-a")}, tmp_path)
    b = Process("api-b", ["serve"], {**shared, **data_dir("api-b")}, tmp_path)
    dispatcher = Process("dispatcher", ["dispatcher"],
                         {**shared, **data_dir("dispatcher"), "CARNET_LOG_LEVEL": "info"},
                         tmp_path, listens=False)
    processes = (idp, a, b, dispatcher)
    try:
        for process in processes:  # all at once: the migrations take an advisory lock
            process.start()
        idp.wait_until_up("/idp/.well-known/openid-configuration")
        a.wait_until_up("/fhir/metadata")
        b.wait_until_up("/fhir/metadata")
        assert dispatcher.process is not None and dispatcher.process.poll() is None, \
            dispatcher.tail()
        print(f"seeded in {seeded_after - began:.1f} s, every process up after "
              f"{time.monotonic() - began:.1f} s")
        yield Cluster(idp, a, b, dispatcher, shared)
    finally:
        for process in processes:
            process.stop()
        print(Cluster(idp, a, b, dispatcher, shared).tails())  # shown when the test fails


# -- helpers ---------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0,
             explain: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s in vain for: {what}. {explain()}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Filed:
    """An acknowledged ITI-65 filing: what the answer named and what was sent."""

    patient_id: str
    document_id: str
    binary_id: str
    content: bytes


def new_bundle(patient_id: str) -> tuple[dict[str, Any], bytes]:
    content = f"Carnet production test {uuid.uuid4()}\n".encode() * 40  # ~1.9 kB, unique
    return document_bundle(f"Patient/{patient_id}", content=content,
                           content_type="text/plain"), content


def acknowledged(patient_id: str, content: bytes, answer: httpx.Response) -> Filed:
    """The ids in a 200 answer to the transaction (one DocumentReference, one Binary)."""
    locations = [e["response"]["location"] for e in answer.json()["entry"]]
    ids = {kind: [loc.split("/")[1] for loc in locations if loc.startswith(f"{kind}/")]
           for kind in ("DocumentReference", "Binary")}
    assert len(ids["DocumentReference"]) == 1 and len(ids["Binary"]) == 1, locations
    return Filed(patient_id, ids["DocumentReference"][0], ids["Binary"][0], content)


def file_document(http: httpx.Client, patient_id: str) -> Filed:
    bundle, content = new_bundle(patient_id)
    answer = http.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    return acknowledged(patient_id, content, answer)


def problems_reading(http: httpx.Client, filed: Filed) -> list[str]:
    """What is wrong with an acknowledged document read back (empty: all is well)."""
    read = http.get(f"/fhir/DocumentReference/{filed.document_id}", headers=FHIR_JSON)
    if read.status_code != 200:
        return [f"DocumentReference/{filed.document_id}: {read.status_code} {read.text[:300]}"]
    document = read.json()
    wrong = []
    if document.get("status") != "current":
        wrong.append(f"DocumentReference/{filed.document_id}: status {document.get('status')}")
    if document["subject"]["reference"] != f"Patient/{filed.patient_id}":
        wrong.append(f"DocumentReference/{filed.document_id}: subject {document['subject']}")
    attachment = document["content"][0]["attachment"]
    url: str = attachment["url"]
    if not (url == f"Binary/{filed.binary_id}" or url.endswith(f"/fhir/Binary/{filed.binary_id}")):
        wrong.append(f"DocumentReference/{filed.document_id}: attachment.url {url!r}, "
                     f"filed Binary/{filed.binary_id}")
    sha1 = base64.b64encode(hashlib.sha1(filed.content).digest()).decode()
    if (attachment.get("size"), attachment.get("hash")) != (len(filed.content), sha1):
        wrong.append(f"DocumentReference/{filed.document_id}: size/hash "
                     f"{attachment.get('size')}/{attachment.get('hash')}, "
                     f"sent {len(filed.content)}/{sha1}")
    raw = http.get(f"/fhir/Binary/{filed.binary_id}", headers={"Accept": "*/*"})
    if raw.status_code != 200:
        wrong.append(f"Binary/{filed.binary_id}: {raw.status_code} {raw.text[:300]}")
    elif raw.content != filed.content:
        wrong.append(f"Binary/{filed.binary_id}: {len(raw.content)} bytes, sha1 "
                     f"{hashlib.sha1(raw.content).hexdigest()}; sent {len(filed.content)}, "
                     f"sha1 {hashlib.sha1(filed.content).hexdigest()}")
    return wrong


def documents_of(http: httpx.Client, patient_id: str) -> int:
    counted = http.get("/fhir/DocumentReference", headers=FHIR_JSON,
                       params={"patient": patient_id, "_summary": "count"})
    assert counted.status_code == 200, counted.text
    total: int = counted.json()["total"]
    return total


def notices_about(http: httpx.Client, patient_id: str) -> set[str]:
    """The documents and messages the patient's inbox Communications are about."""
    inbox = http.get("/fhir/Communication", headers=FHIR_JSON,
                     params={"recipient": f"Patient/{patient_id}", "_count": "500"})
    assert inbox.status_code == 200, inbox.text
    return {about["reference"] for e in inbox.json().get("entry", [])
            for about in e["resource"].get("about", [])}


def backlog(http: httpx.Client) -> dict[str, int]:
    answer = http.get("/notifications/deliveries", params={"limit": "1"})
    assert answer.status_code == 200, answer.text
    counts: dict[str, int] = answer.json()["backlog"]
    return counts


def drained(http: httpx.Client) -> bool:
    counts = backlog(http)
    return counts.get("events_waiting", 0) == 0 and counts.get("deliveries_pending", 0) == 0


def mails_to(smtp: SmtpServer) -> collections.Counter[str]:
    return collections.Counter(str(m["To"]) for m in list(smtp.messages))


class Load:
    """``CLIENTS`` threads filing ITI-65 Bundles against A, round-robin over the patients,
    until ``stop`` is set or A stops answering."""

    def __init__(self, base: str, token: str, patients: list[str]) -> None:
        self.base = base
        self.token = token
        self.patients = patients
        self.lock = threading.Lock()
        self.acked: list[Filed] = []
        self.attempted: collections.Counter[str] = collections.Counter()
        self.refused: list[str] = []  # non-200 answers: none expected
        self.early_errors: list[str] = []  # transport errors before the kill: none expected
        self.late_errors: list[str] = []  # after the kill: expected
        self.stop = threading.Event()
        self.killed = threading.Event()
        self.threads = [threading.Thread(target=self._file, args=(n,), daemon=True)
                        for n in range(CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=40)
        assert not any(t.is_alive() for t in self.threads), "a filing thread did not end"

    def _file(self, worker: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30.0) as http:
            n = worker
            while not self.stop.is_set():
                patient_id = self.patients[n % len(self.patients)]
                n += 1
                bundle, content = new_bundle(patient_id)
                with self.lock:
                    self.attempted[patient_id] += 1
                try:
                    answer = http.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)
                except httpx.TransportError as exc:
                    with self.lock:
                        (self.late_errors if self.killed.is_set() else self.early_errors
                         ).append(f"client {worker}: {exc!r}")
                    if self.killed.is_set():
                        return  # A is gone: this client is done
                    continue
                with self.lock:
                    if answer.status_code == 200:
                        self.acked.append(acknowledged(patient_id, content, answer))
                    else:
                        self.refused.append(f"{answer.status_code} {answer.text[:300]}")


# -- the test --------------------------------------------------------------------------


def test_two_api_processes_an_idp_and_a_dispatcher_share_one_database_and_s3_and_survive_a_kill(
        cluster: Cluster, smtp_server: SmtpServer) -> None:
    operator_token = app_token(cluster.idp.base, OPERATOR_SCOPE, issuer=cluster.issuer)
    operator = {"Authorization": f"Bearer {operator_token}"}
    with httpx.Client(base_url=cluster.a.base, headers=operator, timeout=30.0) as a, \
            httpx.Client(base_url=cluster.b.base, headers=operator, timeout=30.0) as b:
        patient_ids: list[str] = []
        for row in PATIENTS:
            found = b.get("/fhir/Patient", headers=FHIR_JSON,
                          params={"identifier": f"{INS_NIR_TEST}|{row[1]}"})
            assert found.status_code == 200, found.text
            assert found.json()["total"] == 1, found.text
            patient_ids.append(found.json()["entry"][0]["resource"]["id"])
        emails = [demo_email(row[3][0], row[2]) for row in PATIENTS]
        marie, marie_email = patient_ids[0], emails[0]

        # 1. The demo data's notifications (seeded before any process ran) go out.
        wait_for("the seeded documents' notifications delivered", lambda: drained(b),
                 explain=lambda: f"backlog {backlog(b)}")
        demo_mails = mails_to(smtp_server)
        assert demo_mails[marie_email] == 3, f"Marie has 3 demo documents: {demo_mails}"

        # 2. Filed through A, read through B (metadata from PostgreSQL, bytes from S3).
        first = [file_document(a, marie) for _ in range(2)]
        for filed in first:
            assert problems_reading(b, filed) == []

        # ...and notified by the dispatcher process: e-mail, and the inbox, seen through B
        # by Marie herself (logged in at the provider, her token checked by B).
        wait_for("Marie's two e-mails", lambda: mails_to(smtp_server)[marie_email]
                 == demo_mails[marie_email] + 2,
                 explain=lambda: f"{mails_to(smtp_server)} (before: {demo_mails})")
        marie_token = log_in(cluster.idp.base, patient_subject(PATIENTS[0][1]),
                             "openid patient/*.rs")
        assert marie_token.get("patient") == marie, marie_token
        as_marie = {"Authorization": f"Bearer {marie_token['access_token']}"}
        wanted = {f"DocumentReference/{f.document_id}" for f in first}
        wait_for("Marie's inbox notices", lambda: wanted <= notices_about(b, marie))
        inbox = b.get("/fhir/Communication", headers={**FHIR_JSON, **as_marie},
                      params={"recipient": f"Patient/{marie}", "_sort": "-sent"})
        assert inbox.status_code == 200, inbox.text
        seen = {about["reference"] for e in inbox.json()["entry"]
                for about in e["resource"].get("about", [])}
        assert wanted <= seen, f"Marie's inbox through B: {sorted(seen)}; filed {sorted(wanted)}"
        mine = b.get(f"/fhir/DocumentReference/{first[0].document_id}",
                     headers={**FHIR_JSON, **as_marie})
        assert mine.status_code == 200, mine.text

        wait_for("phase 2 delivered", lambda: drained(b), explain=lambda: f"{backlog(b)}")
        mails_before = mails_to(smtp_server)
        documents_before = {p: documents_of(b, p) for p in patient_ids}

        # 3. Concurrent filings against A, and A killed in the middle of them.
        load = Load(cluster.a.base, operator_token, patient_ids)
        load.start()
        try:
            started = time.monotonic()
            while len(load.acked) < KILL_AFTER and time.monotonic() - started < MAX_LOAD_SECONDS:
                if load.early_errors or load.refused:
                    break
                time.sleep(0.01)
            load.killed.set()
            cluster.a.kill()
            killed_after = len(load.acked)
        finally:
            load.join()
        assert load.early_errors == [] and load.refused == [], (
            f"before the kill: errors {load.early_errors[:3]}, refused {load.refused[:3]}\n"
            f"{cluster.a.tail()}")
        assert killed_after >= KILL_AFTER, (
            f"only {killed_after} filings acknowledged in {MAX_LOAD_SECONDS} s\n"
            f"{cluster.a.tail()}")
        acked = list(load.acked)
        assert len(acked) == len({f.document_id for f in acked}), "an id acknowledged twice"
        in_flight = sum(load.attempted.values()) - len(acked)
        assert 0 <= in_flight <= CLIENTS, (len(acked), load.attempted)

        # Every acknowledged filing is in PostgreSQL and S3, seen through B.
        lost = {f.document_id: wrong for f in acked if (wrong := problems_reading(b, f))}
        assert lost == {}, (f"{len(lost)} of {len(acked)} acknowledged documents are not "
                            f"served whole by B: {lost}\n{cluster.a.tail()}")

        # What was committed lies between what A acknowledged and what was sent to it.
        acked_by_patient = collections.Counter(f.patient_id for f in acked)
        new_documents = {p: documents_of(b, p) - documents_before[p] for p in patient_ids}
        print(f"\nA killed after {killed_after} acknowledged filings; {len(acked)} acknowledged "
              f"in all, {in_flight} in flight at the kill ({len(load.late_errors)} transport "
              f"errors after it); stored: {sum(new_documents.values())}")
        for p in patient_ids:
            assert acked_by_patient[p] <= new_documents[p] <= load.attempted[p], (
                f"Patient/{p}: {acked_by_patient[p]} acknowledged, {new_documents[p]} stored, "
                f"{load.attempted[p]} sent")

        # 4. The dispatcher notifies every stored document once: inbox and e-mail.
        wait_for("the notifications of the filings delivered", lambda: drained(b),
                 explain=lambda: f"backlog {backlog(b)}\n{cluster.dispatcher.tail()}")
        counts = backlog(b)
        assert counts.get("deliveries_failed", 0) == 0, counts
        for p, email in zip(patient_ids, emails, strict=True):
            notices = notices_about(b, p)
            missing = {f.document_id for f in acked if f.patient_id == p
                       and f"DocumentReference/{f.document_id}" not in notices}
            assert missing == set(), f"Patient/{p}: no inbox notice about {sorted(missing)}"
            sent = mails_to(smtp_server)[email] - mails_before[email]
            assert sent == new_documents[p], (
                f"{email}: {sent} e-mails for {new_documents[p]} new documents "
                f"({acked_by_patient[p]} acknowledged)")

        # 5. B kept serving throughout; A, restarted on its port, serves again.
        assert b.get("/fhir/metadata").status_code == 200
        cluster.a.start()
        cluster.a.wait_until_up("/fhir/metadata")
    with httpx.Client(base_url=cluster.a.base, headers=operator, timeout=30.0) as a, \
            httpx.Client(base_url=cluster.b.base, headers=operator, timeout=30.0) as b:
        after = file_document(a, marie)
        assert problems_reading(b, after) == []
        assert problems_reading(a, acked[-1]) == []
