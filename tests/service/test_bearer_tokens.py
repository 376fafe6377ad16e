"""Bearer tokens at the FHIR API: every interaction needs a good one, over HTTP.

Each refusal is a 401 whose ``WWW-Authenticate`` challenge says ``invalid_token`` and whose
body is an OperationOutcome (code ``login``) that never quotes the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jose import jwt

from auth.bearer import Authenticator
from auth.tokens import JwksCache, TokenVerifier
from service.app import create_app
from service.settings import Settings
from storage.db import Database
from tests.factories import FHIR_JSON, patient
from tests.tokens import Tokens, bearer

# --- helpers -----------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def app_claims(tokens: Tokens, **changes: Any) -> dict[str, Any]:
    """The claims of a good app token, with ``changes`` (None removes a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": tokens.config.issuer, "aud": tokens.config.audience,
                              "sub": "test-app", "client_id": "test-app",
                              "scope": "system/*.cruds", "iat": now, "nbf": now,
                              "exp": now + 300, "jti": str(uuid.uuid4())}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def kid(tokens: Tokens) -> str:
    return tokens.config.keys.signing_key().kid


def assert_refused(response: httpx.Response, token: str | None = None,
                   reason: str | None = None) -> str:
    """A 401 with the Bearer challenge and a ``login`` OperationOutcome; returns diagnostics."""
    assert response.status_code == 401, response.text
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer "), challenge
    assert 'realm="carnet"' in challenge
    assert 'error="invalid_token"' in challenge
    assert "error_description=" in challenge
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "login"
    diagnostics: str = body["issue"][0]["diagnostics"]
    if token:
        assert token not in response.text
        assert token not in challenge
        for part in token.split("."):
            if len(part) > 8:
                assert part not in response.text
    if reason is not None:
        assert reason in diagnostics, diagnostics
        assert reason in challenge, challenge
    return diagnostics


