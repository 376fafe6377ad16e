"""ITI-65 Provide Document Bundle: PDSm metadata, bytes, patient, replacement, re-sends."""

from __future__ import annotations

import base64
import copy
from typing import Any

import httpx
import orjson
import pytest

from service.demo import INS_NIR_TEST, PATIENTS
from service.documents.gc import collect_garbage
from service.documents.samples import PDF, document_bundle
from storage.blobs import BlobStore
from storage.db import Database
from tests.factories import FHIR_JSON, file_document, patient
from tests.service.documents.conftest import count, issues, paths, provide


def _resource(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e["resource"] for e in bundle["entry"]
                                 if e["resource"]["resourceType"] == resource_type)
    return found


def _index(bundle: dict[str, Any], resource_type: str) -> int:
    return next(i for i, e in enumerate(bundle["entry"])
                if e["resource"]["resourceType"] == resource_type)


async def test_a_complete_bundle_is_filed_and_answered_entry_by_entry(
        client: httpx.AsyncClient, patient_id: str) -> None:
    bundle = document_bundle(f"Patient/{patient_id}", folder=True)
    response = await provide(client, bundle)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    kinds = [e["response"]["location"].split("/")[0] for e in answer["entry"]]
    assert kinds == ["List", "List", "DocumentReference", "Binary"]
    for entry in answer["entry"]:
        assert entry["response"]["status"] == "201 Created"
        assert entry["response"]["etag"] == 'W/"1"'
    document_location = answer["entry"][2]["response"]["location"].split("/_history")[0]
    binary_location = answer["entry"][3]["response"]["location"].split("/_history")[0]
    document = (await client.get(f"/fhir/{document_location}")).json()
    assert document["content"][0]["attachment"]["url"] == binary_location
    assert document["subject"] == {"reference": f"Patient/{patient_id}"}
    raw = await client.get(f"/fhir/{binary_location}", headers={"Accept": "*/*"})
    assert raw.content == PDF
    assert raw.headers["content-type"] == "application/pdf"
    binary = (await client.get(f"/fhir/{binary_location}")).json()
    assert binary["securityContext"] == {"reference": document_location}
    submission_set = (await client.get(
        f"/fhir/{answer['entry'][0]['response']['location'].split('/_history')[0]}")).json()
    assert {"item": {"reference": document_location}} in submission_set["entry"]


async def test_several_documents_in_one_submission(client: httpx.AsyncClient,
                                                   patient_id: str) -> None:
    response = await provide(client, document_bundle(f"Patient/{patient_id}", documents=3))
    assert response.status_code == 200, response.text
    assert await count(client, "DocumentReference") == 3
    assert await count(client, "Binary") == 3


def _drop(path: str) -> Any:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[int(last) if last.isdigit() else last]
    return change


@pytest.mark.parametrize(("change", "expected_path"), [
    (_drop("masterIdentifier"), "masterIdentifier"),
    (_drop("custodian"), "custodian"),
    (_drop("author"), "author"),
    (_drop("context.period"), "context.period.start"),
    (_drop("content.0.attachment.hash"), "content[0].attachment.hash"),
    (_drop("content.0.attachment.size"), "content[0].attachment.size"),
    (_drop("content.0.attachment.language"), "content[0].attachment.language"),
    (_drop("content.0.attachment.title"), "content[0].attachment.title"),
    (_drop("category"), "category"),
    (_drop("securityLabel"), "securityLabel"),
    (lambda d: d["securityLabel"][0]["coding"][0].update(code="SECRET"),
     "securityLabel[0].coding[0].code"),
    (lambda d: d["category"][0]["coding"][0].update(code="77"), "category[0].coding[0].code"),
])
async def test_each_missing_or_wrong_element_is_refused_with_its_path(
        client: httpx.AsyncClient, patient_id: str, change: Any, expected_path: str) -> None:
    bundle = document_bundle(f"Patient/{patient_id}")
    change(_resource(bundle, "DocumentReference"))
    response = await provide(client, bundle)
    assert response.status_code == 422, response.text
    index = _index(bundle, "DocumentReference")
    assert f"Bundle.entry[{index}].resource.{expected_path}" in paths(response)
    assert await count(client, "DocumentReference") == 0
    assert await count(client, "Binary") == 0
    assert await count(client, "List") == 0


