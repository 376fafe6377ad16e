"""TokenVerifier and JwksCache against a KeyStore served through an in-memory JWKS endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

from auth.keys import KeyStore
from auth.tokens import InvalidToken, JwksCache, TokenVerifier

ISSUER = "https://auth.esante.example/auth/realms/esante-wallet"
AUDIENCE = "carnet"
JWKS_URL = f"{ISSUER}/protocol/openid-connect/certs"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """The issuer's JWKS endpoint: serves ``store.jwks()`` and counts the requests."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.requests = 0
        self.fail: Callable[[], httpx.Response] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.fail is not None:
            return self.fail()
        return httpx.Response(200, json=self.store.jwks())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("issuer") / "keys")


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    """Another issuer's keys: its signatures must never pass for ours."""
    return KeyStore(tmp_path_factory.mktemp("stranger") / "keys")


@pytest.fixture
def endpoint(store: KeyStore) -> Endpoint:
    return Endpoint(store)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cache(endpoint: Endpoint, clock: Clock) -> AsyncIterator[JwksCache]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        yield JwksCache(JWKS_URL, client, clock=clock)


@pytest.fixture
def verifier(cache: JwksCache) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=cache)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "sub": "f:550dc1c8:899700218896", "aud": AUDIENCE,
                            "iat": now, "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4()),
                            "scope": "openid scope_all"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def signed(store: KeyStore, **changes: Any) -> str:
    return store.signing_key().sign(claims(**changes))


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    assert not token or token not in str(caught.value)  # the token is never echoed
    return caught.value.reason


async def test_a_valid_token_verifies_and_returns_its_claims(
        verifier: TokenVerifier, store: KeyStore, endpoint: Endpoint) -> None:
    sent = claims()
    assert await verifier.verify(store.signing_key().sign(sent)) == sent
    assert await verifier.verify(store.signing_key().sign(claims())) is not None
    assert endpoint.requests == 1


async def test_a_token_without_kid_is_refused(verifier: TokenVerifier, store: KeyStore) -> None:
    token = jwt.encode(claims(), store.signing_key().private_pem, algorithm="RS256")
    assert await refused(verifier, token) == "token has no key id (kid)"


@pytest.mark.parametrize("token", [
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0",                      # two segments
    "a.b.c.d",                                                    # four segments
    "e$$$.eyJzdWIiOiJ4In0.c2ln",                                  # not base64url
    "eyJhbGciOiJSUzI1NiJ9x.eyJzdWIiOiJ4In0.c2ln",                 # bad base64 length
    f"{b64(b'not json')}.eyJzdWIiOiJ4In0.c2ln",                  # header not JSON
    f"{b64(b'[1, 2]')}.eyJzdWIiOiJ4In0.c2ln",                    # header not an object
    f"{b64(bytes([0xff, 0xfe]))}.eyJzdWIiOiJ4In0.c2ln",          # header not UTF-8
    "",
], ids=["2 segments", "4 segments", "garbage", "bad length", "non-JSON header",
        "array header", "binary header", "empty"])
async def test_a_malformed_token_is_refused_before_any_key_lookup(
        verifier: TokenVerifier, endpoint: Endpoint, token: str) -> None:
    assert await refused(verifier, token) == "malformed token"
    assert endpoint.requests == 0


async def test_a_signature_made_by_another_key_is_refused(
        verifier: TokenVerifier, store: KeyStore, stranger: KeyStore) -> None:
    ours = signed(store).rsplit(".", 1)[0]
    theirs = signed(stranger).rsplit(".", 1)[1]
    assert await refused(verifier, f"{ours}.{theirs}") == "bad signature"


async def test_an_unknown_key_is_refetched_once_then_refused(
        verifier: TokenVerifier, store: KeyStore, endpoint: Endpoint, clock: Clock) -> None:
    await verifier.verify(signed(store))
    clock.now += 10
    token = jwt.encode(claims(), store.signing_key().private_pem, algorithm="RS256",
                       headers={"kid": "not-a-published-kid"})
    assert await refused(verifier, token) == "unknown signing key"
    assert endpoint.requests == 2


async def test_an_alg_none_token_is_refused_without_touching_keys(
        verifier: TokenVerifier, store: KeyStore, endpoint: Endpoint) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": store.signing_key().kid}
    token = f"{segment(header)}.{segment(claims())}."
    assert await refused(verifier, token) == "algorithm none is not accepted"
    assert endpoint.requests == 0


