"""OIDC discovery and the published key set."""

from __future__ import annotations

import httpx
import pytest
from jose import JWTError, jwt

from tests.auth.idp.flow import DEMO_AUTH, ISSUER, token_request, verified


async def test_discovery_names_the_issuer_and_every_endpoint_under_it(
        anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/idp/.well-known/openid-configuration")
    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == ISSUER
    assert doc["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert doc["token_endpoint"] == f"{ISSUER}/token"
    assert doc["userinfo_endpoint"] == f"{ISSUER}/userinfo"
    assert doc["jwks_uri"] == f"{ISSUER}/jwks"
    assert doc["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert doc["authorization_response_iss_parameter_supported"] is True


async def test_discovery_offers_the_code_flow_with_s256_pkce_only(
        anonymous: httpx.AsyncClient) -> None:
    doc = (await anonymous.get("/idp/.well-known/openid-configuration")).json()
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert sorted(doc["grant_types_supported"]) == ["authorization_code", "client_credentials",
                                                    "refresh_token"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "scope_all" in doc["scopes_supported"]


async def test_the_jwks_publishes_public_rsa_keys_only(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/idp/jwks")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "RSA"
        assert {"kid", "n", "e"} <= key.keys()
        assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()


async def test_a_key_from_the_jwks_verifies_a_token_from_the_token_endpoint(
        anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {"grant_type": "client_credentials"}, DEMO_AUTH)
    assert response.status_code == 200, response.text
    access = response.json()["access_token"]
    claims = await verified(anonymous, access)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == "carnet"
    assert claims["sub"] == "demo-app"


async def test_a_token_altered_after_signing_fails_the_jwks_check(
        anonymous: httpx.AsyncClient) -> None:
    response = await token_request(anonymous, {"grant_type": "client_credentials"}, DEMO_AUTH)
    header, payload, signature = response.json()["access_token"].split(".")
    forged_payload = jwt.encode({**jwt.get_unverified_claims(response.json()["access_token"]),
                                 "scope": "system/*.cruds"}, "x", algorithm="HS256").split(".")[1]
    assert forged_payload != payload
    with pytest.raises(JWTError):
        await verified(anonymous, f"{header}.{forged_payload}.{signature}")
