"""Verification of bearer tokens (JWT) issued by Pro Santé Connect or its mock.

The header is checked before any key is looked up, so ``alg: none``, HMAC
algorithms and other algorithm-confusion tricks are refused whatever the key.
Every failure becomes ``InvalidToken`` with a short reason fit for a
``WWW-Authenticate`` ``error_description``; the token itself is never logged
nor echoed back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from jose import jwk, jwt
from jose.exceptions import ExpiredSignatureError, JWKError, JWTClaimsError, JWTError

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 16_384
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_PRINTABLE_ALG = re.compile(r"[A-Za-z0-9_+-]{1,20}")
# Asymmetric algorithms we know how to check, with the JWK they need: (kty, crv).
_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
}
# Claims checked whatever ``required_claims`` says: without them the checks mean nothing.
_ALWAYS_REQUIRED = ("iss", "aud", "exp")
# Claims python-jose can require itself (it checks them before their values).
_JOSE_REQUIRABLE = frozenset({"aud", "iat", "exp", "nbf", "iss", "sub", "jti"})
_MISSING = re.compile(r'missing required key "(\w+)"')
# python-jose's JWTClaimsError messages (3.x), most specific first.
_CLAIM_ERRORS = (("Not Before claim", "claim nbf must be a number"),
                 ("Issued At claim", "claim iat must be a number"),
                 ("Expiration Time claim", "claim exp must be a number"),
                 ("not yet valid", "token not yet valid"),
                 ("Invalid issuer", "wrong issuer"),
                 ("Invalid audience", "wrong audience"),
                 ("Invalid claim format", "claim aud must be a string or a list of strings"),
                 ("Subject must", "claim sub must be a string"),
                 ("JWT ID must", "claim jti must be a string"))


class InvalidToken(Exception):
    """A token we refuse; ``reason`` is safe to show to the client (it never quotes the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def bearer_challenge(reason: str, realm: str | None = None) -> str:
    """RFC 6750 ``WWW-Authenticate`` value for a refused token.

    The reason may quote the token's claims (its scope): it is reduced to a quoted-string of
    printable ASCII, since a header that cannot be encoded would turn the 401 into a 500.
    """
    safe = "".join(ch if " " <= ch <= "~" else "?" for ch in reason)
    safe = safe.replace('"', "'").replace("\\", "/")
    realm_part = f'realm="{realm}", ' if realm else ""
    return f'Bearer {realm_part}error="invalid_token", error_description="{safe}"'


class JwksCache:
    """The issuer's public keys by kid, fetched on first use and when an unknown kid appears.

    Fetches are at least ``refetch_interval`` seconds apart, so a flood of tokens with made-up
    kids cannot hammer the issuer. Keys older than ``max_age`` seconds are re-fetched on use, so
    a key the issuer removed (compromise) stops verifying; if the issuer is unreachable then,
    the keys already known keep working rather than failing every request.
    """

    def __init__(self, jwks_url: str, client: httpx.AsyncClient, refetch_interval: float = 5.0,
                 *, max_age: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = jwks_url
        self._client = client
        self._refetch_interval = refetch_interval
        self._max_age = max_age
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._loaded = False
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts, successful or not: for tests and metrics

    async def key(self, kid: str) -> dict[str, Any]:
        """The JWK named ``kid``, or ``InvalidToken``."""
        found = self._keys.get(kid)
        if found is not None and self._clock() - self._fetched_at < self._max_age:
            return found
        async with self._lock:  # one fetch at a time; waiters then see its result
            found = self._keys.get(kid)
            now = self._clock()
            if found is not None and now - self._fetched_at < self._max_age:
                return found
            if now - self._attempted_at >= self._refetch_interval:
                try:
                    await self._fetch()
                except InvalidToken:
                    if found is None:
                        raise
                    return found  # issuer unreachable: keep trusting what it published before
                found = self._keys.get(kid)
            elif not self._loaded:
                raise InvalidToken("the issuer's keys cannot be fetched")
            if found is None:
                raise InvalidToken("unknown signing key")
            return found

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            response = await self._client.get(self._url)
            response.raise_for_status()
            document = response.json()
            keys = {k["kid"]: k for k in document["keys"]
                    if isinstance(k, dict) and isinstance(k.get("kid"), str)}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot fetch the issuer's JWKS from %s: %s", self._url,
                        type(exc).__name__)
            raise InvalidToken("the issuer's keys cannot be fetched") from None
        self._keys, self._loaded, self._fetched_at = keys, True, self._attempted_at


def _b64url_json(segment: str) -> Any:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw)


