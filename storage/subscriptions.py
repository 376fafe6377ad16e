"""Where each app's active Subscription sends its notifications (a projection).

A ``Subscription`` resource is stored like any resource; this table is its
projection, rewritten in the same transaction, so that the dispatcher finds the
subscriptions of an event's patient and topic with one index probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    LargeBinary,
    String,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.tables import ResourceId, table_of


class RouteRequest(Protocol):
    """Where a Subscription asks to be notified (``fhir_profiles.subscriptions`` reads it
    from the resource)."""

    @property
    def topic(self) -> str: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def headers(self) -> Sequence[str]: ...
    @property
    def content(self) -> str: ...


class SubscriptionRouteRow(SQLModel, table=True):
    __tablename__ = "subscription_route"
    __table_args__ = (Index("ix_subscription_route_patient", "patient_id", "topic"),)

    subscription_id: str = Field(sa_column=Column(ResourceId, primary_key=True))
    topic: str = Field(sa_column=Column(String(256), nullable=False))
    patient_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    owner: str = Field(sa_column=Column(String(128), nullable=False))  # app:<client_id>
    endpoint: str = Field(sa_column=Column(String(2048), nullable=False))
    headers: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # JSON list of str
    content: str = Field(sa_column=Column(String(16), nullable=False))  # empty | id-only
    active: bool = Field(sa_column=Column(Boolean, nullable=False))
    # eventsSinceSubscriptionStart: numbers each notification sent
    events_sent: int = Field(sa_column=Column(BigInteger, nullable=False))
    # When the route was first written (epoch µs): earlier events are not the app's.
    since: int = Field(sa_column=Column(BigInteger, nullable=False))


SUBSCRIPTION_ROUTES = table_of(SubscriptionRouteRow)


@dataclass(frozen=True)
class Route:
    """One subscription's route, as the dispatcher reads it."""

    subscription_id: str
    topic: str
    patient_id: str
    owner: str
    endpoint: str
    headers: tuple[str, ...]
    content: str
    active: bool
    events_sent: int
    since: int


def _route(row: Any) -> Route:
    return Route(subscription_id=row.subscription_id, topic=row.topic, patient_id=row.patient_id,
                 owner=row.owner, endpoint=row.endpoint,
                 headers=tuple(orjson.loads(row.headers)), content=row.content,
                 active=bool(row.active), events_sent=int(row.events_sent),
                 since=int(row.since))


async def replace_route(conn: AsyncConnection, subscription_id: str,
                        route: RouteRequest | None, owner: str, *, now: int) -> None:
    """Rewrite a Subscription's route in its write's transaction. None (deleted, or not
    active any more) removes it; a rewrite keeps ``events_sent``, so that event numbers keep
    growing for the app, and ``since`` (= ``now`` at the first write)."""
    if route is None:
        await conn.execute(delete(SUBSCRIPTION_ROUTES)
                           .where(SUBSCRIPTION_ROUTES.c.subscription_id == subscription_id))
        return
    values = {"topic": route.topic, "patient_id": route.patient_id, "owner": owner,
              "endpoint": route.endpoint, "headers": orjson.dumps(list(route.headers)),
              "content": route.content, "active": True}
    changed = await conn.execute(update(SUBSCRIPTION_ROUTES).where(
        SUBSCRIPTION_ROUTES.c.subscription_id == subscription_id).values(values))
    if changed.rowcount == 0:
        await conn.execute(insert(SUBSCRIPTION_ROUTES).values(
            subscription_id=subscription_id, events_sent=0, since=now, **values))


async def routes_for(conn: AsyncConnection, patient_id: str, topic: str) -> list[Route]:
    """The active routes of one patient and topic (one probe of the patient index)."""
    rows = (await conn.execute(
        select(SUBSCRIPTION_ROUTES)
        .where(SUBSCRIPTION_ROUTES.c.patient_id == patient_id,
               SUBSCRIPTION_ROUTES.c.topic == topic,
               SUBSCRIPTION_ROUTES.c.active == True)  # noqa: E712
        .order_by(SUBSCRIPTION_ROUTES.c.subscription_id))).all()
    return [_route(r) for r in rows]


async def route(conn: AsyncConnection, subscription_id: str) -> Route | None:
    row = (await conn.execute(select(SUBSCRIPTION_ROUTES).where(
        SUBSCRIPTION_ROUTES.c.subscription_id == subscription_id))).first()
    return _route(row) if row is not None else None


async def next_event_number(conn: AsyncConnection, subscription_id: str) -> int:
    """Count one more event for the subscription and return its number, in the caller's
    transaction (the row stays locked until it ends, so two dispatchers never share one)."""
    number: int | None = (await conn.execute(
        update(SUBSCRIPTION_ROUTES)
        .where(SUBSCRIPTION_ROUTES.c.subscription_id == subscription_id)
        .values(events_sent=SUBSCRIPTION_ROUTES.c.events_sent + 1)
        .returning(SUBSCRIPTION_ROUTES.c.events_sent))).scalar_one_or_none()
    if number is None:
        raise LookupError(f"no route for Subscription/{subscription_id}")
    return number
