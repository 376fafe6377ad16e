"""The token endpoint redeeming authorization codes, and its errors."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from storage.db import Database
from storage.oauth import Grant, OAuthClient, store_code
from tests.auth.idp.conftest import OTHER_AUTH
from tests.auth.idp.flow import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEMO_AUTH,
    DOCTOR,
    REDIRECT_URI,
    error_of,
    log_in,
    pkce,
    redeem,
    token_request,
)


async def test_a_code_is_redeemed_with_client_secret_post_as_well_as_basic(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    response = await redeem(anonymous, login, auth=None, client_id=CLIENT_ID,
                            client_secret=CLIENT_SECRET)
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


async def test_token_responses_are_never_cached(anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    success = await redeem(anonymous, login)
    failure = await redeem(anonymous, login)
    for response in (success, failure):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
    assert success.status_code == 200
    assert failure.status_code == 400


async def test_a_wrong_code_verifier_is_an_invalid_grant(anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    other_verifier, _ = pkce()
    response = await redeem(anonymous, login, code_verifier=other_verifier)
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"
    assert "access_token" not in response.json()


async def test_a_missing_code_verifier_is_an_invalid_grant(anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    response = await token_request(anonymous, {"grant_type": "authorization_code",
                                               "code": login.code,
                                               "redirect_uri": REDIRECT_URI})
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"


async def test_a_failed_pkce_check_spends_the_code_so_the_right_verifier_fails_later(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    wrong, _ = pkce()
    assert (await redeem(anonymous, login, code_verifier=wrong)).status_code == 400
    retry = await redeem(anonymous, login)
    assert retry.status_code == 400
    assert error_of(retry) == "invalid_grant"


async def test_a_code_works_once_and_its_second_use_is_an_invalid_grant(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    first = await redeem(anonymous, login)
    assert first.status_code == 200, first.text
    second = await redeem(anonymous, login)
    assert second.status_code == 400
    assert error_of(second) == "invalid_grant"


async def test_a_different_redirect_uri_than_at_authorization_is_an_invalid_grant(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    # registered for the client, but not the one this code was issued for
    response = await redeem(anonymous, login, redirect_uri="http://localhost:8765/callback")
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"


async def test_a_missing_redirect_uri_is_an_invalid_grant(anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    response = await token_request(anonymous, {"grant_type": "authorization_code",
                                               "code": login.code,
                                               "code_verifier": login.verifier})
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"


@pytest.mark.parametrize(("seconds_left", "status"), [(-1, 400), (-3600, 400), (60, 200)])
async def test_a_code_past_its_expiry_is_an_invalid_grant(
        anonymous: httpx.AsyncClient, database: Database, seconds_left: int,
        status: int) -> None:
    verifier, challenge = pkce()
    async with database.write() as conn:
        await store_code(conn, "stored-code", Grant(CLIENT_ID, DOCTOR, "openid scope_all",
                                                    None, REDIRECT_URI, challenge),
                         (int(time.time()) + seconds_left) * 1_000_000)
    response = await token_request(anonymous, {
        "grant_type": "authorization_code", "code": "stored-code",
        "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert response.status_code == status, response.text
    if status == 400:
        assert error_of(response) == "invalid_grant"


async def test_an_unknown_code_is_an_invalid_grant(anonymous: httpx.AsyncClient) -> None:
    verifier, _ = pkce()
    response = await token_request(anonymous, {
        "grant_type": "authorization_code", "code": "never-issued",
        "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"


async def test_a_code_issued_to_another_client_is_an_invalid_grant(
        anonymous: httpx.AsyncClient, other_client: OAuthClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    response = await redeem(anonymous, login, auth=OTHER_AUTH)
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"


@pytest.mark.parametrize("auth", [(CLIENT_ID, "wrong-secret"), (CLIENT_ID, ""),
                                  ("no-such-app", CLIENT_SECRET)],
                         ids=["wrong-secret", "empty-secret", "unknown-client"])
async def test_bad_client_credentials_are_a_401_invalid_client_with_a_challenge(
        anonymous: httpx.AsyncClient, auth: tuple[str, str]) -> None:
    login = await log_in(anonymous, DOCTOR)
    response = await redeem(anonymous, login, auth=auth)
    assert response.status_code == 401
    assert error_of(response) == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert response.headers["cache-control"] == "no-store"


async def test_a_confidential_client_without_its_secret_is_a_401_invalid_client(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    response = await redeem(anonymous, login, auth=None)  # client_id only, in the form
    assert response.status_code == 401
    assert error_of(response) == "invalid_client"


async def test_malformed_basic_credentials_are_a_401_invalid_client(
        anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.post("/idp/token", data={"grant_type": "client_credentials"},
                                    headers={"Authorization": "Basic not*base64"})
    assert response.status_code == 401
    assert error_of(response) == "invalid_client"


async def test_a_client_id_in_the_form_differing_from_basic_auth_is_an_invalid_request(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    response = await redeem(anonymous, login, client_id="other-app")
    assert response.status_code == 400
    assert error_of(response) == "invalid_request"


@pytest.mark.parametrize("grant_type", ["password", "implicit", "", "urn:ietf:params:oauth:"
                                        "grant-type:device_code"])
async def test_an_unknown_grant_type_is_unsupported_grant_type(
        anonymous: httpx.AsyncClient, grant_type: str) -> None:
    response = await token_request(anonymous, {"grant_type": grant_type, "username": "x",
                                               "password": "y"})
    assert response.status_code == 400
    assert error_of(response) == "unsupported_grant_type"


async def test_a_repeated_form_parameter_is_an_invalid_request(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    body = (f"grant_type=authorization_code&code={login.code}&redirect_uri={REDIRECT_URI}"
            f"&code_verifier={login.verifier}&code_verifier={login.verifier}")
    response = await anonymous.post("/idp/token", content=body, auth=DEMO_AUTH, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert error_of(response) == "invalid_request"
    # the refused request did not spend the code
    assert (await redeem(anonymous, login)).status_code == 200


async def test_two_concurrent_redemptions_of_one_code_give_one_token(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR)
    responses = await asyncio.gather(*(redeem(anonymous, login) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [200, 400, 400, 400]
