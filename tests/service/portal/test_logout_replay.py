"""What a patient's credentials are worth once they have logged out of the portal.

- The session cookie: the session row is gone, so the old cookie, replayed, is sent to the
  login, and the forms it posts (with the old CSRF token) change nothing.
- The refresh token: revoked at the provider at logout, so the token endpoint answers
  ``invalid_grant`` to whoever replays it.
- The access token (a JWT): revoked at logout too (RFC 7009 at the provider, by ``jti``, in
  the database every API process reads): the process that revoked it and any process that
  had not remembered it refuse it at once; one that had verified it shortly before may take
  it for the rest of ``CARNET_TOKEN_CACHE_SECONDS`` (60 s by default), never past its
  ``exp`` (``CARNET_ACCESS_TOKEN_TTL``, 900 s), and the token never left the server (it
  lives in the session row) in the first place.
"""

from __future__ import annotations

import time

import httpx
from fastapi import FastAPI
from jose import jwt
from sqlalchemy import select

from service.app import create_app
from service.portal.session import COOKIE
from service.settings import Settings
from storage.db import Database
from storage.portal import SESSIONS
from tests.reliability import figures
from tests.service.access.conftest import Record
from tests.service.access.test_idor import record  # noqa: F401 - the light record fixture
from tests.service.portal.conftest import PortalBrowser
from tests.tokens import Tokens, bearer


async def _logged_in_row(database: Database) -> dict[str, object]:
    async with database.read() as conn:
        (row,) = (await conn.execute(select(SESSIONS).where(
            SESSIONS.c.access_token.is_not(None)))).all()
    return dict(row._mapping)


async def test_credentials_replayed_after_logout(
        portal: PortalBrowser, record: Record, database: Database,  # noqa: F811
        anonymous: httpx.AsyncClient, tokens: Tokens, settings: Settings,
        portal_app: FastAPI) -> None:
    row = await _logged_in_row(database)
    access_token, refresh_token = str(row["access_token"]), str(row["refresh_token"])
    stolen = {"Cookie": f"{COOKIE}={portal.http.cookies[COOKIE]}"}
    documents = {"patient": record.patient_id}
    assert (await anonymous.get("/fhir/DocumentReference", params=documents,
                                headers=bearer(access_token))).status_code == 200

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=portal_app),
                                 base_url=portal.http.base_url) as thief:
        # The copied cookie opens the pages while the session lives...
        assert (await thief.get("/portal/documents", headers=stolen)).status_code == 200
        out = await portal.submit("/deconnexion", {})
        assert out.status_code == 303
        # ...and, replayed after the logout, leads back to the login, and does nothing.
        page = await thief.get("/portal/documents", headers=stolen)
        closed = await thief.post("/portal/confidentialite/dossier", headers=stolen,
                                  data={"fermer": "oui", "csrf": portal.csrf})
    assert page.status_code == 303 and page.headers["location"].endswith("/portal/")
    assert closed.status_code == 303 and closed.headers["location"].endswith("/portal/")
    consents = await anonymous.get("/fhir/Consent", params={"patient": record.patient_id},
                                   headers=bearer(tokens.app()))
    assert consents.json()["total"] == 0  # the record was not closed

    # The refresh token, replayed at the provider.
    replayed = await anonymous.post("/idp/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token,
        "client_id": "carnet-portal"})
    assert replayed.status_code == 400, replayed.text
    assert replayed.json()["error"] == "invalid_grant"
    assert "access_token" not in replayed.text

    # The access token: refused by the portal's process, which revoked it, and by another.
    for api_app in (portal_app, create_app(settings, database)):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app),
                                     base_url="http://carnet.test") as api:
            refused = await api.get("/fhir/DocumentReference", params=documents,
                                    headers=bearer(access_token))
        assert refused.status_code == 401
        assert "revoked" in refused.headers["www-authenticate"]
    # And were it not revoked, it would still be bounded: the token once its exp (plus the
    # leeway) has passed.
    claims = jwt.get_unverified_claims(access_token)
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl
    expired = tokens.signed({**claims, "exp": int(time.time()) - settings.token_leeway - 5})
    refused = await anonymous.get("/fhir/DocumentReference", params=documents,
                                  headers=bearer(expired))
    assert refused.status_code == 401
    assert "token expired" in refused.headers["www-authenticate"]
    figures.add("access.logout_replays_refused", 5)  # cookie (page, form), refresh,
    # access token (here and in another process)
