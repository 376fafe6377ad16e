"""ITI-67 Find Document References and ITI-66 Find Lists, with the MHD search parameters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.demo import INS_NIR_TEST, PATIENTS
from service.documents.samples import SOURCE_ID, URI, document_bundle
from tests.service.documents.conftest import provide

IHE_FORMAT = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
CCAM = "https://mos.esante.gouv.fr/NOS/CCAM/FHIR/CCAM"


def _document(bundle: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(e["resource"] for e in bundle["entry"]
                                 if e["resource"]["resourceType"] == "DocumentReference")
    return found


@pytest.fixture
async def corpus(client: httpx.AsyncClient, patient_id: str,
                 other_patient_id: str) -> dict[str, str]:
    """Three documents of two patients, differing in every searchable element."""
    consultation = document_bundle(
        f"Patient/{patient_id}", master_id="urn:oid:1.2.250.1.999.7.1", type_code="11488-4",
        class_code="10", date="2026-01-10T10:00:00+01:00",
        period_start="2026-01-10T08:00:00+01:00", author_given="Jean", author_family="Martin",
        folder=True)
    document = _document(consultation)
    document["content"][0]["format"] = {"system": IHE_FORMAT,
                                        "code": "urn:ihe:iti:xds-sd:pdf:2008"}
    document["context"]["event"] = [{"coding": [{"system": CCAM, "code": "DEQP003"}]}]
    document["context"]["related"] = [{"reference": "Encounter/visit-1"}]
    imaging = document_bundle(
        f"Patient/{patient_id}", master_id="urn:oid:1.2.250.1.999.7.2", type_code="18748-4",
        class_code="31", date="2026-03-05T10:00:00+01:00",
        period_start="2026-03-05T08:00:00+01:00", author_rpps="10000000003",
        author_given="Sophie", author_family="Petit", security=("R", "MASQUE_PS"),
        content=b"%PDF-1.4 imagerie")
    context = _document(imaging)["context"]
    context["facilityType"]["coding"][0]["code"] = "SA07"
    context["practiceSetting"]["coding"][0]["code"] = "AMBULATOIRE"
    theirs = document_bundle(f"Patient/{other_patient_id}",
                             master_id="urn:oid:1.2.250.1.999.7.3", content=b"%PDF-1.4 other")
    ids = {}
    for name, bundle in (("consultation", consultation), ("imaging", imaging),
                         ("theirs", theirs)):
        response = await provide(client, bundle)
        assert response.status_code == 200, response.text
        for entry in response.json()["entry"]:
            location = entry["response"]["location"].split("/_history")[0]
            kind, _, resource_id = location.partition("/")
            if kind == "DocumentReference":
                ids[name] = resource_id
    return ids


async def _found(client: httpx.AsyncClient, params: dict[str, str]) -> set[str]:
    response = await client.get("/fhir/DocumentReference", params=params)
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])
            if e["search"]["mode"] == "match"}


@pytest.mark.parametrize(("params", "expected"), [
    ({"status": "current"}, {"consultation", "imaging", "theirs"}),
    ({"category": "31"}, {"imaging"}),
    ({"category": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/"
                  "TRE-A03-ClasseDocument|10"}, {"consultation", "theirs"}),
    ({"type": "http://loinc.org|18748-4"}, {"imaging"}),
    ({"date": "ge2026-02-01"}, {"imaging", "theirs"}),
    ({"date": "lt2026-02-01"}, {"consultation"}),
    ({"period": "lt2026-02-01"}, {"consultation"}),
    ({"setting": "AMBULATOIRE"}, {"imaging"}),
    ({"facility": "SA01"}, {"consultation", "theirs"}),
    ({"event": f"{CCAM}|DEQP003"}, {"consultation"}),
    ({"security-label": "MASQUE_PS"}, {"imaging"}),
    ({"security-label": "N"}, {"consultation", "theirs"}),
    ({"format": "urn:ihe:iti:xds-sd:pdf:2008"}, {"consultation"}),
    ({"related": "Encounter/visit-1"}, {"consultation"}),
    ({"author.given": "sophie"}, {"imaging"}),
    ({"author.family": "Martin"}, {"consultation", "theirs"}),
    ({"author.family:exact": "Martin"}, {"consultation", "theirs"}),
    ({"identifier": f"{URI}|urn:oid:1.2.250.1.999.7.2"}, {"imaging"}),
])
async def test_each_mhd_parameter_finds_its_documents(
        client: httpx.AsyncClient, corpus: dict[str, str], params: dict[str, str],
        expected: set[str]) -> None:
    assert await _found(client, params) == {corpus[name] for name in expected}


async def test_by_patient_and_by_the_patients_ins(client: httpx.AsyncClient,
                                                  corpus: dict[str, str],
                                                  patient_id: str) -> None:
    mine = {corpus["consultation"], corpus["imaging"]}
    assert await _found(client, {"patient": patient_id}) == mine
    by_ins = {"patient.identifier": f"{INS_NIR_TEST}|{PATIENTS[0][1]}"}
    assert await _found(client, by_ins) == mine
    assert await _found(client, {"patient": patient_id, "type": "18748-4",
                                 "date": "ge2026-01-01"}) == {corpus["imaging"]}


async def test_paging_sorting_and_including_the_patient(client: httpx.AsyncClient,
                                                        corpus: dict[str, str],
                                                        patient_id: str) -> None:
    first = await client.get("/fhir/DocumentReference", params={
        "patient": patient_id, "_sort": "-date", "_count": "1",
        "_include": "DocumentReference:subject"})
    page = first.json()
    assert page["total"] == 2
    matches = [e for e in page["entry"] if e["search"]["mode"] == "match"]
    included = [e for e in page["entry"] if e["search"]["mode"] == "include"]
    assert [e["resource"]["id"] for e in matches] == [corpus["imaging"]]
    assert [e["resource"]["id"] for e in included] == [patient_id]
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = (await client.get(next_url)).json()
    assert [e["resource"]["id"] for e in second["entry"]
            if e["search"]["mode"] == "match"] == [corpus["consultation"]]


async def test_find_lists_submission_sets_and_folders(client: httpx.AsyncClient,
                                                      corpus: dict[str, str],
                                                      patient_id: str) -> None:
    def items(bundle: dict[str, Any]) -> list[list[str]]:
        return [[i["item"]["reference"] for i in e["resource"]["entry"]]
                for e in bundle.get("entry", [])]

    sets = (await client.get("/fhir/List", params={
        "code": "submissionset", "patient": patient_id, "_sort": "date"})).json()
    assert sets["total"] == 2
    assert [f"DocumentReference/{corpus['consultation']}"] in [
        [ref for ref in found if ref.startswith("DocumentReference/")] for found in items(sets)]
    folders = (await client.get("/fhir/List", params={"code": "folder",
                                                      "patient": patient_id})).json()
    assert items(folders) == [[f"DocumentReference/{corpus['consultation']}"]]
    by_source = await client.get("/fhir/List", params={"sourceId": SOURCE_ID,
                                                       "code": "submissionset"})
    assert by_source.json()["total"] == 3
    by_designation = await client.get("/fhir/List", params={"designationType": "SA01",
                                                            "patient": patient_id})
    assert by_designation.json()["total"] == 3  # two submission sets and the folder
