"""Where each app's active Subscription sends its notifications (a projection).

A ``Subscription`` resource is stored like any resource; this table is its
projection, rewritten in the same transaction, so that the dispatcher finds the
subscriptions of an event's patient and topic with one index probe.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, LargeBinary, String
from sqlmodel import Field, SQLModel

from storage.tables import ResourceId, table_of


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


SUBSCRIPTION_ROUTES = table_of(SubscriptionRouteRow)