async def test_every_violation_is_reported_at_once(client: httpx.AsyncClient,
                                                   patient_id: str) -> None:
    bundle = document_bundle(f"Patient/{patient_id}")
    document = _resource(bundle, "DocumentReference")
    del document["custodian"], document["date"]
    del _resource(bundle, "List")["source"]
    response = await provide(client, bundle)
    assert response.status_code == 422
    found = paths(response)
    index = _index(bundle, "DocumentReference")
    assert {f"Bundle.entry[{index}].resource.custodian", f"Bundle.entry[{index}].resource.date",
            "Bundle.entry[0].resource.source"} <= set(found)


@pytest.mark.parametrize(("field", "value"), [
    ("size", len(PDF) + 1),
    ("hash", base64.b64encode(b"\x00" * 20).decode()),
    ("contentType", "text/plain"),
])
async def test_attachment_must_describe_the_bytes_received(
        client: httpx.AsyncClient, database: Database, patient_id: str, field: str,
        value: Any) -> None:
    bundle = document_bundle(f"Patient/{patient_id}")
    _resource(bundle, "DocumentReference")["content"][0]["attachment"][field] = value
    response = await provide(client, bundle)
    assert response.status_code == 422, response.text
    index = _index(bundle, "DocumentReference")
    assert paths(response) == [f"Bundle.entry[{index}].resource.content[0].attachment.{field}"]
    assert await count(client, "DocumentReference") == 0
    assert await count(client, "Binary") == 0


async def test_the_bytes_of_a_refused_bundle_are_garbage_collected(
        client: httpx.AsyncClient, database: Database, patient_id: str) -> None:
    blobs: BlobStore = client._transport.app.state.blob_store  # type: ignore[attr-defined]
    kept = await file_document(client, patient_id)
    orphan = b"%PDF-1.4 an orphan document"
    bundle = document_bundle(f"Patient/{patient_id}", content=orphan)
    _resource(bundle, "DocumentReference")["content"][0]["attachment"]["size"] = 1
    assert (await provide(client, bundle)).status_code == 422
    orphans = [key async for key in blobs.written_before(float("inf"))]
    assert len(orphans) == 2  # the filed document's and the refused one's
    assert await collect_garbage(database, blobs, grace_seconds=3600) == 0  # too recent
    assert await collect_garbage(database, blobs, grace_seconds=0) == 1
    left = [key async for key in blobs.written_before(float("inf"))]
    assert len(left) == 1
    raw = await client.get(f"/fhir/{kept['content'][0]['attachment']['url']}",
                           headers={"Accept": "*/*"})
    assert raw.content == PDF


async def test_subject_must_have_a_qualified_ins(client: httpx.AsyncClient,
                                                 patient_id: str) -> None:
    plain = await client.post("/fhir/Patient", headers=FHIR_JSON,
                              content=orjson.dumps(patient(ipp="IPP-1")))
    response = await provide(client, document_bundle(f"Patient/{plain.json()['id']}"))
    assert response.status_code == 422
    assert "[document-subject-ins]" in issues(response)[0]["diagnostics"]
    assert await count(client, "DocumentReference") == 0


async def test_subject_must_be_a_stored_patient(client: httpx.AsyncClient,
                                                patient_id: str) -> None:
    response = await provide(client, document_bundle("Patient/no-such-patient"))
    assert response.status_code == 422
    assert "[document-subject]" in issues(response)[0]["diagnostics"]


