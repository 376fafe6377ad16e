"""Mount the portal on the app: its routes, static files, and its own error pages.

The portal answers in HTML (French), never with an OperationOutcome: its errors
are pages a patient reads. What the API refused is shown with the API's reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from service.portal.errors import Refusal
from service.portal.routes import router
from service.portal.session import NotLoggedIn, register_client
from service.portal.web import CsrfRefused, clear_session_cookie, render
from service.settings import Settings
from storage.db import Database

_TITLES = {403: "Accès refusé", 404: "Introuvable", 409: "Modification en conflit",
           412: "Modifié entre-temps"}


def install_portal(app: FastAPI, settings: Settings) -> None:
    app.state.portal_api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                             base_url=settings.local_url, timeout=60.0)
    app.mount("/portal/static", StaticFiles(directory=Path(__file__).parent / "static"),
              name="portal-static")
    app.include_router(router)

    async def not_logged_in(request: Request, _exc: Exception) -> Response:
        if request.url.path.endswith("/evenements"):
            return Response("login required", status_code=401, media_type="text/plain")
        response = RedirectResponse(f"{settings.portal_url}/", status_code=303)
        clear_session_cookie(response, settings)
        return response

    async def csrf_refused(request: Request, _exc: Exception) -> Response:
        return render(request, "error.html", status_code=403, title="Formulaire refusé",
                      message="Ce formulaire a expiré ou ne vient pas de cette page. "
                              "Rechargez la page et recommencez.")

    async def api_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        if exc.status == 401:
            return await not_logged_in(request, exc)
        status = exc.status if 400 <= exc.status < 600 else 502
        return render(request, "error.html", status_code=status,
                      title=_TITLES.get(status, "Demande refusée"), message=exc.message,
                      detail=exc.detail)

    app.add_exception_handler(NotLoggedIn, not_logged_in)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    app.add_exception_handler(Refusal, api_refused)


@asynccontextmanager
async def running_portal(app: FastAPI, settings: Settings,
                         database: Database) -> AsyncIterator[None]:
    """At start, register the portal as a client in the database the embedded provider (or
    a ``carnet idp`` sharing it) reads (any other issuer registers it on its own side); at
    stop, close its in-process API client."""
    if settings.portal_enabled:
        await register_client(database, settings)
    try:
        yield
    finally:
        client: httpx.AsyncClient | None = getattr(app.state, "portal_api", None)
        if client is not None:
            await client.aclose()
