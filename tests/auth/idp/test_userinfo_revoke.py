"""The userinfo endpoint and refresh-token revocation (RFC 7009)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from sqlalchemy import delete, select

from storage.db import Database
from storage.directory import PROFESSIONALS
from storage.oauth import (
    REVOKED_ACCESS_TOKENS,
    OAuthClient,
    access_token_revoked,
    revoke_access_token,
)
from tests.auth.idp.conftest import OTHER_AUTH
from tests.auth.idp.flow import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEMO_AUTH,
    DOCTOR,
    ISSUER,
    PATIENT,
    error_of,
    refresh,
    token_request,
    tokens_for,
)
from tests.tokens import Tokens, bearer


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_userinfo_returns_the_professional_claims(anonymous: httpx.AsyncClient,
                                                        method: str) -> None:
    body = await tokens_for(anonymous, DOCTOR, "openid scope_all")
    response = await anonymous.request(method, "/idp/userinfo",
                                       headers=bearer(body["access_token"]))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    info = response.json()
    assert info["sub"] == "810000000001"
    assert info["SubjectNameID"] == "810000000001"
    assert info["family_name"] == "MARTIN"
    assert info["given_name"] == "Claire"
    assert info["SubjectRefPro"]["exercices"][0]["codeProfession"] == "10"
    assert "ins" not in info


async def test_userinfo_returns_the_patient_claims(anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, PATIENT, "openid patient/*.rs")
    response = await anonymous.get("/idp/userinfo", headers=bearer(body["access_token"]))
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["ins"]["value"] == "253072A07300443"
    assert info["family_name"] == "CORSE"
    assert "SubjectNameID" not in info


async def test_userinfo_for_an_app_token_names_only_the_client(
        anonymous: httpx.AsyncClient) -> None:
    app = await token_request(anonymous, {"grant_type": "client_credentials"}, DEMO_AUTH)
    response = await anonymous.get("/idp/userinfo",
                                   headers=bearer(app.json()["access_token"]))
    assert response.status_code == 200
    assert response.json() == {"sub": CLIENT_ID}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer"},
                                     {"Authorization": "Basic ZGVtby1hcHA6eA=="},
                                     {"Authorization": "Bearer not.a.jwt"}],
                         ids=["none", "empty-bearer", "basic", "garbage"])
async def test_userinfo_without_a_valid_bearer_token_is_a_401_invalid_token(
        anonymous: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert_invalid_token(await anonymous.get("/idp/userinfo", headers=headers))


async def test_userinfo_refuses_an_id_token(anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR, "openid scope_all")
    assert_invalid_token(await anonymous.get("/idp/userinfo", headers=bearer(body["id_token"])))


async def test_userinfo_refuses_a_token_with_a_tampered_signature(
        anonymous: httpx.AsyncClient) -> None:
    access = (await tokens_for(anonymous, DOCTOR))["access_token"]
    head, payload, signature = access.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_invalid_token(await anonymous.get(
        "/idp/userinfo", headers=bearer(f"{head}.{payload}.{flipped}")))


async def test_userinfo_refuses_an_expired_token(anonymous: httpx.AsyncClient,
                                                 tokens: Tokens) -> None:
    now = int(time.time())
    expired = tokens.signed({"iss": ISSUER, "aud": "carnet", "sub": "810000000001",
                             "SubjectNameID": "810000000001", "iat": now - 7200,
                             "nbf": now - 7200, "exp": now - 3600, "jti": str(uuid.uuid4()),
                             "scope": "openid scope_all"})
    assert_invalid_token(await anonymous.get("/idp/userinfo", headers=bearer(expired)))


async def test_userinfo_for_a_user_gone_from_the_directory_is_a_401_with_a_challenge(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    body = await tokens_for(anonymous, DOCTOR, "openid scope_all")
    async with database.write() as conn:
        await conn.execute(delete(PROFESSIONALS).where(PROFESSIONALS.c.rpps == "10000000001"))
    assert_invalid_token(await anonymous.get("/idp/userinfo",
                                             headers=bearer(body["access_token"])))


async def test_a_revoked_refresh_token_can_no_longer_be_used(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR)
    response = await anonymous.post("/idp/revoke", data={"token": body["refresh_token"]},
                                    auth=DEMO_AUTH)
    assert response.status_code == 200
    refused = await refresh(anonymous, body["refresh_token"])
    assert refused.status_code == 400
    assert error_of(refused) == "invalid_grant"


async def test_revoking_a_rotated_refresh_token_revokes_its_successor(
        anonymous: httpx.AsyncClient) -> None:
    first = await tokens_for(anonymous, DOCTOR)
    second = (await refresh(anonymous, first["refresh_token"])).json()
    revoked = await anonymous.post("/idp/revoke", data={
        "token": first["refresh_token"], "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET})
    assert revoked.status_code == 200
    assert (await refresh(anonymous, second["refresh_token"])).status_code == 400


async def test_another_client_cannot_revoke_a_refresh_token(
        anonymous: httpx.AsyncClient, other_client: OAuthClient) -> None:
    body = await tokens_for(anonymous, DOCTOR)
    response = await anonymous.post("/idp/revoke", data={"token": body["refresh_token"]},
                                    auth=OTHER_AUTH)
    assert response.status_code == 200  # RFC 7009: no hint whether the token existed
    assert (await refresh(anonymous, body["refresh_token"])).status_code == 200


async def test_revoking_an_unknown_token_succeeds_quietly(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.post("/idp/revoke", data={"token": "never-issued"},
                                    auth=DEMO_AUTH)
    assert response.status_code == 200


async def test_revocation_needs_the_client_to_authenticate(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR)
    response = await anonymous.post("/idp/revoke", data={"token": body["refresh_token"]},
                                    auth=(CLIENT_ID, "wrong"))
    assert response.status_code == 401
    assert error_of(response) == "invalid_client"
    assert (await refresh(anonymous, body["refresh_token"])).status_code == 200


async def test_a_revoked_access_token_is_refused_at_once_by_the_api(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    body = await tokens_for(anonymous, DOCTOR)
    token = body["access_token"]
    assert (await anonymous.get("/fhir/metadata")).status_code == 200
    before = await anonymous.get("/fhir/Patient", headers=bearer(token))
    assert before.status_code == 200  # verified, and remembered by this process
    revoked = await anonymous.post("/idp/revoke", auth=DEMO_AUTH, data={
        "token": token, "token_type_hint": "access_token"})
    assert revoked.status_code == 200
    after = await anonymous.get("/fhir/Patient", headers=bearer(token))
    assert after.status_code == 401
    assert "the token was revoked" in after.headers["www-authenticate"]
    assert_invalid_token(await anonymous.get("/idp/userinfo", headers=bearer(token)))
    async with database.read() as conn:
        assert len((await conn.execute(select(REVOKED_ACCESS_TOKENS))).all()) == 1
    # The refresh token of the same login is not touched by revoking the access token.
    assert (await refresh(anonymous, body["refresh_token"])).status_code == 200


async def test_another_client_cannot_revoke_an_access_token(
        anonymous: httpx.AsyncClient, other_client: OAuthClient, database: Database) -> None:
    token = (await tokens_for(anonymous, DOCTOR))["access_token"]
    response = await anonymous.post("/idp/revoke", data={"token": token}, auth=OTHER_AUTH)
    assert response.status_code == 200  # RFC 7009: no hint whether the token existed
    assert (await anonymous.get("/fhir/Patient", headers=bearer(token))).status_code == 200
    async with database.read() as conn:
        assert (await conn.execute(select(REVOKED_ACCESS_TOKENS))).all() == []


@pytest.mark.parametrize("token", ["a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 5000])
async def test_revoking_a_jwt_that_is_not_ours_succeeds_quietly(
        anonymous: httpx.AsyncClient, database: Database, token: str) -> None:
    response = await anonymous.post("/idp/revoke", data={"token": token}, auth=DEMO_AUTH)
    assert response.status_code == 200
    async with database.read() as conn:
        assert (await conn.execute(select(REVOKED_ACCESS_TOKENS))).all() == []


async def test_revocations_of_expired_tokens_are_pruned(database: Database) -> None:
    now = int(time.time())
    async with database.write() as conn:
        await revoke_access_token(conn, "old", now - 10, now - 100)
        await revoke_access_token(conn, "live", now + 600, now)
        await revoke_access_token(conn, "live", now + 600, now)  # twice: one row
    async with database.read() as conn:
        assert await access_token_revoked(conn, "live")
        assert not await access_token_revoked(conn, "old")
        assert len((await conn.execute(select(REVOKED_ACCESS_TOKENS))).all()) == 1
