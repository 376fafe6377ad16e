"""An app's Subscription cannot make Carnet send requests into the operator's own network."""

from __future__ import annotations

import ipaddress

import pytest

from service.notify.destinations import guarded_client, is_public, permitted
from service.notify.errors import DeliveryFailed
from service.notify.webhook import post_notification
from tests.endpoints import WebhookReceiver

BUNDLE = {"resourceType": "Bundle", "type": "history"}
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(("text", "public"), [
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False),  # a cloud's metadata service
    ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False), ("::1", False),
    ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:10.0.0.1", False), ("8.8.8.8", True), ("2001:4860:4860::8888", True),
    ("::ffff:8.8.8.8", True),
])
def test_only_internet_addresses_are_public(text: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(text)) is public


def test_an_allowed_network_opens_its_own_addresses_only() -> None:
    allowed = [ipaddress.ip_network("127.0.0.0/8")]
    assert permitted(ipaddress.ip_address("127.0.0.1"), allowed)
    assert not permitted(ipaddress.ip_address("10.0.0.1"), allowed)
    assert not permitted(ipaddress.ip_address("::1"), allowed)
    assert permitted(ipaddress.ip_address("8.8.8.8"), [])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_loopback_endpoint_is_refused_for_good_and_never_reached(
        webhook_receiver: WebhookReceiver, host: str) -> None:
    """By address or by a name that resolves to it: the check is on the address connected to."""
    client = guarded_client([])
    try:
        with pytest.raises(DeliveryFailed) as refused:
            await post_notification(client, webhook_receiver.url.replace("127.0.0.1", host), [],
                                    BUNDLE, timeout=5)
    finally:
        await client.aclose()
    assert refused.value.permanent
    assert "not a public address" in refused.value.reason
    assert webhook_receiver.received == []


async def test_a_name_that_does_not_resolve_is_tried_again_later() -> None:
    """DNS may be down for a while: a temporary failure, as before the guard."""
    client = guarded_client([])
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await post_notification(client, "https://app.carnet.invalid/notify", [], BUNDLE,
                                    timeout=5)
    finally:
        await client.aclose()
    assert not failed.value.permanent
    assert "could not reach the endpoint" in failed.value.reason


async def test_an_allowed_network_is_reached(webhook_receiver: WebhookReceiver) -> None:
    client = guarded_client(LOOPBACK)
    try:
        await post_notification(client, webhook_receiver.url, [], BUNDLE, timeout=5)
    finally:
        await client.aclose()
    [(_headers, bundle)] = webhook_receiver.received
    assert bundle == BUNDLE


async def test_the_environments_proxy_is_not_used(webhook_receiver: WebhookReceiver,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would make the connection instead, out of the guard's sight."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    client = guarded_client(LOOPBACK)
    try:
        await post_notification(client, webhook_receiver.url, [], BUNDLE, timeout=5)
    finally:
        await client.aclose()
    assert len(webhook_receiver.received) == 1
