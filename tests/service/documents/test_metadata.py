"""Metadata updates of a filed document: only status, securityLabel and isArchived change."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from service.documents.metadata import IS_ARCHIVED
from service.documents.samples import VISIBILITY_SYSTEM
from tests.factories import FHIR_JSON, authorise, file_document
from tests.service.documents.conftest import issues
from tests.tokens import DOCTOR, OTHER_DOCTOR, Tokens, bearer

PATCH = {"Content-Type": "application/json-patch+json"}


async def patch(client: httpx.AsyncClient, document_id: str, operations: list[dict[str, Any]],
                **headers: str) -> httpx.Response:
    return await client.patch(f"/fhir/DocumentReference/{document_id}",
                              content=orjson.dumps(operations), headers={**PATCH, **headers})


@pytest.fixture
async def document(client: httpx.AsyncClient, patient_id: str) -> dict[str, Any]:
    return await file_document(client, patient_id, author_rpps="10000000001")


async def test_masking_is_a_new_version(client: httpx.AsyncClient,
                                        document: dict[str, Any]) -> None:
    label = {"coding": [{"system": VISIBILITY_SYSTEM, "code": "MASQUE_PS"}]}
    response = await patch(client, document["id"], [
        {"op": "add", "path": "/securityLabel/-", "value": label}])
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["versionId"] == "2"
    assert label in response.json()["securityLabel"]
    masked = await client.get("/fhir/DocumentReference",
                              params={"security-label": "MASQUE_PS"})
    assert masked.json()["total"] == 1
    first = await client.get(f"/fhir/DocumentReference/{document['id']}/_history/1")
    assert label not in first.json()["securityLabel"]


async def test_archiving_is_allowed_and_searchable(client: httpx.AsyncClient,
                                                   document: dict[str, Any]) -> None:
    response = await patch(client, document["id"], [
        {"op": "add", "path": "/extension", "value": [{"url": IS_ARCHIVED,
                                                       "valueBoolean": True}]}])
    assert response.status_code == 200, response.text
    found = await client.get("/fhir/DocumentReference", params={"isArchived": "true"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [document["id"]]


@pytest.mark.parametrize(("operation", "path"), [
    ({"op": "replace", "path": "/type/coding/0/code", "value": "18842-5"},
     "DocumentReference.type"),
    ({"op": "replace", "path": "/content/0/attachment/title", "value": "Autre"},
     "DocumentReference.content"),
    ({"op": "replace", "path": "/date", "value": "2020-01-01T00:00:00Z"},
     "DocumentReference.date"),
    ({"op": "replace", "path": "/subject/reference", "value": "Patient/other"},
     "DocumentReference.subject"),
])
async def test_other_changes_are_refused_with_the_element(
        client: httpx.AsyncClient, document: dict[str, Any], operation: dict[str, Any],
        path: str) -> None:
    response = await patch(client, document["id"], [operation])
    assert response.status_code == 422, response.text
    assert "[document-metadata]" in issues(response)[0]["diagnostics"]
    assert issues(response)[0]["expression"] == [path]
    stored = await client.get(f"/fhir/DocumentReference/{document['id']}")
    assert stored.json()["meta"]["versionId"] == "1"


async def test_a_full_update_follows_the_same_rules(client: httpx.AsyncClient,
                                                    document: dict[str, Any]) -> None:
    changed = {**document, "description": "changed"}
    refused = await client.put(f"/fhir/DocumentReference/{document['id']}", headers=FHIR_JSON,
                               content=orjson.dumps(changed))
    assert refused.status_code == 422
    withdrawn = {**document, "status": "entered-in-error"}
    accepted = await client.put(f"/fhir/DocumentReference/{document['id']}", headers=FHIR_JSON,
                                content=orjson.dumps(withdrawn))
    assert accepted.status_code == 200, accepted.text
    back = await client.put(f"/fhir/DocumentReference/{document['id']}", headers=FHIR_JSON,
                            content=orjson.dumps(document))
    assert back.status_code == 422
    assert "[document-status]" in issues(back)[0]["diagnostics"]


async def test_the_author_withdraws_a_document(anonymous: httpx.AsyncClient, tokens: Tokens,
                                              client: httpx.AsyncClient,
                                              document: dict[str, Any]) -> None:
    withdraw = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    await authorise(client, document["subject"]["reference"].rpartition("/")[2],
                    DOCTOR.rpps, OTHER_DOCTOR.rpps)
    other = await anonymous.patch(
        f"/fhir/DocumentReference/{document['id']}", content=orjson.dumps(withdraw),
        headers={**PATCH, **bearer(tokens.professional(who=OTHER_DOCTOR))})
    assert other.status_code == 403
    assert "[document-author-only]" in issues(other)[0]["diagnostics"]
    author = await anonymous.patch(
        f"/fhir/DocumentReference/{document['id']}", content=orjson.dumps(withdraw),
        headers={**PATCH, **bearer(tokens.professional())})
    assert author.status_code == 200, author.text
    assert author.json()["status"] == "entered-in-error"


async def test_the_system_that_filed_a_document_may_withdraw_it(
        anonymous: httpx.AsyncClient, tokens: Tokens, document: dict[str, Any]) -> None:
    withdraw = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    another_app = await anonymous.patch(
        f"/fhir/DocumentReference/{document['id']}", content=orjson.dumps(withdraw),
        headers={**PATCH, **bearer(tokens.app(client_id="another-app"))})
    assert another_app.status_code == 403
    filer = await anonymous.patch(
        f"/fhir/DocumentReference/{document['id']}", content=orjson.dumps(withdraw),
        headers={**PATCH, **bearer(tokens.app())})
    assert filer.status_code == 200, filer.text


async def test_documents_are_never_deleted(client: httpx.AsyncClient,
                                           document: dict[str, Any]) -> None:
    response = await client.delete(f"/fhir/DocumentReference/{document['id']}")
    assert response.status_code == 405
    assert (await client.get(f"/fhir/DocumentReference/{document['id']}")).status_code == 200


async def test_a_document_is_not_created_by_put(client: httpx.AsyncClient,
                                                document: dict[str, Any]) -> None:
    response = await client.put("/fhir/DocumentReference/new-one", headers=FHIR_JSON,
                                content=orjson.dumps({**document, "id": "new-one"}))
    assert response.status_code == 405


async def test_if_match_guards_a_patch(client: httpx.AsyncClient,
                                       document: dict[str, Any]) -> None:
    withdraw = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    stale = await patch(client, document["id"], withdraw, **{"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    fresh = await patch(client, document["id"], withdraw, **{"If-Match": 'W/"1"'})
    assert fresh.status_code == 200


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"[]", {"Content-Type": "text/plain"}, 415),
    (b"[]", {"Content-Type": "application/fhir+json"}, 400),
    (b"{not json", PATCH, 400),
    (b'{"op": "replace"}', PATCH, 400),
    (b'[{"op": "jump", "path": "/status"}]', PATCH, 400),
    (b'[{"op": "replace", "path": "/nothing/here", "value": 1}]', PATCH, 422),
    (b'[{"op": "test", "path": "/status", "value": "superseded"}]', PATCH, 409),
    (b'[{"op": "replace", "path": "/status", "value": "bogus"}]', PATCH, 400),
])
async def test_bad_patches_get_a_clear_outcome(client: httpx.AsyncClient,
                                               document: dict[str, Any], body: bytes,
                                               headers: dict[str, str], status: int) -> None:
    response = await client.patch(f"/fhir/DocumentReference/{document['id']}", content=body,
                                  headers=headers)
    assert response.status_code == status, response.text
    assert issues(response)
    stored = await client.get(f"/fhir/DocumentReference/{document['id']}")
    assert stored.json()["meta"]["versionId"] == "1"


async def test_patch_of_an_unknown_resource_is_404(client: httpx.AsyncClient,
                                                   patient_id: str) -> None:
    response = await patch(client, "missing", [{"op": "remove", "path": "/status"}])
    assert response.status_code == 404


async def test_patch_works_on_other_resources(client: httpx.AsyncClient,
                                              patient_id: str) -> None:
    response = await client.patch(f"/fhir/Patient/{patient_id}", headers=PATCH, content=b'['
                                  b'{"op": "add", "path": "/telecom", "value": [{"system": '
                                  b'"email", "value": "marie@example.org"}]}]')
    assert response.status_code == 200, response.text
    assert response.json()["telecom"][0]["value"] == "marie@example.org"
