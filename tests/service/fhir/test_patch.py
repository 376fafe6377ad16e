"""PATCH: JSON Patch and FHIRPath Patch, over HTTP and as transaction entries."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from tests.factories import FHIR_JSON, patient

FHIRPATH = {"Content-Type": "application/fhir+json"}


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    part: list[dict[str, Any]] = [{"name": "type", "valueCode": kind},
                                  {"name": "path", "valueString": path}]
    if "name" in parts:
        part.append({"name": "name", "valueString": parts.pop("name")})
    part.extend({"name": "value", key: value} for key, value in parts.items())
    return {"name": "operation", "part": part}


def parameters(*operations: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceType": "Parameters", "parameter": list(operations)})


@pytest.fixture
async def patient_id(client: httpx.AsyncClient) -> str:
    created = await client.post("/fhir/Patient", headers=FHIR_JSON, content=orjson.dumps(
        patient(telecom=[{"system": "phone", "value": "0102030405"}])))
    assert created.status_code == 201
    found: str = created.json()["id"]
    return found


async def test_fhirpath_patch_replaces_adds_and_deletes(client: httpx.AsyncClient,
                                                        patient_id: str) -> None:
    response = await client.patch(f"/fhir/Patient/{patient_id}", headers=FHIRPATH,
                                  content=parameters(
                                      operation("replace", "Patient.gender", valueCode="female"),
                                      operation("add", "Patient", name="address",
                                                valueAddress={"city": "Ajaccio"}),
                                      operation("delete", "Patient.telecom[0]")))
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["gender"] == "female"
    assert patched["address"] == [{"city": "Ajaccio"}]
    assert "telecom" not in patched or patched["telecom"] == []
    assert patched["meta"]["versionId"] == "2"


@pytest.mark.parametrize(("body", "status"), [
    (parameters(operation("insert", "Patient.name", valueString="x")), 400),
    (parameters(operation("replace", "Patient.name.where(use='official').family",
                          valueString="X")), 400),
    (parameters(operation("replace", "Observation.status", valueCode="final")), 400),
    (parameters(operation("replace", "Patient.photo[3]", valueString="x")), 422),
    (parameters(operation("replace", "Patient.gender")), 400),
    (parameters(operation("replace", "Patient.gender", valueCode="robot")), 400),
    (orjson.dumps({"resourceType": "Patient"}), 400),
    (b"[not json", 400),
])
async def test_bad_fhirpath_patches_are_refused_and_change_nothing(
        client: httpx.AsyncClient, patient_id: str, body: bytes, status: int) -> None:
    response = await client.patch(f"/fhir/Patient/{patient_id}", headers=FHIRPATH, content=body)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    stored = await client.get(f"/fhir/Patient/{patient_id}")
    assert stored.json()["meta"]["versionId"] == "1"


async def test_patch_with_another_media_type_is_415(client: httpx.AsyncClient,
                                                    patient_id: str) -> None:
    response = await client.patch(f"/fhir/Patient/{patient_id}", content=b"gender=female",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415


def _transaction(*entries: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                         "entry": list(entries)})


async def test_patch_entries_in_a_transaction(client: httpx.AsyncClient,
                                              patient_id: str) -> None:
    json_patch = base64.b64encode(orjson.dumps(
        [{"op": "replace", "path": "/gender", "value": "other"}])).decode()
    response = await client.post("/fhir", headers=FHIR_JSON, content=_transaction(
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": json_patch},
         "request": {"method": "PATCH", "url": f"Patient/{patient_id}"}},
        {"resource": {"resourceType": "Parameters", "parameter": [
            operation("add", "Patient", name="address", valueAddress={"city": "Bastia"})]},
         "request": {"method": "PATCH", "url": f"Patient/{patient_id}"}}))
    assert response.status_code == 200, response.text
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["200 OK"] * 2
    stored = (await client.get(f"/fhir/Patient/{patient_id}")).json()
    assert stored["gender"] == "other" and stored["address"] == [{"city": "Bastia"}]
    assert stored["meta"]["versionId"] == "3"


async def test_a_failing_patch_entry_rolls_the_transaction_back(
        client: httpx.AsyncClient, patient_id: str) -> None:
    response = await client.post("/fhir", headers=FHIR_JSON, content=_transaction(
        {"resource": patient(family="Nouveau"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Parameters", "parameter": [
            operation("replace", "Patient.photo[0]", valueString="x")]},
         "request": {"method": "PATCH", "url": f"Patient/{patient_id}"}}))
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    total = await client.get("/fhir/Patient", params={"_summary": "count"})
    assert total.json()["total"] == 1


@pytest.mark.parametrize(("entry", "status"), [
    ({"request": {"method": "PATCH", "url": "Patient/x"}}, 400),
    ({"resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "e30="},
      "request": {"method": "PATCH", "url": "Patient/x"}}, 400),
    ({"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                   "data": "%%%"}, "request": {"method": "PATCH", "url": "Patient/x"}}, 400),
    ({"resource": {"resourceType": "Parameters", "parameter": []},
      "request": {"method": "PATCH", "url": "Patient?name=x"}}, 405),
])
async def test_malformed_patch_entries_are_refused(client: httpx.AsyncClient,
                                                   entry: dict[str, Any], status: int) -> None:
    response = await client.post("/fhir", headers=FHIR_JSON, content=_transaction(entry))
    assert response.status_code == status, response.text
