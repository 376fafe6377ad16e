"""Security headers (service/ops/headers.py): on every API and provider answer, without
overriding what a route chose, and never in place of the portal's stricter set."""

from __future__ import annotations

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.factories import FHIR_JSON, patient
from tests.reliability import figures

# The header middleware does not care about the back-end.
sqlite_only = pytest.mark.parametrize("session_database", ["sqlite"], indirect=True)


def assert_api_headers(response: httpx.Response) -> None:
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert response.headers.get_list("referrer-policy") == ["no-referrer"]
    assert "strict-transport-security" not in response.headers  # http://: no HSTS
    figures.add("access.security_header_checks")


@sqlite_only
async def test_fhir_answers_holding_patient_data_are_never_cached_sniffed_or_referred(
        client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    read = await client.get(created.headers["location"].split("carnet.test")[-1])
    search = await client.get("/fhir/Patient", params={"family": "Dupont"})
    missing = await client.get("/fhir/Patient/nobody")
    assert (read.status_code, search.status_code, missing.status_code) == (200, 200, 404)
    assert missing.json()["resourceType"] == "OperationOutcome"
    for response in (created, read, search, missing):
        assert_api_headers(response)
        assert response.headers.get_list("cache-control") == ["no-store"]
    assert read.headers["etag"] == 'W/"1"'  # the version ETag is kept beside no-store


@sqlite_only
async def test_the_providers_answers_carry_them_and_keep_their_own_caching(
        anonymous: httpx.AsyncClient) -> None:
    keys = await anonymous.get("/idp/jwks")
    discovery = await anonymous.get("/idp/.well-known/openid-configuration")
    refused = await anonymous.post("/idp/token", data={"grant_type": "client_credentials"})
    assert (keys.status_code, discovery.status_code, refused.status_code) == (200, 200, 401)
    for response in (keys, discovery, refused):
        assert_api_headers(response)
    assert keys.headers.get_list("cache-control") == ["max-age=60"]  # public keys may be cached
    assert refused.headers.get_list("cache-control") == ["no-store"]


@sqlite_only
async def test_the_portal_keeps_its_own_stricter_set(anonymous: httpx.AsyncClient) -> None:
    home = await anonymous.get("/portal/")
    style = await anonymous.get("/portal/static/portal.css")
    assert (home.status_code, style.status_code) == (200, 200)
    assert home.headers.get_list("referrer-policy") == ["same-origin"]  # its forms need Origin
    assert home.headers.get_list("x-content-type-options") == ["nosniff"]
    assert "frame-ancestors" in home.headers["content-security-policy"]
    assert style.headers.get_list("x-content-type-options") == ["nosniff"]
    assert "no-store" not in style.headers.get("cache-control", "")  # static: cacheable
    figures.add("access.security_header_checks", 2)


async def test_an_https_deployment_tells_browsers_to_stay_on_https(settings: Settings) -> None:
    https = settings.model_copy(update={"public_url": "https://carnet.example.fr"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(https)),
                                 base_url="https://carnet.example.fr") as http:
        answer = await http.get("/fhir/metadata")
    assert answer.status_code == 200
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    assert answer.headers["x-content-type-options"] == "nosniff"
    figures.add("access.security_header_checks")


async def test_even_an_unexpected_error_carries_them(settings: Settings) -> None:
    """The 500 answer is made outside every middleware; it reuses the headers chosen."""
    app = create_app(settings)

    @app.get("/fhir/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://carnet.test") as http:
        answer = await http.get("/fhir/boom")
    assert answer.status_code == 500
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert_api_headers(answer)
    assert answer.headers["cache-control"] == "no-store"
