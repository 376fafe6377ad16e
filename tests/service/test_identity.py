"""Patients identified by INS: writes checked against the rules and INSi, the INSi mock."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhir_profiles.ins import INS_SLICES, InsTraits, patient_with_ins
from service.demo import INSI_ONLY, PATIENTS, seed_directories
from storage.db import Database
from tests.factories import FHIR_JSON
from tests.tokens import bearer

CORSE = InsTraits("CORSE", "Marie", ("Marie", "Ange"), "female", "1953-07-21", "2A073")
CORSE_NIR = "253072A07300443"
TEST = INS_SLICES["INS-NIR-TEST"]


@pytest.fixture(autouse=True)
async def directories(database: Database) -> None:
    await seed_directories(database)


def corse(**changes: Any) -> dict[str, Any]:
    resource = patient_with_ins(TEST, CORSE_NIR, CORSE)
    resource.update(changes)
    return resource


async def post_patient(client: httpx.AsyncClient, resource: dict[str, Any]) -> httpx.Response:
    return await client.post("/fhir/Patient", json=resource, headers=FHIR_JSON)


def diagnostics(response: httpx.Response) -> list[str]:
    return [issue["diagnostics"] for issue in response.json()["issue"]]


async def test_qualified_patient_matching_insi_is_stored(client: httpx.AsyncClient) -> None:
    response = await post_patient(client, corse())
    assert response.status_code == 201, response.text
    assert response.json()["identifier"][0]["value"] == CORSE_NIR


@pytest.mark.parametrize("slice_name", ["INS-NIR", "INS-NIR-TEST", "INS-NIR-DEMO"])
async def test_patient_is_found_by_its_ins_under_each_oid(client: httpx.AsyncClient,
                                                          database: Database,
                                                          slice_name: str) -> None:
    from storage import directory
    from storage.directory import InsIdentity

    nir = PATIENTS[1][1]
    traits = InsTraits("LEROY", "Julie", ("Julie",), "female", "1985-05-12", "75056")
    async with database.write() as conn:  # the directory knows this person under this OID
        await directory.put_identity(conn, InsIdentity(
            INS_SLICES[slice_name], nir, "LEROY", ("Julie",), "female", "1985-05-12", "75056"),
            "LEROY")
    created = await post_patient(client, patient_with_ins(slice_name, nir, traits))
    assert created.status_code == 201, created.text
    found = await client.get("/fhir/Patient",
                             params={"identifier": f"{INS_SLICES[slice_name]}|{nir}"})
    assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [
        created.json()["id"]]
    other_oid = INS_SLICES["INS-NIA"]
    assert "entry" not in (await client.get(
        "/fhir/Patient", params={"identifier": f"{other_oid}|{nir}"})).json()


async def test_bad_ins_key_is_refused_with_the_rule_and_path(client: httpx.AsyncClient) -> None:
    bad = patient_with_ins(TEST, "253072A07300444", CORSE)
    response = await post_patient(client, bad)
    assert response.status_code == 422
    issues = response.json()["issue"]
    assert any(i["diagnostics"].startswith("[ins-key]")
               and i["expression"] == ["Patient.identifier[0].value"] for i in issues)


async def test_unqualified_identity_may_not_carry_an_ins(client: httpx.AsyncClient) -> None:
    response = await post_patient(client, patient_with_ins(TEST, CORSE_NIR, CORSE, "VALI"))
    assert response.status_code == 422
    assert any(d.startswith("[ins-qualified]") for d in diagnostics(response))


async def test_missing_trait_is_refused(client: httpx.AsyncClient) -> None:
    resource = corse()
    del resource["birthDate"]
    response = await post_patient(client, resource)
    assert response.status_code == 422
    assert any(d.startswith("[ins-birth-date]") for d in diagnostics(response))


async def test_ins_unknown_to_insi_is_refused(client: httpx.AsyncClient) -> None:
    unknown = "253072B07300470"  # valid key, not in the directory
    response = await post_patient(client, patient_with_ins(TEST, unknown, CORSE))
    assert response.status_code == 422
    assert diagnostics(response)[0].startswith("[insi-unknown]")


async def test_traits_that_disagree_with_insi_are_refused(client: httpx.AsyncClient) -> None:
    wrong = InsTraits("CORSE", "Mariette", ("Mariette",), "female", "1953-07-21", "2A073")
    response = await post_patient(client, patient_with_ins(TEST, CORSE_NIR, wrong))
    assert response.status_code == 422
    message = diagnostics(response)[0]
    assert message.startswith("[insi-traits]") and "first birth first name" in message


async def test_traits_differing_only_in_accents_and_case_are_accepted(
        client: httpx.AsyncClient) -> None:
    spelled = InsTraits("Corse", "marie", ("marie", "ange"), "female", "1953-07-21", "2A073")
    response = await post_patient(client, patient_with_ins(TEST, CORSE_NIR, spelled))
    assert response.status_code == 201, response.text


async def test_update_is_checked_against_insi_too(client: httpx.AsyncClient) -> None:
    created = (await post_patient(client, corse())).json()
    changed = {**created, "birthDate": "1953-07-22"}
    response = await client.put(f"/fhir/Patient/{created['id']}", json=changed,
                                headers=FHIR_JSON)
    assert response.status_code == 422
    assert diagnostics(response)[0].startswith("[insi-traits]")
    still = await client.get(f"/fhir/Patient/{created['id']}")
    assert still.json()["birthDate"] == "1953-07-21"


async def test_transaction_with_an_unknown_ins_stores_nothing(client: httpx.AsyncClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:a", "resource": corse(),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:b", "resource": patient_with_ins(TEST, "253072B07300470", CORSE),
         "request": {"method": "POST", "url": "Patient"}}]}
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 422
    assert "Bundle.entry[1]" in diagnostics(response)[0]
    assert "entry" not in (await client.get("/fhir/Patient")).json()


async def test_transaction_entry_breaking_an_ins_rule_answers_422(
        client: httpx.AsyncClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient_with_ins(TEST, CORSE_NIR, CORSE, "PROV"),
         "request": {"method": "POST", "url": "Patient"}}]}
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 422
    assert any("[ins-qualified]" in d for d in diagnostics(response))


async def test_patient_without_ins_is_still_accepted(client: httpx.AsyncClient) -> None:
    response = await post_patient(client, {"resourceType": "Patient",
                                           "name": [{"family": "SANS-INS"}]})
    assert response.status_code == 201


def lookup(**values: str) -> dict[str, Any]:
    parameters = []
    for name, value in values.items():
        if name == "ins":
            parameters.append({"name": "ins", "valueIdentifier": {"system": TEST,
                                                                  "value": value}})
        else:
            kind = {"gender": "valueCode", "birthDate": "valueDate"}.get(name, "valueString")
            parameters.append({"name": name, kind: value})
    return {"resourceType": "Parameters", "parameter": parameters}


async def ins_lookup(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/fhir/Patient/$ins-lookup", json=body, headers=FHIR_JSON)


async def test_insi_lookup_by_traits_returns_the_ins_and_traits(
        client: httpx.AsyncClient) -> None:
    _key, nir, family, given, gender, birth, _place, _ = INSI_ONLY[0]
    response = await ins_lookup(client, lookup(family="dupont eloi", given=given[0],
                                               gender=gender, birthDate=birth))
    assert response.status_code == 200, response.text
    patient = next(p["resource"] for p in response.json()["parameter"] if p["name"] == "patient")
    assert patient["identifier"][0] == {
        "use": "official", "type": {"coding": [{
            "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
            "code": "INS-NIR-TEST"}]}, "system": TEST, "value": nir}
    assert patient["name"][0]["family"] == family
    status = patient["extension"][0]["extension"][0]["valueCoding"]["code"]
    assert status == "RECUP"  # qualified only once the professional checks an ID document


async def test_insi_lookup_by_ins_returns_the_traits(client: httpx.AsyncClient) -> None:
    response = await ins_lookup(client, lookup(ins=CORSE_NIR))
    assert response.status_code == 200
    patient = response.json()["parameter"][1]["resource"]
    assert patient["birthDate"] == "1953-07-21"
    assert patient["gender"] == "female"


@pytest.mark.parametrize("values", [
    {"family": "CORSE", "given": "Marie", "gender": "male", "birthDate": "1953-07-21"},
    {"family": "CORSE", "given": "Paul", "gender": "female", "birthDate": "1953-07-21"},
    {"family": "INCONNU", "given": "Marie", "gender": "female", "birthDate": "1953-07-21"},
    {"ins": "253072B07300470"},
])
async def test_insi_lookup_without_a_match_answers_not_found(client: httpx.AsyncClient,
                                                             values: dict[str, str]) -> None:
    response = await ins_lookup(client, lookup(**values))
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "INSi" in diagnostics(response)[0]


@pytest.mark.parametrize("body, expected", [
    (lookup(family="CORSE", given="Marie"), "missing: gender, birthDate"),
    (lookup(ins="253072A07300444"), "[ins-key]"),
    ({"resourceType": "Patient"}, "Parameters"),
    ({"resourceType": "Parameters", "parameter": [{"name": "family", "valueString": "A"},
                                                  {"name": "family", "valueString": "B"}]},
     "repeated"),
])
async def test_insi_lookup_with_bad_parameters_answers_400(client: httpx.AsyncClient,
                                                           body: dict[str, Any],
                                                           expected: str) -> None:
    response = await ins_lookup(client, body)
    assert response.status_code == 400
    assert expected in diagnostics(response)[0]


async def test_insi_lookup_is_refused_to_patients(client: httpx.AsyncClient,
                                                  tokens: Any) -> None:
    response = await client.post("/fhir/Patient/$ins-lookup", json=lookup(ins=CORSE_NIR),
                                 headers={**FHIR_JSON, **bearer(tokens.patient())})
    assert response.status_code == 403
    assert "insi-professionals-only" in diagnostics(response)[0]


async def test_insi_lookup_is_open_to_professionals(client: httpx.AsyncClient,
                                                    tokens: Any) -> None:
    response = await client.post("/fhir/Patient/$ins-lookup", json=lookup(ins=CORSE_NIR),
                                 headers={**FHIR_JSON, **bearer(tokens.professional())})
    assert response.status_code == 200
