"""Where Carnet may POST an app's notifications: public addresses, and the private networks the
operator names (``CARNET_WEBHOOK_ALLOWED_NETWORKS``).

An app chooses its Subscription's endpoint. Without this check it could make Carnet send
requests into the operator's own network (server-side request forgery): an admin page on
loopback, a cloud metadata service at 169.254.169.254, a database's HTTP port.

The check runs where the connection is made, in the HTTP client's network backend: the address
checked is the address connected to, so a name that resolves to a public address when checked
and to a private one a moment later (DNS rebinding) gains nothing. TLS still verifies the
certificate against the endpoint's host name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusedDestination(Exception):
    """The endpoint's host is, or resolves to, an address Carnet may not send to."""


def is_public(address: Address) -> bool:
    """Routable on the internet: not loopback, private, link-local, shared, reserved nor
    multicast (an IPv4 address written as IPv6, ``::ffff:127.0.0.1``, is judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def permitted(address: Address, allowed: Sequence[Network]) -> bool:
    return is_public(address) or any(address.version == network.version and address in network
                                     for network in allowed)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's connections, made only to permitted addresses."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        self._allowed = tuple(allowed)
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int,
                          timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        try:
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:  # as httpcore's own backend says it: a connection that failed
            raise httpcore.ConnectError(f"{host} could not be resolved ({exc})") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        for text in addresses:  # every address the name has, not only the first tried
            address = ipaddress.ip_address(text.partition("%")[0])
            if not permitted(address, self._allowed):
                raise RefusedDestination(
                    f"{host} is {address}, not a public address, and "
                    "CARNET_WEBHOOK_ALLOWED_NETWORKS does not name its network")
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for text in addresses:
            try:
                return await self._backend.connect_tcp(text, port, timeout=timeout,
                                                       local_address=local_address,
                                                       socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109 - httpcore's
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise RefusedDestination("a notification goes to an http(s) URL, not a socket")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def guarded_client(allowed: Sequence[Network]) -> httpx.AsyncClient:
    """An HTTP client that connects only to public addresses and ``allowed`` networks.

    No proxy from the environment (it would make the connections instead), no redirects."""
    transport = httpx.AsyncHTTPTransport()
    # httpx builds its connection pool with httpcore's default network backend and offers no
    # parameter for another: the pool is rebuilt with the same defaults and the guarded one
    # (tests/service/notify/test_destinations.py fails if this stops guarding).
    limits = httpx.Limits()
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry, network_backend=_GuardedBackend(allowed))
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False)
