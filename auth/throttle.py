"""Rate limits on what an attacker would repeat: client secrets at the token endpoint, logins.

Each limit counts per minute in the database (``storage.ratelimits``), so that every API
process and a separate ``carnet idp`` share one count. A request takes a slot before it
runs; the one that succeeds gives it back, so that a limit counts failures: a client whose
requests succeed (the portal's back channel carries every patient's login from one
address) is never slowed, while a guesser is stopped at the limit, exactly, however many
requests it sends at once.

The address is the ASGI client's: behind a reverse proxy, uvicorn's ``--proxy-headers``
(with ``--forwarded-allow-ips`` naming the proxy) makes it the caller's; nothing here reads
``X-Forwarded-For`` itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from starlette.requests import Request

from storage import ratelimits
from storage.db import Database
from storage.ratelimits import Slot

log = logging.getLogger("carnet.auth")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True)
class Throttle:
    """``limit`` failures a minute per key under ``scope``; 0 turns it off."""

    scope: str
    limit: int

    async def take(self, database: Database, *key: str) -> Slot | None:
        """This request's slot (None when the limit is off); refused when not ``allowed``."""
        if self.limit <= 0:
            return None
        async with database.write() as conn:
            slot = await ratelimits.take_slot(conn, ratelimits.bucket_of(self.scope, *key),
                                              self.limit, time.time())
        if not slot.allowed:
            log.warning("rate limited", extra={"fields": {"scope": self.scope,
                                                           "retry_after": slot.retry_after}})
        return slot

    async def give_back(self, database: Database, *key: str) -> None:
        """A success long after its slot was taken (a login completed): uncount one hit of
        the current window, the best guess at where its slot is."""
        if self.limit <= 0:
            return
        async with database.write() as conn:
            await ratelimits.give_back(conn, ratelimits.bucket_of(self.scope, *key),
                                       ratelimits.window_of(time.time()))
