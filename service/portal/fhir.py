"""The portal reads and writes through Carnet's own FHIR API, as the patient.

No privileged path: every page goes through the same policy decision point,
audit trail and validation as any third-party app, with the patient's own
access token. The calls stay in the process (ASGI transport, no socket).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from service.ops.logs import REQUEST_ID
from service.ops.observe import REQUEST_ID_HEADER
from service.portal.errors import api_refusal

FHIR_JSON = "application/fhir+json"


def _diagnostics(response: httpx.Response) -> str:
    try:
        outcome = response.json()
        issue = (outcome.get("issue") or [{}])[0]
        return str(issue.get("diagnostics") or issue.get("code") or response.reason_phrase)
    except (ValueError, AttributeError):
        return response.reason_phrase


def _json(response: httpx.Response) -> dict[str, Any]:
    """orjson: decoding the API's answers was a third of a busy page's CPU with ``json``."""
    if not response.content:
        return {}
    decoded: dict[str, Any] = orjson.loads(response.content)
    return decoded


class PortalFhir:
    """``/fhir`` as one patient; JSON in, JSON out, ``Refusal`` on any refusal."""

    def __init__(self, api: httpx.AsyncClient, access_token: str) -> None:
        self._api = api
        self._headers = {"Authorization": f"Bearer {access_token}", "Accept": FHIR_JSON}

    async def _send(self, method: str, path: str, *, params: Any = None,
                    body: Any = None, content_type: str = FHIR_JSON,
                    headers: dict[str, str] | None = None) -> httpx.Response:
        sent_headers = {**self._headers, **(headers or {})}
        request_id = REQUEST_ID.get()
        if request_id:  # the page's own id: its API calls log under it
            sent_headers[REQUEST_ID_HEADER] = request_id
        content = None
        if body is not None:
            content = orjson.dumps(body)
            sent_headers["Content-Type"] = content_type
        response = await self._api.request(method, f"/fhir/{path}", params=params,
                                           content=content, headers=sent_headers)
        if response.status_code >= 400:
            raise api_refusal(response.status_code, _diagnostics(response))
        return response

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        return _json(await self._send("GET", path, params=params))

    async def raw(self, path: str) -> httpx.Response:
        """Bytes as the API serves them (a document's content), with its headers."""
        return await self._send("GET", path, headers={"Accept": "*/*"})

    async def post(self, path: str, body: Any) -> dict[str, Any]:
        response = await self._send("POST", path, body=body)
        return _json(response)

    async def put(self, path: str, body: Any) -> dict[str, Any]:
        response = await self._send("PUT", path, body=body)
        return _json(response)

    async def patch(self, path: str, operations: list[dict[str, Any]], *,
                    if_match: str | None = None) -> dict[str, Any]:
        """A JSON Patch; with ``if_match`` a concurrent change fails (412) instead of
        being overwritten."""
        response = await self._send("PATCH", path, body=operations,
                                    content_type="application/json-patch+json",
                                    headers={"If-Match": if_match} if if_match else None)
        return _json(response)

    async def delete(self, path: str) -> None:
        await self._send("DELETE", path)

    async def every(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """All entries of a search, following its ``next`` links (small result sets only)."""
        bundle = await self.get(path, params)
        resources = [entry["resource"] for entry in bundle.get("entry") or []]
        for _ in range(50):
            following = next((link["url"] for link in bundle.get("link") or []
                              if link.get("relation") == "next"), None)
            if following is None:
                break
            bundle = _json(await self._send("GET", following.split("/fhir/", 1)[1]))
            resources += [entry["resource"] for entry in bundle.get("entry") or []]
        return resources


def display_name(resource: dict[str, Any]) -> str:
    """'Marie Ange CORSE' for a Patient or Practitioner; the usual name first."""
    names = resource.get("name") or []
    if not names:
        return ""
    name = next((n for n in names if n.get("use") == "usual"), names[0])
    if name.get("text"):
        return str(name["text"])
    return " ".join([*name.get("given", []), name.get("family", "")]).strip()
