"""Bearer token -> Principal, remembering recent answers for a short while.

Verifying a token (signature, claims, principal) costs ~60 µs of CPU; an app
or a portal session sends the same token with every request. A verified token
is kept for at most ``ttl`` seconds and never past its ``exp``, so a key the
issuer withdraws stops being honoured within ``ttl`` (the JWKS itself is only
re-read every few minutes). Refused tokens are never kept: each attempt pays
for its own verification. A token revoked before its ``exp`` (a logout; ``revoked``
looks its ``jti`` up) is refused from its next verification: at once by the process that
revoked it and where it was not remembered, within ``ttl`` where it was.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from auth.principal import Principal, principal_from_claims
from auth.tokens import InvalidToken, TokenVerifier


class Authenticator:
    def __init__(self, verifier: TokenVerifier, *, ttl: float = 60.0,
                 max_entries: int = 10_000, clock: Callable[[], float] = time.time,
                 revoked: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self._verifier = verifier
        self._revoked = revoked
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._recent: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    async def principal(self, token: str) -> Principal:
        """The token's Principal, or ``InvalidToken``."""
        now = self._clock()
        hit = self._recent.get(token)
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            del self._recent[token]
        claims = await self._verifier.verify(token)
        if self._revoked is not None and await self._revoked(str(claims["jti"])):
            raise InvalidToken("the token was revoked")
        principal = principal_from_claims(claims)
        if self._ttl > 0:
            self._recent[token] = (min(now + self._ttl, float(claims["exp"])), principal)
            if len(self._recent) > self._max_entries:
                self._recent.popitem(last=False)
        return principal

    def forget(self, token: str) -> None:
        """A token revoked through this process: refused from its next request here."""
        self._recent.pop(token, None)

    def forget_all(self) -> None:
        """After a key is withdrawn: verify every token again from now on."""
        self._recent.clear()
