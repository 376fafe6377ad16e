"""Every HTTP request gets an id, a line in the access log and its place in the metrics.

A plain ASGI middleware (no BaseHTTPMiddleware: it would buffer streams and cost a task
per request). The id comes from ``X-Request-ID`` when the caller (a load balancer, an
integrator's system) sends a sane one, else is made here; it is echoed in the response.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.ops.logs import REQUEST_ID
from service.ops.metrics import REQUEST_SECONDS, REQUESTS

access_log = logging.getLogger("carnet.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
UNMATCHED = "<unmatched>"  # one label for every path no route knows (bounded cardinality)


def request_id_of(scope: Scope) -> str | None:
    """The id this middleware gave the request (``None`` outside a request)."""
    found = scope.get("carnet.request_id")
    return found if isinstance(found, str) else None


def route_of(scope: Scope) -> str:
    """The template of the route that answered, never the path itself (ids, INS)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class ObservedRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _given_id(scope) or uuid.uuid4().hex
        scope["carnet.request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        answered = 0.0
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = time.perf_counter()
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            failed = True  # the error handler outside logs it, under the same id
            raise
        finally:
            method = scope["method"]
            route = route_of(scope)
            seconds = (answered or time.perf_counter()) - started
            REQUESTS.labels(method, route, str(status)).inc()
            REQUEST_SECONDS.labels(method, route).observe(seconds)
            access_log.info("request", extra={"fields": {
                "method": method, "route": route, "status": status,
                "duration_ms": round(seconds * 1000, 2)}})
            if not failed:
                REQUEST_ID.reset(token)


def _given_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value.decode() if _SANE_ID.fullmatch(value) else None
    return None
