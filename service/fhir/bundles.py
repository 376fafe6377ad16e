"""Bundle assembly from stored bytes.

Search and history Bundles are built by splicing each resource's stored JSON
into the Bundle as it is, so that serving a page never parses a resource.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from service.fhir.http import fhir_instant, now_micros


def entry(full_url: str | None, resource: bytes | None, **parts: Any) -> bytes:
    """One ``Bundle.entry``; ``parts`` (search, request, response) are plain JSON."""
    fields: list[bytes] = []
    if full_url is not None:
        fields.append(b'"fullUrl":' + orjson.dumps(full_url))
    if resource is not None:
        fields.append(b'"resource":' + resource)
    fields.extend(b'"' + key.encode() + b'":' + orjson.dumps(value)
                  for key, value in parts.items())
    return b"{" + b",".join(fields) + b"}"


def bundle(bundle_type: str, entries: Iterable[bytes], *, total: int | None = None,
           links: list[tuple[str, str]] | None = None) -> bytes:
    head: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                            "meta": {"lastUpdated": fhir_instant(now_micros())},
                            "type": bundle_type}
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    body = b",".join(entries)
    if not body:  # FHIR JSON never carries an empty array
        return orjson.dumps(head)
    return orjson.dumps(head)[:-1] + b',"entry":[' + body + b"]}"
