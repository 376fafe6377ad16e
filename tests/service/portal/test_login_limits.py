"""The portal's login start is rate limited per address; a completed login does not count,
and a throttled token endpoint never logs a patient out."""

from __future__ import annotations

import httpx
import pytest

from auth.bearer import Authenticator
from service.app import token_verifier
from service.portal.session import IssuerUnavailable, PortalAuth
from service.settings import Settings
from storage.db import Database
from tests.reliability import figures
from tests.service.portal.conftest import Record, log_in
from tests.tokens import PATIENT

LIMIT = 2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rate_limit_login": LIMIT})


async def test_logins_started_and_left_unfinished_past_the_limit_get_a_429_page(
        portal_http: httpx.AsyncClient, record: Record) -> None:
    for _ in range(LIMIT + 1):  # a completed login gives its slot back
        landed = await log_in(portal_http, f"ins:{PATIENT.nir}")
        assert landed.status_code == 303, landed.text
        assert landed.headers["location"].endswith("/portal/documents")
    for _ in range(LIMIT):
        assert (await portal_http.get("/portal/connexion")).status_code == 303
    refused = await portal_http.get("/portal/connexion")
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/html")
    assert "Trop de connexions commencées" in refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # The portal's own headers, not the API's.
    assert refused.headers["referrer-policy"] == "same-origin"
    assert "frame-ancestors" in refused.headers["content-security-policy"]
    figures.add("access.rate_limited_requests")


@pytest.mark.parametrize("session_database", ["sqlite"], indirect=True)  # no SQL involved
async def test_a_throttled_token_endpoint_is_a_pause_not_a_refusal(
        settings: Settings, database: Database) -> None:
    """A 429 on a refresh must not end the patient's session as a refused token would."""
    def issuer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"error": "slow_down"}, headers={"Retry-After": "7"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(issuer)) as issuer_client:
        auth = PortalAuth(database, settings, issuer_client, issuer_client,
                          Authenticator(token_verifier(settings, issuer_client), ttl=0))
        with pytest.raises(IssuerUnavailable):
            await auth._token_request({"grant_type": "refresh_token", "refresh_token": "r"})
