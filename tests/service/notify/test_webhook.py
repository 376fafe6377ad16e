"""Notifications POSTed to a real HTTP endpoint on loopback: delivered, or why not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fhir_profiles.subscriptions import DOCUMENT_TOPIC, notification_bundle
from service.notify.errors import DeliveryFailed
from service.notify.webhook import channel_headers, post_notification
from tests.endpoints import WebhookReceiver, unused_port

BASE = "https://carnet.test/fhir"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def bundle() -> dict[str, object]:
    return notification_bundle(subscription_id="sub-1", topic=DOCUMENT_TOPIC,
                               events_since_start=3, event_number=3,
                               timestamp="2026-11-26T06:00:00Z",
                               focus="DocumentReference/doc-1", content="id-only", base=BASE)


async def test_delivered_as_fhir_json_with_the_channel_headers(
        client: httpx.AsyncClient, webhook_receiver: WebhookReceiver) -> None:
    sent = bundle()
    await post_notification(client, webhook_receiver.url,
                            ["Authorization: Bearer app-secret", "X-Tenant:  t1"], sent)
    [(headers, body)] = webhook_receiver.received
    assert body == sent
    assert headers["content-type"] == "application/fhir+json"
    assert headers["authorization"] == "Bearer app-secret"
    assert headers["x-tenant"] == "t1"
    assert webhook_receiver.paths == ["/notify"]


async def test_a_channel_header_cannot_replace_the_content_type(
        client: httpx.AsyncClient, webhook_receiver: WebhookReceiver) -> None:
    await post_notification(client, webhook_receiver.url, ["Content-Type: text/plain"], bundle())
    [(headers, _)] = webhook_receiver.received
    assert headers["content-type"] == "application/fhir+json"


@pytest.mark.parametrize("status", [500, 502, 503, 408, 425, 429])
async def test_server_errors_and_throttling_are_temporary(
        client: httpx.AsyncClient, webhook_receiver: WebhookReceiver, status: int) -> None:
    webhook_receiver.status = status
    with pytest.raises(DeliveryFailed) as failed:
        await post_notification(client, webhook_receiver.url, [], bundle())
    assert not failed.value.permanent
    assert str(status) in failed.value.reason
    assert "secret" not in failed.value.reason  # the answer's body is never reported


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_other_client_errors_are_permanent(
        client: httpx.AsyncClient, webhook_receiver: WebhookReceiver, status: int) -> None:
    webhook_receiver.status = status
    with pytest.raises(DeliveryFailed) as failed:
        await post_notification(client, webhook_receiver.url, [], bundle())
    assert failed.value.permanent
    assert str(status) in failed.value.reason
    assert "secret" not in failed.value.reason


async def test_any_2xx_is_delivered(client: httpx.AsyncClient,
                                    webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.status = 204
    await post_notification(client, webhook_receiver.url, [], bundle())
    assert len(webhook_receiver.received) == 1


async def test_a_redirect_is_not_followed(client: httpx.AsyncClient,
                                          webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.status = 307
    with pytest.raises(DeliveryFailed) as failed:
        await post_notification(client, webhook_receiver.url, ["Authorization: Bearer x"],
                                bundle())
    assert webhook_receiver.paths == ["/notify"]  # /notify/moved never asked
    assert failed.value.permanent
    assert "307" in failed.value.reason


async def test_a_refused_connection_is_temporary(client: httpx.AsyncClient) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        await post_notification(client, f"http://127.0.0.1:{unused_port()}/notify", [],
                                bundle())
    assert not failed.value.permanent
    assert "ConnectError" in failed.value.reason


async def test_a_slow_endpoint_times_out_temporarily(
        client: httpx.AsyncClient, webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.delay = 1.0
    with pytest.raises(DeliveryFailed) as failed:
        await post_notification(client, webhook_receiver.url, [], bundle(), timeout=0.2)
    assert not failed.value.permanent
    assert "timed out" in failed.value.reason


def test_channel_headers_split_on_the_first_colon() -> None:
    assert channel_headers(["Authorization: Bearer a:b", "X-A:1", "broken"]) == [
        ("Authorization", "Bearer a:b"), ("X-A", "1")]


@pytest.mark.parametrize("endpoint", ["ftp://app.example.org/notify", "http://[::1/notify"])
async def test_an_unusable_endpoint_is_permanent(client: httpx.AsyncClient,
                                                 endpoint: str) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        await post_notification(client, endpoint, [], bundle())
    assert failed.value.permanent
