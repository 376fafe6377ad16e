"""The CapabilityStatement lists exactly what the server does."""

from __future__ import annotations

import httpx
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from service.settings import Settings
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
            params = {param["name"]: samples[param["type"]]}
            if resource["type"] == "AuditEvent":  # the trail is searched one patient at a time
                params.setdefault("patient", "Patient/x")
            response = await client.get(f"/fhir/{resource['type']}", params=params,
                                        headers={"Prefer": "handling=strict"})
            assert response.status_code == 200, (resource["type"], param, response.text)


async def test_capability_statement_says_where_to_get_a_token(anonymous: httpx.AsyncClient,
                                                              settings: Settings) -> None:
    response = await anonymous.get("/fhir/metadata")
    assert response.status_code == 200  # public: an app reads it before it holds a token
    security = response.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"] == f"{settings.effective_issuer}/token"
    patient = next(r for r in response.json()["rest"][0]["resource"] if r["type"] == "Patient")
    assert [op["name"] for op in patient["operation"]] == ["ins-lookup"]


async def test_metadata_says_documents_are_never_deleted_and_binaries_never_change(
        client: httpx.AsyncClient) -> None:
    rest = (await client.get("/fhir/metadata")).json()["rest"][0]
    resources = {r["type"]: r for r in rest["resource"]}

    def codes(resource_type: str) -> set[str]:
        return {i["code"] for i in resources[resource_type]["interaction"]}

    assert "patch" in codes("Patient") and "delete" in codes("Patient")
    assert "delete" not in codes("DocumentReference") and "patch" in codes("DocumentReference")
    assert codes("Binary").isdisjoint({"update", "patch", "delete"})
    assert resources["DocumentReference"]["updateCreate"] is False
    assert {"author.given", "author.family", "period", "setting", "facility", "event",
            "format", "related", "isArchived"} <= {
        p["name"] for p in resources["DocumentReference"]["searchParam"]}
    assert "ITI-68" in resources["Binary"]["documentation"]