async def test_an_hs256_token_keyed_with_our_public_key_is_refused(
        verifier: TokenVerifier, store: KeyStore, endpoint: Endpoint) -> None:
    private = serialization.load_pem_private_key(store.signing_key().private_pem, None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{segment({'alg': 'HS256', 'kid': store.signing_key().kid})}." \
                    f"{segment(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert await refused(verifier, f"{signing_input}.{b64(mac)}") == (
        "algorithm HS256 is not accepted")
    assert endpoint.requests == 0


def test_a_verifier_cannot_be_configured_with_an_hmac_algorithm(cache: JwksCache) -> None:
    with pytest.raises(ValueError, match="HS256"):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=cache, algorithms=("RS256", "HS256"))


async def test_a_token_expired_beyond_the_leeway_is_refused(
        verifier: TokenVerifier, store: KeyStore) -> None:
    now = int(time.time())
    token = signed(store, iat=now - 400, nbf=now - 400, exp=now - 60)
    assert await refused(verifier, token) == "token expired"


async def test_a_token_expired_within_the_leeway_is_accepted(
        verifier: TokenVerifier, store: KeyStore) -> None:
    now = int(time.time())
    token = signed(store, iat=now - 300, nbf=now - 300, exp=now - 10)
    assert (await verifier.verify(token))["exp"] == now - 10


async def test_a_token_not_valid_before_a_future_time_is_refused(
        verifier: TokenVerifier, store: KeyStore) -> None:
    token = signed(store, nbf=int(time.time()) + 120)
    assert await refused(verifier, token) == "token not yet valid"


async def test_a_token_issued_in_the_future_is_refused(
        verifier: TokenVerifier, store: KeyStore) -> None:
    token = signed(store, iat=int(time.time()) + 120, nbf=None)
    assert await refused(verifier, token) == "token issued in the future"


async def test_a_token_from_another_issuer_is_refused(
        verifier: TokenVerifier, store: KeyStore) -> None:
    token = signed(store, iss="https://evil.example")
    assert await refused(verifier, token) == "wrong issuer"


async def test_a_token_for_another_audience_is_refused(
        verifier: TokenVerifier, store: KeyStore) -> None:
    assert await refused(verifier, signed(store, aud="other-service")) == "wrong audience"
    assert await refused(verifier, signed(store, aud=["a", "b"])) == "wrong audience"


async def test_an_audience_list_containing_ours_is_accepted(
        verifier: TokenVerifier, store: KeyStore) -> None:
    claims = await verifier.verify(signed(store, aud=["other-service", AUDIENCE]))
    assert claims["aud"] == ["other-service", AUDIENCE]


async def test_a_tampered_payload_is_refused(verifier: TokenVerifier, store: KeyStore) -> None:
    header, payload, signature = signed(store).split(".")
    changed = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed["sub"] = "f:550dc1c8:899700000000"
    assert await refused(verifier, f"{header}.{segment(changed)}.{signature}") == "bad signature"


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "jti"])
async def test_a_token_missing_a_required_claim_is_refused(
        verifier: TokenVerifier, store: KeyStore, claim: str) -> None:
    token = signed(store, **{claim: None})
    assert await refused(verifier, token) == f"missing claim {claim}"


@pytest.mark.parametrize("claim, value", [("exp", "soon"), ("exp", "9999999999"), ("iat", True),
                                          ("iat", [1]), ("nbf", {"t": 1})])
async def test_a_date_claim_that_is_not_a_number_is_refused(
        verifier: TokenVerifier, store: KeyStore, claim: str, value: Any) -> None:
    reason = await refused(verifier, signed(store, **{claim: value}))
    assert reason in (f"claim {claim} must be a number", "malformed claims")


def _connect_error() -> httpx.Response:
    raise httpx.ConnectError("connection refused")


@pytest.mark.parametrize("fail", [
    _connect_error,
    lambda: httpx.Response(503, text="down"),
    lambda: httpx.Response(200, text="<html>not json</html>"),
    lambda: httpx.Response(200, json={"no": "keys"}),
], ids=["unreachable", "HTTP 503", "not JSON", "no keys member"])
async def test_an_unreachable_jwks_endpoint_gives_invalid_token_not_an_httpx_error(
        verifier: TokenVerifier, store: KeyStore, endpoint: Endpoint,
        fail: Callable[[], httpx.Response]) -> None:
    endpoint.fail = fail
    reason = await refused(verifier, signed(store))
    assert reason == "the issuer's keys cannot be fetched"


