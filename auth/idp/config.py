"""What the identity provider needs to know, handed in by whoever runs it."""

from __future__ import annotations

from dataclasses import dataclass

from auth.keys import KeyStore

CODE_LIFETIME_SECONDS = 60


@dataclass(frozen=True)
class IdpConfig:
    issuer: str
    audience: str  # the resource server the access tokens are for
    keys: KeyStore
    access_token_ttl: int
    refresh_token_ttl: int
    secure_cookies: bool = False

    def endpoint(self, name: str) -> str:
        return f"{self.issuer}/{name}"
