"""SMART scopes at the FHIR API: what a token may not do is a 403 ``[smart-scope]``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.documents.samples import PDF, document_bundle, document_reference
from storage.db import Database
from tests.factories import (
    FHIR_JSON,
    IPP_SYSTEM,
    authorise,
    file_document,
    ins_patient,
    ins_patient_resource,
    patient,
    stored_binary,
)
from tests.tokens import DOCTOR, Tokens, bearer

NIR = "253072A07300443"
LOOKUP_BY_INS = {"resourceType": "Parameters", "parameter": [
    {"name": "ins", "valueIdentifier": {"system": "urn:oid:1.2.250.1.213.1.4.10",
                                        "value": NIR}}]}


def denied(response: httpx.Response, rule: str = "smart-scope") -> str:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "forbidden"
    diagnostics: str = " ".join(i["diagnostics"] for i in body["issue"])
    assert f"access denied [{rule}]" in diagnostics, diagnostics
    return diagnostics


async def count(client: httpx.AsyncClient, resource_type: str) -> int:
    """With the client's own token (``system/*.cruds``)."""
    response = await client.get(f"/fhir/{resource_type}", params={"_summary": "count"})
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


@pytest.fixture
async def patient_id(client: httpx.AsyncClient, database: Database) -> str:
    """A qualified INS patient (documents need one), also known by a local number: the
    identity of the tests' patient tokens."""
    return await ins_patient(client, database, "Corse", "Marie", gender="female",
                             birth_date="1953-07-21", birth_place="2A073", nir=NIR, ipp=NIR)


@pytest.fixture
async def document_id(client: httpx.AsyncClient, patient_id: str) -> str:
    document_id: str = (await file_document(client, patient_id))["id"]
    return document_id


# What filing a document writes besides the DocumentReference (ITI-65: SubmissionSet, bytes).
DOCUMENT_COMPANIONS = "system/List.c system/Binary.c"


# --- apps --------------------------------------------------------------------------------------


async def test_read_scope_reads_by_id_but_does_not_search(client: httpx.AsyncClient,
                                                          tokens: Tokens,
                                                          patient_id: str) -> None:
    token = bearer(tokens.app("system/Patient.r"))
    read = await client.get(f"/fhir/Patient/{patient_id}", headers=token)
    assert read.status_code == 200, read.text
    assert (await client.get(f"/fhir/Patient/{patient_id}/_history/1",
                             headers=token)).status_code == 200
    assert (await client.get(f"/fhir/Patient/{patient_id}/_history",
                             headers=token)).status_code == 200
    diagnostics = denied(await client.get("/fhir/Patient", params={"family": "Corse"},
                                          headers=token))
    assert "system/Patient.s" in diagnostics
    denied(await client.post("/fhir/Patient/_search", content=b"family=Corse",
                             headers={**token,
                                      "Content-Type": "application/x-www-form-urlencoded"}))
    denied(await client.get("/fhir/Patient/_history", headers=token))


async def test_search_scope_does_not_create(client: httpx.AsyncClient,
                                            tokens: Tokens) -> None:
    token = bearer(tokens.app("system/Patient.rs"))
    response = await client.post("/fhir/Patient", json=patient(), headers={**FHIR_JSON, **token})
    assert "system/Patient.c" in denied(response)
    assert await count(client, "Patient") == 0


async def test_each_write_needs_its_own_letter(client: httpx.AsyncClient, tokens: Tokens,
                                               patient_id: str) -> None:
    token = bearer(tokens.app("system/Patient.crs"))
    current = (await client.get(f"/fhir/Patient/{patient_id}")).json()
    denied(await client.put(f"/fhir/Patient/{patient_id}", json=current,
                            headers={**FHIR_JSON, **token}))
    denied(await client.put("/fhir/Patient", params={"family": "Corse"}, json=current,
                            headers={**FHIR_JSON, **token}))
    denied(await client.delete(f"/fhir/Patient/{patient_id}", headers=token))
    assert (await client.get(f"/fhir/Patient/{patient_id}")).json()["meta"]["versionId"] == "1"