async def test_subject_may_be_named_by_its_ins(client: httpx.AsyncClient,
                                               patient_id: str) -> None:
    by_ins = f"Patient?identifier={INS_NIR_TEST}|{PATIENTS[0][1]}"
    response = await provide(client, document_bundle(by_ins))
    assert response.status_code == 200, response.text
    found = await client.get("/fhir/DocumentReference", params={"patient": patient_id})
    assert found.json()["total"] == 1


async def test_an_ins_without_a_patient_record_is_refused(client: httpx.AsyncClient,
                                                         patient_id: str) -> None:
    unknown = f"Patient?identifier={INS_NIR_TEST}|{PATIENTS[2][1]}"
    response = await provide(client, document_bundle(unknown))
    assert response.status_code == 412
    assert await count(client, "DocumentReference") == 0


async def test_a_qualified_patient_in_the_same_bundle_is_checked_by_insi_and_filed(
        client: httpx.AsyncClient, patient_id: str) -> None:
    from fhir_profiles.ins import InsTraits, patient_with_ins

    _key, nir, family, given, gender, birth, place, _doctor = PATIENTS[2]
    bundle = document_bundle("urn:uuid:7d9f3c51-0d7b-4f55-9f41-3f2f7a0e8b11")
    bundle["entry"].append({
        "fullUrl": "urn:uuid:7d9f3c51-0d7b-4f55-9f41-3f2f7a0e8b11",
        "resource": patient_with_ins(INS_NIR_TEST, nir, InsTraits(family, given[0], given,
                                                                  gender, birth, place)),
        "request": {"method": "POST", "url": "Patient",
                    "ifNoneExist": f"identifier={INS_NIR_TEST}|{nir}"}})
    response = await provide(client, bundle)
    assert response.status_code == 200, response.text
    assert await count(client, "Patient") == 2


@pytest.mark.parametrize("shape", ["no-submission-set", "two-submission-sets",
                                   "document-not-listed", "other-subject",
                                   "folder-of-another-patient"])
async def test_the_submission_set_must_frame_the_documents(
        client: httpx.AsyncClient, patient_id: str, other_patient_id: str, shape: str) -> None:
    bundle = document_bundle(f"Patient/{patient_id}", folder=True)
    submission = bundle["entry"][0]
    if shape == "folder-of-another-patient":
        bundle["entry"][1]["resource"]["subject"] = {"reference": f"Patient/{other_patient_id}"}
    elif shape == "no-submission-set":
        bundle["entry"] = bundle["entry"][1:]
    elif shape == "two-submission-sets":
        twin = copy.deepcopy(submission)
        twin["fullUrl"] = "urn:uuid:0a1b2c3d-0000-4000-8000-000000000001"
        bundle["entry"].append(twin)
    elif shape == "document-not-listed":
        submission["resource"]["entry"] = [{"item": {"reference": "DocumentReference/x"}}]
    else:
        submission["resource"]["subject"] = {"reference": f"Patient/{other_patient_id}"}
    response = await provide(client, bundle)
    assert response.status_code == 422, response.text
    assert await count(client, "DocumentReference") == 0


async def test_resending_the_same_bundle_answers_what_was_filed(client: httpx.AsyncClient,
                                                                patient_id: str) -> None:
    bundle = document_bundle(f"Patient/{patient_id}")
    first = await provide(client, bundle)
    again = await provide(client, bundle)
    assert again.status_code == 200, again.text
    assert [e["response"]["location"] for e in again.json()["entry"]] == \
        [e["response"]["location"] for e in first.json()["entry"]]
    assert {e["response"]["status"] for e in again.json()["entry"]} == {"200 OK"}
    assert await count(client, "DocumentReference") == 1
    assert await count(client, "Binary") == 1


