"""Rate limits at the provider: failed client authentications per client and address at the
token endpoint, refused logins per address; what succeeds is never counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from storage.db import Database
from tests.auth.idp.flow import DEMO_AUTH, DOCTOR, error_of, log_in, redeem, token_request
from tests.forms import login_form, pkce
from tests.reliability import figures

LIMIT = 3
WRONG = ("demo-app", "not-the-secret")
APP_TOKEN = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.model_copy(update={"rate_limit_token": LIMIT, "rate_limit_login": LIMIT})


@pytest.fixture
async def app(limited: Settings, database: Database) -> FastAPI:
    return create_app(limited, database)


def caller(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client on ``address``, as the ASGI server reports it (the address the limit keys)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)),
                             base_url="http://127.0.0.1:8000")


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with caller(app, "203.0.113.7") as client:
        yield client


def assert_throttled_token_answer(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert error_of(response) == "slow_down"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["cache-control"] == "no-store"
    figures.add("access.rate_limited_requests")


async def test_a_client_failing_its_authentication_past_the_limit_is_refused_even_with_the_secret(
        app: FastAPI, http: httpx.AsyncClient, limited: Settings, database: Database) -> None:
    """Counted in the database: a second app on it (another API worker, or ``carnet idp``
    beside them) sees the first one's failures."""
    async with caller(create_app(limited, database), "203.0.113.7") as other_process:
        for client in (http, other_process, http):
            failed = await token_request(client, APP_TOKEN, WRONG)
            assert failed.status_code == 401 and error_of(failed) == "invalid_client"
        assert_throttled_token_answer(await token_request(other_process, APP_TOKEN, DEMO_AUTH))
    assert_throttled_token_answer(await token_request(http, APP_TOKEN, DEMO_AUTH))
    async with caller(app, "198.51.100.20") as elsewhere:  # the same client from elsewhere
        assert (await token_request(elsewhere, APP_TOKEN, DEMO_AUTH)).status_code == 200


async def test_a_client_whose_requests_succeed_or_fail_on_a_grant_is_never_throttled(
        http: httpx.AsyncClient) -> None:
    """The portal's back channel carries every patient's login from one address; codes and
    refresh tokens are random: only a wrong client secret is worth counting."""
    for _ in range(LIMIT + 2):
        assert (await token_request(http, APP_TOKEN, DEMO_AUTH)).status_code == 200
        bad_code = await token_request(http, {"grant_type": "authorization_code",
                                              "code": "guessed", "redirect_uri": "x",
                                              "code_verifier": "v" * 43}, DEMO_AUTH)
        assert bad_code.status_code == 400 and error_of(bad_code) == "invalid_grant"


async def test_refused_logins_past_the_limit_get_429_for_that_address_only(
        app: FastAPI, http: httpx.AsyncClient) -> None:
    for _ in range(LIMIT + 1):  # logins that succeed do not count
        landed = await log_in(http, DOCTOR)
        assert (await redeem(http, landed)).status_code == 200
    _, challenge = pkce()
    params = {"response_type": "code", "client_id": "demo-app", "scope": "openid scope_all",
              "redirect_uri": "http://127.0.0.1:8765/callback", "code_challenge": challenge,
              "code_challenge_method": "S256"}
    page = await http.get("/idp/authorize", params=params)
    form = login_form(page.text, DOCTOR)
    for _ in range(LIMIT):
        forged = await http.post("/idp/authorize", data={**form, "csrf": "forged"})
        assert forged.status_code == 403
    refused = await http.post("/idp/authorize", data=form)  # the genuine form, now too late
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/html")
    assert "too many refused logins" in refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    figures.add("access.rate_limited_requests")
    async with caller(app, "198.51.100.20") as elsewhere:
        landed = await log_in(elsewhere, DOCTOR)
        assert (await redeem(elsewhere, landed)).status_code == 200
