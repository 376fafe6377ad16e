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
    # Rate limits (auth/throttle.py; 0: off): failed client authentications a minute per
    # client id and address, refused logins a minute per address.
    token_rate_limit: int = 0
    login_rate_limit: int = 0

    def endpoint(self, name: str) -> str:
        return f"{self.issuer}/{name}"
