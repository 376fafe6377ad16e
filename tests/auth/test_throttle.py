"""The rate-limit helper itself (the limits at work: tests/auth/idp/test_rate_limits.py)."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from auth.throttle import Throttle, client_address
from storage.db import Database


async def test_a_limit_of_zero_never_reaches_the_database() -> None:
    nowhere = cast(Database, None)  # any statement would fail on it
    assert await Throttle("token", 0).take(nowhere, "demo-app", "203.0.113.7") is None
    await Throttle("login", 0).give_back(nowhere, "203.0.113.7")


def test_the_address_is_the_asgi_clients_never_a_forwarded_header() -> None:
    """Behind a proxy, uvicorn's --proxy-headers sets the client; a caller's own
    X-Forwarded-For must not choose its bucket."""
    request = Request({"type": "http", "client": ("203.0.113.7", 5000),
                       "headers": [(b"x-forwarded-for", b"198.51.100.1")]})
    assert client_address(request) == "203.0.113.7"
    assert client_address(Request({"type": "http", "client": None, "headers": []})) \
        == "unknown"
