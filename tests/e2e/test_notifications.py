"""Notifications through the real server: a document filed by a hospital system reaches the
patient's open portal page (Server-Sent Events), inbox and mailbox, and a subscribed app;
a dispatcher process killed in the middle of a delivery delivers after its restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_profiles.subscriptions import document_subscription
from service.demo import INS_NIR_TEST, PATIENTS, demo_email
from service.documents.samples import document_bundle
from storage.db import Database
from tests.e2e.conftest import app_token, running_carnet
from tests.endpoints import SmtpServer, WebhookReceiver

pytestmark = pytest.mark.e2e

MARIE = PATIENTS[0]
MARIE_EMAIL = demo_email(MARIE[3][0], MARIE[2])
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def server_env(database: Database, tmp_path: Path, smtp: SmtpServer,
               **extra: str) -> dict[str, str]:
    return {"CARNET_DATABASE_URL": database.url, "CARNET_DATA_DIR": str(tmp_path),
            "CARNET_OPERATOR_CLIENTS": '["demo-app"]', "CARNET_SMTP_URL": smtp.url,
            "CARNET_DISPATCHER_POLL_SECONDS": "0.2", "CARNET_DISPATCHER_BACKOFF_SECONDS": "0.2",
            "CARNET_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]', **extra}


def carnet(env: dict[str, str], base: str, *args: str) -> str:
    """``carnet <args>`` against the server at ``base`` (same data directory and port)."""
    port = base.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          env={**os.environ, **env, "CARNET_HOST": "127.0.0.1",
                               "CARNET_PORT": port}, timeout=60, check=True)
    return done.stdout.decode().strip()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)


def subscribe(base: str, app: dict[str, str], patient_id: str, endpoint: str) -> str:
    created = httpx.post(f"{base}/fhir/Subscription", headers={**FHIR_JSON, **app},
                         content=orjson.dumps(document_subscription(patient_id, endpoint)),
                         timeout=10)
    assert created.status_code == 201, created.text
    subscription_id: str = created.json()["id"]
    return subscription_id


def file_document(base: str, app: dict[str, str], patient_id: str) -> str:
    filed = httpx.post(f"{base}/fhir", headers={**FHIR_JSON, **app}, timeout=30,
                       content=orjson.dumps(document_bundle(f"Patient/{patient_id}")))
    assert filed.status_code == 200, filed.text
    return next(e["response"]["location"].split("/")[1] for e in filed.json()["entry"]
                if e["response"]["location"].startswith("DocumentReference/"))


def marie(base: str, app: dict[str, str]) -> str:
    found = httpx.get(f"{base}/fhir/Patient", params={"identifier": f"{INS_NIR_TEST}|{MARIE[1]}"},
                      headers={**FHIR_JSON, **app}, timeout=10)
    patient_id: str = found.json()["entry"][0]["resource"]["id"]
    return patient_id


def focus_of(bundle: Any) -> str | None:
    entries = bundle.get("entry") or [] if isinstance(bundle, dict) else []
    return entries[1]["fullUrl"].rsplit("/", 1)[1] if len(entries) > 1 else None


class Stream:
    """The patient's portal page: reads the live stream in a thread, as a browser would,
    until its first event."""

    def __init__(self, base: str, token: str) -> None:
        self.lines: list[str] = []
        self.status: int | None = None
        self.error: Exception | None = None
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base, token), daemon=True)
        self._thread.start()

    def _read(self, base: str, token: str) -> None:
        try:
            with httpx.stream("GET", f"{base}/notifications/stream", timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as response:
                self.status = response.status_code
                self.opened.set()
                for line in response.iter_lines():
                    self.lines.append(line)
                    if line.startswith("data:"):
                        return  # one event is what the test waits for: hang up, as a tab closes
        except httpx.HTTPError as exc:  # the server stopped first: the test has its answer
            self.error = exc
            self.opened.set()

    def data(self) -> list[dict[str, Any]]:
        return [orjson.loads(line.removeprefix("data:")) for line in list(self.lines)
                if line.startswith("data:")]


@pytest.fixture
def notifying_server(database: Database, tmp_path: Path,
                     smtp_server: SmtpServer) -> Iterator[tuple[str, dict[str, str]]]:
    env = server_env(database, tmp_path, smtp_server)
    with running_carnet(["serve", "--demo"], env, tmp_path / "server.log",
                        "/fhir/metadata") as base:
        yield base, env


def test_a_filed_document_reaches_the_open_portal_the_inbox_the_mailbox_and_an_app(
        notifying_server: tuple[str, dict[str, str]], smtp_server: SmtpServer,
        webhook_receiver: WebhookReceiver) -> None:
    base, env = notifying_server
    app = {"Authorization": f"Bearer {app_token(base, 'system/*.cruds')}"}
    patient_id = marie(base, app)
    patient_token = carnet(env, base, "token", "patient", "--ins", MARIE[1])
    # The demo documents' own notifications (filed at seeding) go out first.
    wait_for("the demo documents' e-mails", lambda: len(
        [m for m in smtp_server.messages if m["To"] == MARIE_EMAIL]) == 3)

    stream = Stream(base, patient_token)
    assert stream.opened.wait(10) and stream.status == 200, stream.error
    subscribe(base, app, patient_id, webhook_receiver.url)
    document_id = file_document(base, app, patient_id)

    wait_for("the live event", lambda: {"topic": "document", "document": document_id}
             in stream.data())
    wait_for("the e-mail", lambda: len(
        [m for m in smtp_server.messages if m["To"] == MARIE_EMAIL]) == 4)
    wait_for("the app's notification",
             lambda: [focus_of(b) for _, b in webhook_receiver.received] == [document_id])

    inbox = httpx.get(f"{base}/fhir/Communication", params={
        "recipient": f"Patient/{patient_id}", "_sort": "-sent"},
        headers={**FHIR_JSON, "Authorization": f"Bearer {patient_token}"}, timeout=10)
    assert inbox.status_code == 200, inbox.text
    notices = [e["resource"] for e in inbox.json()["entry"]]
    assert {"reference": f"DocumentReference/{document_id}"} in [
        about for n in notices for about in n.get("about", [])]
    assert carnet(env, base, "outbox", "failures") == "no failed delivery"


def test_a_dispatcher_killed_mid_delivery_delivers_after_its_restart(
        database: Database, tmp_path: Path, smtp_server: SmtpServer,
        webhook_receiver: WebhookReceiver) -> None:
    # The API processes do not dispatch: `carnet dispatcher` runs on its own, as in production.
    env = server_env(database, tmp_path, smtp_server, CARNET_DISPATCHER_ENABLED="false",
                     CARNET_WEBHOOK_TIMEOUT_SECONDS="2")
    with running_carnet(["serve", "--demo"], env, tmp_path / "server.log",
                        "/fhir/metadata") as base:
        app = {"Authorization": f"Bearer {app_token(base, 'system/*.cruds')}"}
        patient_id = marie(base, app)
        subscribe(base, app, patient_id, webhook_receiver.url)
        webhook_receiver.delay = 30.0  # the app's endpoint hangs: the delivery is in flight
        document_id = file_document(base, app, patient_id)

        dispatcher_env = {**os.environ, **env, "CARNET_LOG_LEVEL": "debug"}
        # Their logs stay in tmp_path for a post-mortem.
        first_log = (tmp_path / "dispatcher-1.log").open("wb")
        first = subprocess.Popen([sys.executable, "-m", "service.cli", "dispatcher"],
                                 env=dispatcher_env, stdout=first_log, stderr=subprocess.STDOUT)
        try:
            wait_for("the first delivery attempt", lambda: len(webhook_receiver.received) == 1)
            first.send_signal(signal.SIGKILL)  # mid-flight: the attempt is never recorded
        finally:
            first.kill()
            first.wait(10)
            first_log.close()
        webhook_receiver.delay = 0.0

        def backlog() -> dict[str, int]:
            answer = httpx.get(f"{base}/notifications/deliveries", headers=app, timeout=10)
            assert answer.status_code == 200, answer.text
            counts: dict[str, int] = answer.json()["backlog"]
            return counts

        second_log = (tmp_path / "dispatcher-2.log").open("wb")
        second = subprocess.Popen([sys.executable, "-m", "service.cli", "dispatcher"],
                                  env=dispatcher_env, stdout=second_log, stderr=subprocess.STDOUT)
        try:  # once the killed one's lease (3 x the 2 s timeout) has run out
            wait_for("the delivery after the restart",
                     lambda: len(webhook_receiver.received) == 2, timeout=30)
            # ...and whatever else the killed one had leased (the demo documents' e-mails)
            wait_for("every delivery done",
                     lambda: backlog().get("deliveries_pending", 0) == 0)
        finally:
            second.terminate()
            second.wait(10)
            second_log.close()

        first_try, second_try = (bundle for _, bundle in webhook_receiver.received)
        assert focus_of(first_try) == focus_of(second_try) == document_id

        def event_number(bundle: Any) -> str:
            event = next(p for p in bundle["entry"][0]["resource"]["parameter"]
                         if p["name"] == "notification-event")
            number: str = event["part"][0]["valueString"]
            return number

        assert event_number(first_try) == event_number(second_try)  # the same event, again
        assert backlog().get("deliveries_failed", 0) == 0
        assert "deliveries_done: " in carnet(env, base, "outbox", "status")
