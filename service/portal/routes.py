"""The portal's entry points: home, login, callback, logout, and the live event stream.

The pages themselves live in one module per section (documents, privacy,
history, messages, upload), each a router included here.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from auth.throttle import Throttle, client_address
from service.notify.routes import patient_events
from service.portal import documents, history, messages, privacy, upload
from service.portal.session import COOKIE, LoginFailed, NotLoggedIn
from service.portal.web import (
    PortalDep,
    clear_session_cookie,
    origin,
    portal_auth,
    render,
    set_session_cookie,
)
from service.settings import Settings
from storage import outbox
from storage.db import Database

router = APIRouter(prefix="/portal", tags=["patient portal"], include_in_schema=False)
for section in (documents, privacy, history, messages, upload):
    router.include_router(section.router)


@router.get("/", summary="the portal's home")
async def home(request: Request) -> Response:
    try:
        await portal_auth(request).current(request.cookies.get(COOKIE))
    except NotLoggedIn:
        return render(request, "home.html")
    settings: Settings = request.app.state.settings
    return RedirectResponse(f"{settings.portal_url}/documents", status_code=303)


@router.get("", include_in_schema=False)
async def home_without_slash(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    return RedirectResponse(f"{settings.portal_url}/", status_code=307)


@router.get("/connexion", summary="start the login at the identity provider")
async def login(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    canonical = f"{settings.portal_url}/connexion"
    if origin(str(request.url)) != origin(canonical):
        # The provider sends the patient back to the registered address: start there, so
        # that the login's cookie is on the host the callback reaches (localhost vs 127.0.0.1).
        return RedirectResponse(canonical, status_code=307)
    slot = await _logins(settings).take(request.app.state.database, client_address(request))
    if slot is not None and not slot.allowed:
        refused = render(request, "error.html", status_code=429, title="Trop de tentatives",
                         message="Trop de connexions commencées sans aboutir depuis cette "
                                 f"adresse. Réessayez dans {slot.retry_after} secondes.")
        refused.headers["Retry-After"] = str(slot.retry_after)
        return refused
    started = await portal_auth(request).begin_login()
    response = RedirectResponse(started.location, status_code=303)
    set_session_cookie(response, request.app.state.settings, started.key, started.max_age)
    return response


@router.get("/callback", summary="the identity provider sends the patient back here")
async def callback(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    try:
        done = await portal_auth(request).finish_login(request.cookies.get(COOKIE),
                                                       dict(request.query_params))
    except LoginFailed as exc:
        refused = render(request, "error.html", status_code=400, title="Connexion impossible",
                         message=str(exc))
        clear_session_cookie(refused, settings)
        return refused
    await _logins(settings).give_back(request.app.state.database, client_address(request))
    response = RedirectResponse(done.location, status_code=303)
    set_session_cookie(response, settings, done.key, done.max_age)
    return response


def _logins(settings: Settings) -> Throttle:
    """Each login started takes a slot, each one completed gives it back: what the limit
    counts is logins left unfinished (each left a pending session row behind)."""
    return Throttle("portal-login", settings.rate_limit_login)


@router.post("/deconnexion", summary="log out")
async def logout(ctx: PortalDep) -> Response:
    await ctx.form()
    await portal_auth(ctx.request).logout(ctx.request.cookies.get(COOKIE))
    response = ctx.redirect("/", "deconnecte")
    clear_session_cookie(response, ctx.settings)
    return response


@router.get("/evenements", summary="live events for the open pages (Server-Sent Events)")
async def events(ctx: PortalDep) -> Response:
    if ctx.patient_id is None:
        return Response(status_code=204)  # no record yet: nothing will happen (EventSource stops)
    db: Database = ctx.request.app.state.database
    async with db.read() as conn:
        last = await outbox.latest_event_pk(conn)
    return patient_events(ctx.request, db, ctx.patient_id, last,
                          ctx.settings.dispatcher_poll_seconds)