async def test_conditional_create_also_needs_search(client: httpx.AsyncClient,
                                                    tokens: Tokens) -> None:
    token = bearer(tokens.app("system/Patient.c"))
    response = await client.post("/fhir/Patient", json=patient(),
                                 headers={**FHIR_JSON, **token, "If-None-Exist": "family=Dupont"})
    assert "system/Patient.s" in denied(response)
    assert await count(client, "Patient") == 0


async def test_a_scope_on_another_type_reads_nothing(client: httpx.AsyncClient, tokens: Tokens,
                                                     patient_id: str) -> None:
    token = bearer(tokens.app("system/Observation.cruds"))
    denied(await client.get(f"/fhir/Patient/{patient_id}", headers=token))


@pytest.mark.parametrize("include", ["DocumentReference:subject",
                                     "DocumentReference:subject:Patient",
                                     "DocumentReference:patient"])
async def test_include_needs_search_on_the_included_type(client: httpx.AsyncClient,
                                                         tokens: Tokens, document_id: str,
                                                         include: str) -> None:
    token = bearer(tokens.app("system/DocumentReference.rs"))
    plain = await client.get("/fhir/DocumentReference", headers=token)
    assert plain.status_code == 200, plain.text
    assert plain.json()["total"] == 1
    response = await client.get("/fhir/DocumentReference", params={"_include": include},
                                headers=token)
    assert "system/Patient.s" in denied(response)
    both = bearer(tokens.app("system/DocumentReference.rs system/Patient.s"))
    allowed = await client.get("/fhir/DocumentReference", params={"_include": include},
                               headers=both)
    assert allowed.status_code == 200, allowed.text
    assert {e["resource"]["resourceType"] for e in allowed.json()["entry"]} == {
        "DocumentReference", "Patient"}


async def test_include_in_a_post_search_is_checked_too(client: httpx.AsyncClient,
                                                       tokens: Tokens, document_id: str) -> None:
    token = bearer(tokens.app("system/DocumentReference.rs"))
    response = await client.post("/fhir/DocumentReference/_search",
                                 content=b"_include=DocumentReference:subject",
                                 headers={**token,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    denied(response)


async def test_revinclude_needs_search_on_the_referring_type(client: httpx.AsyncClient,
                                                             tokens: Tokens,
                                                             document_id: str) -> None:
    token = bearer(tokens.app("system/Patient.rs"))
    assert (await client.get("/fhir/Patient", headers=token)).status_code == 200
    response = await client.get("/fhir/Patient",
                                params={"_revinclude": "DocumentReference:subject"},
                                headers=token)
    assert "system/DocumentReference.s" in denied(response)
    both = bearer(tokens.app("system/Patient.rs system/DocumentReference.s"))
    allowed = await client.get("/fhir/Patient",
                               params={"_revinclude": "DocumentReference:subject"}, headers=both)
    assert allowed.status_code == 200, allowed.text
    assert len(allowed.json()["entry"]) == 2


@pytest.mark.parametrize("chain", ["patient.family", "subject.family", "subject:Patient.family"])
async def test_a_chained_search_needs_search_on_the_chained_type(client: httpx.AsyncClient,
                                                                 tokens: Tokens,
                                                                 document_id: str,
                                                                 chain: str) -> None:
    token = bearer(tokens.app("system/DocumentReference.rs"))
    response = await client.get("/fhir/DocumentReference", params={chain: "x"}, headers=token)
    assert "system/Patient.s" in denied(response)
    both = bearer(tokens.app("system/DocumentReference.rs system/Patient.s"))
    allowed = await client.get("/fhir/DocumentReference", params={chain: "Corse"},
                               headers=both)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["total"] == 1


# --- transactions and batches ------------------------------------------------------------------


def entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]}}


PATIENT_URL = "urn:uuid:0d9f3a52-7c1e-4b8a-a0e4-3b2c9f1d6e77"