class TokenVerifier:
    """Checks signature, issuer, audience and validity period of the issuer's JWTs."""

    def __init__(self, *, issuer: str, audience: str, keys: JwksCache, leeway: int = 30,
                 algorithms: tuple[str, ...] = ("RS256", "ES256"),
                 required_claims: tuple[str, ...] = ("iss", "sub", "aud", "exp", "iat", "jti"),
                 ) -> None:
        unknown = [a for a in algorithms if a not in _KEY_TYPES]
        if unknown:  # HS*, none...: a public key must never be usable as a shared secret
            raise ValueError(f"unsupported token algorithms: {', '.join(unknown)}")
        self._issuer = issuer
        self._audience = audience
        self._keys = keys
        self._leeway = leeway
        self._algorithms = frozenset(algorithms)
        self._required = tuple(dict.fromkeys((*required_claims, *_ALWAYS_REQUIRED)))
        self._options: dict[str, Any] = {"leeway": leeway, "verify_at_hash": False}
        self._options.update({f"require_{c}": True for c in self._required
                              if c in _JOSE_REQUIRABLE})
        # (kid, alg) -> (JWK it was built from, python-jose key): building one costs ~25 µs,
        # against ~40 µs for a whole verify that reuses it.
        self._built: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {}

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is genuine, meant for us and currently valid."""
        alg, kid = self._header(token)
        key = self._public_key(kid, alg, await self._keys.key(kid))
        try:
            claims: dict[str, Any] = jwt.decode(token, key, algorithms=[alg],
                                                audience=self._audience, issuer=self._issuer,
                                                options=self._options)
        except ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except JWTClaimsError as exc:
            raise InvalidToken(_claims_reason(str(exc))) from None
        except JWTError as exc:
            raise InvalidToken(_error_reason(str(exc))) from None
        except (TypeError, ValueError, OverflowError):  # e.g. "exp": [1] or Infinity
            raise InvalidToken("malformed claims") from None
        self._check_claims(claims)
        return claims

    def _header(self, token: str) -> tuple[str, str]:
        """(alg, kid) from the unverified header, refusing anything not worth a key lookup."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("malformed token")
        if _SHAPE.fullmatch(token) is None:
            raise InvalidToken("malformed token")
        try:
            header = _b64url_json(token.partition(".")[0])
        except (ValueError, binascii.Error):  # UnicodeDecodeError and JSONDecodeError included
            raise InvalidToken("malformed token") from None
        if not isinstance(header, dict):
            raise InvalidToken("malformed token")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            shown = alg if isinstance(alg, str) and _PRINTABLE_ALG.fullmatch(alg) else "?"
            raise InvalidToken(f"algorithm {shown} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id (kid)")
        return alg, kid

    def _public_key(self, kid: str, alg: str, key: dict[str, Any]) -> Any:
        built = self._built.get((kid, alg))
        if built is not None and built[0] is key:
            return built[1]
        kty, crv = _KEY_TYPES[alg]
        if (key.get("kty") != kty or (crv is not None and key.get("crv") != crv)
                or key.get("alg", alg) != alg or key.get("use", "sig") != "sig"):
            raise InvalidToken(f"signing key does not fit algorithm {alg}")
        try:
            public = jwk.construct(key, alg)
        except (JWKError, ValueError, TypeError):
            raise InvalidToken("the issuer's signing key is unusable") from None
        self._built[(kid, alg)] = (key, public)
        return public

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """What python-jose leaves out: required claims, strict numeric dates, iat not ahead."""
        for name in self._required:
            if name not in claims:
                raise InvalidToken(f"missing claim {name}")
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)
                                   or not math.isfinite(value)):
                raise InvalidToken(f"claim {name} must be a number")
        iat = claims.get("iat")
        if iat is not None and iat > time.time() + self._leeway:
            raise InvalidToken("token issued in the future")


def _error_reason(message: str) -> str:
    missing = _MISSING.search(message)
    if missing is not None:
        return f"missing claim {missing.group(1)}"
    if "Signature verification failed" in message:
        return "bad signature"
    return "malformed token"


def _claims_reason(message: str) -> str:
    for marker, reason in _CLAIM_ERRORS:
        if marker in message:
            return reason
    return "invalid claims"
