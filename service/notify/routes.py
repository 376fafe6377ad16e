"""HTTP side of notifications: the patient's live stream and the operators' view of deliveries.

The stream reads the outbox (not process memory), so that every API process
serves every patient's events whichever process wrote them; one poller per process
(service/notify/live.py) reads it for all the process's open streams.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from service.deps import AccessDep, DatabaseDep, SettingsDep
from service.errors import BadRequest, Forbidden
from service.notify.live import LiveEvents
from storage import outbox
from storage.db import Database

router = APIRouter(tags=["notifications"])

HEARTBEAT_SECONDS = 15.0
_SHOWN = ("document", "communication", "made_visible", "mode", "expires_at")


def stream_data(event: outbox.Event) -> dict[str, Any]:
    """What the portal learns: the kind of event and ids, never a title or a content."""
    return {"topic": event.topic, **{k: event.payload[k] for k in _SHOWN
                                     if k in event.payload}}


@router.get("/notifications/stream", summary="the patient's live events (Server-Sent Events)")
async def stream(request: Request, access: AccessDep, db: DatabaseDep,
                 settings: SettingsDep) -> StreamingResponse:
    if not access.is_patient:
        raise Forbidden("the live stream is the patient's own: sign in as the patient")
    async with db.read() as conn:
        patient_id = await access.own_record(conn)
        last = await outbox.latest_event_pk(conn)
    if patient_id is None:
        raise Forbidden("no record carries your INS yet")
    return patient_events(request, db, patient_id, last, settings.dispatcher_poll_seconds)


def patient_events(request: Request, db: Database, patient_id: str, last: int,
                   poll: float) -> StreamingResponse:
    """The patient's events after ``last`` (or after the browser's ``Last-Event-ID``), as
    Server-Sent Events; shared by the bearer stream and the portal's cookie stream.

    The events come from the process's one outbox poller (``app.state.live_events``,
    service/notify/live.py), not from a query per stream; an app run without its lifespan
    (in-process tests) gives the stream a poller of its own.
    """
    given = request.headers.get("last-event-id")
    if given is not None:
        if not given.isdigit():
            raise BadRequest("Last-Event-ID must be the id of an event this stream sent")
        last = int(given)
    hub: LiveEvents | None = getattr(request.app.state, "live_events", None)

    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async with contextlib.AsyncExitStack() as stack:
            live = hub if hub is not None else await stack.enter_async_context(
                LiveEvents.running(db, poll_seconds=poll))
            subscription = await stack.enter_async_context(live.subscribe(patient_id, last))
            quiet_since = time.monotonic()
            while not subscription.closed and not await request.is_disconnected():
                for event in await subscription.next(poll):
                    if event.payload.get("patient_facing"):
                        quiet_since = time.monotonic()
                        yield (f"id: {event.pk}\nevent: {event.topic}\ndata: ".encode()
                               + orjson.dumps(stream_data(event)) + b"\n\n")
                if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                    quiet_since = time.monotonic()
                    yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/notifications/deliveries", summary="deliveries, for operators")
async def deliveries(access: AccessDep, db: DatabaseDep, status: str | None = None,
                     event: int | None = None, limit: int = 100) -> Response:
    if not access.operator:
        raise Forbidden("the delivery log is for operators (CARNET_OPERATOR_CLIENTS)")
    try:
        wanted = outbox.Status(status) if status is not None else None
    except ValueError:
        raise BadRequest(f"status must be one of {', '.join(s.value for s in outbox.Status)}",
                         expression="status") from None
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be between 1 and 1000", expression="limit")
    async with db.read() as conn:
        found = await outbox.deliveries(conn, status=wanted, event_pk=event, limit=limit)
        counts = await outbox.backlog(conn)
    return Response(orjson.dumps({"backlog": counts, "deliveries": [
        {"id": d.pk, "event": d.event_pk, "topic": d.topic, "channel": d.channel,
         "target": d.target, "status": d.status, "attempts": d.attempts,
         "next_attempt_at": d.next_attempt_at, "last_error": d.last_error} for d in found]}),
        media_type="application/json")
