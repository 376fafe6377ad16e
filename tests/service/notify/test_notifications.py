"""A document filed through the API reaches the patient's inbox, their mailbox (without
health data) and a subscribed app's endpoint, once each; the real SMTP server and HTTP
receiver of conftest.py stand for the world outside."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from fhir_profiles.subscriptions import document_subscription
from service.documents.samples import document_bundle
from service.notify.channels import build_dispatcher
from service.notify.dispatcher import Dispatcher
from service.settings import Settings
from storage import outbox
from storage.db import Database
from tests.endpoints import SmtpServer, WebhookReceiver
from tests.factories import FHIR_JSON, file_document, give_consent, ins_patient
from tests.tokens import PATIENT, Tokens, bearer

EMAIL = "marie.corse@example.org"
GRANTED_APP = "carnet-companion"


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return settings.model_copy(update={
        "smtp_url": smtp_server.url, "dispatcher_backoff_seconds": 0.05,
        "webhook_timeout_seconds": 2.0, "public_url": "https://carnet.example"})


@pytest.fixture
async def patient_id(client: httpx.AsyncClient, database: Database) -> str:
    """The tests' patient token's own record, with an e-mail address."""
    return await ins_patient(client, database, PATIENT.birth_family_name,
                             PATIENT.given_names[0], gender="female",
                             birth_date=PATIENT.birth_date, birth_place=PATIENT.birth_place,
                             nir=PATIENT.nir, telecom=[{"system": "email", "value": EMAIL}])


async def subscribe(anonymous: httpx.AsyncClient, tokens: Tokens, patient_id: str,
                    endpoint: str) -> str:
    """An app the patient granted subscribes to their new documents."""
    app = bearer(tokens.app("system/*.rs system/Subscription.cruds", GRANTED_APP))
    created = await anonymous.post("/fhir/Subscription", headers={**FHIR_JSON, **app},
                                   content=orjson.dumps(document_subscription(
                                       patient_id, endpoint,
                                       headers=["Authorization: Bearer app-secret"])))
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "active"
    subscription_id: str = created.json()["id"]
    return subscription_id


@pytest.fixture
def dispatcher(settings: Settings, database: Database) -> Dispatcher:
    running, _channels = build_dispatcher(settings, database)
    return running


async def inbox(anonymous: httpx.AsyncClient, tokens: Tokens,
                patient_id: str) -> list[dict[str, Any]]:
    found = await anonymous.get("/fhir/Communication", params={
        "recipient": f"Patient/{patient_id}"}, headers=bearer(tokens.patient()))
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


async def test_a_filed_document_reaches_inbox_mailbox_and_app_once_each(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        patient_id: str, dispatcher: Dispatcher, smtp_server: SmtpServer,
        webhook_receiver: WebhookReceiver) -> None:
    await give_consent(client, patient_id, "app", "permit", apps=(GRANTED_APP,))
    subscription_id = await subscribe(anonymous, tokens, patient_id, webhook_receiver.url)
    document = await file_document(client, patient_id)

    assert await dispatcher.run_once() == 3
    assert await dispatcher.run_once() == 0  # once each

    [notice] = await inbox(anonymous, tokens, patient_id)
    assert notice["category"][0]["coding"][0]["code"] == "notification"
    assert notice["about"] == [{"reference": f"DocumentReference/{document['id']}"}]

    [mail] = smtp_server.messages
    assert mail["To"] == EMAIL
    text = mail.get_content()
    assert "https://carnet.example/portal" in text
    described = orjson.dumps(document).decode()
    for health_data in ("Martin", "11488-4", "Compte rendu de consultation", document["id"]):
        assert health_data in described  # what the document says...
        assert health_data not in text and health_data not in mail["Subject"]  # ...not the mail

    [(headers, bundle)] = webhook_receiver.received
    assert headers["authorization"] == "Bearer app-secret"
    assert bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    assert status["parameter"][0]["valueReference"]["reference"].endswith(
        f"/Subscription/{subscription_id}")
    assert bundle["entry"][1]["fullUrl"] == \
        f"https://carnet.example/fhir/DocumentReference/{document['id']}"
    assert "resource" not in bundle["entry"][1]  # id-only: the app reads it with its token


async def test_a_mail_server_down_gets_the_mail_once_it_is_back(
        client: httpx.AsyncClient, patient_id: str, dispatcher: Dispatcher,
        smtp_server: SmtpServer, database: Database) -> None:
    smtp_server.stop()
    await file_document(client, patient_id)
    await dispatcher.run_once()
    async with database.read() as conn:
        [mail] = await outbox.deliveries(conn, status=outbox.Status.PENDING)
    assert mail.channel == "email" and mail.attempts == 1 and mail.last_error

    smtp_server.start()
    for _ in range(100):
        await asyncio.sleep(0.05)
        await dispatcher.run_once()
        if smtp_server.messages:
            break
    await asyncio.sleep(0.2)
    await dispatcher.run_once()
    assert len(smtp_server.messages) == 1


async def test_a_document_hidden_from_the_patient_tells_them_nothing_until_shown(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        patient_id: str, dispatcher: Dispatcher, smtp_server: SmtpServer,
        webhook_receiver: WebhookReceiver) -> None:
    await give_consent(client, patient_id, "app", "permit", apps=(GRANTED_APP,))
    await subscribe(anonymous, tokens, patient_id, webhook_receiver.url)
    hidden = await file_document(client, patient_id, security=("N", "INVISIBLE_PATIENT"))

    await dispatcher.run_once()
    assert await inbox(anonymous, tokens, patient_id) == []
    assert smtp_server.messages == [] and webhook_receiver.received == []

    shown = await client.patch(f"/fhir/DocumentReference/{hidden['id']}", headers={
        "Content-Type": "application/json-patch+json"}, content=orjson.dumps([
            {"op": "replace", "path": "/securityLabel",
             "value": [label for label in hidden["securityLabel"]
                       if label["coding"][0]["code"] != "INVISIBLE_PATIENT"]}]))
    assert shown.status_code == 200, shown.text
    await dispatcher.run_once()
    assert len(await inbox(anonymous, tokens, patient_id)) == 1
    assert len(smtp_server.messages) == 1 and len(webhook_receiver.received) == 1


async def test_a_document_the_patient_filed_tells_only_their_apps(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        patient_id: str, dispatcher: Dispatcher, smtp_server: SmtpServer,
        webhook_receiver: WebhookReceiver) -> None:
    """Her own upload: no notice or e-mail to herself; the apps she granted still hear."""
    await give_consent(client, patient_id, "app", "permit", apps=(GRANTED_APP,))
    await subscribe(anonymous, tokens, patient_id, webhook_receiver.url)
    own = document_bundle(f"Patient/{patient_id}", class_code="90", type_code="11488-4",
                          authors=[f"Patient/{patient_id}"])
    filed = await anonymous.post("/fhir", content=orjson.dumps(own), headers={
        **FHIR_JSON, **bearer(tokens.patient("openid patient/*.cruds"))})
    assert filed.status_code == 200, filed.text

    await dispatcher.run_once()
    assert await inbox(anonymous, tokens, patient_id) == []
    assert smtp_server.messages == []
    assert len(webhook_receiver.received) == 1


async def test_the_stream_is_the_patients_own(anonymous: httpx.AsyncClient,
                                              tokens: Tokens) -> None:
    app = await anonymous.get("/notifications/stream", headers=bearer(
        tokens.app("system/*.rs", GRANTED_APP)))
    assert app.status_code == 403
    assert app.json()["resourceType"] == "OperationOutcome"
    assert (await anonymous.get("/notifications/stream")).status_code == 401


async def test_operators_see_failed_deliveries(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        patient_id: str, settings: Settings, database: Database,
        smtp_server: SmtpServer) -> None:
    smtp_server.refuse.add(EMAIL)  # 550: retrying will not help
    await file_document(client, patient_id)
    running, _ = build_dispatcher(settings, database)
    await running.run_once()
    found = await client.get("/notifications/deliveries", params={"status": "failed"})
    assert found.status_code == 200, found.text
    [failed] = found.json()["deliveries"]
    assert failed["channel"] == "email" and failed["attempts"] == 1
    assert EMAIL not in orjson.dumps(found.json()).decode()  # no address in the log
    professional = await anonymous.get("/notifications/deliveries", headers=bearer(
        tokens.patient()))
    assert professional.status_code == 403
    bad = await client.get("/notifications/deliveries", params={"status": "lost"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


async def test_an_app_is_told_only_of_what_happens_after_it_subscribed(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        patient_id: str, dispatcher: Dispatcher, webhook_receiver: WebhookReceiver) -> None:
    await give_consent(client, patient_id, "app", "permit", apps=(GRANTED_APP,))
    await file_document(client, patient_id)  # not yet delivered when the app subscribes
    await subscribe(anonymous, tokens, patient_id, webhook_receiver.url)
    later = await file_document(client, patient_id)
    await dispatcher.run_once()
    assert [bundle["entry"][1]["fullUrl"].rsplit("/", 1)[1]
            for _, bundle in webhook_receiver.received] == [later["id"]]


async def test_an_endpoint_in_the_operators_network_is_never_called(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        patient_id: str, settings: Settings, database: Database,
        webhook_receiver: WebhookReceiver) -> None:
    """Without CARNET_WEBHOOK_ALLOWED_NETWORKS naming loopback, an app's endpoint there is a
    request forgery: refused for good, and the operators see why."""
    await give_consent(client, patient_id, "app", "permit", apps=(GRANTED_APP,))
    await subscribe(anonymous, tokens, patient_id, webhook_receiver.url)
    await file_document(client, patient_id)
    running, channels = build_dispatcher(
        settings.model_copy(update={"webhook_allowed_networks": []}), database)
    try:
        await running.run_once()
    finally:
        await channels.close()
    assert webhook_receiver.received == []
    found = await client.get("/notifications/deliveries", params={"status": "failed"})
    [failed] = found.json()["deliveries"]
    assert failed["channel"] == "webhook" and failed["attempts"] == 1
    assert "not a public address" in failed["last_error"]


class CountingWrites(Database):
    """The test's database, noting how many write transactions are asked for at once."""

    def __init__(self, url: str) -> None:
        super().__init__(url, pool_size=10)
        self.asking = 0
        self.most = 0

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        self.asking += 1
        self.most = max(self.most, self.asking)
        try:
            async with super().write() as conn:
                yield conn
        finally:
            self.asking -= 1


async def test_inbox_notices_are_written_a_few_at_a_time(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, tokens: Tokens,
        patient_id: str, settings: Settings, database: Database) -> None:
    """A pass sends its whole batch at once, but each inbox notice is a write on a
    connection of its own: 200 at once overflowed the pool (a PostgreSQL connection opened
    and closed per write beyond it)."""
    for _ in range(6):
        await file_document(client, patient_id)
    counting = CountingWrites(database.url)
    running, channels = build_dispatcher(
        settings.model_copy(update={"smtp_url": None, "dispatcher_inbox_writes": 2}), counting)
    try:
        assert await running.run_once() == 6
    finally:
        await channels.close()
        await counting.dispose()
    assert len(await inbox(anonymous, tokens, patient_id)) == 6
    assert counting.most == 2  # bounded, and the bound is used
