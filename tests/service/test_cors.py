"""CORS: browser apps on the configured origins only; none configured, no CORS header at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings
from tests.reliability import figures

APP_ORIGIN = "https://app.example.fr"
OTHER_ORIGIN = "https://evil.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "PUT",
             "Access-Control-Request-Headers": "authorization, content-type, if-match, "
                                               "x-access-mode, prefer"}


async def http_for(settings: Settings) -> httpx.AsyncClient:
    """The app without a database: metadata and preflights never reach one."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings)),
                             base_url="http://carnet.test")


@pytest.fixture
async def cors(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(update={"cors_origins": [APP_ORIGIN]})
    async with await http_for(configured) as http:
        yield http


def declared_cors(response: httpx.Response) -> bool:
    cors: bool = orjson.loads(response.content)["rest"][0]["security"]["cors"]
    return cors


async def test_by_default_no_origin_gets_a_cors_header(settings: Settings) -> None:
    async with await http_for(settings) as http:
        read = await http.get("/fhir/metadata", headers={"Origin": APP_ORIGIN})
        preflight = await http.options("/fhir/Patient/p1",
                                       headers={"Origin": APP_ORIGIN, **PREFLIGHT})
    assert read.status_code == 200
    assert not [h for h in read.headers if h.startswith("access-control-")]
    assert not [h for h in preflight.headers if h.startswith("access-control-")]
    assert declared_cors(read) is False
    figures.add("access.cors_checks", 2)


async def test_an_allowed_origin_is_echoed_with_the_headers_a_fhir_client_reads(
        cors: httpx.AsyncClient) -> None:
    read = await cors.get("/fhir/metadata", headers={"Origin": APP_ORIGIN})
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "access-control-allow-credentials" not in read.headers  # bearer tokens, no cookies
    exposed = {h.strip().lower() for h in
               read.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "location", "content-location", "last-modified"} <= exposed
    assert declared_cors(read) is True
    figures.add("access.cors_checks")


async def test_an_allowed_origins_preflight_may_send_the_fhir_headers(
        cors: httpx.AsyncClient) -> None:
    preflight = await cors.options("/fhir/Patient/p1", headers={"Origin": APP_ORIGIN,
                                                                **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in
               preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "if-match", "x-access-mode", "prefer",
            "if-none-exist"} <= allowed
    figures.add("access.cors_checks")


async def test_another_origin_gets_no_cors_header_and_its_preflight_is_refused(
        cors: httpx.AsyncClient) -> None:
    read = await cors.get("/fhir/metadata", headers={"Origin": OTHER_ORIGIN})
    assert read.status_code == 200  # the browser, not the server, withholds the answer
    assert "access-control-allow-origin" not in read.headers
    preflight = await cors.options("/fhir/Patient/p1", headers={"Origin": OTHER_ORIGIN,
                                                                **PREFLIGHT})
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.headers["content-type"] == "application/fhir+json"
    [issue] = preflight.json()["issue"]
    assert issue["code"] == "forbidden" and "origin" in issue["diagnostics"]
    assert preflight.headers["x-content-type-options"] == "nosniff"
    prefixed = await cors.get("/fhir/metadata", headers={"Origin": APP_ORIGIN + ".evil.com"})
    assert "access-control-allow-origin" not in prefixed.headers
    figures.add("access.cors_checks", 3)


@pytest.mark.parametrize("origin", ["*", "https://app.example.fr/path", "app.example.fr",
                                    "ftp://app.example.fr", "https://*.example.fr",
                                    "https://user@app.example.fr"])
def test_only_exact_origins_are_accepted_as_settings(origin: str) -> None:
    with pytest.raises(ValidationError):
        Settings(cors_origins=[origin])


def test_an_origin_setting_is_normalised() -> None:
    assert Settings(cors_origins=["https://App.Example.fr/"]).cors_origins == [
        "https://app.example.fr"]
