#!/usr/bin/env python3
"""Notification latency on PostgreSQL: from an ITI-65 answer to the patient's e-mail and to
the subscribed app's webhook (issue 6).

    python bench/run_notify.py [--rate 100] [--duration 30] [--warmup 5] [--drain 15]

What it does, in order (see bench/README.md):

1. starts, in this process, a real SMTP server (aiosmtpd) and a real HTTP webhook receiver
   (``http.server.ThreadingHTTPServer``) on loopback, each noting the arrival time
   (``time.monotonic()``) of every message with its correlation key: the recipient address
   (each patient has their own), the DocumentReference the notification Bundle names;
2. creates a fresh PostgreSQL database and starts ``carnet serve`` with
   ``CARNET_SMTP_URL`` pointing at the SMTP server (the dispatcher runs in each worker);
3. seeds the INSi identities and loads ``rate x (warmup + duration) x 1.2`` qualified INS
   Patients, patient i with the e-mail ``patient<i>@bench.carnet.test``; the operator app
   creates one Subscription per patient (``POST /fhir/Subscription``, id-only, rest-hook to
   the receiver);
4. files one document for a probe patient and waits for its e-mail and webhook (a broken
   set-up stops here, not as 3,000 missing notifications);
5. files ITI-65 Bundles (one new 20 kB PDF each, each for a new patient, as the patient's
   attending doctor) OPEN-LOOP at ``--rate`` for ``--warmup`` then ``--duration`` seconds:
   a task per Bundle at its scheduled time, whatever the answers do;
6. waits up to ``--drain`` seconds for the stragglers, then reports, per channel, received
   over expected and the latency from the ITI-65 answer to the arrival (p50/p95/p99/max);
   a missing notification is an error and fails the figure; plus the ITI-65 latency, the
   achieved rate, the dispatcher's backlog and failed deliveries at the end;
7. writes the section at the top of ``bench/RESULTS.md``; stops everything and drops the
   database, also on error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import os
import random
import resource
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from core import ROOT, WORK, BenchError, Config
from core.bearer import mint_professional_token
from core.cpu import CpuUse, cpu_snapshot, cpu_use
from core.database import admin, count_resources, create_database, machine_facts
from core.ins import PATIENTS_PER_DOCTOR, ins_patient, seed_insi
from core.load import post_resources
from core.main import (
    add_common_options,
    bench_main,
    check_database_name,
)
from core.server import (
    CARNET_DATA,
    Server,
    carnet_command,
    carnet_env,
    free_port,
    log_problems,
    start_carnet,
)

from fhir_profiles.subscriptions import DOCUMENT_TOPIC, document_subscription

RATE_TARGET = 100.0  # documents/s (issue 6)
LATENCY_P99_TARGET_MS = 1000.0
RATE_TOLERANCE = 0.95  # a run that filed fewer than 95% of the target rate misses it
PATIENT_MARGIN = 1.2  # patients loaded per document filed: no patient gets two
MAIL_DOMAIN = "bench.carnet.test"
PDF_SIZE = 20 * 1024
FHIR_JSON = "application/fhir+json"
# Bench process threads (SMTP, webhook) wait at most this long for the GIL when they are
# woken, so that an arrival is timed when it happens, not when the sender loop yields.
SWITCH_INTERVAL = 0.001
ACCEPT_BACKLOG = 1024  # both receivers' listen() queue
CONNECTIONS_PER_CLIENT = 25  # the ITI-65 sender's connections per httpx client
KEEPALIVE_SECONDS = 2.0  # below uvicorn's keep-alive timeout (5 s)
NICENESS = -5  # this process's threads, once the server has started (see raise_priority)
TICK = os.sysconf("SC_CLK_TCK")


def address(i: int) -> str:
    """Patient i's own e-mail address: the only key an e-mail (fixed text) can carry."""
    return f"patient{i}@{MAIL_DOMAIN}"


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rate", type=float, default=RATE_TARGET,
                   help="ITI-65 Bundles (one document each) filed per second, open loop")
    p.add_argument("--drain", type=float, default=15.0,
                   help="seconds to wait after the last ITI-65 answer for late notifications")
    p.add_argument("--bundle-size", type=int, default=500,
                   help="Patients per load transaction Bundle")
    p.add_argument("--loaders", type=int, default=4, help="concurrent clients loading Patients")
    p.add_argument("--subscribers", type=int, default=8,
                   help="concurrent clients creating the Subscriptions")
    p.add_argument("--dispatcher", choices=("embedded", "process"), default="embedded",
                   help="embedded: the dispatcher runs in each `carnet serve` worker (the "
                        "default deployment); process: one `carnet dispatcher` process of its "
                        "own beside `carnet serve` with CARNET_DISPATCHER_ENABLED=false (the "
                        "production layout of docker-compose.yml), counted as server CPU")
    p.add_argument("--max-connections", type=int, default=1000,
                   help="HTTP connections the ITI-65 client may open (in-flight Bundles never "
                        "wait for a connection below this)")
    add_common_options(p, "carnet_bench_notify")
    p.set_defaults(duration=30, warmup=5)
    for action in p._actions:  # the shared options' help speaks of wrk runs
        action.help = {
            "duration": "seconds of the measured open-loop filing",
            "warmup": "seconds of open-loop filing before the measured part (same rate)",
            "connections": "unused here (wrk's)", "threads": "unused here (wrk's)",
        }.get(action.dest, action.help)
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.drain < 0:
        p.error("--rate and --duration must be > 0, --warmup and --drain >= 0")
    if args.profile:
        p.error("--profile is not supported here (the figure is a latency across processes)")
    if args.pg_host not in ("127.0.0.1", "localhost", "::1"):
        p.error("this benchmark only talks to a loopback PostgreSQL")
    check_database_name(p, args)
    args.app_factory = None  # core.server.start_carnet: always `carnet serve` here
    args.warm_count = round(args.rate * args.warmup)
    args.run_count = round(args.rate * args.duration)
    # The last patient is the probe's; the others get at most one document each.
    args.patients = math.ceil((args.warm_count + args.run_count) * PATIENT_MARGIN) + 1
    return args


