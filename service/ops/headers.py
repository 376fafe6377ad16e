"""The edge of the HTTP app: security headers on every response, and CORS when configured.

A response keeps what its route set: the portal sends its own stricter set (its CSP,
``Referrer-Policy: same-origin``, which its forms' Origin check needs), the JWKS its own
``Cache-Control``. Otherwise a response gets:

- ``X-Content-Type-Options: nosniff`` (a Binary's bytes are never sniffed into HTML);
- ``Cache-Control: no-store`` outside the portal (FHIR answers carry health data; ETag and
  conditional reads work as before: a validator needs no cache);
- ``Referrer-Policy: no-referrer`` outside the portal;
- ``Strict-Transport-Security`` when the public URL is https.

A plain ASGI middleware, as ``ObservedRequests`` (no body buffering). The 500 answer, made
outside every middleware, takes the same headers through ``security_headers_of``.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_profiles.outcome import Issue, operation_outcome
from service.settings import Settings

PORTAL = "/portal"
HSTS = "max-age=31536000"
_CHOSEN = "carnet.security_headers"


def security_headers_of(scope: Scope) -> dict[str, str]:
    """The headers chosen for this request, for an answer made outside the middleware (the
    500 handler runs outside every middleware)."""
    chosen = scope.get(_CHOSEN)
    return dict(chosen) if isinstance(chosen, dict) else {}


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    def headers_for(self, path: str) -> dict[str, str]:
        chosen = {"X-Content-Type-Options": "nosniff"}
        if not (path == PORTAL or path.startswith(PORTAL + "/")):
            chosen |= {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        if self.https:
            chosen["Strict-Transport-Security"] = HSTS
        return chosen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chosen = scope[_CHOSEN] = self.headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in chosen.items():
                    headers.setdefault(name, value)  # what the route set stays
            await send(message)

        await self.app(scope, receive, send_with_headers)


# CORS: what a browser app on an allowed origin needs to speak FHIR (service/fhir/http.py,
# service/fhir/routes.py, service/access.py read these headers). No credentials: the API
# takes bearer tokens, never cookies.
CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "Accept", "If-Match", "If-None-Match",
                        "If-None-Exist", "If-Range", "Range", "Prefer", "X-Access-Mode",
                        "X-Access-Reason", "X-Security-Context", "X-MSS-MES", "X-Request-ID"]
CORS_EXPOSED_HEADERS = ["ETag", "Location", "Content-Location", "Last-Modified",
                        "Content-Range", "Accept-Ranges", "X-Request-ID", "Retry-After"]


class FhirCors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as every other refusal: an
    OperationOutcome, not the text "Disallowed CORS origin"."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        refused = bytes(answer.body).decode().removeprefix("Disallowed CORS ")
        outcome = operation_outcome([Issue(f"CORS preflight refused: this {refused} is not "
                                           "allowed (CARNET_CORS_ORIGINS)", "forbidden")])
        headers = {k: v for k, v in answer.headers.items()
                   if k.lower() not in ("content-type", "content-length")}
        return Response(orjson.dumps(outcome), status_code=answer.status_code,
                        media_type="application/fhir+json", headers=headers)


def install_edge(app: Starlette, settings: Settings) -> None:
    """CORS for the configured origins only (none: no CORS header at all), inside the
    security headers, so that a preflight's answer carries them too."""
    if settings.cors_origins:
        app.add_middleware(FhirCors, allow_origins=settings.cors_origins,
                           allow_methods=CORS_METHODS, allow_headers=CORS_REQUEST_HEADERS,
                           expose_headers=CORS_EXPOSED_HEADERS, allow_credentials=False,
                           max_age=600)
    app.add_middleware(SecurityHeaders, https=settings.local_url.startswith("https://"))
