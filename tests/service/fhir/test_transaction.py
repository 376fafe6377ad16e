"""Transaction and batch Bundles at POST /fhir."""

from __future__ import annotations

from typing import Any

import httpx

from service.documents.samples import document_bundle, new_urn
from storage.db import Database
from tests.factories import FHIR_JSON, IPP_SYSTEM, ins_patient, ins_patient_resource, patient

NIR = "253072A07300443"


def post(full_url: str, resource: dict[str, Any], **request: Any) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"], **request}}


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


async def send(client: httpx.AsyncClient, bundle: dict[str, Any],
               **headers: str) -> httpx.Response:
    return await client.post("/fhir", json=bundle, headers={**FHIR_JSON, **headers})


async def count(client: httpx.AsyncClient, resource_type: str) -> int:
    bundle = (await client.get(f"/fhir/{resource_type}", params={"_summary": "count"})).json()
    return int(bundle["total"])


PATIENT_URL = "urn:uuid:5a0c6d2e-1f0b-4c39-9d7e-2f6f1c3b8a01"


async def patient_with_document(database: Database, patient_url: str = PATIENT_URL,
                                **request: Any) -> dict[str, Any]:
    """An ITI-65 transaction that also creates its (qualified INS) Patient: the Patient,
    then the SubmissionSet, the DocumentReference and its Binary, all pointing at
    ``patient_url``. ``request`` goes to the Patient entry's request."""
    bundle = document_bundle(patient_url)
    resource = await ins_patient_resource(database, "Corse", ipp=NIR)
    bundle["entry"].insert(0, post(patient_url, resource, **request))
    return bundle


def index_of(bundle: dict[str, Any], resource_type: str) -> int:
    return next(i for i, e in enumerate(bundle["entry"])
                if e["resource"]["resourceType"] == resource_type)


def location_of(response: dict[str, Any], resource_type: str) -> str:
    """The location of the first entry of that type in a transaction-response, no version."""
    return next(e["response"]["location"].rsplit("/_history", 1)[0] for e in response["entry"]
                if e["response"]["location"].startswith(f"{resource_type}/"))


async def test_transaction_resolves_urn_uuid_references(client: httpx.AsyncClient,
                                                        database: Database) -> None:
    response = await send(client, await patient_with_document(database))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created"] * 4
    patient_location = body["entry"][0]["response"]["location"]
    assert patient_location.startswith("Patient/")
    doc = (await client.get(f"/fhir/{location_of(body, 'DocumentReference')}")).json()
    assert doc["subject"]["reference"] == patient_location.rsplit("/_history", 1)[0]


async def test_transaction_response_can_carry_the_resources(client: httpx.AsyncClient,
                                                            database: Database) -> None:
    response = await send(client, await patient_with_document(database),
                          Prefer="return=representation")
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["resource"]["resourceType"] for e in entries] == [
        "Patient", "List", "DocumentReference", "Binary"]
    assert entries[0]["response"]["etag"] == 'W/"1"'


async def test_invalid_entry_rejects_the_whole_transaction(client: httpx.AsyncClient,
                                                           database: Database) -> None:
    bundle = await patient_with_document(database)
    doc_index = index_of(bundle, "DocumentReference")
    bundle["entry"][doc_index]["resource"]["status"] = "lost"
    bundle["entry"].append(post("urn:uuid:p2", {**patient(), "birthDate": "yesterday"}))
    response = await send(client, bundle)
    assert response.status_code == 400
    expressions = {e for i in response.json()["issue"] for e in i.get("expression", [])}
    assert f"Bundle.entry[{doc_index}].resource.status" in expressions
    assert f"Bundle.entry[{len(bundle['entry']) - 1}].resource.birthDate" in expressions
    assert await count(client, "Patient") == 0


async def test_failure_while_writing_rolls_everything_back(client: httpx.AsyncClient,
                                                           database: Database) -> None:
    existing = (await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)).json()
    stale_update = {"fullUrl": f"Patient/{existing['id']}", "resource": existing,
                    "request": {"method": "PUT", "url": f"Patient/{existing['id']}",
                                "ifMatch": 'W/"5"'}}
    bundle = await patient_with_document(database)
    bundle["entry"].append(stale_update)
    response = await send(client, bundle)
    assert response.status_code == 412
    assert f"Bundle.entry[{len(bundle['entry']) - 1}]" in \
        response.json()["issue"][0]["diagnostics"]
    assert await count(client, "Patient") == 1
    assert await count(client, "DocumentReference") == 0


async def test_reference_to_an_unknown_entry_is_refused(client: httpx.AsyncClient,
                                                        database: Database) -> None:
    bundle = await patient_with_document(database)
    doc = bundle["entry"][index_of(bundle, "DocumentReference")]["resource"]
    doc["subject"] = {"reference": new_urn()}  # no entry has this fullUrl
    response = await send(client, bundle)
    assert response.status_code == 400
    assert await count(client, "Patient") == 0


