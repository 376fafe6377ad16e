"""HTTP details of the FHIR API: media types, bodies, ETags, base URLs.

https://hl7.org/fhir/R4/http.html#mime-type — JSON only: ``application/fhir+json``
and ``application/json`` (also as ``_format=json``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from service.errors import (
    FHIR_JSON,
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    PreconditionFailed,
    UnsupportedMediaType,
)

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_FORMAT_ALIASES = {"json", "application/json", "application/fhir+json", "application/json+fhir",
                   "text/json"}


def check_acceptable(request: Request) -> None:
    """406 for anything but JSON in ``_format`` or ``Accept``."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip() not in _FORMAT_ALIASES:
            raise NotAcceptable(f"_format {fmt!r} is not supported; Carnet speaks JSON only")
        return
    accept = request.headers.get("accept")
    if not accept:
        return
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in JSON_TYPES or media in ("*/*", "application/*", ""):
            return
    raise NotAcceptable(f"cannot answer with {accept!r}; Carnet speaks application/fhir+json")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing more than ``max_bytes`` before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and is_plain_number(declared) and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {max_bytes} limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body exceeds the {max_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_resource(request: Request, max_bytes: int) -> dict[str, Any]:
    """Parse a FHIR JSON body: 415 for another media type, 400 for bad JSON."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not supported; "
            "send application/fhir+json")
    body = await read_body(request, max_bytes)
    if not body.strip():
        raise BadRequest("the request body is empty; a FHIR resource was expected")
    return json_object(body, "the body must be a JSON object holding a FHIR resource")


def json_object(body: bytes, not_an_object: str) -> dict[str, Any]:
    """A JSON object from bytes: 400 for bad JSON, 400 with ``not_an_object`` for another value."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest(not_an_object)
    return data


MAX_VERSION = 2**31 - 1


def is_plain_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts '²' and other digits ``int`` refuses;
    and at most 18 of them, which ``int`` converts (it raises from 4,301 digits) and a 64-bit
    column holds."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def parse_version(text: str) -> int:
    """A version id from a URL (``_history/3``): 400 unless a plain number in range."""
    if not is_plain_number(text) or int(text) > MAX_VERSION:
        raise BadRequest(f"version {text!r} is not a version number")
    return int(text)


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def parse_if_match(header: str | None) -> int | None:
    """The version an ``If-Match`` header asks for (``W/"3"`` or ``"3"``)."""
    if header is None:
        return None
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not is_plain_number(value):
        raise PreconditionFailed(f"If-Match {header!r} is not a version ETag such as W/\"3\"")
    return int(value)


def http_date(micros: int) -> str:
    return format_datetime(datetime.fromtimestamp(micros / 1_000_000, UTC), usegmt=True)


def now_micros() -> int:
    """Now, as Carnet stores instants: integer microseconds since the epoch (UTC)."""
    return time.time_ns() // 1_000


def fhir_instant(micros: int) -> str:
    moment = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
        microsecond=micros % 1_000_000)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def base_url(request: Request, public_url: str | None) -> str:
    """The FHIR base clients should use in fullUrl, Location and links."""
    if public_url:
        return f"{public_url}/fhir"
    return f"{str(request.base_url).rstrip('/')}/fhir"


def fhir_json(content: bytes, status: int = 200, headers: dict[str, str] | None = None,
              pretty: bool = False) -> Response:
    if pretty:
        content = orjson.dumps(orjson.loads(content), option=orjson.OPT_INDENT_2)
    return Response(content, status_code=status, media_type=FHIR_JSON, headers=headers)


def wants_pretty(request: Request) -> bool:
    return request.query_params.get("_pretty") == "true"


def prefer(request: Request) -> dict[str, str]:
    """The ``Prefer`` header's tokens: ``return`` and ``handling``."""
    tokens: dict[str, str] = {}
    for part in request.headers.get("prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                tokens[key.lower()] = value.strip().strip('"').lower()
    return tokens