# ----------------------------------------------------------------------------- receivers


class MailReceiver:
    """An aiosmtpd server on 127.0.0.1 noting (arrival, recipients) of each message.

    The arrival is the end of DATA: the message is then the receiving server's."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        class Listening(Controller):
            """A deep accept queue: the notifier opens a connection per e-mail, and a SYN
            dropped by a full queue is retried a second later, which would be timed as
            Carnet's delay."""

            def _create_server(self) -> Any:
                return self.loop.create_server(self._factory_invoker, host=self.hostname,
                                               port=self.port, backlog=ACCEPT_BACKLOG)

        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.arrivals: list[tuple[float, tuple[str, ...]]] = []
        self.lock = threading.Lock()
        # server_hostname: else each connection's greeting calls socket.getfqdn().
        self._controller = Listening(self, hostname="127.0.0.1", port=self.port,
                                     server_hostname=MAIL_DOMAIN, ready_timeout=10.0)
        self._controller.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        with self.lock:
            self.arrivals.append((now, tuple(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def count(self) -> int:
        return len(self.arrivals)

    def close(self) -> None:
        self._controller.stop()


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen() backlog (socketserver's default is 5); see above
    owner: WebhookReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A notifier that gave up resets the connection: counted by the figures, not here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _WebhookHandler(BaseHTTPRequestHandler):
    server: _WebhookServer
    protocol_version = "HTTP/1.1"  # keep-alive: the notifier reuses its connections

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        now = time.monotonic()
        receiver = self.server.owner
        with receiver.lock:
            receiver.arrivals.append((now, self.headers.get("Authorization"), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


class WebhookReceiver:
    """A ThreadingHTTPServer on 127.0.0.1 noting (arrival, Authorization, body) of each POST;
    bodies are parsed after the run, so that receiving costs as little as possible."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str | None, bytes]] = []
        self.lock = threading.Lock()
        self._server = _WebhookServer(("127.0.0.1", 0), _WebhookHandler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/notify"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="webhook-receiver")
        self._thread.start()

    def count(self) -> int:
        return len(self.arrivals)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def first_mails(mail: MailReceiver) -> tuple[dict[str, float], int]:
    """The first arrival per recipient, and how many messages came again."""
    first: dict[str, float] = {}
    again = 0
    with mail.lock:
        arrivals = list(mail.arrivals)
    for at, recipients in arrivals:
        for rcpt in recipients:
            if rcpt in first:
                again += 1
            else:
                first[rcpt] = at
    return first, again


@dataclass
class Hooks:
    """Webhook arrivals by DocumentReference id, and what could not be counted."""

    first: dict[str, float] = field(default_factory=dict)
    again: int = 0
    bad_body: int = 0  # not a notification Bundle naming a DocumentReference
    bad_auth: int = 0  # without the Subscription's header


def first_hooks(hooks: WebhookReceiver, secret: str) -> Hooks:
    import orjson

    out = Hooks()
    with hooks.lock:
        arrivals = list(hooks.arrivals)
    for at, auth, body in arrivals:
        if auth != f"Bearer {secret}":
            out.bad_auth += 1
        try:
            bundle = orjson.loads(body)
            full_url = bundle["entry"][1]["fullUrl"]
            _, sep, document = full_url.rpartition("/DocumentReference/")
            if bundle.get("type") != "history" or not sep or not document:
                raise ValueError(full_url)
        except (ValueError, KeyError, IndexError, TypeError):
            out.bad_body += 1
            continue
        if document in out.first:
            out.again += 1
        else:
            out.first[document] = at
    return out


# ----------------------------------------------------------------------------- set-up


def notify_patient(i: int, rng: random.Random) -> dict[str, Any]:
    """``core.ins.ins_patient(i)`` with its own e-mail address."""
    patient = ins_patient(i, rng)
    patient["telecom"] = [{"system": "email", "value": address(i)}]
    return patient


def subscription(patient_id: str, endpoint: str, secret: str) -> dict[str, Any]:
    """An id-only rest-hook Subscription to the patient's new documents, in the one shape
    Carnet accepts (``fhir_profiles.subscriptions.document_subscription``), with a header the
    receiver checks."""
    return document_subscription(patient_id, endpoint, headers=[f"Authorization: Bearer {secret}"],
                                 reason="benchmark: notification latency")


async def subscribe_all(server: Server, patient_ids: list[str], endpoint: str, secret: str,
                        concurrency: int) -> None:
    """One Subscription per patient, as the operator app; each must answer 201, active."""
    import httpx
    import orjson

    queue: asyncio.Queue[str] = asyncio.Queue()
    for pid in patient_ids:
        queue.put_nowait(pid)
    done = 0
    started = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while True:
            try:
                pid = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            r = await client.post("/fhir/Subscription",
                                  content=orjson.dumps(subscription(pid, endpoint, secret)))
            if r.status_code != 201 or r.json().get("status") != "active":
                raise BenchError(f"POST /fhir/Subscription for Patient/{pid} answered "
                                 f"{r.status_code}: {r.text[:1000]}")
            done += 1
            if done % 1000 == 0 or done == len(patient_ids):
                print(f"  subscribed {done:>7,}/{len(patient_ids):,} "
                      f"({done / (time.perf_counter() - started):,.0f}/s)", flush=True)

    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **server.headers}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))


def pdf_bytes(rng: random.Random) -> bytes:
    """20 kB starting with %PDF, different each call."""
    head = b"%PDF-1.7\n%"
    return head + rng.randbytes(PDF_SIZE - len(head))


def iti65_body(patient_id: str, rng: random.Random) -> bytes:
    """A Provide Document Bundle with one new document and its inline 20 kB PDF."""
    import orjson

    from service.documents.samples import document_bundle

    return orjson.dumps(document_bundle(f"Patient/{patient_id}", content=pdf_bytes(rng),
                                        title="Compte rendu (benchmark notifications)"))


def document_id(body: bytes) -> str:
    """The DocumentReference id a transaction-response names (``DocumentReference/<id>/...``);
    every entry must have answered 201."""
    import orjson

    found = None
    for entry in orjson.loads(body).get("entry", []):
        response = entry.get("response", {})
        if not str(response.get("status", "")).startswith("201"):
            raise ValueError(f"entry answered {response}")
        location = str(response.get("location", ""))
        if location.startswith("DocumentReference/"):
            found = location.split("/")[1]
    if found is None:
        raise ValueError("no DocumentReference in the answer")
    return found


# ----------------------------------------------------------------------------- the run


@dataclass
class Filing:
    """One ITI-65 Bundle: for patient ``index``, sent at ``scheduled`` (monotonic)."""

    index: int
    warmup: bool
    scheduled: float = 0.0
    started: float = 0.0
    answered: float = 0.0
    status: int = 0
    document: str | None = None
    error: str | None = None


@dataclass
class RunData:
    filings: list[Filing]
    measured_start: float
    cpu: CpuUse | None
    sent_seconds: float  # first scheduled send to the last answer of the measured part


def pro_headers(tokens: list[str], index: int) -> dict[str, str]:
    """The patient's attending doctor files: doctor ``index // PATIENTS_PER_DOCTOR``."""
    return {"Authorization": f"Bearer {tokens[index // PATIENTS_PER_DOCTOR]}",
            "Content-Type": FHIR_JSON, "Accept": FHIR_JSON}


async def file_open_loop(args: argparse.Namespace, server: Server, tokens: list[str],
                         bodies: list[bytes], mail: MailReceiver,
                         hooks: WebhookReceiver) -> RunData:
    """Send ``bodies[k]`` (patient k) at ``t0 + k / rate`` whatever the answers do."""
    import httpx

    filings = [Filing(k, k < args.warm_count) for k in range(len(bodies))]
    # Several small pools rather than one big one: httpcore scans its whole pool and queue
    # at every request and answer, which costs the sender more the more are in flight.
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them, so
    # that a Bundle is never written into a connection the server is closing.
    shards = max(1, math.ceil(args.max_connections / CONNECTIONS_PER_CLIENT))
    limits = httpx.Limits(max_connections=CONNECTIONS_PER_CLIENT,
                          max_keepalive_connections=CONNECTIONS_PER_CLIENT,
                          keepalive_expiry=KEEPALIVE_SECONDS)
    cpu_before: asyncio.Task[Any] | None = None
    own_before = 0.0

    async def send(client: httpx.AsyncClient, f: Filing) -> None:
        f.started = time.monotonic()
        try:
            r = await client.post("/fhir", content=bodies[f.index],
                                  headers=pro_headers(tokens, f.index))
            f.answered = time.monotonic()
            f.status = r.status_code
            if r.status_code != 200:
                f.error = f"status {r.status_code}: {r.text[:300]}"
                return
            f.document = document_id(r.content)
        except httpx.HTTPError as exc:
            f.answered = time.monotonic()
            f.error = f"{type(exc).__name__}: {exc}"[:300]
        except ValueError as exc:
            f.error = f"answer: {exc}"[:300]

    async def progress(t0: float) -> None:
        while True:
            await asyncio.sleep(5)
            sent = sum(1 for f in filings if f.started)
            answered = sum(1 for f in filings if f.answered)
            print(f"  t={time.monotonic() - t0:5.1f}s sent {sent:,} answered {answered:,} "
                  f"(in flight {sent - answered}), e-mails {mail.count():,}, webhooks "
                  f"{hooks.count():,}", flush=True)

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60))
            for _ in range(shards)]
        t0 = time.monotonic() + 0.2
        reporter = asyncio.create_task(progress(t0))
        tasks = []
        for f in filings:
            f.scheduled = t0 + f.index / args.rate
            delay = f.scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if f.index == args.warm_count:  # the measured part starts
                own_before = own_cpu()
                cpu_before = asyncio.create_task(asyncio.to_thread(
                    lambda: (cpu_snapshot(), postgres_reaped_cpu())))
            tasks.append(asyncio.create_task(send(clients[f.index % shards], f)))
        await asyncio.gather(*tasks)
        reporter.cancel()
    measured = [f for f in filings if not f.warmup]
    end = max(f.answered for f in measured)
    start = measured[0].scheduled
    cpu = None
    if cpu_before is not None:
        snapshot, reaped_before = await cpu_before
        cpu = cpu_use(snapshot, cpu_snapshot(), server.groups, own_cpu() - own_before,
                      end - start)
        # Backends that exited during the run (pool overflow connections closed) are not in
        # the end snapshot: their CPU is in the postmaster's reaped-children time.
        reaped = 100 * (postgres_reaped_cpu() - reaped_before) / (end - start)
        cpu = dataclasses.replace(cpu, postgres=cpu.postgres + reaped,
                                  other=max(0.0, cpu.other - reaped))
    return RunData(filings, start, cpu, end - start)


def postgres_reaped_cpu() -> float:
    """CPU seconds of the PostgreSQL backends that have exited (the postmaster's cutime and
    cstime): ``core.cpu`` sees only live processes, so a backend closed during a run would
    otherwise count as another process's CPU."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = (entry / "stat").read_text()
            rest = raw[raw.rindex(")") + 2:].split()
            if raw[raw.index("(") + 1:raw.rindex(")")].startswith("postgres") and not \
                    Path(f"/proc/{rest[1]}/comm").read_text().startswith("postgres"):
                total += (int(rest[13]) + int(rest[14])) / TICK  # the postmaster
    return total


def raise_priority() -> str:
    """Renice this process's threads (sender, SMTP loop, webhook acceptor; threads they start
    inherit it) above the server's, which runs at normal priority: on a shared 2-core
    machine an overloaded server and dozens of PostgreSQL backends would otherwise starve
    the receivers, whose arrival times would then include their own wait for a CPU, and
    the sender, which would fall behind its schedule. Elsewhere, the endpoints and the
    clients have CPUs of their own. Called after the server started (it must not inherit
    it)."""
    try:
        for tid in os.listdir("/proc/self/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), NICENESS)
    except OSError as exc:
        return f"normal priority (renicing to {NICENESS} failed: {exc.strerror})"
    return f"nice {NICENESS} (the server and PostgreSQL: 0)"


def own_cpu() -> float:
    """CPU seconds of this process, every thread: the sender and both receivers."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def deliveries_view(server: Server, status: str | None = None) -> dict[str, Any]:
    """``GET /notifications/deliveries`` as the operator: the backlog and some deliveries."""
    import httpx

    params: dict[str, Any] = {"limit": 1000}
    if status:
        params["status"] = status
    r = httpx.get(server.url + "/notifications/deliveries", params=params,
                  headers=server.headers, timeout=60)
    if r.status_code != 200:
        raise BenchError(f"GET /notifications/deliveries answered {r.status_code}: "
                         f"{r.text[:500]}")
    result: dict[str, Any] = r.json()
    return result


def probe(args: argparse.Namespace, server: Server, tokens: list[str], patient_ids: list[str],
          mail: MailReceiver, hooks: WebhookReceiver, secret: str) -> float:
    """One document for the last patient; its e-mail and webhook must come, or the set-up
    is broken (say why now). Returns the seconds they took."""
    import httpx

    index = len(patient_ids) - 1
    started = time.monotonic()
    r = httpx.post(server.url + "/fhir", headers=pro_headers(tokens, index), timeout=60,
                   content=iti65_body(patient_ids[index], random.Random(99)))
    if r.status_code != 200:
        raise BenchError(f"probe ITI-65 answered {r.status_code}: {r.text[:1000]}")
    document = document_id(r.content)
    answered = time.monotonic()

    def arrived() -> bool:
        return address(index) in first_mails(mail)[0] and \
            document in first_hooks(hooks, secret).first

    if not wait_for(arrived, 15):
        view = deliveries_view(server)
        raise BenchError(
            f"the probe's notifications did not arrive within 15 s (e-mail: "
            f"{address(index) in first_mails(mail)[0]}, webhook: "
            f"{document in first_hooks(hooks, secret).first}); outbox backlog "
            f"{view['backlog']}; deliveries {view['deliveries'][:5]}\n{server.log_tail()}")
    found = first_hooks(hooks, secret)
    if found.bad_auth or found.bad_body:
        raise BenchError(f"probe webhook without the Subscription's header ({found.bad_auth}) "
                         f"or not naming a DocumentReference ({found.bad_body})")
    took = max(first_mails(mail)[0][address(index)], found.first[document]) - answered
    print(f"  probe: DocumentReference/{document} answered in {answered - started:.3f}s, "
          f"both notifications {took:.3f}s later", flush=True)
    return took


def run(args: argparse.Namespace) -> dict[str, Any]:
    WORK.mkdir(exist_ok=True)
    sys.setswitchinterval(SWITCH_INTERVAL)
    config = Config(args.workers, args.pool_size)
    info: dict[str, Any] = {"config": config}
    secret = os.urandom(16).hex()
    mail = MailReceiver()
    hooks = WebhookReceiver()
    try:
        db_url = create_database(args)
        embedded = args.dispatcher == "embedded"
        extra_env = {"CARNET_SMTP_URL": mail.url,
                     "CARNET_DISPATCHER_ENABLED": "true" if embedded else "false",
                     # the receivers listen on loopback, which apps may not name by default
                     "CARNET_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
        info["inherited_env"] = {k: v for k, v in os.environ.items()
                                 if k.startswith(("CARNET_DISPATCHER_", "CARNET_WEBHOOK_",
                                                  "CARNET_MAIL_"))}
        info["smtp_url"] = mail.url
        print(f"receivers: SMTP {mail.url}, webhook {hooks.url}\nstarting carnet serve "
              f"({config.label()}) on database {args.db_name}", flush=True)
        server = start_carnet(args, config, db_url, extra_env=extra_env)
        try:
            if not embedded:
                server.companions.append(start_dispatcher(
                    server, carnet_env(config, db_url, server.port, extra_env)))
            info["priority"] = raise_priority()
            info.update(measure(args, server, db_url, mail, hooks, secret))
            info["server_log_errors"] = log_problems(server)
        finally:
            server.stop()
    finally:
        mail.close()
        hooks.close()
    return info


def start_dispatcher(server: Server, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``carnet dispatcher`` with the server's settings (``env``, but its own), in a process
    group of its own: a companion of the server (``Server.groups``, ``Server.stop``)."""
    with open(WORK / "carnet-dispatcher.log", "wb") as log_file:  # the child keeps its own
        return subprocess.Popen([*carnet_command(), "dispatcher"], cwd=ROOT,
                                env={**env, "CARNET_DISPATCHER_ENABLED": "true"},
                                stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)


def measure(args: argparse.Namespace, server: Server, db_url: str, mail: MailReceiver,
            hooks: WebhookReceiver, secret: str) -> dict[str, Any]:
    n = args.patients
    info: dict[str, Any] = {}
    print(f"seeding {n:,} INSi directory identities", flush=True)
    t = time.perf_counter()
    asyncio.run(seed_insi(db_url, n))
    print(f"loading {n:,} FR Core INS Patients, each with its own e-mail address", flush=True)
    ids = asyncio.run(post_resources(server.url, server.headers, n, args.bundle_size,
                                     args.loaders, notify_patient))
    info["load_seconds"] = time.perf_counter() - t
    print(f"creating {n:,} Subscriptions (one per patient, id-only rest-hook to {hooks.url}) "
          f"as the operator app, {args.subscribers} concurrent clients", flush=True)
    t = time.perf_counter()
    asyncio.run(subscribe_all(server, ids, hooks.url, secret, args.subscribers))
    info["subscribe_seconds"] = time.perf_counter() - t
    routes = int(admin(args, database=args.db_name, fetch=(
        "SELECT count(*) AS n FROM subscription_route WHERE active AND topic = "
        f"'{DOCUMENT_TOPIC}'"))[0]["n"])
    if routes != n:
        raise BenchError(f"{n:,} Subscriptions created but {routes:,} active routes stored")
    doctors = (n - 1) // PATIENTS_PER_DOCTOR + 1
    tokens = [mint_professional_token(server.url, CARNET_DATA / "keys", k)
              for k in range(doctors)]
    info["probe_seconds"] = probe(args, server, tokens, ids, mail, hooks, secret)

    total = args.warm_count + args.run_count
    t = time.perf_counter()
    rng = random.Random(12)
    bodies = [iti65_body(ids[k], rng) for k in range(total)]
    print(f"  generated {total:,} ITI-65 Bundles ({sum(map(len, bodies)) / 1e6:.0f} MB) in "
          f"{time.perf_counter() - t:.1f}s", flush=True)
    docs_before = count_resources(args, "DocumentReference")
    print(f"filing open loop at {args.rate:g}/s: {args.warm_count:,} Bundles of warm-up "
          f"({args.warmup}s) then {args.run_count:,} measured ({args.duration}s)", flush=True)
    data = asyncio.run(file_open_loop(args, server, tokens, bodies, mail, hooks))
    del bodies
    if server.proc.poll() is not None:
        raise BenchError(f"carnet serve died during the run:\n{server.log_tail()}")

    expected_mail = {address(f.index) for f in data.filings if f.document}
    expected_hook = {f.document for f in data.filings if f.document}

    seen = (-1, -1)

    def all_in() -> bool:
        """Parses the arrivals again only when some came since the last look."""
        nonlocal seen
        counts = (mail.count(), hooks.count())
        if counts == seen:
            return False
        seen = counts
        return expected_mail <= first_mails(mail)[0].keys() and \
            expected_hook <= first_hooks(hooks, secret).first.keys()

    print(f"  all answered; waiting up to {args.drain:g}s for the last notifications",
          flush=True)
    t = time.monotonic()
    wait_for(all_in, args.drain)
    info["drain_waited"] = time.monotonic() - t
    info["filed_in_db"] = count_resources(args, "DocumentReference") - docs_before
    info["data"] = data
    info["mails"], info["mail_again"] = first_mails(mail)
    info["hooks"] = first_hooks(hooks, secret)
    info["mail_total"], info["hook_total"] = mail.count(), hooks.count()
    info["backlog_view"] = deliveries_view(server, "failed")
    info["by_channel"] = admin(args, database=args.db_name, fetch=(
        "SELECT channel, status, count(*) AS n, "
        "count(*) FILTER (WHERE attempts > 1) AS retried FROM outbox_delivery "
        "GROUP BY channel, status ORDER BY channel, status"))
    info["server_side"] = admin(args, database=args.db_name, fetch=(
        "SELECT d.channel, count(*) AS n, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY d.done_at - e.created_at) AS p50, "
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY d.done_at - e.created_at) AS p99, "
        "max(d.done_at - e.created_at) AS max FROM outbox_delivery d "
        "JOIN outbox_event e ON e.pk = d.event_pk WHERE d.status = 'done' "
        "GROUP BY d.channel ORDER BY d.channel"))
    info["subscriptions"] = n
    return info


# ----------------------------------------------------------------------------- figures


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Channel:
    """One channel's figure over the measured filings."""

    name: str
    expected: int
    latencies_ms: list[float]
    missing: list[int]  # patient indexes whose notification never came

    @property
    def received(self) -> int:
        return len(self.latencies_ms)

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def channel(name: str, filings: list[Filing], arrival: Callable[[Filing], float | None]
            ) -> Channel:
    ok = [f for f in filings if f.document]
    latencies, missing = [], []
    for f in ok:
        at = arrival(f)
        if at is None:
            missing.append(f.index)
        else:
            latencies.append((at - f.answered) * 1000)
    return Channel(name, len(ok), latencies, missing)


def figures(info: dict[str, Any]) -> dict[str, Any]:
    data: RunData = info["data"]
    mails: dict[str, float] = info["mails"]
    hooks: Hooks = info["hooks"]

    def mail_at(f: Filing) -> float | None:
        return mails.get(address(f.index))

    def hook_at(f: Filing) -> float | None:
        return hooks.first.get(f.document or "")

    measured = [f for f in data.filings if not f.warmup]
    warm = [f for f in data.filings if f.warmup]
    ok = [f for f in measured if f.document]
    return {
        "email": channel("email", measured, mail_at),
        "webhook": channel("webhook", measured, hook_at),
        "warm_email": channel("email", warm, mail_at),
        "warm_webhook": channel("webhook", warm, hook_at),
        "iti65_ms": [(f.answered - f.started) * 1000 for f in ok],
        "lag_ms": [(f.started - f.scheduled) * 1000 for f in data.filings],
        "iti65_errors": [f for f in data.filings if f.error],
        "achieved": len(ok) / data.sent_seconds if data.sent_seconds else 0.0,
        "measured": len(measured),
    }


def fmt(ms: float) -> str:
    return "n/a" if math.isnan(ms) else f"{ms:,.1f} ms"


def channel_errors(c: Channel, iti65_errors: int) -> int:
    return len(c.missing) + iti65_errors


def channel_verdict(c: Channel, errors: int, achieved: float) -> str:
    if errors or c.expected == 0:
        return "**FAIL** (errors)"
    if c.p(99) >= LATENCY_P99_TARGET_MS:
        return "**miss**"
    if achieved < RATE_TARGET * RATE_TOLERANCE:
        return f"**miss** (filed {achieved:,.0f}/s, the target is at {RATE_TARGET:,.0f}/s)"
    return "pass"


def table(args: argparse.Namespace, info: dict[str, Any], fig: dict[str, Any]) -> str:
    iti65_errors = len(fig["iti65_errors"])
    rows = ["| Figure | Target | Received / expected | p50 | p95 | p99 | max | Errors | "
            "Result |", "|---|---|---|---|---|---|---|---|---|"]
    target = f"p99 < {LATENCY_P99_TARGET_MS / 1000:g} s at {RATE_TARGET:g} documents/s"
    for key, label in (("email", "E-mail received (SMTP DATA done), from the ITI-65 answer"),
                       ("webhook", "Webhook received (subscription-notification Bundle POSTed"
                                   " to the app), from the ITI-65 answer")):
        c: Channel = fig[key]
        errors = channel_errors(c, iti65_errors)
        error_text = ", ".join(filter(None, [
            f"{len(c.missing):,} missing" if c.missing else "",
            f"{iti65_errors:,} ITI-65 failed" if iti65_errors else ""])) or "0"
        rows.append(f"| {label} | {target} | {c.received:,} / {c.expected:,} | {fmt(c.p(50))} "
                    f"| {fmt(c.p(95))} | {fmt(c.p(99))} | {fmt(c.p(100))} | {error_text} | "
                    f"{channel_verdict(c, errors, fig['achieved'])} |")
    lat = fig["iti65_ms"]
    rows.append(f"| (info) ITI-65 filing, open loop at {args.rate:g}/s, as the patient's "
                f"attending doctor: `POST /fhir`, one new 20 kB PDF each | - | "
                f"{len(lat):,} / {fig['measured']:,} answered 200 | {fmt(percentile(lat, 50))} | "
                f"{fmt(percentile(lat, 95))} | {fmt(percentile(lat, 99))} | "
                f"{fmt(percentile(lat, 100))} | {iti65_errors:,} | "
                f"{'**FAIL** (errors)' if iti65_errors else 'info'} |")
    return "\n".join(rows)


def section(args: argparse.Namespace, info: dict[str, Any], fig: dict[str, Any],
            wrk_version: str, started: dt.datetime, total_seconds: float) -> str:
    data: RunData = info["data"]
    hooks: Hooks = info["hooks"]
    config: Config = info["config"]
    command = shlex.join(["python", "bench/run_notify.py", *sys.argv[1:]])
    effective = (f"--rate {args.rate:g} --duration {args.duration} --warmup {args.warmup} "
                 f"--drain {args.drain:g} --workers {args.workers} --bundle-size "
                 f"{args.bundle_size} --loaders {args.loaders} --subscribers {args.subscribers} "
                 f"--max-connections {args.max_connections}")
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC: notifications (e-mail and app webhook after "
             f"ITI-65) at {args.rate:g} documents/s, {config.label()}", "",
             f"Command: `{command}`", "", f"Effective settings: `{effective}`", ""]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    facts = [(k, v) for k, v in machine_facts(args, wrk_version) if k != "Load generator"]
    lines += [f"- {k}: {v}" for k, v in facts]
    lines.append(
        f"- Load generator and receivers, all in the benchmark process: asyncio httpx "
        f"clients filing open loop (a task per Bundle at its scheduled time, up to "
        f"{args.max_connections} connections in pools of {CONNECTIONS_PER_CLIENT}, idle ones "
        f"closed after {KEEPALIVE_SECONDS:g}s), an aiosmtpd SMTP server and an "
        f"`http.server.ThreadingHTTPServer` webhook receiver on loopback; arrivals and "
        f"answers are timed with the same `time.monotonic()` clock "
        f"(`sys.setswitchinterval({SWITCH_INTERVAL})`); its threads ran at "
        f"{info['priority']}")
    inherited = ", ".join(f"{k}={v}" for k, v in sorted(info["inherited_env"].items()))
    lines.append(
        f"- Server: `carnet serve --workers {args.workers}`, "
        + ("outbox dispatcher embedded in each worker (`CARNET_DISPATCHER_ENABLED=true`, "
           "woken by `NOTIFY`), " if args.dispatcher == "embedded" else
           "`CARNET_DISPATCHER_ENABLED=false`, and one `carnet dispatcher` process of its own "
           "(woken by `NOTIFY`; its CPU is in the server's figure), ")
        + f"`CARNET_SMTP_URL={info['smtp_url']}`"
        + (f"; inherited from the environment: {inherited}" if inherited else
           "; other dispatcher settings at their defaults"))
    lines.append(
        f"- Set-up, through the public API: {args.patients:,} INSi identities and qualified "
        f"FR Core INS Patients, patient i with `telecom` e-mail `patient<i>@{MAIL_DOMAIN}` "
        f"({info['load_seconds']:.1f}s); {info['subscriptions']:,} Subscriptions, one per "
        f"patient, by the operator app (`POST /fhir/Subscription`, topic "
        f"`{DOCUMENT_TOPIC}`, filter `DocumentReference?patient=<id>`, id-only, rest-hook with "
        f"an `Authorization` header; {info['subscribe_seconds']:.1f}s); a probe document's "
        f"e-mail and webhook arrived {info['probe_seconds']:.2f}s after its answer")
    lines.append(f"- Whole run: {total_seconds / 60:.1f} min")
    lines += ["", table(args, info, fig), ""]
    lag = fig["lag_ms"]
    lat = fig["iti65_ms"]
    notes = [
        f"latency = arrival at the receiver - completion of the ITI-65 answer of the same "
        f"document (e-mail: by the patient's unique address; webhook: by the Bundle's second "
        f"entry's `fullUrl`, the DocumentReference); over the {fig['measured']:,} measured "
        f"documents, each for its own patient; a notification that did not come within "
        f"{args.drain:g}s of the last answer is missing, an error",
        f"achieved: {len([f for f in data.filings if not f.warmup and f.document]):,} "
        f"documents filed in {data.sent_seconds:.1f}s (first scheduled send to last answer "
        f"of the measured part) = **{fig['achieved']:,.1f} documents/s**; "
        f"{info['filed_in_db']:,} DocumentReferences in the database after the run (warm-up "
        f"included); ITI-65 p50 {fmt(percentile(lat, 50))}, p99 {fmt(percentile(lat, 99))}; "
        f"sender lag behind schedule p99 {fmt(percentile(lag, 99))}, max "
        f"{fmt(percentile(lag, 100))}",
        f"warm-up ({args.warm_count:,} documents, not in the percentiles): e-mails "
        f"{fig['warm_email'].received:,}/{fig['warm_email'].expected:,}, webhooks "
        f"{fig['warm_webhook'].received:,}/{fig['warm_webhook'].expected:,}",
        f"received in all (probe and warm-up included): {info['mail_total']:,} e-mails "
        f"({info['mail_again']:,} repeated), {info['hook_total']:,} webhooks "
        f"({hooks.again:,} repeated, {hooks.bad_body:,} unreadable, {hooks.bad_auth:,} without "
        f"the Subscription's header); the drain waited {info['drain_waited']:.1f}s",
    ]
    for key in ("email", "webhook"):
        c: Channel = fig[key]
        if c.latencies_ms and min(c.latencies_ms) < 0:
            notes.append(f"{key}: {sum(1 for x in c.latencies_ms if x < 0):,} arrived before "
                         "the client had read the ITI-65 answer (the event is committed with "
                         "the document; negative latencies are kept as measured)")
        if c.missing:
            notes.append(f"**{key}: {len(c.missing):,} missing** (not received within the "
                         f"drain), e.g. patients {', '.join(map(str, c.missing[:10]))}")
    view = info["backlog_view"]
    pending = view["backlog"].get("deliveries_pending", 0)
    if pending and (fig["email"].missing or fig["webhook"].missing):
        notes.append(f"{pending:,} deliveries were still pending at the end and "
                     f"{len(view['deliveries']):,} had failed: the missing ones were late "
                     "(the dispatcher behind), not lost" if not view["deliveries"] else
                     f"{pending:,} deliveries were still pending at the end")
    notes.append("dispatcher backlog at the end (`GET /notifications/deliveries` as the "
                 "operator): " + ", ".join(f"{k} {v:,}" for k, v in
                                           sorted(view["backlog"].items())))
    notes.append("deliveries by channel and status (database; retried = more than one "
                 "attempt): " + "; ".join(
                     f"{r['channel']} {r['status']} {r['n']:,} (retried {r['retried']:,})"
                     for r in info["by_channel"]))
    failed = view["deliveries"]
    if failed:
        notes.append(f"**{len(failed):,} failed deliveries**, e.g. " + "; ".join(
            f"{d['channel']} -> {d['target']}: {d['last_error']}" for d in failed[:5]))
    else:
        notes.append("failed deliveries: none")
    notes.append("server side, event written -> delivery recorded done (all events of the "
                 "run, inbox included; wall clock of the server): " + "; ".join(
                     f"{r['channel']} p50 {r['p50'] / 1000:,.1f} / p99 {r['p99'] / 1000:,.1f} "
                     f"/ max {r['max'] / 1000:,.1f} ms (n={r['n']:,})"
                     for r in info["server_side"]))
    for f in fig["iti65_errors"][:5]:
        notes.append(f"ITI-65 error (patient {f.index}): {f.error}")
    cpu: CpuUse | None = data.cpu
    if cpu:
        notes.append(f"CPU during the measured part, in % of one core (the machine has "
                     f"{os.cpu_count() or '?'} cores): server {cpu.server:.0f}, benchmark "
                     f"process (sender and receivers) {cpu.wrk:.0f}, postgres "
                     f"{cpu.postgres:.0f} (backends that exited included; run-queue wait of "
                     f"the live ones {cpu.postgres_wait:.1f} s per CPU s), other processes "
                     f"{cpu.other:.0f}")
        if cpu.other >= 15:
            notes.append("**other processes used >= 15% of a core during the measured part: "
                         "the figures are pessimistic**")
    problems = info.get("server_log_errors") or {}
    notes.append("server log tracebacks: " + ", ".join(
        f"{k} x{v}" for k, v in sorted(problems.items())) if problems
        else "server log: no tracebacks")
    lines += [f"- {x}" for x in notes] + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    return bench_main(
        args, lambda: (info := run(args), figures(info)),
        lambda ran, wrk_version, started: section(args, *ran, wrk_version, started,
                                                  time.perf_counter() - t0),
        had_errors)


def had_errors(ran: tuple[dict[str, Any], dict[str, Any]]) -> bool:
    """ITI-65 errors, notifications missing, deliveries left in the log."""
    info, fig = ran
    return bool(len(fig["iti65_errors"]) + len(fig["email"].missing)
                + len(fig["webhook"].missing) + len(fig["warm_email"].missing)
                + len(fig["warm_webhook"].missing) + len(info["backlog_view"]["deliveries"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