async def read_with(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/fhir/Patient", headers=bearer(token))


@pytest.fixture(scope="module")
def foreign_pem() -> bytes:
    """A private key that is none of ours."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# --- the Authorization header ------------------------------------------------------------------


async def test_no_authorization_header_is_refused(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/fhir/Patient")
    assert_refused(response, reason="no bearer token")


@pytest.mark.parametrize("header", [
    "Basic dGVzdC1hcHA6c2VjcmV0",
    "Bearer",
    "Bearer ",
    "Bearer    ",
    "Token abc.def.ghi",
    "bearer",
])
async def test_an_authorization_header_that_is_no_bearer_token_is_refused(
        anonymous: httpx.AsyncClient, header: str) -> None:
    response = await anonymous.get("/fhir/Patient", headers={"Authorization": header})
    assert_refused(response, reason="Bearer <access token>")


async def test_the_bearer_scheme_is_case_insensitive(anonymous: httpx.AsyncClient,
                                                     tokens: Tokens) -> None:
    response = await anonymous.get("/fhir/Patient",
                                   headers={"Authorization": f"bearer {tokens.app()}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("token", [
    "garbage",
    "not-a-jwt-at-all!",
    "abc.def",
    "a.b.c.d",
    "!!!.???.###",
    "eyJhbGciOiJSUzI1NiJ9",
    "x" * 20_000,
])
async def test_a_malformed_token_is_refused(anonymous: httpx.AsyncClient, token: str) -> None:
    assert_refused(await read_with(anonymous, token), token, "malformed token")


async def test_a_header_that_is_not_json_is_refused(anonymous: httpx.AsyncClient,
                                                    tokens: Tokens) -> None:
    good = tokens.app()
    token = b64(b"\xff\xfe not json") + "." + good.split(".", 1)[1]
    assert_refused(await read_with(anonymous, token), token, "malformed token")


# --- signatures and algorithms -----------------------------------------------------------------


async def test_a_token_signed_by_another_key_under_our_kid_is_refused(
        anonymous: httpx.AsyncClient, tokens: Tokens, foreign_pem: bytes) -> None:
    token = jwt.encode(app_claims(tokens), foreign_pem.decode("ascii"), algorithm="RS256",
                       headers={"kid": kid(tokens)})
    assert_refused(await read_with(anonymous, token), token, "bad signature")


async def test_a_token_with_an_unknown_kid_is_refused(
        anonymous: httpx.AsyncClient, tokens: Tokens, foreign_pem: bytes) -> None:
    token = jwt.encode(app_claims(tokens), foreign_pem.decode("ascii"), algorithm="RS256",
                       headers={"kid": "no-such-key"})
    assert_refused(await read_with(anonymous, token), token, "unknown signing key")


async def test_a_token_without_kid_is_refused(anonymous: httpx.AsyncClient,
                                              tokens: Tokens) -> None:
    good = tokens.app()
    token = segment({"alg": "RS256", "typ": "JWT"}) + "." + good.split(".", 1)[1]
    assert_refused(await read_with(anonymous, token), token, "kid")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_an_unsigned_alg_none_token_is_refused(anonymous: httpx.AsyncClient,
                                                     tokens: Tokens, alg: str) -> None:
    header = segment({"alg": alg, "typ": "JWT", "kid": kid(tokens)})
    body = segment(app_claims(tokens))
    for token in (f"{header}.{body}.", f"{header}.{body}.{b64(b'sig')}"):
        assert_refused(await read_with(anonymous, token), token, "is not accepted")


async def test_an_hs256_token_keyed_with_our_public_key_is_refused(
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    private = serialization.load_pem_private_key(tokens.config.keys.signing_key().private_pem,
                                                 password=None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = (segment({"alg": "HS256", "typ": "JWT", "kid": kid(tokens)}) + "."
                     + segment(app_claims(tokens)))
    signature = hmac.new(public_pem, signing_input.encode("ascii"), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(signature)}"
    assert_refused(await read_with(anonymous, token), token, "algorithm HS256 is not accepted")


async def test_a_tampered_payload_is_refused(anonymous: httpx.AsyncClient,
                                             tokens: Tokens) -> None:
    genuine = tokens.app("system/Patient.r")
    header, _, signature = genuine.split(".")
    claims = payload(genuine)
    claims["scope"] = "system/*.cruds"
    token = f"{header}.{segment(claims)}.{signature}"
    assert_refused(await read_with(anonymous, token), token, "bad signature")


async def test_a_token_with_a_truncated_signature_is_refused(anonymous: httpx.AsyncClient,
                                                             tokens: Tokens) -> None:
    genuine = tokens.app()
    token = genuine[:-10]
    assert_refused(await read_with(anonymous, token), token)


# --- claims ------------------------------------------------------------------------------------


async def test_a_genuine_token_reads(anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    response = await read_with(anonymous, tokens.signed(app_claims(tokens)))
    assert response.status_code == 200, response.text


async def test_an_expired_token_is_refused(anonymous: httpx.AsyncClient,
                                           tokens: Tokens) -> None:
    now = int(time.time())
    token = tokens.signed(app_claims(tokens, iat=now - 1200, nbf=now - 1200, exp=now - 600))
    assert_refused(await read_with(anonymous, token), token, "token expired")


async def test_a_token_expired_within_the_leeway_still_reads(anonymous: httpx.AsyncClient,
                                                             tokens: Tokens) -> None:
    now = int(time.time())
    token = tokens.signed(app_claims(tokens, iat=now - 600, nbf=now - 600, exp=now - 5))
    assert (await read_with(anonymous, token)).status_code == 200


async def test_a_token_not_yet_valid_is_refused(anonymous: httpx.AsyncClient,
                                                tokens: Tokens) -> None:
    token = tokens.signed(app_claims(tokens, nbf=int(time.time()) + 600))
    assert_refused(await read_with(anonymous, token), token, "not yet valid")


async def test_a_token_issued_in_the_future_is_refused(anonymous: httpx.AsyncClient,
                                                       tokens: Tokens) -> None:
    now = int(time.time())
    token = tokens.signed(app_claims(tokens, iat=now + 600, nbf=None, exp=now + 900))
    assert_refused(await read_with(anonymous, token), token)


@pytest.mark.parametrize("issuer", ["https://evil.example/idp", "http://127.0.0.1:8000/idp/",
                                    "http://127.0.0.1:8000"])
async def test_a_token_from_another_issuer_is_refused(anonymous: httpx.AsyncClient,
                                                      tokens: Tokens, issuer: str) -> None:
    token = tokens.signed(app_claims(tokens, iss=issuer))
    assert_refused(await read_with(anonymous, token), token, "wrong issuer")


@pytest.mark.parametrize("audience", ["someone-else", ["someone-else"], "carnet2"])
async def test_a_token_for_another_audience_is_refused(anonymous: httpx.AsyncClient,
                                                       tokens: Tokens, audience: Any) -> None:
    token = tokens.signed(app_claims(tokens, aud=audience))
    assert_refused(await read_with(anonymous, token), token, "wrong audience")


@pytest.mark.parametrize("claim", ["jti", "iat", "exp", "sub", "aud", "iss"])
async def test_a_token_missing_a_required_claim_is_refused(anonymous: httpx.AsyncClient,
                                                           tokens: Tokens, claim: str) -> None:
    token = tokens.signed(app_claims(tokens, **{claim: None}))
    assert_refused(await read_with(anonymous, token), token, f"missing claim {claim}")


@pytest.mark.parametrize("changes", [
    {"client_id": "another-app"},
    {"client_id": None},
    {"client_id": None, "azp": "another-app"},
])
async def test_a_token_that_identifies_no_kind_of_caller_is_refused(
        anonymous: httpx.AsyncClient, tokens: Tokens, changes: dict[str, Any]) -> None:
    token = tokens.signed(app_claims(tokens, **changes))
    assert_refused(await read_with(anonymous, token), token,
                   "identifies no professional, patient or app")


async def test_a_token_that_is_both_professional_and_patient_is_refused(
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    claims = payload(tokens.professional())
    claims["ins"] = payload(tokens.patient())["ins"]
    token = tokens.signed(claims)
    assert_refused(await read_with(anonymous, token), token, "both")


async def test_a_professional_token_with_a_bad_subject_name_id_is_refused(
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    claims = payload(tokens.professional())
    claims["SubjectNameID"] = "not-an-idnat"
    token = tokens.signed(claims)
    assert_refused(await read_with(anonymous, token), token, "SubjectNameID")


async def test_a_patient_token_with_a_bad_ins_key_is_refused(anonymous: httpx.AsyncClient,
                                                             tokens: Tokens) -> None:
    claims = payload(tokens.patient())
    claims["ins"] = {**claims["ins"], "value": "253072A07300444"}
    token = tokens.signed(claims)
    assert_refused(await read_with(anonymous, token), token, "ins claim")


@pytest.mark.parametrize("scope", ["system/Patient.xyz", "pirate/*.r", 'system/"Pa\\tient".r',
                                   "system/Pa€tient.r", "system/\u041f\u0430tient.r"])
async def test_a_token_with_a_malformed_scope_is_refused(anonymous: httpx.AsyncClient,
                                                         tokens: Tokens, scope: str) -> None:
    token = tokens.signed(app_claims(tokens, scope=scope))
    assert_refused(await read_with(anonymous, token), token, "scope is not valid")


@pytest.mark.parametrize("value", ["", "   ", "\x00"])
async def test_odd_tokens_never_cause_a_server_error(anonymous: httpx.AsyncClient,
                                                     value: str) -> None:
    response = await anonymous.get("/fhir/Patient", headers={"Authorization": f"Bearer {value}"})
    assert_refused(response)


# --- public endpoints --------------------------------------------------------------------------


async def test_the_capability_statement_needs_no_token(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/fhir/metadata")
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == "CapabilityStatement"


async def test_a_bad_token_does_not_hide_the_capability_statement(
        anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/fhir/metadata", headers=bearer("garbage"))
    assert response.status_code == 200, response.text


async def test_the_smart_configuration_needs_no_token_and_names_the_issuer(
        anonymous: httpx.AsyncClient, settings: Settings, tokens: Tokens) -> None:
    response = await anonymous.get("/fhir/.well-known/smart-configuration")
    assert response.status_code == 200, response.text
    document = response.json()
    issuer = settings.effective_issuer
    assert issuer == tokens.config.issuer
    assert document["issuer"] == issuer
    assert document["authorization_endpoint"] == f"{issuer}/authorize"
    assert document["token_endpoint"] == f"{issuer}/token"
    assert document["jwks_uri"] == settings.effective_jwks_url


# --- every interaction needs the token ---------------------------------------------------------

BUNDLE = {"resourceType": "Bundle", "type": "transaction",
          "entry": [{"fullUrl": "urn:uuid:p1", "resource": patient(),
                     "request": {"method": "POST", "url": "Patient"}}]}
LOOKUP = {"resourceType": "Parameters",
          "parameter": [{"name": "family", "valueString": "CORSE"},
                        {"name": "birthdate", "valueDate": "1953-07-21"}]}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

INTERACTIONS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("read", "GET", "/fhir/Patient/p1", {}),
    ("vread", "GET", "/fhir/Patient/p1/_history/1", {}),
    ("search", "GET", "/fhir/Patient?family=Dupont", {}),
    ("search-get-_search", "GET", "/fhir/Patient/_search?family=Dupont", {}),
    ("search-post", "POST", "/fhir/Patient/_search",
     {"content": b"family=Dupont", "headers": FORM}),
    ("create", "POST", "/fhir/Patient", {"json": patient(), "headers": FHIR_JSON}),
    ("conditional-create", "POST", "/fhir/Patient",
     {"json": patient(), "headers": {**FHIR_JSON, "If-None-Exist": "family=Dupont"}}),
    ("update", "PUT", "/fhir/Patient/p1", {"json": {**patient(), "id": "p1"},
                                           "headers": FHIR_JSON}),
    ("conditional-update", "PUT", "/fhir/Patient?family=Dupont",
     {"json": patient(), "headers": FHIR_JSON}),
    ("delete", "DELETE", "/fhir/Patient/p1", {}),
    ("conditional-delete", "DELETE", "/fhir/Patient?family=Dupont", {}),
    ("history-type", "GET", "/fhir/Patient/_history", {}),
    ("history-instance", "GET", "/fhir/Patient/p1/_history", {}),
    ("transaction", "POST", "/fhir", {"json": BUNDLE, "headers": FHIR_JSON}),
    ("transaction-slash", "POST", "/fhir/", {"json": BUNDLE, "headers": FHIR_JSON}),
    ("batch", "POST", "/fhir", {"json": {**BUNDLE, "type": "batch"}, "headers": FHIR_JSON}),
    ("ins-lookup", "POST", "/fhir/Patient/$ins-lookup", {"json": LOOKUP, "headers": FHIR_JSON}),
    ("unknown-type", "GET", "/fhir/NoSuchType", {}),
]


@pytest.mark.parametrize(("method", "url", "options"),
                         [pytest.param(m, u, o, id=name) for name, m, u, o in INTERACTIONS])
async def test_every_interaction_needs_a_token(anonymous: httpx.AsyncClient, tokens: Tokens,
                                               method: str, url: str,
                                               options: dict[str, Any]) -> None:
    response = await anonymous.request(method, url, **options)
    assert_refused(response, reason="no bearer token")
    expired = tokens.signed(app_claims(tokens, exp=int(time.time()) - 600))
    headers = {**options.get("headers", {}), **bearer(expired)}
    response = await anonymous.request(method, url, **{**options, "headers": headers})
    assert_refused(response, expired, "token expired")


async def test_a_refused_create_or_transaction_writes_nothing(anonymous: httpx.AsyncClient,
                                                              tokens: Tokens) -> None:
    for _name, method, url, options in INTERACTIONS:
        if method in ("POST", "PUT"):
            await anonymous.request(method, url, **options)
    response = await anonymous.get("/fhir/Patient", params={"_summary": "count"},
                                   headers=bearer(tokens.app()))
    assert response.json()["total"] == 0


# --- key rotation ------------------------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves by hand (the JWKS cache's refetch throttle)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestKeyRotation:
    """Against a key directory of its own: rotating the session-wide keys would break others."""

    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path, keys_dir=tmp_path / "keys", default_page_size=20,
                        max_page_size=100, max_body_bytes=1024 * 1024)

    @staticmethod
    async def client_of(app: FastAPI) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://carnet.test",
                                 headers={"Accept": "application/fhir+json"})

    @pytest.fixture
    async def fresh(self, settings: Settings,
                    database: Database) -> AsyncIterator[list[httpx.AsyncClient]]:
        """Clients over new apps (a new app knows no key until it fetches the JWKS)."""
        clients: list[httpx.AsyncClient] = []
        yield clients
        for http in clients:
            await http.aclose()

    async def new_client(self, settings: Settings, database: Database,
                         fresh: list[httpx.AsyncClient]) -> httpx.AsyncClient:
        http = await self.client_of(create_app(settings, database))
        fresh.append(http)
        return http

    async def test_tokens_of_the_old_and_the_new_key_both_read_after_rotation(
            self, anonymous: httpx.AsyncClient, tokens: Tokens, settings: Settings,
            database: Database, fresh: list[httpx.AsyncClient]) -> None:
        old = tokens.app()
        assert (await read_with(anonymous, old)).status_code == 200
        old_kid = kid(tokens)
        new_kid = tokens.config.keys.rotate(keep_seconds=600)
        assert new_kid != old_kid
        new = tokens.app()
        assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == new_kid
        # The running app still trusts the old key it fetched before.
        assert (await read_with(anonymous, old)).status_code == 200
        # A new app fetches the JWKS afresh: both keys are published.
        http = await self.new_client(settings, database, fresh)
        assert (await read_with(http, old)).status_code == 200
        assert (await read_with(http, new)).status_code == 200
        published = (await http.get("/idp/jwks")).json()["keys"]
        assert {k["kid"] for k in published} == {old_kid, new_kid}

    async def test_an_unknown_kid_makes_the_verifier_refetch_the_jwks(
            self, tokens: Tokens, settings: Settings, database: Database,
            fresh: list[httpx.AsyncClient]) -> None:
        app = create_app(settings, database)
        clock = Clock()
        cache = JwksCache(settings.effective_jwks_url, app.state.issuer_client, clock=clock)
        app.state.token_verifier = TokenVerifier(issuer=settings.effective_issuer,
                                                 audience=settings.token_audience, keys=cache,
                                                 leeway=settings.token_leeway)
        app.state.authenticator = Authenticator(app.state.token_verifier)
        http = await self.client_of(app)
        fresh.append(http)
        old = tokens.app()
        assert (await read_with(http, old)).status_code == 200
        assert cache.fetches == 1
        tokens.config.keys.rotate(keep_seconds=600)
        new = tokens.app()
        # Within the refetch interval the new kid is not looked up again...
        assert_refused(await read_with(http, new), new, "unknown signing key")
        assert cache.fetches == 1
        # ... after it, the unknown kid makes the cache fetch the JWKS again.
        clock.now += 6
        assert (await read_with(http, new)).status_code == 200
        assert cache.fetches == 2
        assert (await read_with(http, old)).status_code == 200
        assert cache.fetches == 2

    async def test_a_token_of_a_removed_key_is_refused(
            self, tokens: Tokens, settings: Settings, database: Database,
            fresh: list[httpx.AsyncClient]) -> None:
        old = tokens.app()
        old_kid = kid(tokens)
        tokens.config.keys.rotate(keep_seconds=600)
        new = tokens.app()
        tokens.config.keys.remove(old_kid)
        http = await self.new_client(settings, database, fresh)
        assert_refused(await read_with(http, old), old, "unknown signing key")
        assert (await read_with(http, new)).status_code == 200

    async def test_removing_the_current_key_refuses_its_tokens(
            self, tokens: Tokens, settings: Settings, database: Database,
            fresh: list[httpx.AsyncClient]) -> None:
        compromised = tokens.app()
        tokens.config.keys.remove(kid(tokens))
        replacement = tokens.app()  # signing_key() makes a new key
        http = await self.new_client(settings, database, fresh)
        assert_refused(await read_with(http, compromised), compromised, "unknown signing key")
        assert (await read_with(http, replacement)).status_code == 200
