"""Every failure a client can cause is an OperationOutcome with the right status."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from storage.db import Database
from storage.errors import DatabaseBusy
from tests.factories import FHIR_JSON, patient
from tests.tokens import OPERATOR_APP, Tokens, bearer


def assert_outcome(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["diagnostics"]
    return body


async def stored_count(client: httpx.AsyncClient, resource_type: str = "Patient") -> int:
    bundle = (await client.get(f"/fhir/{resource_type}", params={"_summary": "count"})).json()
    return int(bundle["total"])


@pytest.mark.parametrize("body", [b"{not json", b'{"resourceType": "Patient"', b"\xff\xfe"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/fhir/Patient", content=body, headers=FHIR_JSON)
    assert_outcome(response, 400)
    assert await stored_count(client) == 0


@pytest.mark.parametrize("body", [b"[]", b'"Patient"', b"42", b"", b"   "])
async def test_json_that_is_not_an_object_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    assert_outcome(await client.post("/fhir/Patient", content=body, headers=FHIR_JSON), 400)


async def test_resource_type_mismatch_with_url_is_400(client: httpx.AsyncClient) -> None:
    body = assert_outcome(await client.post("/fhir/Patient", json={"resourceType": "Practitioner"},
                                            headers=FHIR_JSON), 400)
    assert body["issue"][0]["expression"] == ["resourceType"]


async def test_missing_resource_type_is_400(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.post("/fhir/Patient", json={"gender": "male"},
                                     headers=FHIR_JSON), 400)


async def test_unknown_resource_type_in_url_is_404(client: httpx.AsyncClient) -> None:
    body = assert_outcome(await client.get("/fhir/Spaceship/1"), 404)
    assert "Spaceship" in body["issue"][0]["diagnostics"]


async def test_fhir_type_that_carnet_does_not_serve_is_404(client: httpx.AsyncClient) -> None:
    body = assert_outcome(await client.post("/fhir/Medication", json={"resourceType": "Medication"},
                                            headers=FHIR_JSON), 404)
    assert "not supported" in body["issue"][0]["diagnostics"]


async def test_invalid_element_value_names_its_path(client: httpx.AsyncClient) -> None:
    body = assert_outcome(await client.post("/fhir/Patient",
                                            json={**patient(), "birthDate": "1970-13-45"},
                                            headers=FHIR_JSON), 400)
    assert body["issue"][0]["expression"] == ["Patient.birthDate"]
    assert await stored_count(client) == 0


async def test_all_invalid_elements_are_reported_at_once(client: httpx.AsyncClient) -> None:
    bad = {"resourceType": "Patient", "gender": "robot", "name": [{"given": "not-a-list"}],
           "shoeSize": 42}
    body = assert_outcome(await client.post("/fhir/Patient", json=bad, headers=FHIR_JSON), 400)
    paths = {e for issue in body["issue"] for e in issue.get("expression", [])}
    assert {"Patient.gender", "Patient.name[0].given", "Patient.shoeSize"} <= paths


async def test_invalid_base64_in_binary_is_400(client: httpx.AsyncClient) -> None:
    body = assert_outcome(await client.post(
        "/fhir/Binary", json={"resourceType": "Binary", "contentType": "text/plain",
                              "data": "not base64!"}, headers=FHIR_JSON), 400)
    assert body["issue"][0]["expression"] == ["Binary.data"]


async def test_unsupported_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=b"<Patient/>",
                                 headers={"Content-Type": "application/fhir+xml"})
    assert_outcome(response, 415)
    response = await client.post("/fhir/Patient", content=b"{}")  # no content type at all
    assert_outcome(response, 415)


async def test_json_content_types_are_accepted(client: httpx.AsyncClient) -> None:
    for media in ("application/json", "application/fhir+json; charset=utf-8"):
        response = await client.post("/fhir/Patient", json=patient(),
                                     headers={"Content-Type": media})
        assert response.status_code == 201


async def test_xml_is_not_acceptable(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.get("/fhir/metadata",
                                    headers={"Accept": "application/fhir+xml"}), 406)
    assert_outcome(await client.get("/fhir/metadata", params={"_format": "xml"}), 406)


async def test_format_json_is_accepted(client: httpx.AsyncClient) -> None:
    for fmt in ("json", "application/fhir+json", "application/json"):
        response = await client.get("/fhir/metadata", params={"_format": fmt},
                                    headers={"Accept": "text/html"})
        assert response.status_code == 200


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    huge = {**patient(), "text": {"status": "generated",
                                  "div": "<div>" + "x" * 2_000_000 + "</div>"}}
    assert_outcome(await client.post("/fhir/Patient", json=huge, headers=FHIR_JSON), 413)
    assert await stored_count(client) == 0


async def test_body_over_the_limit_without_length_is_413(client: httpx.AsyncClient) -> None:
    async def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(40):
            yield b"x" * 65536

    response = await client.post("/fhir/Patient", content=chunks(), headers=FHIR_JSON)
    assert_outcome(response, 413)


async def test_unknown_route_is_404_outcome(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.get("/fhir/Patient/1/extra/segments/here"), 404)


async def test_unsupported_method_is_405_outcome(client: httpx.AsyncClient) -> None:
    # PATCH is supported on an instance now; not on a type, and TRACE nowhere.
    assert_outcome(await client.patch("/fhir/Patient", json=[], headers=FHIR_JSON), 405)
    assert_outcome(await client.request("TRACE", "/fhir/Patient/1"), 405)


async def test_non_numeric_version_is_400(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.get("/fhir/Patient/1/_history/latest"), 400)


async def test_read_of_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.get("/fhir/Patient/does-not-exist"), 404)


async def test_unexpected_errors_are_500_outcomes_without_details(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.fhir import interactions

    async def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(interactions, "read", explode)
    transport = client._transport  # the ASGI transport must not re-raise app errors here
    transport.raise_app_exceptions = False  # type: ignore[attr-defined]
    body = assert_outcome(await client.get("/fhir/Patient/x"), 500)
    assert "secret" not in body["issue"][0]["diagnostics"]
    assert "incident" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("version", ["²", "99999999999999999999", "-1"])
async def test_odd_version_numbers_are_400(client: httpx.AsyncClient, version: str) -> None:
    assert_outcome(await client.get(f"/fhir/Patient/x/_history/{version}"), 400)


async def test_unicode_digits_in_history_count_are_400(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.get("/fhir/Patient/_history", params={"_count": "²"}), 400)


async def test_unicode_digits_in_if_match_are_412(client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)).json()
    assert_outcome(await client.put(f"/fhir/Patient/{created['id']}", json=created,
                                    headers={**FHIR_JSON, "If-Match": 'W/"²"'.encode()}), 412)


async def test_unicode_digits_in_content_length_do_not_crash(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=b"{}",
                                 headers={**FHIR_JSON, "Content-Length": "²".encode()})
    assert response.status_code < 500


async def test_client_disconnecting_mid_body_is_answered_without_a_500(settings, database,
                                                                       tokens) -> None:
    from service.app import create_app

    app = create_app(settings, database)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/fhir/Patient", "raw_path": b"/fhir/Patient",
             "query_string": b"", "root_path": "", "server": ("carnet.test", 80),
             "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"carnet.test"), (b"content-type", b"application/fhir+json"),
                         (b"content-length", b"100"),
                         (b"authorization", f"Bearer {tokens.app()}".encode())]}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"disconnected" in body


async def test_a_write_that_finds_no_free_connection_is_503_and_stores_nothing(
        database: Database, settings: Settings, tokens: Tokens) -> None:
    busy = Database(database.url, pool_size=1, pool_timeout=0.1)
    app = create_app(settings, busy)
    headers = {"Accept": "application/fhir+json",
               **bearer(tokens.app("system/*.cruds", OPERATOR_APP))}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://carnet.test", headers=headers) as http:
            async with AsyncExitStack() as held:
                try:
                    for _ in range(10):  # take every write connection of the pool
                        await held.enter_async_context(busy.write())
                except DatabaseBusy:
                    pass
                response = await http.post("/fhir/Patient", json=patient(),
                                           headers=FHIR_JSON)
            body = assert_outcome(response, 503)
            assert body["issue"][0]["code"] == "transient"
            assert response.headers["retry-after"] == "5"
            assert await stored_count(http) == 0
    finally:
        await busy.dispose()
