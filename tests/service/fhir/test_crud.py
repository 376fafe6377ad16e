"""Create, read, vread, update, delete and history through the HTTP API."""

from __future__ import annotations

import httpx

from fhir_profiles.consent import CHOICE_SYSTEM as CONSENT_CHOICE_SYSTEM
from fhir_profiles.messaging import CATEGORY_SYSTEM as MESSAGE_CATEGORIES
from fhir_profiles.subscriptions import document_subscription
from tests.factories import FHIR_JSON, IPP_SYSTEM, patient

SNOMED = "http://snomed.info/sct"
ATC = "http://www.whocc.no/atc"


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


async def test_vread_returns_each_version(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient(family="Avant"))).json()
    updated = {**created, "name": [{"family": "Après"}]}
    await client.put(f"/fhir/Patient/{created['id']}", json=updated, headers=FHIR_JSON)
    first = await client.get(f"/fhir/Patient/{created['id']}/_history/1")
    second = await client.get(f"/fhir/Patient/{created['id']}/_history/2")
    assert first.json()["name"][0]["family"] == "Avant"
    assert second.json()["name"][0]["family"] == "Après"
    assert second.headers["etag"] == 'W/"2"'
    missing = await client.get(f"/fhir/Patient/{created['id']}/_history/3")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