async def patient_and_document(database: Database) -> dict[str, Any]:
    """An ITI-65 transaction that creates its Patient: Patient, SubmissionSet,
    DocumentReference (entry 2) and Binary."""
    bundle = document_bundle(PATIENT_URL)
    bundle["entry"].insert(0, entry(PATIENT_URL, await ins_patient_resource(
        database, "Corse", "Marie", gender="female", ipp=NIR)))
    assert bundle["entry"][2]["resource"]["resourceType"] == "DocumentReference"
    return bundle


async def test_a_transaction_with_one_entry_outside_the_scopes_writes_nothing(
        client: httpx.AsyncClient, tokens: Tokens, database: Database) -> None:
    token = bearer(tokens.app(f"system/Patient.c {DOCUMENT_COMPANIONS}"))
    response = await client.post("/fhir", json=await patient_and_document(database),
                                 headers={**FHIR_JSON, **token})
    diagnostics = denied(response)
    assert "Bundle.entry[2]" in diagnostics
    assert "system/DocumentReference.c" in diagnostics
    assert await count(client, "Patient") == 0
    assert await count(client, "DocumentReference") == 0


async def test_a_transaction_within_the_scopes_is_written(client: httpx.AsyncClient,
                                                          tokens: Tokens,
                                                          database: Database) -> None:
    token = bearer(tokens.app(
        f"system/Patient.c system/DocumentReference.c {DOCUMENT_COMPANIONS}"))
    response = await client.post("/fhir", json=await patient_and_document(database),
                                 headers={**FHIR_JSON, **token})
    assert response.status_code == 200, response.text
    assert await count(client, "DocumentReference") == 1


async def test_a_batch_refuses_only_the_entry_outside_the_scopes(client: httpx.AsyncClient,
                                                                 tokens: Tokens,
                                                                 patient_id: str) -> None:
    document = document_reference(f"Patient/{patient_id}",
                                  binary_url=await stored_binary(client))
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [entry("urn:uuid:p2", patient(family="Durand")),
                        entry("urn:uuid:d2", document)]}
    token = bearer(tokens.app("system/Patient.c"))
    response = await client.post("/fhir", json=bundle, headers={**FHIR_JSON, **token})
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"].startswith("403")
    assert "[smart-scope]" in second["response"]["outcome"]["issue"][0]["diagnostics"]
    assert await count(client, "Patient") == 2
    assert await count(client, "DocumentReference") == 0


async def test_batch_reads_and_searches_are_checked_per_entry(client: httpx.AsyncClient,
                                                              tokens: Tokens,
                                                              patient_id: str) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{patient_id}"}},
        {"request": {"method": "GET", "url": "Patient?family=Corse"}},
        {"request": {"method": "GET", "url": "DocumentReference"}},
    ]}
    token = bearer(tokens.app("system/Patient.r"))
    response = await client.post("/fhir", json=bundle, headers={**FHIR_JSON, **token})
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert statuses == ["200", "403", "403"]


async def test_a_conditional_reference_in_a_transaction_needs_search(
        client: httpx.AsyncClient, tokens: Tokens, patient_id: str) -> None:
    bundle = document_bundle(f"Patient?identifier={IPP_SYSTEM}|{NIR}")
    token = bearer(tokens.app(
        f"system/DocumentReference.c {DOCUMENT_COMPANIONS} system/Patient.r"))
    response = await client.post("/fhir", json=bundle, headers={**FHIR_JSON, **token})
    assert "system/Patient.s" in denied(response)
    assert await count(client, "DocumentReference") == 0
    allowed = bearer(tokens.app(
        f"system/DocumentReference.c {DOCUMENT_COMPANIONS} system/Patient.s"))
    response = await client.post("/fhir", json=bundle, headers={**FHIR_JSON, **allowed})
    assert response.status_code == 200, response.text
    location = next(e["response"]["location"].rsplit("/_history", 1)[0]
                    for e in response.json()["entry"]
                    if e["response"]["location"].startswith("DocumentReference/"))
    stored = (await client.get(f"/fhir/{location}")).json()
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"


# --- professionals and patients ----------------------------------------------------------------


