"""Create, read, vread, update, delete and history through the HTTP API."""

from __future__ import annotations

import httpx

from tests.factories import FHIR_JSON, patient


async def create(client: httpx.AsyncClient, resource: dict) -> httpx.Response:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource,
                                 headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return response


async def test_create_assigns_id_version_and_location(client: httpx.AsyncClient) -> None:
    response = await create(client, patient())
    body = response.json()
    assert body["id"]
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == (
        f"http://carnet.test/fhir/Patient/{body['id']}/_history/1")
    assert response.headers["content-type"].startswith("application/fhir+json")


async def test_read_serves_what_was_stored(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient(family="Lefèvre"))).json()
    response = await client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'
    assert "last-modified" in response.headers