async def test_duplicate_full_urls_are_refused(client: httpx.AsyncClient) -> None:
    response = await send(client, transaction(post("urn:uuid:same", patient()),
                                              post("urn:uuid:same", patient())))
    assert response.status_code == 400
    assert await count(client, "Patient") == 0


async def test_if_none_exist_reuses_the_existing_resource(client: httpx.AsyncClient,
                                                          database: Database) -> None:
    first = (await send(client, await patient_with_document(database))).json()
    patient_location = first["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]
    again = new_urn()
    bundle = await patient_with_document(database, again,
                                         ifNoneExist=f"identifier={IPP_SYSTEM}|{NIR}")
    response = (await send(client, bundle)).json()
    assert response["entry"][0]["response"]["status"] == "200 OK"
    assert await count(client, "Patient") == 1
    stored = (await client.get(f"/fhir/{location_of(response, 'DocumentReference')}")).json()
    assert stored["subject"]["reference"] == patient_location


async def test_conditional_reference_resolves_to_the_single_match(
        client: httpx.AsyncClient, database: Database) -> None:
    created = await ins_patient(client, database, "Corse", ipp=NIR)
    bundle = document_bundle(f"Patient?identifier={IPP_SYSTEM}|{NIR}")
    response = await send(client, bundle)
    assert response.status_code == 200, response.text
    stored = (await client.get(
        f"/fhir/{location_of(response.json(), 'DocumentReference')}")).json()
    assert stored["subject"]["reference"] == f"Patient/{created}"


async def test_conditional_reference_without_match_is_412(client: httpx.AsyncClient) -> None:
    bundle = document_bundle(f"Patient?identifier={IPP_SYSTEM}|{NIR}")
    response = await send(client, bundle)
    assert response.status_code == 412
    assert await count(client, "DocumentReference") == 0


async def test_transaction_runs_delete_put_and_get_entries(client: httpx.AsyncClient) -> None:
    doomed = (await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)).json()
    kept = (await client.post("/fhir/Patient", json=patient(family="Garde"),
                              headers=FHIR_JSON)).json()
    bundle = transaction(
        {"request": {"method": "GET", "url": f"Patient/{kept['id']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
        {"resource": {**kept, "gender": "female"},
         "request": {"method": "PUT", "url": f"Patient/{kept['id']}"}},
        {"request": {"method": "GET", "url": "Patient?family=garde"}},
    )
    response = await send(client, bundle, Prefer="return=representation")
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK", "204 No Content", "200 OK",
                                                          "200 OK"]
    # GETs run after the writes, as FHIR orders a transaction
    assert entries[0]["resource"]["gender"] == "female"
    assert entries[3]["resource"]["type"] == "searchset"
    assert (await client.get(f"/fhir/Patient/{doomed['id']}")).status_code == 410


async def test_conditional_put_entry_updates_the_match(client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json=patient(ipp=NIR), headers=FHIR_JSON)).json()
    bundle = transaction({"resource": patient(ipp=NIR, gender="female"),
                          "request": {"method": "PUT",
                                      "url": f"Patient?identifier={IPP_SYSTEM}|{NIR}"}})
    entry = (await send(client, bundle)).json()["entry"][0]
    assert entry["response"]["location"] == f"Patient/{created['id']}/_history/2"


async def test_base_accepts_only_transaction_and_batch_bundles(client: httpx.AsyncClient) -> None:
    for body in ({"resourceType": "Patient"},
                 {"resourceType": "Bundle", "type": "document"},
                 {"resourceType": "Bundle", "type": "transaction", "entry": {"not": "a list"}},
                 {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]}):
        response = await send(client, body)
        assert response.status_code == 400, body
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_unsupported_entry_method_is_refused(client: httpx.AsyncClient) -> None:
    bundle = transaction({"request": {"method": "HEAD", "url": "Patient/1"}})
    response = await send(client, bundle)
    assert response.status_code == 405
    assert "HEAD" in response.json()["issue"][0]["diagnostics"]


async def test_batch_reports_each_entry_on_its_own(client: httpx.AsyncClient) -> None:
    bundle = transaction(
        post("urn:uuid:a", patient(family="Bien")),
        {"request": {"method": "GET", "url": "Patient/missing"}},
        post("urn:uuid:b", {**patient(), "gender": "robot"}),
        {"request": {"method": "GET", "url": "Spaceship/1"}},
        kind="batch",
    )
    response = await send(client, bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("404")
    assert statuses[2].startswith("400")
    assert statuses[3].startswith("404")
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert await count(client, "Patient") == 1


async def test_batch_conditional_create_is_idempotent(client: httpx.AsyncClient) -> None:
    entry = post("urn:uuid:a", patient(ipp=NIR), ifNoneExist=f"identifier={IPP_SYSTEM}|{NIR}")
    first = (await send(client, transaction(entry, kind="batch"))).json()
    second = (await send(client, transaction(entry, kind="batch"))).json()
    assert first["entry"][0]["response"]["status"] == "201 Created"
    assert second["entry"][0]["response"]["status"] == "200 OK"
    assert await count(client, "Patient") == 1
