"""Refresh tokens: rotation, replay detection, narrowing, binding to the client."""

from __future__ import annotations

import time

import httpx
import pytest

from storage.db import Database
from storage.oauth import Grant, OAuthClient, store_refresh_token
from tests.auth.idp.conftest import OTHER_AUTH
from tests.auth.idp.flow import (
    CLIENT_ID,
    DOCTOR,
    PATIENT,
    error_of,
    refresh,
    tokens_for,
    verified,
)


async def test_a_refresh_gives_a_new_access_token_and_a_new_refresh_token(
        anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, DOCTOR, "openid scope_all offline_access")
    response = await refresh(anonymous, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"]
    claims = await verified(anonymous, second["access_token"])
    assert claims["SubjectNameID"] == "810000000001"
    assert set(claims["scope"].split()) == {"openid", "offline_access", "scope_all"}


async def test_a_rotated_refresh_token_no_longer_works(anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, DOCTOR)
    assert (await refresh(anonymous, first["refresh_token"])).status_code == 200
    again = await refresh(anonymous, first["refresh_token"])
    assert again.status_code == 400
    assert error_of(again) == "invalid_grant"


async def test_replaying_a_used_refresh_token_revokes_the_newest_one_too(
        anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, DOCTOR)
    second = (await refresh(anonymous, first["refresh_token"])).json()
    third = (await refresh(anonymous, second["refresh_token"])).json()
    replay = await refresh(anonymous, first["refresh_token"])
    assert replay.status_code == 400
    assert error_of(replay) == "invalid_grant"
    newest = await refresh(anonymous, third["refresh_token"])
    assert newest.status_code == 400
    assert error_of(newest) == "invalid_grant"


async def test_a_replay_revokes_only_its_own_login(anonymous: httpx.AsyncClient) -> None:
    stolen = await tokens_for(anonymous, DOCTOR)
    other_login = await tokens_for(anonymous, DOCTOR)
    await refresh(anonymous, stolen["refresh_token"])
    assert (await refresh(anonymous, stolen["refresh_token"])).status_code == 400
    assert (await refresh(anonymous, other_login["refresh_token"])).status_code == 200


async def test_a_refresh_may_narrow_the_scope(anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, DOCTOR, "openid scope_all user/*.rs")
    response = await refresh(anonymous, first["refresh_token"], scope="user/Patient.r")
    assert response.status_code == 200, response.text
    narrowed = response.json()
    assert narrowed["scope"] == "user/Patient.r"
    claims = await verified(anonymous, narrowed["access_token"])
    assert claims["scope"] == "user/Patient.r"
    # the narrowed grant is what the next refresh carries on
    following = await refresh(anonymous, narrowed["refresh_token"])
    assert following.json()["scope"] == "user/Patient.r"


async def test_a_refresh_cannot_widen_the_scope(anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, DOCTOR, "openid user/*.rs")
    response = await refresh(anonymous, first["refresh_token"],
                             scope="openid scope_all user/*.cruds")
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"openid", "user/*.rs"}


async def test_a_patient_refresh_cannot_gain_user_scopes(anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, PATIENT, "openid patient/*.rs")
    response = await refresh(anonymous, first["refresh_token"],
                             scope="patient/*.rs user/*.rs")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "patient/*.rs"
    claims = await verified(anonymous, response.json()["access_token"])
    assert claims["ins"]["value"] == "253072A07300443"


async def test_a_refresh_token_of_another_client_is_refused(
        anonymous: httpx.AsyncClient, other_client: OAuthClient) -> None:
    first = await tokens_for(anonymous, DOCTOR)
    response = await refresh(anonymous, first["refresh_token"], auth=OTHER_AUTH)
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"
    assert "access_token" not in response.json()


async def test_an_unknown_refresh_token_is_an_invalid_grant(
        anonymous: httpx.AsyncClient) -> None:
    response = await refresh(anonymous, "never-issued")
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"


async def test_a_refresh_asking_only_for_scopes_never_granted_is_invalid_scope(
        anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, DOCTOR, "openid user/*.rs")
    response = await refresh(anonymous, first["refresh_token"], scope="patient/*.rs")
    assert response.status_code == 400
    assert error_of(response) == "invalid_scope"
    assert "access_token" not in response.json()


async def test_a_malformed_scope_on_refresh_is_invalid_scope_and_leaves_the_token_usable(
        anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, DOCTOR, "openid user/*.rs")
    response = await refresh(anonymous, first["refresh_token"], scope="user/Patient.xyz")
    assert response.status_code == 400
    assert error_of(response) == "invalid_scope"
    assert (await refresh(anonymous, first["refresh_token"])).status_code == 200


@pytest.mark.parametrize(("seconds_left", "status"), [(-1, 400), (600, 200)])
async def test_a_refresh_token_past_its_expiry_is_an_invalid_grant(
        anonymous: httpx.AsyncClient, database: Database, seconds_left: int,
        status: int) -> None:
    async with database.write() as conn:
        await store_refresh_token(conn, "stored-refresh", Grant(
            CLIENT_ID, DOCTOR, "openid user/*.rs", family="f-1"),
            (int(time.time()) + seconds_left) * 1_000_000)
    response = await refresh(anonymous, "stored-refresh")
    assert response.status_code == status, response.text
    if status == 400:
        assert error_of(response) == "invalid_grant"