async def test_a_failed_fetch_is_not_retried_within_the_refetch_interval(
        verifier: TokenVerifier, store: KeyStore, endpoint: Endpoint, clock: Clock) -> None:
    endpoint.fail = _connect_error
    await refused(verifier, signed(store))
    await refused(verifier, signed(store))
    assert endpoint.requests == 1
    endpoint.fail = None
    clock.now += 5
    assert await verifier.verify(signed(store))
    assert endpoint.requests == 2


async def test_unknown_kids_within_the_refetch_interval_cause_one_refetch(
        verifier: TokenVerifier, store: KeyStore, endpoint: Endpoint, clock: Clock) -> None:
    await verifier.verify(signed(store))
    clock.now += 10
    pem = store.signing_key().private_pem
    for _ in range(3):
        token = jwt.encode(claims(), pem, algorithm="RS256", headers={"kid": str(uuid.uuid4())})
        assert await refused(verifier, token) == "unknown signing key"
        clock.now += 1
    assert endpoint.requests == 2
    clock.now += 5
    token = jwt.encode(claims(), pem, algorithm="RS256", headers={"kid": str(uuid.uuid4())})
    await refused(verifier, token)
    assert endpoint.requests == 3


async def test_a_known_key_is_rechecked_after_max_age_and_kept_if_the_issuer_is_down(
        verifier: TokenVerifier, store: KeyStore, endpoint: Endpoint, clock: Clock) -> None:
    token = signed(store)
    await verifier.verify(token)
    clock.now += 301
    endpoint.fail = _connect_error
    assert await verifier.verify(token)
    assert endpoint.requests == 2
    await verifier.verify(token)
    assert endpoint.requests == 2  # the failed attempt is not retried at once


async def test_a_key_whose_type_does_not_fit_the_algorithm_is_refused(
        store: KeyStore, clock: Clock) -> None:
    jwks = store.jwks()
    kid = jwks["keys"][0]["kid"]
    jwks["keys"][0]["alg"] = "ES256"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
    async with httpx.AsyncClient(transport=transport) as client:
        verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE,
                                 keys=JwksCache(JWKS_URL, client, clock=clock))
        # An ES256 header with our RSA kid: the RSA key must not be used for ES256.
        token = f"{segment({'alg': 'ES256', 'kid': kid})}.{segment(claims())}.{b64(b'x' * 64)}"
        assert await refused(verifier, token) == "signing key does not fit algorithm ES256"
        # The published JWK says ES256, so even a genuine RS256 token is refused.
        assert await refused(verifier, signed(store)) == "signing key does not fit algorithm RS256"


def test_a_signing_key_repr_does_not_show_the_private_key(store: KeyStore) -> None:
    key = store.signing_key()
    assert "PRIVATE" not in repr(key)
    assert key.kid in repr(key)


def test_published_keys_are_public_rs256_jwks_named_by_their_thumbprint(
        store: KeyStore, tmp_path: Path) -> None:
    (key,) = store.jwks()["keys"]
    assert set(key) == {"kty", "n", "e", "kid", "use", "alg"}
    assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")
    canonical = json.dumps({"e": key["e"], "kty": "RSA", "n": key["n"]}, separators=(",", ":"))
    assert key["kid"] == b64(hashlib.sha256(canonical.encode()).digest())
    assert "=" not in key["n"]


async def test_an_es256_token_verifies_against_an_ec_key(clock: Clock) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    public = {"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
              "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"keys": [public]}))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    sent = claims()
    async with httpx.AsyncClient(transport=transport) as client:
        verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE,
                                 keys=JwksCache(JWKS_URL, client, clock=clock))
        token = jwt.encode(sent, pem, algorithm="ES256", headers={"kid": "ec-1"})
        assert await verifier.verify(token) == sent
        other = f"{segment({'alg': 'ES384', 'kid': 'ec-1'})}.{token.split('.', 1)[1]}"
        assert await refused(verifier, other) == "algorithm ES384 is not accepted"
