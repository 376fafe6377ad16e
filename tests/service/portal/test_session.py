"""The portal's login and session: code flow + PKCE, cookie, refresh, logout, fixation."""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from auth.bearer import Authenticator
from service.app import token_verifier
from service.portal.session import COOKIE, PortalAuth
from service.settings import Settings
from storage import directory
from storage.db import Database
from storage.oauth import REFRESH_TOKENS
from storage.portal import SESSIONS
from tests.service.access.conftest import Record
from tests.service.portal.conftest import PortalBrowser, log_in
from tests.tokens import DOCTOR, PATIENT


async def _sessions(database: Database) -> list[dict[str, object]]:
    """The logged-in sessions (a login started and not finished leaves a pending row)."""
    async with database.read() as conn:
        return [dict(row._mapping) for row in await conn.execute(
            select(SESSIONS).where(SESSIONS.c.access_token.is_not(None)))]


def _cookie(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar


async def test_login_sets_a_strict_cookie_and_keeps_tokens_server_side(
        portal_http: httpx.AsyncClient, record: Record, database: Database) -> None:
    started = await portal_http.get("/portal/connexion")
    location = started.headers["location"]
    assert "code_challenge_method=S256" in location and "client_id=carnet-portal" in location
    pending = _cookie(started)[COOKIE]
    assert pending["httponly"] and pending["samesite"] == "lax"
    assert pending["path"] == "/portal" and not pending["secure"]  # http: no Secure flag
    landed = await log_in(portal_http, f"ins:{PATIENT.nir}")
    assert landed.status_code == 303 and landed.headers["location"].endswith("/documents")
    key = _cookie(landed)[COOKIE].value
    assert key != pending.value  # a new key at login: a planted one opens nothing
    (row,) = await _sessions(database)
    assert row["access_token"] and row["refresh_token"]
    assert key not in str(row.values())  # only its hash is stored
    page = await portal_http.get("/portal/documents")
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert row["access_token"] not in page.text  # the token never reaches the browser


async def test_the_cookie_is_secure_behind_https(settings: Settings, database: Database,
                                                 record: Record) -> None:
    from service.app import create_app
    from service.portal.session import register_client

    secure = settings.model_copy(update={"public_url": "https://carnet.example.fr"})
    app = create_app(secure, database)
    await register_client(database, secure)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://carnet.example.fr") as http:
        started = await http.get("/portal/connexion")
    assert _cookie(started)[COOKIE]["secure"]
    assert started.headers["location"].startswith("https://carnet.example.fr/idp/authorize")


async def test_a_key_planted_before_login_opens_nothing(
        portal_http: httpx.AsyncClient, record: Record) -> None:
    started = await portal_http.get("/portal/connexion")
    planted = _cookie(started)[COOKIE].value
    await log_in(portal_http, f"ins:{PATIENT.nir}")
    portal_http.cookies.clear()
    portal_http.cookies.set(COOKIE, planted, path="/portal")
    assert (await portal_http.get("/portal/documents")).status_code == 303


async def test_a_callback_without_its_login_is_refused(
        portal_http: httpx.AsyncClient, record: Record, database: Database) -> None:
    forged = await portal_http.get("/portal/callback", params={"code": "x", "state": "y"})
    assert forged.status_code == 400
    assert "Connexion impossible" in forged.text
    await portal_http.get("/portal/connexion")
    wrong_state = await portal_http.get("/portal/callback", params={"code": "x", "state": "y"})
    assert wrong_state.status_code == 400
    assert await _sessions(database) == []


async def test_a_professional_cannot_use_the_patient_portal(
        portal_http: httpx.AsyncClient, record: Record, database: Database) -> None:
    async with database.write() as conn:  # the provider lists the directory's professionals
        await directory.put_professional(conn, DOCTOR)
    landed = await log_in(portal_http, f"ps:{DOCTOR.rpps}")
    assert landed.status_code == 400
    assert "réservé aux patients" in landed.text
    assert await _sessions(database) == []


async def test_logout_ends_the_session_and_revokes_its_refresh_token(
        portal: PortalBrowser, database: Database) -> None:
    (row,) = await _sessions(database)
    out = await portal.submit("/deconnexion", {})
    assert out.status_code == 303
    assert (await portal.http.get("/portal/documents")).status_code == 303
    assert await _sessions(database) == []
    async with database.read() as conn:
        revoked = (await conn.execute(select(REFRESH_TOKENS.c.revoked))).scalars().all()
    assert revoked and all(revoked)
    del row


async def test_logout_needs_the_csrf_token(portal: PortalBrowser) -> None:
    refused = await portal.http.post("/portal/deconnexion", data={"csrf": "nope"})
    assert refused.status_code == 403
    assert (await portal.http.get("/portal/documents")).status_code == 200


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Access tokens of 30 s: each page refreshes them (within the 60 s margin)."""
    return settings.model_copy(update={"access_token_ttl": 30})


async def test_tokens_are_refreshed_once_even_by_concurrent_pages(
        portal: PortalBrowser, database: Database) -> None:
    (before,) = await _sessions(database)
    pages = await asyncio.gather(*(portal.http.get("/portal/documents") for _ in range(6)))
    assert [p.status_code for p in pages] == [200] * 6
    (after,) = await _sessions(database)
    assert after["access_token"] != before["access_token"]
    async with database.read() as conn:
        tokens = (await conn.execute(select(REFRESH_TOKENS.c.revoked))).scalars().all()
    assert not any(tokens)  # no refresh token was spent twice (that revokes the family)
    assert (await portal.http.get("/portal/documents")).status_code == 200


async def test_an_unreachable_issuer_does_not_log_the_patient_out(
        portal: PortalBrowser, portal_app: FastAPI, database: Database) -> None:
    """The refresh fails for now: the still-valid token serves, the session stays."""
    def refuse(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("issuer down")

    working = portal_app.state.issuer_client
    portal_app.state.issuer_client = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    try:
        assert (await portal.http.get("/portal/documents")).status_code == 200
    finally:
        portal_app.state.issuer_client = working
    assert len(await _sessions(database)) == 1
    assert (await portal.http.get("/portal/documents")).status_code == 200


async def test_a_revoked_refresh_token_ends_the_session(portal: PortalBrowser,
                                                        database: Database) -> None:
    async with database.write() as conn:
        await conn.execute(update(REFRESH_TOKENS).values(revoked=True))
    answer = await portal.http.get("/portal/documents")
    assert answer.status_code == 303 and answer.headers["location"].endswith("/portal/")
    assert await _sessions(database) == []


async def test_login_starts_on_the_address_the_provider_returns_to(
        portal_app: FastAPI) -> None:
    """Opened as localhost, the login moves to 127.0.0.1 (CARNET_PUBLIC_URL or host:port)
    first: its cookie must be where the callback lands."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=portal_app),
                                 base_url="http://localhost:8000") as http:
        moved = await http.get("/portal/connexion")
    assert moved.status_code == 307
    assert moved.headers["location"] == "http://127.0.0.1:8000/portal/connexion"
    assert "set-cookie" not in moved.headers


async def test_the_browser_goes_to_the_public_issuer_the_portal_calls_the_internal_one(
        settings: Settings, database: Database) -> None:
    """In a container network the issuer has two addresses: the browser's, which the
    tokens' iss names, and the one the API process reaches (CARNET_ISSUER_INTERNAL_URL)."""
    split = settings.model_copy(update={"issuer_url": "https://idp.example.fr/idp",
                                        "issuer_internal_url": "http://idp:8000/idp",
                                        "idp_enabled": False})
    called: list[str] = []

    def issuer(request: httpx.Request) -> httpx.Response:
        called.append(str(request.url))
        return httpx.Response(400, json={"error": "invalid_grant"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(issuer)) as issuer_client:
        auth = PortalAuth(database, split, issuer_client, issuer_client,
                          Authenticator(token_verifier(split, issuer_client), ttl=0))
        login = await auth.begin_login()
        assert login.location.startswith("https://idp.example.fr/idp/authorize?")
        await auth.logout(None)  # no session: nothing to revoke, nothing called
        assert called == []
        refused = await auth._token_request({"grant_type": "refresh_token",
                                             "refresh_token": "r"})
    assert refused is None
    assert called == ["http://idp:8000/idp/token"]
