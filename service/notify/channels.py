"""The dispatcher's channels, built from the settings: inbox, e-mail, app Subscriptions.

Each sender re-reads what it needs at delivery time (the patient's address, the
Subscription's endpoint) so that nothing but ids waits in the outbox.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import app_actor
from fhir_profiles.messaging import CATEGORY_SYSTEM, NOTIFICATION
from fhir_profiles.subscriptions import DOCUMENT_TOPIC, notification_bundle
from service.access import Access
from service.fhir import interactions
from service.fhir.http import fhir_instant, now_micros
from service.notify import events
from service.notify.destinations import guarded_client
from service.notify.dispatcher import Dispatcher, Policy
from service.notify.email import notice, parse_smtp_url, send_email
from service.notify.errors import DeliveryFailed
from service.notify.webhook import post_notification
from service.settings import Settings
from storage import access as records
from storage import resources as repo
from storage import subscriptions as routes
from storage.db import Database
from storage.errors import DuplicateResource
from storage.outbox import Channel, Delivery, Event

# A notification's id follows from its event: a second delivery after a crash finds it.
_NOTIFICATION_IDS = uuid.UUID("6f1d3c56-1b9a-4e0c-9a51-6c1f0b7a2e11")

_INBOX_TEXT = {
    "document": "Un nouveau document est disponible dans votre Carnet.",
    "replaced": "Un document de votre Carnet a été remplacé par une nouvelle version.",
    events.MESSAGE: "Vous avez reçu un nouveau message d'un professionnel de santé.",
    events.EMERGENCY_ACCESS: "Votre dossier a été ouvert en mode urgence. Consultez "
                             "l'historique des accès pour savoir qui l'a consulté et pourquoi.",
}
_EMAIL_KIND = {events.DOCUMENT: "document", events.MESSAGE: "message",
               events.EMERGENCY_ACCESS: "emergency-access"}
_TOPIC_OF = {events.DOCUMENT: DOCUMENT_TOPIC}


def notification_id(event: Event) -> str:
    return str(uuid.uuid5(_NOTIFICATION_IDS, str(event.pk)))


def inbox_notice(event: Event) -> dict[str, Any]:
    """The inbox entry: a Communication of category notification, from Carnet."""
    payload = event.payload
    kind = event.topic
    about: list[dict[str, str]] = []
    if event.topic == events.DOCUMENT:
        kind = "replaced" if payload.get("replaces") else "document"
        about = [{"reference": f"DocumentReference/{payload['document']}"}]
    elif event.topic == events.MESSAGE:
        about = [{"reference": f"Communication/{payload['communication']}"}]
    patient = {"reference": f"Patient/{event.patient_id}"}
    notice_: dict[str, Any] = {
        "resourceType": "Communication", "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": NOTIFICATION}]}],
        "subject": patient, "recipient": [patient], "sent": fhir_instant(event.created_at),
        "payload": [{"contentString": _INBOX_TEXT[kind]}]}
    if about:
        notice_["about"] = about
    return notice_


async def patient_email(conn: AsyncConnection, patient_id: str) -> str | None:
    found = await repo.current_content(conn, "Patient", patient_id)
    if found is None or found.content is None or found.deleted:
        return None
    for telecom in orjson.loads(found.content).get("telecom") or []:
        if isinstance(telecom, dict) and telecom.get("system") == "email" \
                and isinstance(telecom.get("value"), str) and "@" in telecom["value"]:
            return str(telecom["value"])
    return None


class Channels:
    """The senders of one process; ``close()`` releases the HTTP client."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self._settings = settings
        self._database = database
        self._smtp = parse_smtp_url(settings.smtp_url) if settings.smtp_url else None
        self._http = guarded_client(settings.webhook_allowed_networks)
        # A pass sends all its deliveries at once (a slow endpoint must not hold back the
        # others), but an inbox one writes on a connection of its own: 200 at once overflowed
        # the pool, and SQLAlchemy opened and closed a PostgreSQL connection for each write
        # beyond it (backend start, asyncpg's type introspection).
        self._inbox_writes = asyncio.Semaphore(settings.dispatcher_inbox_writes)
        self._operators = frozenset(app_actor(c) for c in settings.operator_clients)
        self.fhir_base = f"{settings.public_url or settings.local_url}/fhir"

    @property
    def email_enabled(self) -> bool:
        return self._smtp is not None

    async def close(self) -> None:
        await self._http.aclose()

    async def inbox(self, delivery: Delivery) -> None:
        event = delivery.event
        try:
            async with self._inbox_writes, self._database.write() as conn:
                await interactions.create(conn, inbox_notice(event), access=Access.of_carnet(),
                                          resource_id=notification_id(event))
        except DuplicateResource:
            return  # delivered before: a crash came between the write and its record

    async def email(self, delivery: Delivery) -> None:
        if self._smtp is None:
            raise DeliveryFailed("no SMTP server is configured (CARNET_SMTP_URL)",
                                 permanent=True)
        async with self._database.read() as conn:
            address = await patient_email(conn, delivery.event.patient_id)
        if address is None:
            raise DeliveryFailed("the patient has no e-mail address any more", permanent=True)
        subject, text = notice(_EMAIL_KIND[delivery.event.topic], self._settings.portal_url)
        await send_email(self._smtp, self._settings.mail_from, address, subject, text,
                         timeout=self._settings.webhook_timeout_seconds)

    async def webhook(self, delivery: Delivery) -> None:
        subscription_id, _, number = delivery.target.partition("#")
        async with self._database.read() as conn:
            route = await routes.route(conn, subscription_id)
        if route is None or not route.active:
            raise DeliveryFailed("the subscription ended", permanent=True)
        document = delivery.event.payload.get("document")
        focus = f"{self.fhir_base}/DocumentReference/{document}" if document else None
        bundle = notification_bundle(
            subscription_id=subscription_id, topic=route.topic,
            events_since_start=int(number or 0), event_number=int(number or 0),
            timestamp=fhir_instant(now_micros()), focus=focus, content=route.content,
            base=self.fhir_base)
        await post_notification(self._http, route.endpoint, route.headers, bundle,
                                timeout=self._settings.webhook_timeout_seconds)

    async def targets(self, conn: AsyncConnection, event: Event) -> list[tuple[Channel, str]]:
        """Where an event goes: the patient's inbox and e-mail when it faces the patient (a
        document labelled INVISIBLE_PATIENT does not yet) and they did not cause it (their
        own upload), and every app Subscription on its
        topic created before it, whose app may see it: operators, or apps the patient
        granted (never a document hidden from the patient). A Subscription's target carries
        its event number, given here once, so that a retried notification keeps it."""
        facing = bool(event.payload.get("patient_facing"))
        targets: list[tuple[Channel, str]] = []
        if facing and not event.payload.get("by_patient"):
            targets.append((Channel.INBOX, event.patient_id))
            if self.email_enabled and await patient_email(conn, event.patient_id):
                targets.append((Channel.EMAIL, event.patient_id))
        topic = _TOPIC_OF.get(event.topic)
        for route in await routes.routes_for(conn, event.patient_id, topic) if topic else []:
            if route.since > event.created_at:
                continue  # the app subscribed after the event
            if route.owner not in self._operators:
                if not facing:
                    continue
                state = await records.record_state(conn, event.patient_id, route.owner,
                                                   event.created_at)
                if records.Relation.APP not in state.relations:
                    continue
            number = await routes.next_event_number(conn, route.subscription_id)
            targets.append((Channel.WEBHOOK, f"{route.subscription_id}#{number}"))
        return targets

def build_dispatcher(settings: Settings, database: Database,
                     name: str = "dispatcher") -> tuple[Dispatcher, Channels]:
    channels = Channels(settings, database)
    senders = {Channel.INBOX: channels.inbox, Channel.EMAIL: channels.email,
               Channel.WEBHOOK: channels.webhook}
    policy = Policy(max_attempts=settings.dispatcher_max_attempts,
                    backoff_seconds=settings.dispatcher_backoff_seconds,
                    # one send is bounded by the timeout: a lease of three is never
                    # taken from a live dispatcher, and a dead one's comes back soon
                    lease_seconds=max(1.0, 3 * settings.webhook_timeout_seconds),
                    poll_seconds=settings.dispatcher_poll_seconds)
    return Dispatcher(database, senders, channels.targets, policy, name=name), channels
