"""Every Bundle the server builds is a valid FHIR R4 Bundle."""

from __future__ import annotations

import httpx
from fhir.resources.R4B.bundle import Bundle

from storage.db import Database
from tests.factories import FHIR_JSON, file_document, ins_patient, patient


def valid_bundle(response: httpx.Response, bundle_type: str) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    Bundle.model_validate(body)
    assert body["type"] == bundle_type
    return body


async def test_empty_searchset_has_no_empty_entry_array(client: httpx.AsyncClient) -> None:
    body = valid_bundle(await client.get("/fhir/Patient", params={"family": "nobody"}),
                        "searchset")
    assert body["total"] == 0
    assert "entry" not in body
    count = valid_bundle(await client.get("/fhir/Patient", params={"_summary": "count"}),
                         "searchset")
    assert "entry" not in count


async def test_searchset_history_and_transaction_bundles_validate(
        client: httpx.AsyncClient, database: Database) -> None:
    created = await ins_patient(client, database)
    await file_document(client, created)
    await client.delete(f"/fhir/Patient/{created}")
    valid_bundle(await client.get("/fhir/DocumentReference",
                                  params={"_include": "DocumentReference:subject",
                                          "unknown-param": "x"}), "searchset")
    valid_bundle(await client.get(f"/fhir/Patient/{created}/_history"), "history")
    valid_bundle(await client.get("/fhir/Patient/_history"), "history")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:x", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}}]}
    valid_bundle(await client.post("/fhir", json=transaction, headers=FHIR_JSON),
                 "transaction-response")
    batch = {**transaction, "type": "batch",
             "entry": [*transaction["entry"],
                       {"request": {"method": "GET", "url": "Patient/missing"}}]}
    valid_bundle(await client.post("/fhir", json=batch, headers=FHIR_JSON), "batch-response")
