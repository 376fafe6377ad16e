"""What a patient's credentials are worth once they have logged out of the portal.

- The session cookie: the session row is gone, so the old cookie, replayed, is sent to the
  login, and the forms it posts (with the old CSRF token) change nothing.
- The refresh token: revoked at the provider at logout, so the token endpoint answers
  ``invalid_grant`` to whoever replays it.
- The access token (a JWT): **it stays valid until its ``exp``** (``CARNET_ACCESS_TOKEN_TTL``,
  900 s by default). Carnet verifies access tokens by signature and claims only; nothing
  revokes one (``/idp/revoke`` takes refresh tokens, RFC 7009, and answers 200 to anything
  else), and each API process may also remember a verified token for
  ``CARNET_TOKEN_CACHE_SECONDS``, never past its ``exp``. The token never reaches the
  browser (it stays in the session row, server-side), which bounds who could replay it; the
  test below pins both halves: it still reads right after logout, and the same token once
  expired is refused. A known limit, stated in the report of issue 11.
"""

from __future__ import annotations

import time

import httpx
from fastapi import FastAPI
from jose import jwt
from sqlalchemy import select

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

    # The access token: nothing revokes it, not even asking the revocation endpoint...
    asked = await anonymous.post("/idp/revoke", data={"token": access_token,
                                                      "client_id": "carnet-portal"})
    assert asked.status_code == 200
    still = await anonymous.get("/fhir/DocumentReference", params=documents,
                                headers=bearer(access_token))
    assert still.status_code == 200  # the known limit: valid until exp
    # ...but it is bounded: the same token once its exp (plus the leeway) has passed.
    claims = jwt.get_unverified_claims(access_token)
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl
    expired = tokens.signed({**claims, "exp": int(time.time()) - settings.token_leeway - 5})
    refused = await anonymous.get("/fhir/DocumentReference", params=documents,
                                  headers=bearer(expired))
    assert refused.status_code == 401
    assert "token expired" in refused.headers["www-authenticate"]
    figures.add("access.logout_replays_refused", 3)  # cookie (page, form), refresh token