async def test_a_patient_token_gains_nothing_from_user_scopes(client: httpx.AsyncClient,
                                                              tokens: Tokens,
                                                              patient_id: str) -> None:
    token = bearer(tokens.patient("openid user/*.cruds system/*.cruds"))
    assert "patient/Patient.r" in denied(await client.get(f"/fhir/Patient/{patient_id}",
                                                          headers=token))
    denied(await client.get("/fhir/Patient", headers=token))
    denied(await client.post("/fhir/Patient", json=patient(), headers={**FHIR_JSON, **token}))


async def test_a_patient_token_reads_with_patient_scopes(client: httpx.AsyncClient,
                                                         tokens: Tokens, patient_id: str) -> None:
    token = bearer(tokens.patient("openid patient/*.rs"))
    assert (await client.get(f"/fhir/Patient/{patient_id}", headers=token)).status_code == 200
    assert (await client.get("/fhir/Patient", headers=token)).status_code == 200
    denied(await client.post("/fhir/Patient", json=patient(), headers={**FHIR_JSON, **token}))


async def test_a_professional_with_scope_all_reads_searches_and_writes(
        client: httpx.AsyncClient, tokens: Tokens, patient_id: str, document_id: str) -> None:
    token = bearer(tokens.professional("openid scope_all"))
    await authorise(client, patient_id, DOCTOR.rpps)
    read = await client.get(f"/fhir/Patient/{patient_id}", headers=token)
    assert read.status_code == 200, read.text
    search = await client.get("/fhir/DocumentReference",
                              params={"patient.family": "Corse",
                                      "_include": "DocumentReference:subject"},
                              headers=token)
    assert search.status_code == 200, search.text
    assert len(search.json()["entry"]) == 2
    binary = await client.post("/fhir/Binary", content=PDF,
                               headers={**token, "Content-Type": "application/pdf"})
    assert binary.status_code == 201, binary.text
    document = document_reference(f"Patient/{patient_id}",
                                  binary_url=f"Binary/{binary.json()['id']}")
    created = await client.post("/fhir/DocumentReference", json=document,
                                headers={**FHIR_JSON, **token})
    assert created.status_code == 201, created.text


async def test_a_professional_with_only_openid_may_do_nothing(client: httpx.AsyncClient,
                                                               tokens: Tokens,
                                                               patient_id: str) -> None:
    token = bearer(tokens.professional("openid"))
    assert "user/Patient.r" in denied(await client.get(f"/fhir/Patient/{patient_id}",
                                                       headers=token))
    denied(await client.get("/fhir/Patient", headers=token))
    denied(await client.post("/fhir/Patient/$ins-lookup", json=LOOKUP_BY_INS,
                             headers={**FHIR_JSON, **token}))


async def test_a_professional_gains_nothing_from_system_scopes(client: httpx.AsyncClient,
                                                                tokens: Tokens,
                                                                patient_id: str) -> None:
    token = bearer(tokens.professional("openid system/*.cruds patient/*.cruds"))
    denied(await client.get(f"/fhir/Patient/{patient_id}", headers=token))


@pytest.mark.parametrize("scope", ["openid patient/*.rs", "openid patient/*.cruds",
                                   "openid patient/*.cruds user/*.cruds system/*.cruds"])
async def test_a_patient_may_not_use_ins_lookup(client: httpx.AsyncClient, tokens: Tokens,
                                                scope: str) -> None:
    response = await client.post("/fhir/Patient/$ins-lookup", json=LOOKUP_BY_INS,
                                 headers={**FHIR_JSON, **bearer(tokens.patient(scope))})
    denied(response, "insi-professionals-only")


async def test_a_professional_may_use_ins_lookup(client: httpx.AsyncClient,
                                                 tokens: Tokens) -> None:
    response = await client.post("/fhir/Patient/$ins-lookup", json=LOOKUP_BY_INS,
                                 headers={**FHIR_JSON, **bearer(tokens.professional())})
    assert response.status_code != 403, response.text
    assert response.status_code in (200, 404), response.text
