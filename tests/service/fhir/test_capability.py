"""The CapabilityStatement lists exactly what the server does."""

from __future__ import annotations

import httpx
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from storage.search.parameters import SEARCH_PARAMETERS


async def test_metadata_is_a_valid_r4_capability_statement(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata")
    assert response.status_code == 200
    body = response.json()
    CapabilityStatement.model_validate(body)
    assert body["fhirVersion"] == "4.0.1"
    assert body["implementation"]["url"] == "http://carnet.test/fhir"


async def test_metadata_lists_every_served_type_and_its_search_parameters(
        client: httpx.AsyncClient) -> None:
    rest = (await client.get("/fhir/metadata")).json()["rest"][0]
    resources = {r["type"]: r for r in rest["resource"]}
    assert set(resources) == set(SEARCH_PARAMETERS)
    doc = resources["DocumentReference"]
    names = {p["name"] for p in doc["searchParam"]}
    assert {"_id", "_lastUpdated", "patient", "type", "category", "date", "security-label"} <= names
    assert "DocumentReference:subject" in doc["searchInclude"]
    assert "DocumentReference:subject" in resources["Patient"]["searchRevInclude"]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}


async def test_each_advertised_search_parameter_is_accepted_strictly(
        client: httpx.AsyncClient) -> None:
    rest = (await client.get("/fhir/metadata")).json()["rest"][0]
    samples = {"token": "x", "uri": "http://x", "string": "x", "date": "2020",
               "reference": "Patient/x"}
    for resource in rest["resource"]:
        for param in resource["searchParam"]:
            response = await client.get(f"/fhir/{resource['type']}",
                                        params={param["name"]: samples[param["type"]]},
                                        headers={"Prefer": "handling=strict"})
            assert response.status_code == 200, (resource["type"], param, response.text)