async def test_same_master_identifier_with_other_content_is_a_conflict(
        client: httpx.AsyncClient, patient_id: str) -> None:
    master = "urn:oid:1.2.250.1.999.42.1"
    assert (await provide(client, document_bundle(f"Patient/{patient_id}",
                                                  master_id=master))).status_code == 200
    response = await provide(client, document_bundle(f"Patient/{patient_id}", master_id=master,
                                                     content=b"%PDF-1.4 other bytes"))
    assert response.status_code == 409
    assert "[document-resent]" in issues(response)[0]["diagnostics"]
    assert await count(client, "DocumentReference") == 1


async def test_a_new_document_must_be_current(client: httpx.AsyncClient,
                                              patient_id: str) -> None:
    bundle = document_bundle(f"Patient/{patient_id}")
    _resource(bundle, "DocumentReference")["status"] = "superseded"
    response = await provide(client, bundle)
    assert response.status_code == 422
    assert "[document-status]" in issues(response)[0]["diagnostics"]


async def _status(client: httpx.AsyncClient, document_id: str) -> tuple[str, str]:
    found = (await client.get(f"/fhir/DocumentReference/{document_id}")).json()
    return found["status"], found["meta"]["versionId"]


async def test_replacement_supersedes_the_target_in_the_same_transaction(
        client: httpx.AsyncClient, patient_id: str) -> None:
    first = await file_document(client, patient_id)
    second = await file_document(client, patient_id, replaces=f"DocumentReference/{first['id']}",
                            content=b"%PDF-1.4 version 2")
    assert await _status(client, first["id"]) == ("superseded", "2")
    assert await _status(client, second["id"]) == ("current", "1")
    third = await file_document(client, patient_id, replaces=f"DocumentReference/{second['id']}",
                           content=b"%PDF-1.4 version 3")
    assert await _status(client, second["id"]) == ("superseded", "2")
    current = await client.get("/fhir/DocumentReference",
                               params={"patient": patient_id, "status": "current"})
    assert [e["resource"]["id"] for e in current.json()["entry"]] == [third["id"]]


async def test_replacing_a_superseded_document_is_refused(client: httpx.AsyncClient,
                                                         patient_id: str) -> None:
    first = await file_document(client, patient_id)
    await file_document(client, patient_id, replaces=f"DocumentReference/{first['id']}",
                   content=b"%PDF-1.4 version 2")
    response = await provide(client, document_bundle(
        f"Patient/{patient_id}", replaces=f"DocumentReference/{first['id']}",
        content=b"%PDF-1.4 version 2 bis"))
    assert response.status_code == 409
    assert "[replace-not-current]" in issues(response)[0]["diagnostics"]
    assert await count(client, "DocumentReference") == 2


async def test_replacing_another_patients_document_is_refused(
        client: httpx.AsyncClient, patient_id: str, other_patient_id: str) -> None:
    theirs = await file_document(client, other_patient_id)
    response = await provide(client, document_bundle(
        f"Patient/{patient_id}", replaces=f"DocumentReference/{theirs['id']}"))
    assert response.status_code == 422
    assert "[replace-other-patient]" in issues(response)[0]["diagnostics"]
    assert await _status(client, theirs["id"]) == ("current", "1")


async def test_replacing_an_unknown_document_is_refused(client: httpx.AsyncClient,
                                                       patient_id: str) -> None:
    response = await provide(client, document_bundle(
        f"Patient/{patient_id}", replaces="DocumentReference/unknown"))
    assert response.status_code == 422
    assert "[replace-unknown]" in issues(response)[0]["diagnostics"]