async def test_update_increments_version_and_keeps_client_meta(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    tagged = {**created, "meta": {"versionId": "99", "tag": [{"system": "urn:x", "code": "t"}]},
              "gender": "female"}
    response = await client.put(f"/fhir/Patient/{created['id']}", json=tagged, headers=FHIR_JSON)
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["versionId"] == "2"
    assert body["meta"]["tag"] == [{"system": "urn:x", "code": "t"}]
    assert body["gender"] == "female"
    assert response.headers["location"].endswith(f"/Patient/{created['id']}/_history/2")


async def test_update_with_matching_if_match_succeeds(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    response = await client.put(f"/fhir/Patient/{created['id']}", json=created,
                                headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'


async def test_update_with_stale_if_match_is_refused_with_412(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    await client.put(f"/fhir/Patient/{created['id']}", json=created, headers=FHIR_JSON)
    stale = await client.put(f"/fhir/Patient/{created['id']}", json=created,
                             headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    current = await client.get(f"/fhir/Patient/{created['id']}")
    assert current.json()["meta"]["versionId"] == "2"


async def test_malformed_if_match_is_refused(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    response = await client.put(f"/fhir/Patient/{created['id']}", json=created,
                                headers={**FHIR_JSON, "If-Match": "soon"})
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_update_of_unknown_id_creates_it(client: httpx.AsyncClient) -> None:
    body = {**patient(), "id": "chosen-by-client"}
    response = await client.put("/fhir/Patient/chosen-by-client", json=body, headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.json()["id"] == "chosen-by-client"
    assert (await client.get("/fhir/Patient/chosen-by-client")).status_code == 200


async def test_update_with_if_match_on_unknown_id_is_412(client: httpx.AsyncClient) -> None:
    body = {**patient(), "id": "nobody"}
    response = await client.put("/fhir/Patient/nobody", json=body,
                                headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert (await client.get("/fhir/Patient/nobody")).status_code == 404


async def test_update_with_mismatched_id_is_400(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    response = await client.put(f"/fhir/Patient/{created['id']}", json={**created, "id": "other"},
                                headers=FHIR_JSON)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.id"]


async def test_update_without_id_in_body_is_400(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    response = await client.put(f"/fhir/Patient/{created['id']}", json=patient(),
                                headers=FHIR_JSON)
    assert response.status_code == 400


async def test_update_with_invalid_id_in_url_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/bad_id!", json={**patient(), "id": "bad_id!"},
                                headers=FHIR_JSON)
    assert response.status_code == 400


async def test_delete_is_logical_and_later_read_is_410(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    deleted = await client.delete(f"/fhir/Patient/{created['id']}")
    assert deleted.status_code == 204
    assert deleted.headers["etag"] == 'W/"2"'
    gone = await client.get(f"/fhir/Patient/{created['id']}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    # the old version is still there
    assert (await client.get(f"/fhir/Patient/{created['id']}/_history/1")).status_code == 200
    assert (await client.get(f"/fhir/Patient/{created['id']}/_history/2")).status_code == 410


async def test_deleting_twice_is_idempotent(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    await client.delete(f"/fhir/Patient/{created['id']}")
    again = await client.delete(f"/fhir/Patient/{created['id']}")
    assert again.status_code == 204
    history = (await client.get(f"/fhir/Patient/{created['id']}/_history")).json()
    assert len(history["entry"]) == 2


async def test_delete_of_unknown_resource_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/fhir/Patient/nope")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_delete_with_stale_if_match_is_412(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    response = await client.delete(f"/fhir/Patient/{created['id']}",
                                   headers={"If-Match": 'W/"7"'})
    assert response.status_code == 412
    assert (await client.get(f"/fhir/Patient/{created['id']}")).status_code == 200


async def test_update_after_delete_recreates_with_next_version(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    await client.delete(f"/fhir/Patient/{created['id']}")
    response = await client.put(f"/fhir/Patient/{created['id']}", json=created, headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"


async def test_instance_history_lists_versions_newest_first(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    for family in ("Deux", "Trois"):
        await client.put(f"/fhir/Patient/{created['id']}",
                         json={**created, "name": [{"family": family}]}, headers=FHIR_JSON)
    await client.delete(f"/fhir/Patient/{created['id']}")
    bundle = (await client.get(f"/fhir/Patient/{created['id']}/_history")).json()
    assert bundle["type"] == "history"
    methods = [e["request"]["method"] for e in bundle["entry"]]
    assert methods == ["DELETE", "PUT", "PUT", "POST"]
    assert [e["response"]["etag"] for e in bundle["entry"]] == [
        'W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][1]["resource"]["name"][0]["family"] == "Trois"


async def test_type_history_pages_with_next_links(client: httpx.AsyncClient) -> None:
    ids = {(await create(client, patient(family=f"P{i}"))).json()["id"] for i in range(5)}
    url: str | None = "/fhir/Patient/_history?_count=2"
    seen: list[str] = []
    while url:
        bundle = (await client.get(url)).json()
        assert len(bundle["entry"]) <= 2
        seen.extend(e["resource"]["id"] for e in bundle["entry"])
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert sorted(seen) == sorted(ids)


async def test_history_since_filters_older_versions(client: httpx.AsyncClient) -> None:
    old = (await create(client, patient(family="Ancien"))).json()
    since = old["meta"]["lastUpdated"]
    new = (await create(client, patient(family="Nouveau"))).json()
    bundle = (await client.get("/fhir/Patient/_history", params={"_since": since})).json()
    ids = [e["resource"]["id"] for e in bundle["entry"]]
    assert new["id"] in ids
    bad = await client.get("/fhir/Patient/_history", params={"_since": "yesterday"})
    assert bad.status_code == 400


async def test_history_of_unknown_resource_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient/nobody/_history")
    assert response.status_code == 404


async def test_conditional_create_returns_existing_match(client: httpx.AsyncClient) -> None:
    body = patient(ipp="253072A07300443")
    query = f"identifier={IPP_SYSTEM}|253072A07300443"
    first = await client.post("/fhir/Patient", json=body,
                              headers={**FHIR_JSON, "If-None-Exist": query})
    second = await client.post("/fhir/Patient", json=body,
                               headers={**FHIR_JSON, "If-None-Exist": query})
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    total = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()["total"]
    assert total == 1


async def test_conditional_create_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await create(client, patient(family="Twin"))
    await create(client, patient(family="Twin"))
    response = await client.post("/fhir/Patient", json=patient(family="Twin"),
                                 headers={**FHIR_JSON, "If-None-Exist": "family=Twin"})
    assert response.status_code == 412


async def test_conditional_create_with_unknown_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", json=patient(),
                                 headers={**FHIR_JSON, "If-None-Exist": "shoe-size=42"})
    assert response.status_code == 400
    assert (await client.get("/fhir/Patient")).json()["total"] == 0


async def test_conditional_update_updates_the_single_match(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient(ipp="253072B07300470"))).json()
    query = f"identifier={IPP_SYSTEM}|253072B07300470"
    response = await client.put(f"/fhir/Patient?{query}",
                                json=patient(ipp="253072B07300470", gender="female"),
                                headers=FHIR_JSON)
    assert response.status_code == 200
    assert response.json()["id"] == created["id"]
    assert response.json()["meta"]["versionId"] == "2"


async def test_conditional_update_without_match_creates(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient?family=Personne", json=patient(family="Personne"),
                                headers=FHIR_JSON)
    assert response.status_code == 201


async def test_conditional_delete_is_not_supported(client: httpx.AsyncClient) -> None:
    response = await client.delete("/fhir/Patient?family=x")
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_prefer_return_minimal_sends_no_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", json=patient(),
                                 headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["location"]


async def test_server_ignores_client_id_on_create(client: httpx.AsyncClient) -> None:
    response = await create(client, {**patient(), "id": "mine"})
    assert response.json()["id"] != "mine"


async def test_every_supported_type_can_be_created_and_read(client: httpx.AsyncClient) -> None:
    samples = [
        {"resourceType": "Organization", "name": "CHU"},
        {"resourceType": "Practitioner", "name": [{"family": "Martin"}]},
        {"resourceType": "PractitionerRole", "active": True},
        {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="},
        {"resourceType": "List", "status": "current", "mode": "working"},
        {"resourceType": "Consent", "status": "active",
         "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                               "code": "patient-privacy"}]},
         "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]},
                      {"coding": [{"system": CONSENT_CHOICE_SYSTEM, "code": "emergency"}]}],
         "patient": {"reference": "Patient/p"}, "provision": {"type": "deny"}},
        {"resourceType": "Communication", "status": "completed",
         "category": [{"coding": [{"system": MESSAGE_CATEGORIES, "code": "message"}]}],
         "recipient": [{"reference": "Patient/p"}], "payload": [{"contentString": "Bonjour"}]},
        {"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/p"}},
        document_subscription("p", "https://app.example/hook"),
        {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p"},
         "code": {"coding": [{"system": SNOMED, "code": "91936005"}]}},
        {"resourceType": "Condition", "subject": {"reference": "Patient/p"},
         "code": {"coding": [{"system": SNOMED, "code": "44054006"}]}},
        {"resourceType": "MedicationStatement", "status": "active",
         "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "N02BE01"}]},
         "subject": {"reference": "Patient/p"}},
        {"resourceType": "Immunization", "status": "completed",
         "vaccineCode": {"coding": [{"system": ATC, "code": "J07BB02"}]},
         "patient": {"reference": "Patient/p"},
         "occurrenceDateTime": "2025-10-01"},
        {"resourceType": "Observation", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}},
        {"resourceType": "Composition", "status": "final", "type": {"text": "synthèse"},
         "date": "2026-01-01", "author": [{"reference": "Practitioner/x"}], "title": "Synthèse"},
        {"resourceType": "Bundle", "type": "document", "timestamp": "2026-01-01T00:00:00Z",
         "identifier": {"system": "urn:x", "value": "1"}},
    ]
    for sample in samples:
        created = (await create(client, sample)).json()
        read = await client.get(f"/fhir/{sample['resourceType']}/{created['id']}")
        assert read.status_code == 200, sample["resourceType"]
        assert read.json()["resourceType"] == sample["resourceType"]
