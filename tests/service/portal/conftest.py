"""The portal as a browser without JavaScript uses it: cookies, redirects, forms.

``portal`` is Marie CORSE (the access tests' ``record``) logged in through the
embedded identity provider, with the code flow the portal starts itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.portal.session import register_client
from service.settings import Settings
from storage.db import Database
from tests.forms import form_to, login_form
from tests.service.access.conftest import (  # noqa: F401 - fixtures used by the portal tests
    Record,
    as_patient,
    record,
)
from tests.tokens import PATIENT


@dataclass
class PortalBrowser:
    http: httpx.AsyncClient
    csrf: str

    async def page(self, path: str) -> httpx.Response:
        response = await self.http.get(f"/portal{path}")
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return response

    async def submit(self, path: str, fields: dict[str, str]) -> httpx.Response:
        """Post a form with this session's CSRF token, as the page's own form does."""
        return await self.http.post(f"/portal{path}", data={"csrf": self.csrf, **fields})


async def log_in(http: httpx.AsyncClient, subject: str) -> httpx.Response:
    """Click « Se connecter », pick ``subject`` at the provider, follow back to the portal."""
    started = await http.get("/portal/connexion")
    assert started.status_code == 303, started.text
    login_page = await http.get(started.headers["location"])
    assert login_page.status_code == 200, login_page.text
    chosen = await http.post("/idp/authorize", data=login_form(login_page.text, subject))
    assert chosen.status_code == 303, chosen.text
    return await http.get(chosen.headers["location"])


@pytest.fixture
async def portal_app(settings: Settings, database: Database) -> FastAPI:
    app = create_app(settings, database)
    await register_client(database, settings)  # what the app's start-up does
    return app


@pytest.fixture
async def portal_http(portal_app: FastAPI,
                      settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A browser's cookie jar on the portal's own address (no one logged in yet)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=portal_app),
                                 base_url=settings.local_url) as http:
        yield http


@pytest.fixture
async def portal(portal_http: httpx.AsyncClient, record: Record) -> PortalBrowser:  # noqa: F811
    """Marie CORSE, logged in, on « Mes documents »."""
    landed = await log_in(portal_http, f"ins:{PATIENT.nir}")
    assert landed.status_code == 303, landed.text
    documents = await portal_http.get(landed.headers["location"])
    assert documents.status_code == 200, documents.text
    return PortalBrowser(portal_http, form_to(documents.text, "/deconnexion")["csrf"])
