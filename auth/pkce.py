"""PKCE (RFC 7636) with S256: the one computation the provider checks and its clients send."""

from __future__ import annotations

import base64
import hashlib
import secrets


def s256_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(verifier)) without padding; a non-ASCII verifier cannot match."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_pair() -> tuple[str, str]:
    """A fresh (code_verifier, code_challenge): 64 random characters and their S256."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256_challenge(verifier)
