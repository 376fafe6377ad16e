"""App Subscriptions on the write path: refuse what Carnet cannot honour, project the rest.

The lead's write path calls ``check_subscription`` before storing a Subscription (stored as
``activated``) and ``project_subscription`` in the same transaction, so that the dispatcher's
routes never disagree with the stored resources.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Rule, actor_key
from auth.principal import App
from fhir_profiles.subscriptions import (
    STATUSES,
    activated,
    owned_by,
    owner_of,
    read_subscription,
    subscription_issues,
)
from service.access import Access
from service.errors import Forbidden, Unprocessable
from service.fhir.http import now_micros
from storage import access as records
from storage import subscriptions as routes


def check_subscription(resource: dict[str, Any]) -> None:
    """422 with every broken rule at once, so that the app fixes them in one go."""
    issues = subscription_issues(resource)
    if issues:
        raise Unprocessable("; ".join(issue.diagnostics for issue in issues), issues=issues)


async def project_subscription(conn: AsyncConnection, resource: dict[str, Any],
                               owner: str) -> None:
    """Rewrite the route of a stored Subscription; ``owner`` is the app's actor key
    (``auth.policy.actor_key``), checked against the patient's grant at each event.
    A Subscription that is not (or no longer) requested/active has no route."""
    subscription_id = resource["id"]
    if resource.get("status") not in STATUSES or subscription_issues(resource):
        await routes.replace_route(conn, subscription_id, None, owner, now=now_micros())
        return
    await routes.replace_route(conn, subscription_id, read_subscription(resource), owner,
                               now=now_micros())


async def prepare(conn: AsyncConnection, access: Access, resource: dict[str, Any],
                  old: dict[str, Any] | None = None) -> dict[str, Any]:
    """What an app's Subscription write stores: checked, active, tagged with its owner (the
    app that created it, kept on updates). An app subscribes only to records whose patient
    granted it (checked again at each event: a withdrawn grant stops the notifications)."""
    check_subscription(resource)
    request = read_subscription(resource)
    owner = owner_of(old) if old is not None else None
    owner = owner or actor_key(access.principal)
    if isinstance(access.principal, App) and not (access.operator or access.internal):
        state = await records.record_state(conn, request.patient_id, owner, now_micros())
        if records.Relation.APP not in state.relations:
            raise Forbidden.denied(Rule.APP_NOT_GRANTED, "the patient has not granted this "
                                   "app access to their record")
    return owned_by(activated(resource), owner)


async def stored(conn: AsyncConnection, resource: dict[str, Any]) -> None:
    """The stored Subscription's route, in the same transaction."""
    await project_subscription(conn, resource, owner_of(resource) or "")


async def ended(conn: AsyncConnection, subscription_id: str) -> None:
    await routes.replace_route(conn, subscription_id, None, "", now=now_micros())