async def test_a_document_alone_may_reference_an_uploaded_binary(
        client: httpx.AsyncClient, patient_id: str) -> None:
    from service.documents.samples import document_reference

    uploaded = await client.post("/fhir/Binary", content=PDF,
                                 headers={"Content-Type": "application/pdf"})
    assert uploaded.status_code == 201, uploaded.text
    document = document_reference(f"Patient/{patient_id}",
                                  binary_url=f"Binary/{uploaded.json()['id']}")
    created = await client.post("/fhir/DocumentReference", headers=FHIR_JSON,
                                content=orjson.dumps(document))
    assert created.status_code == 201, created.text
    again = await client.post("/fhir/DocumentReference", headers=FHIR_JSON,
                              content=orjson.dumps(document))
    assert again.status_code == 200
    assert again.json()["id"] == created.json()["id"]
    conditional = await client.post("/fhir/DocumentReference", content=orjson.dumps(document),
                                    headers={**FHIR_JSON, "If-None-Exist": "identifier=x|y"})
    assert conditional.status_code == 400


async def test_a_batch_files_each_document_on_its_own(client: httpx.AsyncClient,
                                                      patient_id: str) -> None:
    from service.documents.samples import document_reference

    uploaded = await client.post("/fhir/Binary", content=PDF,
                                 headers={"Content-Type": "application/pdf"})
    url = f"Binary/{uploaded.json()['id']}"
    good = document_reference(f"Patient/{patient_id}", binary_url=url)
    bad = document_reference(f"Patient/{patient_id}", binary_url=url)
    bad["content"][0]["attachment"]["size"] = 3
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": good, "request": {"method": "POST", "url": "DocumentReference"}},
        {"resource": bad, "request": {"method": "POST", "url": "DocumentReference"}}]}
    response = await client.post("/fhir", headers=FHIR_JSON, content=orjson.dumps(batch))
    assert [e["response"]["status"] for e in response.json()["entry"]] == \
        ["201 Created", "422 Unprocessable Entity"]
    assert await count(client, "DocumentReference") == 1


async def test_filed_documents_in_another_submission_shape_are_a_conflict(
        client: httpx.AsyncClient, patient_id: str) -> None:
    bundle = document_bundle(f"Patient/{patient_id}")
    assert (await provide(client, bundle)).status_code == 200
    with_folder = document_bundle(f"Patient/{patient_id}", folder=True)
    original = _resource(bundle, "DocumentReference")
    for entry in with_folder["entry"]:
        if entry["resource"]["resourceType"] == "DocumentReference":
            entry["resource"]["masterIdentifier"] = original["masterIdentifier"]
    response = await provide(client, with_folder)
    assert response.status_code == 409
    assert "[document-resent]" in issues(response)[0]["diagnostics"]
    assert await count(client, "List") == 1


async def test_a_replacement_may_also_patch_the_old_document_as_pdsm_shows(
        client: httpx.AsyncClient, patient_id: str) -> None:
    """PDSm's replacement example supersedes the old document with a FHIRPath Patch entry."""
    old = await file_document(client, patient_id)
    bundle = document_bundle(f"Patient/{patient_id}", replaces=f"DocumentReference/{old['id']}",
                             content=b"%PDF-1.4 version 2")
    bundle["entry"].append({
        "fullUrl": "urn:uuid:77777777-7777-4777-8777-777777777777",
        "resource": {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "DocumentReference.status"},
            {"name": "value", "valueCode": "superseded"}]}]},
        "request": {"method": "PATCH", "url": f"DocumentReference/{old['id']}"}})
    response = await provide(client, bundle)
    assert response.status_code == 200, response.text
    assert await _status(client, old["id"]) == ("superseded", "2")


async def test_bytes_swept_before_the_commit_fail_the_filing_cleanly(
        client: httpx.AsyncClient, patient_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blob sweep removed an identical orphan between the upload and the transaction."""
    blobs: BlobStore = client._transport.app.state.blob_store  # type: ignore[attr-defined]
    put_bytes = blobs.put_bytes

    async def swept_at_once(data: bytes) -> Any:
        info = await put_bytes(data)
        await blobs.delete(info.key)
        return info

    monkeypatch.setattr(blobs, "put_bytes", swept_at_once)
    response = await provide(client, document_bundle(f"Patient/{patient_id}"))
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert await count(client, "DocumentReference") == 0
    assert await count(client, "Binary") == 0
