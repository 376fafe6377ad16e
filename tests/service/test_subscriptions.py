"""App Subscriptions on the write path, and their routes on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete

from auth.policy import app_actor
from fhir_profiles.subscriptions import (
    DOCUMENT_TOPIC,
    SubscriptionRequest,
    activated,
    document_subscription,
)
from service.errors import Unprocessable
from service.subscriptions import check_subscription, project_subscription
from storage import subscriptions as routes
from storage.db import Database
from storage.subscriptions import SUBSCRIPTION_ROUTES, Route

APP = app_actor("agenda-app")


def subscription(subscription_id: str = "sub-1", patient: str = "Patient/p-1", *,
                 status: str = "active", content: str = "id-only",
                 endpoint: str = "https://app.example.org/notify",
                 headers: tuple[str, ...] = ("Authorization: Bearer t",)) -> dict[str, Any]:
    return {**document_subscription(patient, endpoint, content=content, headers=headers,
                                    status=status), "id": subscription_id}


@pytest.fixture
async def db(database: Database) -> AsyncIterator[Database]:
    """The shared database with no route left by an earlier test."""
    async with database.write() as conn:
        await conn.execute(delete(SUBSCRIPTION_ROUTES))
    yield database


def test_a_good_subscription_passes() -> None:
    check_subscription(subscription(status="requested"))


def test_a_bad_subscription_is_422_with_every_issue() -> None:
    resource = subscription(content="full-resource", endpoint="not a url")
    with pytest.raises(Unprocessable) as refused:
        check_subscription(resource)
    assert refused.value.status == 422
    assert [i.diagnostics.split("]")[0] for i in refused.value.issues] == [
        "[sub-endpoint", "[sub-content-full-resource"]
    outcome = refused.value.outcome()
    assert outcome["resourceType"] == "OperationOutcome" and len(outcome["issue"]) == 2


async def test_a_stored_subscription_gets_its_route(db: Database) -> None:
    async with db.write() as conn:
        await project_subscription(conn, activated(subscription()), APP)
    async with db.read() as conn:
        found = await routes.routes_for(conn, "p-1", DOCUMENT_TOPIC)
        one = await routes.route(conn, "sub-1")
    assert found == [Route(subscription_id="sub-1", topic=DOCUMENT_TOPIC, patient_id="p-1",
                           owner=APP, endpoint="https://app.example.org/notify",
                           headers=("Authorization: Bearer t",), content="id-only",
                           active=True, events_sent=0, since=found[0].since)]
    assert one == found[0] and found[0].since > 0


async def test_routes_are_found_by_patient_and_topic(db: Database) -> None:
    async with db.write() as conn:
        await project_subscription(conn, subscription("sub-b"), APP)
        await project_subscription(conn, subscription("sub-a", content="empty"), "app:other")
        await project_subscription(conn, subscription("sub-c", "p-2"), APP)
    async with db.read() as conn:
        p1 = await routes.routes_for(conn, "p-1", DOCUMENT_TOPIC)
        p2 = await routes.routes_for(conn, "p-2", DOCUMENT_TOPIC)
        other_topic = await routes.routes_for(conn, "p-1", "https://example.org/other")
        nobody = await routes.routes_for(conn, "p-3", DOCUMENT_TOPIC)
        unknown = await routes.route(conn, "sub-z")
    assert [(r.subscription_id, r.owner, r.content) for r in p1] == [
        ("sub-a", "app:other", "empty"), ("sub-b", APP, "id-only")]
    assert [r.subscription_id for r in p2] == ["sub-c"]
    assert other_topic == nobody == []
    assert unknown is None


async def test_event_numbers_grow_and_survive_a_rewrite(db: Database) -> None:
    async with db.write() as conn:
        await project_subscription(conn, subscription(), APP)
        assert [await routes.next_event_number(conn, "sub-1") for _ in range(3)] == [1, 2, 3]
    async with db.write() as conn:  # the app moves its endpoint and changes its headers
        await project_subscription(conn, subscription(endpoint="https://new.example.org/n",
                                                      headers=("X-Key: 2", "X-Other: 3")), APP)
    async with db.write() as conn:
        assert await routes.next_event_number(conn, "sub-1") == 4
    async with db.read() as conn:
        found = await routes.route(conn, "sub-1")
    assert found is not None
    assert (found.endpoint, found.headers, found.events_sent) == (
        "https://new.example.org/n", ("X-Key: 2", "X-Other: 3"), 4)


async def test_a_number_taken_in_a_rolled_back_transaction_is_given_again(db: Database) -> None:
    async with db.write() as conn:
        await project_subscription(conn, subscription(), APP)
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            assert await routes.next_event_number(conn, "sub-1") == 1
            raise RuntimeError("the fan-out failed")
    async with db.write() as conn:
        assert await routes.next_event_number(conn, "sub-1") == 1


async def test_concurrent_transactions_never_share_a_number(db: Database) -> None:
    async with db.write() as conn:
        await project_subscription(conn, subscription(), APP)

    async def take() -> int:
        async with db.write() as conn:
            number = await routes.next_event_number(conn, "sub-1")
            await asyncio.sleep(0.01)  # hold the transaction open a moment
            return number

    assert sorted(await asyncio.gather(*(take() for _ in range(8)))) == list(range(1, 9))


async def test_an_inactive_or_removed_subscription_loses_its_route(db: Database) -> None:
    async with db.write() as conn:
        await project_subscription(conn, subscription("sub-1"), APP)
        await project_subscription(conn, subscription("sub-2"), APP)
    async with db.write() as conn:
        await project_subscription(conn, subscription("sub-1", status="off"), APP)
        await routes.replace_route(conn, "sub-2", None, APP, now=1)
        await routes.replace_route(conn, "sub-never", None, APP, now=1)  # nothing to remove: fine
    async with db.read() as conn:
        assert await routes.routes_for(conn, "p-1", DOCUMENT_TOPIC) == []
        assert await routes.route(conn, "sub-1") is None


async def test_a_route_can_move_to_another_patient(db: Database) -> None:
    async with db.write() as conn:
        await project_subscription(conn, subscription(), APP)
        await routes.replace_route(conn, "sub-1", SubscriptionRequest(
            topic=DOCUMENT_TOPIC, patient_id="p-9", endpoint="https://app.example.org/n",
            headers=(), content="empty", end=None), APP, now=2)
    async with db.read() as conn:
        assert await routes.routes_for(conn, "p-1", DOCUMENT_TOPIC) == []
        [moved] = await routes.routes_for(conn, "p-9", DOCUMENT_TOPIC)
    assert (moved.headers, moved.content) == ((), "empty")


async def test_no_number_for_an_unknown_subscription(db: Database) -> None:
    async with db.write() as conn:
        with pytest.raises(LookupError, match="sub-x"):
            await routes.next_event_number(conn, "sub-x")
