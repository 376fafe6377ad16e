"""The client credentials grant: an application acting on its own, with system/ scopes."""

from __future__ import annotations

import httpx
import pytest

from storage.db import Database
from storage.oauth import OAuthClient, put_client, secret_hash
from tests.auth.idp.flow import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEMO_AUTH,
    error_of,
    token_request,
    verified,
)
from tests.tokens import bearer

DEMO_SYSTEM_SCOPES = {"system/Binary.cr", "system/DocumentReference.crus",
                      "system/List.crus", "system/Observation.crus",
                      "system/Organization.rs", "system/Patient.crus",
                      "system/Practitioner.rs", "system/Subscription.cruds",
                      "system/Communication.rs"}


async def test_a_client_authenticated_with_basic_auth_gets_an_app_token(
        anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {"grant_type": "client_credentials",
                                               "scope": "system/Patient.rs"}, DEMO_AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "system/Patient.rs"
    assert "refresh_token" not in body
    assert "id_token" not in body
    claims = await verified(anonymous, body["access_token"])
    assert claims["sub"] == CLIENT_ID
    assert claims["client_id"] == CLIENT_ID
    assert claims["scope"] == "system/Patient.rs"
    assert "SubjectNameID" not in claims
    assert "ins" not in claims


async def test_a_client_authenticated_with_client_secret_post_gets_an_app_token(
        anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {
        "grant_type": "client_credentials", "scope": "system/Patient.rs",
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, auth=None)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.rs"


async def test_the_granted_scope_is_system_only_and_narrowed_to_the_registration(
        anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {
        "grant_type": "client_credentials",
        "scope": "openid scope_all system/*.cruds user/*.cruds patient/*.rs"}, DEMO_AUTH)
    assert response.status_code == 200, response.text
    granted = set(response.json()["scope"].split())
    assert granted == DEMO_SYSTEM_SCOPES
    claims = await verified(anonymous, response.json()["access_token"])
    assert set(claims["scope"].split()) == DEMO_SYSTEM_SCOPES


async def test_without_a_scope_the_client_gets_every_system_scope_it_is_registered_for(
        anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {"grant_type": "client_credentials"}, DEMO_AUTH)
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == DEMO_SYSTEM_SCOPES


@pytest.mark.parametrize("scope", ["system/Condition.rs", "user/*.rs patient/*.rs openid",
                                   "system/Binary.d"])
async def test_asking_only_for_scopes_the_client_may_not_have_is_invalid_scope(
        anonymous: httpx.AsyncClient, scope: str) -> None:
    response = await token_request(anonymous, {"grant_type": "client_credentials",
                                               "scope": scope}, DEMO_AUTH)
    assert response.status_code == 400
    assert error_of(response) == "invalid_scope"


async def test_a_malformed_scope_is_invalid_scope(anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {"grant_type": "client_credentials",
                                               "scope": "system/Patient.xyz"}, DEMO_AUTH)
    assert response.status_code == 400
    assert error_of(response) == "invalid_scope"


async def test_a_public_client_may_not_use_client_credentials(
        anonymous: httpx.AsyncClient, public_client: OAuthClient) -> None:
    assert "client_credentials" in public_client.grant_types
    response = await token_request(anonymous, {"grant_type": "client_credentials",
                                               "client_id": public_client.client_id,
                                               "scope": "system/*.rs"}, auth=None)
    assert response.status_code == 400
    assert error_of(response) == "unauthorized_client"


async def test_a_client_without_the_grant_in_its_registration_is_unauthorized_client(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    async with database.write() as conn:
        await put_client(conn, OAuthClient("web-only", "Web", secret_hash("s"),
                                           ("http://127.0.0.1:1/cb",), "system/*.rs",
                                           ("authorization_code",)))
    response = await token_request(anonymous, {"grant_type": "client_credentials"},
                                   ("web-only", "s"))
    assert response.status_code == 400
    assert error_of(response) == "unauthorized_client"


async def test_a_wrong_secret_gets_no_app_token(anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {"grant_type": "client_credentials"},
                                   (CLIENT_ID, "nope"))
    assert response.status_code == 401
    assert error_of(response) == "invalid_client"
    assert "www-authenticate" in response.headers


async def test_an_app_token_reads_the_fhir_api(anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {"grant_type": "client_credentials",
                                               "scope": "system/Patient.rs"}, DEMO_AUTH)
    fhir = await anonymous.get("/fhir/Patient", headers=bearer(response.json()["access_token"]))
    assert fhir.status_code == 200, fhir.text
