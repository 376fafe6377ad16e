"""ITI-68 Retrieve Document and raw uploads: bytes streamed in and out, Range, immutability."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
import orjson
import pytest

from service.documents.samples import PDF
from tests.factories import FHIR_JSON, file_document
from tests.service.documents.conftest import count, issues

RAW = {"Accept": "*/*"}


@pytest.fixture
async def binary_url(client: httpx.AsyncClient, patient_id: str) -> str:
    document = await file_document(client, patient_id)
    url: str = document["content"][0]["attachment"]["url"]
    return f"/fhir/{url}"


async def test_the_document_bytes_come_with_their_headers(client: httpx.AsyncClient,
                                                          binary_url: str) -> None:
    response = await client.get(binary_url, headers=RAW)
    assert response.status_code == 200
    assert response.content == PDF
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-length"] == str(len(PDF))
    assert response.headers["etag"] == f'"{hashlib.sha256(PDF).hexdigest()}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["x-content-type-options"] == "nosniff"
    again = await client.get(binary_url, headers={**RAW, "If-None-Match":
                                                  response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-9", 0, 9),
    ("bytes=10-", 10, len(PDF) - 1),
    ("bytes=-5", len(PDF) - 5, len(PDF) - 1),
    (f"bytes={len(PDF) - 1}-{len(PDF) + 100}", len(PDF) - 1, len(PDF) - 1),
])
async def test_a_range_gets_just_those_bytes(client: httpx.AsyncClient, binary_url: str,
                                             header: str, start: int, end: int) -> None:
    response = await client.get(binary_url, headers={**RAW, "Range": header})
    assert response.status_code == 206
    assert response.content == PDF[start:end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(PDF)}"
    assert response.headers["content-length"] == str(end - start + 1)


async def test_a_range_past_the_end_is_416(client: httpx.AsyncClient, binary_url: str) -> None:
    response = await client.get(binary_url, headers={**RAW, "Range": f"bytes={len(PDF)}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(PDF)}"
    assert issues(response)[0]["code"] == "processing"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-3", "bytes=abc"])
async def test_ranges_it_does_not_serve_get_the_whole_document(
        client: httpx.AsyncClient, binary_url: str, header: str) -> None:
    response = await client.get(binary_url, headers={**RAW, "Range": header})
    assert response.status_code == 200
    assert response.content == PDF


async def test_if_range_with_another_etag_gets_the_whole_document(
        client: httpx.AsyncClient, binary_url: str) -> None:
    response = await client.get(binary_url, headers={**RAW, "Range": "bytes=0-3",
                                                     "If-Range": '"stale"'})
    assert response.status_code == 200
    assert response.content == PDF


async def test_fhir_json_asked_for_gets_the_binary_resource(client: httpx.AsyncClient,
                                                            binary_url: str) -> None:
    for headers, params in (({"Accept": "application/fhir+json"}, {}),
                            (RAW, {"_format": "json"})):
        response = await client.get(binary_url, headers=headers, params=params)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/fhir+json")
        resource = response.json()
        assert resource["resourceType"] == "Binary"
        assert resource["contentType"] == "application/pdf"
        assert base64.b64decode(resource["data"]) == PDF
    version = await client.get(f"{binary_url}/_history/1")
    assert base64.b64decode(version.json()["data"]) == PDF
    assert (await client.get(f"{binary_url}/_history/2")).status_code == 404


async def test_an_unknown_binary_is_404(client: httpx.AsyncClient, patient_id: str) -> None:
    response = await client.get("/fhir/Binary/nope", headers=RAW)
    assert response.status_code == 404
    assert issues(response)[0]["code"] == "not-found"


async def test_a_raw_upload_is_stored_as_a_binary(client: httpx.AsyncClient) -> None:
    content = os.urandom(3 * 1024 * 1024 + 7)

    async def chunks() -> object:
        for i in range(0, len(content), 65536):
            yield content[i:i + 65536]

    response = await client.post("/fhir/Binary", content=chunks(),  # type: ignore[arg-type]
                                 headers={"Content-Type": "application/octet-stream",
                                          "X-Security-Context": "DocumentReference/abc"})
    assert response.status_code == 201, response.text
    assert response.headers["location"].endswith("/_history/1")
    assert "data" not in response.json()
    assert response.json()["securityContext"] == {"reference": "DocumentReference/abc"}
    back = await client.get(f"/fhir/Binary/{response.json()['id']}", headers=RAW)
    assert back.content == content
    middle = await client.get(f"/fhir/Binary/{response.json()['id']}",
                              headers={**RAW, "Range": "bytes=1000000-1999999"})
    assert middle.content == content[1_000_000:2_000_000]


async def test_a_raw_upload_over_the_limit_is_413_and_leaves_nothing(
        client: httpx.AsyncClient) -> None:
    blobs = client._transport.app.state.blob_store  # type: ignore[attr-defined]
    too_big = b"x" * (4 * 1024 * 1024 + 1)

    async def chunks() -> object:  # no Content-Length: the limit is found while streaming
        for i in range(0, len(too_big), 65536):
            yield too_big[i:i + 65536]

    for content in (too_big, chunks()):
        response = await client.post("/fhir/Binary", content=content,  # type: ignore[arg-type]
                                     headers={"Content-Type": "application/pdf"})
        assert response.status_code == 413
        assert issues(response)[0]["code"] == "too-long"
    assert await count(client, "Binary") == 0
    assert [key async for key in blobs.written_before(float("inf"))] == []


async def test_a_bad_security_context_header_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Binary", content=b"abc",
                                 headers={"Content-Type": "text/plain",
                                          "X-Security-Context": "../../etc"})
    assert response.status_code == 400
    assert await count(client, "Binary") == 0


async def test_a_json_binary_keeps_its_bytes_in_the_blob_store(
        client: httpx.AsyncClient) -> None:
    body = {"resourceType": "Binary", "contentType": "text/plain",
            "data": base64.b64encode(b"hello").decode()}
    response = await client.post("/fhir/Binary", headers=FHIR_JSON, content=orjson.dumps(body))
    assert response.status_code == 201
    assert "data" not in response.json()
    raw = await client.get(f"/fhir/Binary/{response.json()['id']}", headers=RAW)
    assert raw.content == b"hello"
    bad = await client.post("/fhir/Binary", headers=FHIR_JSON, content=orjson.dumps(
        {**body, "data": "%%% not base64"}))
    assert bad.status_code == 400


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_a_binary_is_immutable(client: httpx.AsyncClient, binary_url: str,
                                     method: str) -> None:
    body = {"resourceType": "Binary", "id": binary_url.rsplit("/", 1)[1],
            "contentType": "text/plain", "data": "aGk="}
    headers = {"Content-Type": "application/json-patch+json" if method == "PATCH"
               else "application/fhir+json"}
    content = b"[]" if method == "PATCH" else orjson.dumps(body)
    response = await client.request(method, binary_url, headers=headers,
                                    content=None if method == "DELETE" else content)
    assert response.status_code == 405
    assert (await client.get(binary_url, headers=RAW)).content == PDF
