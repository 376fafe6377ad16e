"""What every portal page shares: the session, CSRF, rendering and security headers.

Page modules (documents, privacy, history, messages, upload) are thin: they
take a ``PortalContext``, call the API through ``ctx.fhir`` and render a
template with ``ctx.render``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.errors import PayloadTooLarge
from service.fhir.http import read_body
from service.portal.errors import Refusal
from service.portal.fhir import PortalFhir
from service.portal.session import COOKIE, NotLoggedIn, PortalAuth, Session
from service.settings import Settings

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
PARIS = ZoneInfo("Europe/Paris")
MAX_FORM_BYTES = 64 * 1024


NO_RECORD = "Aucun dossier n'est encore ouvert à votre identité dans Carnet."
# What a page says after a change, by key: a link cannot make the portal say anything else.
# Each section adds its own (``NOTICES.update`` at import).
NOTICES: dict[str, str] = {"deconnecte": "Vous êtes déconnecté·e."}


class CsrfRefused(Exception):
    """A form without this session's CSRF token, or posted from another site."""


class FormTooLarge(Exception):
    """A posted body over the page's limit, refused before it is read whole."""


def date_fr(value: str | None, with_time: bool = True) -> str:
    """'15/01/2026 10:00' in Paris time; a bare date stays a date."""
    if not value:
        return ""
    if len(value) <= 10:
        parts = value.split("-")
        return "/".join(reversed(parts))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(PARIS)
    except ValueError:
        return value
    return moment.strftime("%d/%m/%Y %H:%M" if with_time else "%d/%m/%Y")


TEMPLATES.env.filters["date_fr"] = date_fr


def security_headers(settings: Settings) -> dict[str, str]:
    """Strict: own scripts and styles only, no framing by others, forms to us or the issuer."""
    issuer = urlsplit(settings.effective_issuer)
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-src 'self'; object-src 'self'; base-uri 'none'; frame-ancestors 'self'; "
            f"form-action 'self' {issuer.scheme}://{issuer.netloc}"),
        "X-Frame-Options": "SAMEORIGIN",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",  # no-referrer would make Origin "null"
        "Cache-Control": "no-store",
    }


def portal_auth(request: Request) -> PortalAuth:
    state = request.app.state
    return PortalAuth(state.database, state.settings, state.issuer_client, state.portal_api,
                      state.authenticator)


@dataclass
class PortalContext:
    """One page request of a logged-in patient."""

    request: Request
    session: Session
    fhir: PortalFhir
    settings: Settings

    @property
    def patient_id(self) -> str | None:
        return self.session.patient_id

    def own_record(self) -> str:
        """The patient's record id, for a change; 404 while Carnet holds none for them."""
        if self.session.patient_id is None:
            raise Refusal(404, NO_RECORD)
        return self.session.patient_id

    async def page(self, template: str, status_code: int = 200,
                   **context: Any) -> HTMLResponse:
        """A page of the patient's space, with the unread count in its menu."""
        return render(self.request, template, status_code=status_code, session=self.session,
                      unread=await self.unread(), **context)

    async def unread(self) -> int | None:
        if self.patient_id is None:
            return None
        counted = await self.fhir.get("Communication", {
            "recipient": f"Patient/{self.patient_id}", "received:missing": "true",
            "_summary": "count"})
        return int(counted.get("total") or 0)

    def redirect(self, path: str, notice: str | None = None) -> RedirectResponse:
        """Post/redirect/get; ``notice`` (a key of ``NOTICES``) is shown on the next page."""
        assert notice is None or notice in NOTICES, notice
        target = f"{self.settings.portal_url}{path}"
        if notice:
            target += ("&" if "?" in target else "?") + urlencode({"info": notice})
        return RedirectResponse(target, status_code=303)

    async def form(self) -> dict[str, str]:
        """The posted form, after the CSRF and same-origin checks."""
        form = await read_form(self.request)
        _refuse_forged(self, form)
        return form

    async def upload_form(self, max_bytes: int) -> tuple[dict[str, str], UploadFile | None]:
        """A multipart form and its one file, after the same checks as ``form``.

        The body is refused (``FormTooLarge``) as soon as it passes ``max_bytes``, before it
        is held whole; the caller closes the file.
        """
        try:
            body = await read_body(self.request, max_bytes)
        except PayloadTooLarge:
            raise FormTooLarge from None
        parsed = await _multipart(self.request, body)
        fields = {key: value for key, value in parsed.items() if isinstance(value, str)}
        files = [value for value in parsed.values() if isinstance(value, UploadFile)]
        try:
            _refuse_forged(self, fields)
        except CsrfRefused:
            await parsed.close()
            raise
        return fields, files[0] if files else None


def _refuse_forged(ctx: PortalContext, form: dict[str, str]) -> None:
    """``CsrfRefused`` unless the form carries this session's token and, when the browser
    says where it was posted from, comes from the portal's own origin."""
    posted_from = ctx.request.headers.get("origin")
    if posted_from is not None and posted_from != origin(ctx.settings.local_url) \
            and posted_from != origin(str(ctx.request.base_url)):
        raise CsrfRefused
    if not ctx.session.csrf_matches(form.get("csrf")):
        raise CsrfRefused


async def _multipart(request: Request, body: bytes) -> FormData:
    """``body`` read as multipart/form-data (one file at most); anything else reads as an
    empty form, so its CSRF check fails."""
    media, _ = parse_options_header(request.headers.get("content-type"))
    if media != b"multipart/form-data":
        return FormData()

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        return await MultiPartParser(request.headers, chunks(), max_files=1, max_fields=20,
                                     max_part_size=MAX_FORM_BYTES).parse()
    except MultiPartException:
        raise CsrfRefused from None  # not what the portal's own form sends


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def read_form(request: Request) -> dict[str, str]:
    """A page's small form, read no further than MAX_FORM_BYTES (a larger body is not one
    of the portal's forms: refused as such, before it is held whole)."""
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except PayloadTooLarge:
        raise CsrfRefused from None
    media, _ = parse_options_header(request.headers.get("content-type"))
    if media == b"multipart/form-data":
        parsed = await _multipart(request, body)
        await parsed.close()
        return {key: value for key, value in parsed.items() if isinstance(value, str)}
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise CsrfRefused from None


def render(request: Request, template: str, *, status_code: int = 200,
           session: Session | None = None, **context: Any) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    response = TEMPLATES.TemplateResponse(request, template, {
        "session": session, "portal": settings.portal_url,
        "info": NOTICES.get(request.query_params.get("info", "")), **context},
        status_code=status_code)
    response.headers.update(security_headers(settings))
    return response


async def portal_context(request: Request) -> PortalContext:
    """The logged-in patient behind the cookie; ``NotLoggedIn`` sends them to the login."""
    session = await portal_auth(request).current(request.cookies.get(COOKIE))
    settings: Settings = request.app.state.settings
    return PortalContext(request, session, PortalFhir(request.app.state.portal_api,
                                                      session.access_token), settings)


PortalDep = Annotated[PortalContext, Depends(portal_context)]


def set_session_cookie(response: Response, settings: Settings, key: str, max_age: int) -> None:
    response.set_cookie(COOKIE, key, max_age=max_age, path="/portal", httponly=True,
                        samesite="lax", secure=settings.local_url.startswith("https://"))


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(COOKIE, path="/portal", httponly=True, samesite="lax",
                           secure=settings.local_url.startswith("https://"))


__all__ = ["NotLoggedIn", "PortalContext", "PortalDep", "render"]
