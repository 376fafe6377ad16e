"""POSTing a subscription-notification Bundle to an app's rest-hook endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from service.notify.destinations import RefusedDestination
from service.notify.errors import DeliveryFailed

FHIR_JSON = "application/fhir+json"
# Worth retrying: the endpoint is slow, rate-limits, or is down for a while.
_TEMPORARY = frozenset({408, 425, 429})


def channel_headers(headers: Sequence[str]) -> list[tuple[str, str]]:
    """The Subscription's ``channel.header`` strings ("Name: value") as header pairs."""
    pairs = []
    for header in headers:
        name, sep, value = header.partition(":")
        if sep and name.strip():
            pairs.append((name.strip(), value.strip()))
    return pairs


async def post_notification(client: httpx.AsyncClient, endpoint: str, headers: Sequence[str],
                            bundle: dict[str, Any], *,
                            timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a deadline
    """One delivery attempt. Redirects are not followed: an endpoint that moved must be
    re-registered by its app, and a redirect must not carry the app's headers elsewhere."""
    sent = [pair for pair in channel_headers(headers)
            if pair[0].lower() not in ("content-type", "content-length", "host")]
    sent += [("Content-Type", FHIR_JSON), ("Accept", FHIR_JSON)]
    try:
        async with asyncio.timeout(timeout):  # the whole attempt, not each step
            request = client.build_request("POST", endpoint, content=orjson.dumps(bundle),
                                           headers=httpx.Headers(sent), timeout=timeout)
            # Streamed and closed unread: the answer's body is never needed nor buffered.
            response = await client.send(request, stream=True, follow_redirects=False)
            await response.aclose()
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # will never work
        raise DeliveryFailed(f"the endpoint is not a usable URL ({type(exc).__name__})",
                             permanent=True) from exc
    except RefusedDestination as exc:
        raise DeliveryFailed(str(exc), permanent=True) from exc
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise DeliveryFailed(f"timed out ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:  # refused, reset, DNS, TLS, protocol errors
        raise DeliveryFailed(f"could not reach the endpoint ({type(exc).__name__})") from exc
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in _TEMPORARY or status >= 500:
        raise DeliveryFailed(f"the endpoint answered {status}")
    kind = "redirected (not followed)" if 300 <= status < 400 else "refused"
    raise DeliveryFailed(f"the endpoint answered {status}: {kind}", permanent=True)
