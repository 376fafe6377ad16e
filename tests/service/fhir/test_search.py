"""FHIR search through the HTTP API: https://hl7.org/fhir/R4/search.html"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from service.settings import Settings
from storage.db import Database
from tests.factories import (
    FHIR_JSON,
    IPP_SYSTEM,
    file_document,
    ins_patient,
    observation,
    patient,
    practitioner,
)

BASE = "http://carnet.test/fhir"
OTHER_SYSTEM = "urn:oid:1.2.3.4"


# ---------------------------------------------------------------------------- helpers


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource,
                                 headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def update(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}",
                                json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def delete(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.delete(f"/fhir/{resource['resourceType']}/{resource['id']}")
    assert response.status_code == 204, response.text


async def search(client: httpx.AsyncClient, resource_type: str,
                 params: list[tuple[str, str]] | dict[str, str] | None = None, *,
                 status: int = 200, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.get(f"/fhir/{resource_type}", params=params, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    if status == 200:
        assert body["resourceType"] == "Bundle"
        assert body["type"] == "searchset"
    else:
        assert body["resourceType"] == "OperationOutcome"
    return body


async def follow(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ids(client: httpx.AsyncClient, resource_type: str,
              params: list[tuple[str, str]] | dict[str, str] | None = None) -> list[str]:
    """The ids of the matches, in the order the server returned them."""
    return match_ids(await search(client, resource_type, params))


def match_ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"]


def included(bundle: dict[str, Any]) -> list[str]:
    return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}"
                  for e in bundle.get("entry", []) if e["search"]["mode"] == "include")


def link(bundle: dict[str, Any], relation: str) -> str | None:
    urls = [li["url"] for li in bundle.get("link", []) if li["relation"] == relation]
    assert len(urls) <= 1
    return urls[0] if urls else None


def issue_expressions(outcome: dict[str, Any]) -> list[str]:
    return [x for issue in outcome["issue"] for x in issue.get("expression", [])]


def cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def patients(client: httpx.AsyncClient, *resources: dict[str, Any]) -> list[str]:
    return [(await create(client, r))["id"] for r in resources]


def without_birthdate(resource: dict[str, Any]) -> dict[str, Any]:
    resource.pop("birthDate")
    return resource


# ------------------------------------------------------------------------------ token


async def test_token_search_matches_system_and_value(client: httpx.AsyncClient) -> None:
    ins, other, bare, none = await patients(
        client, patient(ipp="111"), patient(identifier=[{"system": OTHER_SYSTEM, "value": "111"}]),
        patient(identifier=[{"value": "111"}]), patient(ipp="222"))
    assert await ids(client, "Patient", {"identifier": f"{IPP_SYSTEM}|111"}) == [ins]
    assert await ids(client, "Patient", {"identifier": "111"}) == [ins, other, bare]
    assert await ids(client, "Patient", {"identifier": "|111"}) == [bare]
    assert await ids(client, "Patient", {"identifier": f"{IPP_SYSTEM}|"}) == [ins, none]
    assert await ids(client, "Patient", {"identifier": f"{OTHER_SYSTEM}|222"}) == []


async def test_token_search_by_code_alone_and_with_alternatives(
        client: httpx.AsyncClient) -> None:
    male, female, other = await patients(client, patient(gender="male"),
                                         patient(gender="female"), patient(gender="other"))
    assert await ids(client, "Patient", {"gender": "female"}) == [female]
    assert await ids(client, "Patient", {"gender": "male,other"}) == [male, other]
    assert await ids(client, "Patient", {"gender": "unknown"}) == []


async def test_token_search_on_codeable_concepts_and_booleans(client: httpx.AsyncClient,
                                                              database: Database) -> None:
    p = await ins_patient(client, database)
    letter = await file_document(client, p, type_code="11488-4")
    await file_document(client, p, type_code="34133-9")
    active, inactive = await patients(client, patient(active=True), patient(active=False))
    assert await ids(client, "DocumentReference", {"type": "http://loinc.org|11488-4"}) == [
        letter["id"]]
    assert await ids(client, "DocumentReference", {"type": "http://snomed.info/sct|11488-4"}) == []
    assert await ids(client, "Patient", {"active": "true"}) == [active]
    assert await ids(client, "Patient", {"active": "false"}) == [inactive]


async def test_not_excludes_matches_and_keeps_resources_without_a_value(
        client: httpx.AsyncClient) -> None:
    _, female = await patients(client, patient(gender="male"), patient(gender="female"))
    no_gender = patient()
    no_gender.pop("gender")
    unknown = (await create(client, no_gender))["id"]
    assert await ids(client, "Patient", {"gender:not": "male"}) == [female, unknown]
    assert await ids(client, "Patient", {"gender:not": "male,female"}) == [unknown]


async def test_missing_true_finds_resources_without_a_value_and_false_those_with_one(
        client: httpx.AsyncClient) -> None:
    with_nir, without_nir = await patients(client, patient(ipp="1"), patient())
    born, unborn = await patients(client, patient(), without_birthdate(patient()))
    assert await ids(client, "Patient", {"identifier:missing": "true"}) == [
        without_nir, born, unborn]
    assert await ids(client, "Patient", {"identifier:missing": "false"}) == [with_nir]
    assert await ids(client, "Patient", {"birthdate:missing": "true"}) == [unborn]
    assert await ids(client, "Patient", {"birthdate:missing": "false"}) == [
        with_nir, without_nir, born]


# ----------------------------------------------------------------------------- string


async def test_string_search_ignores_accents_and_case_and_matches_prefixes(
        client: httpx.AsyncClient) -> None:
    lefevre, _ = await patients(client, patient("Lefèvre", "Éloïse"), patient("Dupont", "Jean"))
    assert await ids(client, "Patient", {"family": "lefev"}) == [lefevre]
    assert await ids(client, "Patient", {"family": "LEFÈVRE"}) == [lefevre]
    assert await ids(client, "Patient", {"given": "eloi"}) == [lefevre]
    assert await ids(client, "Patient", {"name": "ELOISE"}) == [lefevre]
    assert await ids(client, "Patient", {"family": "fevre"}) == []
    assert await ids(client, "Patient", {"family": "lefevres"}) == []


async def test_exact_string_search_compares_case_and_accents(client: httpx.AsyncClient) -> None:
    lefevre, lefevre_plain = await patients(client, patient("Lefèvre"), patient("Lefevre"))
    assert await ids(client, "Patient", {"family:exact": "Lefèvre"}) == [lefevre]
    assert await ids(client, "Patient", {"family:exact": "Lefevre"}) == [lefevre_plain]
    assert await ids(client, "Patient", {"family:exact": "lefèvre"}) == []
    assert await ids(client, "Patient", {"family:exact": "Lefèv"}) == []


async def test_contains_matches_anywhere_in_the_value(client: httpx.AsyncClient) -> None:
    lefevre, _ = await patients(client, patient("Lefèvre"), patient("Dupont"))
    assert await ids(client, "Patient", {"family:contains": "FÈV"}) == [lefevre]
    assert await ids(client, "Patient", {"family:contains": "vre"}) == [lefevre]
    assert await ids(client, "Patient", {"family:contains": "xyz"}) == []


async def test_contains_treats_like_wildcards_literally(client: httpx.AsyncClient) -> None:
    await patients(client, patient("Dupont"), patient("Martin"))
    underscored = (await create(client, patient("Du_pont")))["id"]
    assert await ids(client, "Patient", {"family:contains": "_"}) == [underscored]
    assert await ids(client, "Patient", {"family:contains": "%"}) == []


async def test_repeated_string_parameters_must_all_match(client: httpx.AsyncClient) -> None:
    jean_dupont, _, _ = await patients(client, patient("Dupont", "Jean"),
                                       patient("Dupont", "Paul"), patient("Martin", "Jean"))
    assert await ids(client, "Patient", [("family", "dupont"), ("given", "jean")]) == [
        jean_dupont]
    assert await ids(client, "Patient", [("name", "dupont"), ("name", "jean")]) == [jean_dupont]


async def test_values_longer_than_the_index_columns_are_stored_and_found(
        client: httpx.AsyncClient, database: Database) -> None:
    p = await ins_patient(client, database)
    description = "Compte rendu d'hospitalisation " * 12
    identifier = "X" * 300
    long_system = "urn:x:" + "s" * 300

    def lengthen(doc: dict[str, Any]) -> None:
        doc["description"] = description
        doc["identifier"] += [{"system": OTHER_SYSTEM, "value": identifier},
                              {"system": long_system, "value": "1"}]
        # a reference type longer than its index column (context.related takes any type)
        doc["context"]["related"] = [{"reference": "A" + "b" * 70 + "/1"}]

    created = (await file_document(client, p, edit=lengthen))["id"]
    assert len(description) > 256
    assert await ids(client, "DocumentReference", {"description": description}) == [created]
    assert await ids(client, "DocumentReference", {"description:exact": description}) == [
        created]
    assert await ids(client, "DocumentReference", {"description:contains": description}) == [
        created]
    assert await ids(client, "DocumentReference", {"identifier": identifier}) == [created]
    assert await ids(client, "DocumentReference",
                     {"identifier": f"{OTHER_SYSTEM}|{identifier}"}) == [created]
    assert await ids(client, "DocumentReference", {"identifier": f"{long_system}|1"}) == [
        created]


# ------------------------------------------------------------------------------- date


BIRTH_DATES = {"1969": "1969-12-31", "jan": "1970-01-01", "jun": "1970-06-15",
               "1971": "1971-01-01"}


@pytest.mark.parametrize(("query", "expected"), [
    ("1970", {"jan", "jun"}),
    ("eq1970", {"jan", "jun"}),
    ("1970-06", {"jun"}),
    ("1970-01-01", {"jan"}),
    ("ne1970", {"1969", "1971"}),
    ("lt1970", {"1969"}),
    ("lt1970-06", {"1969", "jan"}),
    ("gt1970", {"1971"}),
    ("gt1970-01", {"jun", "1971"}),
    ("le1970", {"1969", "jan", "jun"}),
    ("le1970-01", {"1969", "jan"}),
    ("ge1970", {"jan", "jun", "1971"}),
    ("ge1970-06-15", {"jun", "1971"}),
    ("sa1970", {"1971"}),
    ("eb1970", {"1969"}),
    ("eb1970-06-15", {"1969", "jan"}),
    ("sa1970-01-01", {"jun", "1971"}),
])
async def test_birthdate_prefixes_compare_whole_ranges(client: httpx.AsyncClient, query: str,
                                                       expected: set[str]) -> None:
    by_id = {(await create(client, patient(birth_date=d)))["id"]: name
             for name, d in BIRTH_DATES.items()}
    found = {by_id[i] for i in await ids(client, "Patient", {"birthdate": query})}
    assert found == expected


async def test_repeated_date_parameters_make_an_interval(client: httpx.AsyncClient) -> None:
    by_id = {(await create(client, patient(birth_date=d)))["id"]: name
             for name, d in BIRTH_DATES.items()}
    found = await ids(client, "Patient", [("birthdate", "ge1970-01-01"),
                                          ("birthdate", "lt1971-01-01")])
    assert {by_id[i] for i in found} == {"jan", "jun"}


async def test_document_date_search_converts_time_zones(client: httpx.AsyncClient,
                                                        database: Database) -> None:
    p = await ins_patient(client, database)
    # 2026-01-15T10:00:00+01:00 is 09:00:00Z
    jan15 = (await file_document(client, p, date="2026-01-15T10:00:00+01:00"))["id"]
    jan16 = (await file_document(client, p, date="2026-01-16T10:00:00+01:00"))["id"]
    assert await ids(client, "DocumentReference", {"date": "2026-01-15"}) == [jan15]
    assert await ids(client, "DocumentReference", {"date": "2026-01"}) == [jan15, jan16]
    assert await ids(client, "DocumentReference", {"date": "2026-01-15T09:00:00Z"}) == [jan15]
    assert await ids(client, "DocumentReference", {"date": "2026-01-15T11:00:00+02:00"}) == [
        jan15]
    assert await ids(client, "DocumentReference", {"date": "2026-01-15T10:00:00Z"}) == []
    assert await ids(client, "DocumentReference", {"date": "gt2026-01-15T09:30Z"}) == [jan16]
    assert await ids(client, "DocumentReference", {"date": "lt2026-01-15T09:00:01Z"}) == [jan15]
    assert await ids(client, "DocumentReference", {"date": "ne2026-01-15"}) == [jan16]
    assert await ids(client, "DocumentReference", {"date": "sa2026-01-15"}) == [jan16]
    assert await ids(client, "DocumentReference", {"date": "eb2026-01-16"}) == [jan15]
    assert await ids(client, "DocumentReference", {"date": "le2026-01-15T09:00Z"}) == [jan15]
    assert await ids(client, "DocumentReference", {"date": "ge2026-01-16T09:00:00Z"}) == [jan16]


async def test_period_search_compares_the_whole_period(client: httpx.AsyncClient,
                                                       database: Database) -> None:
    p = await ins_patient(client, database)
    january = (await file_document(client, p, edit=lambda doc: doc["context"].update(
        period={"start": "2026-01-01", "end": "2026-01-31"})))["id"]
    for query, matches in [("2026-01-10", False), ("2026-01", True), ("ne2026-01-10", True),
                           ("ge2026-01-10", True), ("le2026-01-10", True),
                           ("sa2026-01-10", False), ("eb2026-01-10", False),
                           ("sa2025-12-31", True), ("eb2026-02-01", True),
                           ("gt2026-01-31", False), ("lt2026-01-01", False)]:
        found = await ids(client, "DocumentReference", {"period": query})
        assert found == ([january] if matches else []), query


async def test_an_invalid_date_is_a_400_naming_the_parameter(client: httpx.AsyncClient) -> None:
    outcome = await search(client, "Patient", {"birthdate": "1970-13-01"}, status=400)
    assert issue_expressions(outcome) == ["birthdate"]
    assert outcome["issue"][0]["code"] == "invalid"
    outcome = await search(client, "Patient", {"_lastUpdated": "gtyesterday"}, status=400)
    assert issue_expressions(outcome) == ["_lastUpdated"]


# -------------------------------------------------------------------------- reference


async def test_reference_search_accepts_every_reference_form(client: httpx.AsyncClient,
                                                             database: Database) -> None:
    mine = await ins_patient(client, database, "Mine")
    other = await ins_patient(client, database, "Other")
    doc = (await file_document(client, mine))["id"]
    await file_document(client, other)
    for params in ({"patient": f"Patient/{mine}"}, {"patient": mine},
                   {"subject": f"Patient/{mine}"}, {"subject:Patient": mine},
                   {"subject": f"{BASE}/Patient/{mine}"},
                   {"patient": f"Patient/{mine}/_history/1"}):
        assert await ids(client, "DocumentReference", params) == [doc], params
    assert await ids(client, "DocumentReference", {"subject:Practitioner": mine}) == []
    assert await ids(client, "DocumentReference", {"subject": f"Group/{mine}"}) == []


async def test_reference_search_on_a_multi_type_parameter(client: httpx.AsyncClient,
                                                          database: Database) -> None:
    p = await ins_patient(client, database)
    pr = await create(client, practitioner())
    by_practitioner = (await file_document(
        client, p, authors=[f"Practitioner/{pr['id']}"]))["id"]
    await file_document(client, p, authors=[f"Patient/{p}"])
    assert await ids(client, "DocumentReference", {"author": f"Practitioner/{pr['id']}"}) == [
        by_practitioner]
    assert await ids(client, "DocumentReference", {"author:Practitioner": pr["id"]}) == [
        by_practitioner]


async def test_a_type_modifier_contradicting_the_value_is_a_400(
        client: httpx.AsyncClient) -> None:
    outcome = await search(client, "DocumentReference", {"subject:Patient": "Group/1"},
                           status=400)
    assert issue_expressions(outcome) == ["subject"]


async def test_chained_search_filters_on_the_referenced_patient(
        client: httpx.AsyncClient, database: Database) -> None:
    lefevre = await ins_patient(client, database, "Lefèvre", ipp="111")
    dupont = await ins_patient(client, database, "Dupont", ipp="222")
    doc = (await file_document(client, lefevre))["id"]
    other = (await file_document(client, dupont))["id"]
    assert await ids(client, "DocumentReference",
                     {"patient.identifier": f"{IPP_SYSTEM}|111"}) == [doc]
    assert await ids(client, "DocumentReference", {"subject:Patient.family": "lefev"}) == [doc]
    assert await ids(client, "DocumentReference", {"subject.family": "dupont"}) == [other]
    assert await ids(client, "DocumentReference", {"patient._id": dupont}) == [other]
    assert await ids(client, "DocumentReference", {"patient.family:exact": "lefèvre"}) == []
    assert await ids(client, "DocumentReference",
                     {"patient.identifier": f"{OTHER_SYSTEM}|111"}) == []


async def test_chained_search_ignores_deleted_targets(client: httpx.AsyncClient,
                                                      database: Database) -> None:
    gone = await ins_patient(client, database, "Lefèvre")
    await file_document(client, gone)
    await delete(client, {"resourceType": "Patient", "id": gone})
    assert await ids(client, "DocumentReference", {"patient.family": "lefevre"}) == []


async def test_chained_search_on_author_covers_each_target_type(
        client: httpx.AsyncClient, database: Database) -> None:
    p = await ins_patient(client, database, "Martin")
    pr = await create(client, practitioner("Martin"))
    by_practitioner = (await file_document(
        client, p, authors=[f"Practitioner/{pr['id']}"]))["id"]
    by_patient = (await file_document(client, p, authors=[f"Patient/{p}"]))["id"]
    assert await ids(client, "DocumentReference", {"author.family": "martin"}) == [
        by_practitioner, by_patient]
    assert await ids(client, "DocumentReference", {"author:Practitioner.family": "martin"}) == [
        by_practitioner]


# ------------------------------------------------------------------- _id, _lastUpdated


async def test_id_search_takes_a_comma_separated_list(client: httpx.AsyncClient) -> None:
    a, b, c = await patients(client, patient(), patient(), patient())
    assert await ids(client, "Patient", {"_id": a}) == [a]
    assert await ids(client, "Patient", {"_id": f"{a},{c},nope"}) == [a, c]
    assert await ids(client, "Patient", {"_id:not": a}) == [b, c]
    assert await ids(client, "Patient", {"_id": "nope"}) == []


async def test_last_updated_compares_the_instant(client: httpx.AsyncClient) -> None:
    first = await create(client, patient())
    second, third = await patients(client, patient(), patient())
    instant = first["meta"]["lastUpdated"]
    assert await ids(client, "Patient", {"_lastUpdated": f"gt{instant}"}) == [second, third]
    assert await ids(client, "Patient", {"_lastUpdated": f"ge{instant}"}) == [
        first["id"], second, third]
    assert await ids(client, "Patient", {"_lastUpdated": instant}) == [first["id"]]
    assert await ids(client, "Patient", {"_lastUpdated": f"lt{instant}"}) == []
    assert await ids(client, "Patient", {"_lastUpdated": f"le{instant}"}) == [first["id"]]
    assert await ids(client, "Patient", {"_lastUpdated": "gt2100"}) == []


# ----------------------------------------------------------------------------- _count


async def test_count_limits_the_page_and_total_counts_every_match(
        client: httpx.AsyncClient) -> None:
    created = await patients(client, *(patient() for _ in range(5)))
    bundle = await search(client, "Patient", {"_count": "2"})
    assert match_ids(bundle) == created[:2]
    assert bundle["total"] == 5
    assert link(bundle, "next") is not None
    bundle = await search(client, "Patient", {"_count": "1000"})
    assert match_ids(bundle) == created
    assert link(bundle, "next") is None


async def test_count_zero_returns_only_the_total(client: httpx.AsyncClient) -> None:
    await patients(client, patient(), patient())
    bundle = await search(client, "Patient", {"_count": "0"})
    assert bundle["total"] == 2
    assert match_ids(bundle) == []


async def test_the_default_page_size_applies_without_count(client: httpx.AsyncClient,
                                                          settings: Settings) -> None:
    settings.default_page_size = 2
    await patients(client, patient(), patient(), patient())
    bundle = await search(client, "Patient")
    assert len(match_ids(bundle)) == 2
    assert bundle["total"] == 3


async def test_count_is_capped_at_the_server_maximum(client: httpx.AsyncClient,
                                                     settings: Settings) -> None:
    assert settings.max_page_size == 100
    settings.max_page_size = 3
    await patients(client, *(patient() for _ in range(4)))
    bundle = await search(client, "Patient", {"_count": "100"})
    assert len(match_ids(bundle)) == 3
    assert link(bundle, "next") is not None


async def test_an_invalid_count_is_a_400(client: httpx.AsyncClient) -> None:
    outcome = await search(client, "Patient", {"_count": "-1"}, status=400)
    assert issue_expressions(outcome) == ["_count"]
    await search(client, "Patient", {"_count": "²"}, status=400)


# ------------------------------------------------------------------------------ _sort


async def test_sort_by_birthdate_puts_resources_without_one_last(
        client: httpx.AsyncClient) -> None:
    mid, unborn, old, young = await patients(
        client, patient(birth_date="1980-05-05"), without_birthdate(patient()),
        patient(birth_date="1950-01-01"), patient(birth_date="2001-12-31"))
    assert await ids(client, "Patient", {"_sort": "birthdate"}) == [old, mid, young, unborn]
    assert await ids(client, "Patient", {"_sort": "-birthdate"}) == [young, mid, old, unborn]


async def test_sort_by_family_ignores_accents_and_case(client: httpx.AsyncClient) -> None:
    martin, emile, dupont, bernard = await patients(
        client, patient("Martin"), patient("Émile"), patient("dupont"), patient("BERNARD"))
    assert await ids(client, "Patient", {"_sort": "family"}) == [bernard, dupont, emile, martin]
    assert await ids(client, "Patient", {"_sort": "-family"}) == [martin, emile, dupont, bernard]


async def test_sort_by_last_updated_follows_updates(client: httpx.AsyncClient) -> None:
    first = await create(client, patient())
    second, third = await patients(client, patient(), patient())
    await update(client, {**first, "gender": "female"})
    assert await ids(client, "Patient", {"_sort": "_lastUpdated"}) == [
        second, third, first["id"]]
    assert await ids(client, "Patient", {"_sort": "-_lastUpdated"}) == [
        first["id"], third, second]


async def test_sort_by_id_in_both_directions(client: httpx.AsyncClient) -> None:
    for resource_id in ("b1", "a2", "c3"):
        await update(client, {**patient(), "id": resource_id})
    assert await ids(client, "Patient", {"_sort": "-_id"}) == ["c3", "b1", "a2"]
    assert await ids(client, "Patient", {"_sort": "_id"}) == ["a2", "b1", "c3"]


async def test_sort_by_several_keys(client: httpx.AsyncClient) -> None:
    m_old, f_young, m_young, f_old = await patients(
        client, patient(gender="male", birth_date="1950-01-01"),
        patient(gender="female", birth_date="2000-01-01"),
        patient(gender="male", birth_date="2000-01-01"),
        patient(gender="female", birth_date="1950-01-01"))
    assert await ids(client, "Patient", {"_sort": "gender,-birthdate"}) == [
        f_young, f_old, m_young, m_old]
    assert await ids(client, "Patient", [("_sort", "birthdate,-gender")]) == [
        m_old, f_old, m_young, f_young]


async def test_an_unsortable_parameter_is_a_400(client: httpx.AsyncClient) -> None:
    outcome = await search(client, "Patient", {"_sort": "organization"}, status=400)
    assert issue_expressions(outcome) == ["_sort"]


# ------------------------------------------------------------------- _total, _summary


async def test_total_is_accurate_by_default_and_omitted_with_total_none(
        client: httpx.AsyncClient) -> None:
    await patients(client, patient(gender="female"), patient(gender="female"),
                   patient(gender="male"))
    bundle = await search(client, "Patient", {"gender": "female", "_count": "1"})
    assert bundle["total"] == 2
    bundle = await search(client, "Patient", {"gender": "female", "_total": "none"})
    assert "total" not in bundle
    assert len(match_ids(bundle)) == 2
    bundle = await search(client, "Patient", {"_total": "accurate"})
    assert bundle["total"] == 3


async def test_an_empty_search_has_a_zero_total(client: httpx.AsyncClient) -> None:
    bundle = await search(client, "Patient", {"family": "nobody"})
    assert bundle["total"] == 0
    assert match_ids(bundle) == []


async def test_summary_count_returns_the_total_without_entries(
        client: httpx.AsyncClient) -> None:
    await patients(client, patient(gender="female"), patient(gender="female"),
                   patient(gender="male"))
    bundle = await search(client, "Patient", {"gender": "female", "_summary": "count"})
    assert bundle["total"] == 2
    assert not bundle.get("entry")
    assert link(bundle, "next") is None


async def test_a_bundle_without_entries_has_no_empty_entry_array(
        client: httpx.AsyncClient) -> None:
    assert "entry" not in await search(client, "Patient", {"_summary": "count"})
    assert "entry" not in await search(client, "Patient", {"family": "nobody"})


async def test_summary_true_keeps_only_summary_elements_and_marks_them_subsetted(
        client: httpx.AsyncClient) -> None:
    await create(client, patient("Lefèvre", maritalStatus={"text": "married"},
                                 contact=[{"name": {"family": "Proche"}}]))
    bundle = await search(client, "Patient", {"_summary": "true"})
    resource = bundle["entry"][0]["resource"]
    assert resource["name"][0]["family"] == "Lefèvre"
    assert resource["birthDate"] == "1970-01-01"
    assert "maritalStatus" not in resource
    assert "contact" not in resource
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "SUBSETTED"} in resource["meta"]["tag"]


async def test_elements_keeps_only_the_named_elements_and_marks_them_subsetted(
        client: httpx.AsyncClient) -> None:
    created = await create(client, patient("Lefèvre", ipp="111"))
    bundle = await search(client, "Patient", {"_elements": "name,identifier"})
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "name", "identifier"}
    assert resource["id"] == created["id"]
    assert resource["meta"]["versionId"] == "1"
    assert [t["code"] for t in resource["meta"]["tag"]] == ["SUBSETTED"]


async def test_summary_data_drops_the_narrative(client: httpx.AsyncClient) -> None:
    narrative = {"status": "generated",
                 "div": '<div xmlns="http://www.w3.org/1999/xhtml">Jean Dupont</div>'}
    await create(client, patient(text=narrative))
    resource = (await search(client, "Patient", {"_summary": "data"}))["entry"][0]["resource"]
    assert "text" not in resource
    assert resource["gender"] == "male"
    assert [t["code"] for t in resource["meta"]["tag"]] == ["SUBSETTED"]


async def test_resources_are_served_whole_without_summary_or_elements(
        client: httpx.AsyncClient) -> None:
    created = await create(client, patient("Lefèvre", maritalStatus={"text": "married"}))
    for params in ({}, {"_summary": "false"}):
        bundle = await search(client, "Patient", params)
        assert bundle["entry"][0]["resource"] == created
        assert bundle["entry"][0]["fullUrl"] == f"{BASE}/Patient/{created['id']}"


# -------------------------------------------------------------- _include, _revinclude


async def test_include_adds_the_referenced_patient_once(client: httpx.AsyncClient,
                                                        database: Database) -> None:
    mine = await ins_patient(client, database, "Mine")
    other = await ins_patient(client, database, "Other")
    docs = [(await file_document(client, mine, type_code="11488-4"))["id"] for _ in range(2)]
    await file_document(client, other, type_code="34133-9")
    bundle = await search(client, "DocumentReference", {"type": "11488-4",
                                                        "_include": "DocumentReference:subject"})
    assert match_ids(bundle) == docs
    assert included(bundle) == [f"Patient/{mine}"]
    assert bundle["total"] == 2
    include = next(e for e in bundle["entry"] if e["search"]["mode"] == "include")
    assert include["fullUrl"] == f"{BASE}/Patient/{mine}"


async def test_include_of_the_author_and_by_target_type(client: httpx.AsyncClient,
                                                       database: Database) -> None:
    p = await ins_patient(client, database)
    pr = await create(client, practitioner())
    await file_document(client, p, authors=[f"Practitioner/{pr['id']}"])
    bundle = await search(client, "DocumentReference", {"_include": "DocumentReference:author"})
    assert included(bundle) == [f"Practitioner/{pr['id']}"]
    bundle = await search(client, "DocumentReference", [
        ("_include", "DocumentReference:author:Patient"),
        ("_include", "DocumentReference:subject:Patient")])
    assert included(bundle) == [f"Patient/{p}"]


async def test_revinclude_adds_the_documents_pointing_at_the_patients(
        client: httpx.AsyncClient, database: Database) -> None:
    mine = await ins_patient(client, database, "Mine")
    other = await ins_patient(client, database, "Other")
    docs = [(await file_document(client, mine))["id"] for _ in range(2)]
    await file_document(client, other)
    bundle = await search(client, "Patient", {"_id": mine,
                                              "_revinclude": "DocumentReference:subject"})
    assert match_ids(bundle) == [mine]
    assert included(bundle) == sorted(f"DocumentReference/{d}" for d in docs)
    assert bundle["total"] == 1


async def test_a_resource_both_matched_and_included_appears_once(
        client: httpx.AsyncClient) -> None:
    parent = await create(client, {"resourceType": "Organization", "name": "CHU"})
    child = await create(client, {"resourceType": "Organization", "name": "CHU Nord",
                                  "partOf": {"reference": f"Organization/{parent['id']}"}})
    bundle = await search(client, "Organization", {"name": "chu",
                                                   "_include": "Organization:partof"})
    assert match_ids(bundle) == [parent["id"], child["id"]]
    assert included(bundle) == []
    bundle = await search(client, "Organization", {"_id": child["id"],
                                                   "_include": "Organization:partof"})
    assert included(bundle) == [f"Organization/{parent['id']}"]


async def test_deleted_resources_are_not_included(client: httpx.AsyncClient,
                                                   database: Database) -> None:
    p = await ins_patient(client, database)
    pr = await create(client, practitioner())
    kept = await file_document(client, p, authors=[f"Practitioner/{pr['id']}"])
    # Documents are never deleted (PDSm): the deleted referring resources are Observations.
    kept_result = await create(client, observation(p))
    gone_result = await create(client, observation(p))
    await delete(client, pr)
    await delete(client, gone_result)
    bundle = await search(client, "DocumentReference", {"_include": "DocumentReference:author"})
    assert match_ids(bundle) == [kept["id"]]
    assert included(bundle) == []
    bundle = await search(client, "Patient", [("_revinclude", "DocumentReference:subject"),
                                              ("_revinclude", "Observation:subject")])
    assert included(bundle) == [f"DocumentReference/{kept['id']}",
                                f"Observation/{kept_result['id']}"]


async def test_an_include_on_another_type_is_a_400(client: httpx.AsyncClient) -> None:
    outcome = await search(client, "Patient", {"_include": "DocumentReference:subject"},
                           status=400)
    assert issue_expressions(outcome) == ["_include"]


# ---------------------------------------------------------------- deletes and updates


async def test_deleted_resources_never_match(client: httpx.AsyncClient) -> None:
    kept = await create(client, patient("Lefèvre", ipp="111", gender="female"))
    gone = await create(client, patient("Lefèvre", ipp="111", gender="female"))
    await delete(client, gone)
    for params in ({}, {"family": "lefevre"}, {"identifier": f"{IPP_SYSTEM}|111"},
                   {"gender:not": "male"}, {"birthdate:missing": "false"},
                   {"identifier:missing": "false"}, {"_id": f"{gone['id']},{kept['id']}"},
                   {"_lastUpdated": "gt2000"}):
        bundle = await search(client, "Patient", params)
        assert match_ids(bundle) == [kept["id"]], params
        assert bundle["total"] == 1
    assert await ids(client, "Patient", {"birthdate:missing": "true"}) == []


async def test_updated_resources_match_only_their_new_values(client: httpx.AsyncClient) -> None:
    created = await create(client, patient("Dupont", ipp="111", birth_date="1970-01-01"))
    changed = {**created, "name": [{"family": "Durand"}], "birthDate": "1980-02-02",
               "identifier": [{"system": IPP_SYSTEM, "value": "222"}]}
    await update(client, changed)
    assert await ids(client, "Patient", {"family": "dupont"}) == []
    assert await ids(client, "Patient", {"identifier": "111"}) == []
    assert await ids(client, "Patient", {"birthdate": "1970"}) == []
    assert await ids(client, "Patient", {"family": "durand"}) == [created["id"]]
    assert await ids(client, "Patient", {"identifier": "222"}) == [created["id"]]
    assert await ids(client, "Patient", {"birthdate": "1980-02-02"}) == [created["id"]]
    bundle = await search(client, "Patient", {"family": "durand"})
    assert bundle["entry"][0]["resource"]["meta"]["versionId"] == "2"


# ----------------------------------------------------------------------------- paging


async def walk(client: httpx.AsyncClient, bundle: dict[str, Any],
               relation: str) -> list[list[str]]:
    pages = [match_ids(bundle)]
    while (url := link(bundle, relation)) is not None:
        bundle = await follow(client, url)
        pages.append(match_ids(bundle))
        assert len(pages) < 20
    return pages


async def test_next_links_walk_every_match_once_and_previous_links_walk_back(
        client: httpx.AsyncClient) -> None:
    created = await patients(client, *(patient() for _ in range(7)))
    first = await search(client, "Patient", {"_count": "2"})
    assert link(first, "previous") is None
    assert link(first, "self") == f"{BASE}/Patient?_count=2"
    assert link(first, "first") == f"{BASE}/Patient?_count=2"
    forward = await walk(client, first, "next")
    assert forward == [created[0:2], created[2:4], created[4:6], created[6:7]]

    last = first
    while (url := link(last, "next")) is not None:
        last = await follow(client, url)
    assert last["total"] == 7
    backward = await walk(client, last, "previous")
    assert backward == forward[::-1]


async def test_walking_back_then_forward_again_gives_the_same_pages(
        client: httpx.AsyncClient) -> None:
    created = await patients(client, *(patient() for _ in range(5)))
    page = await search(client, "Patient", {"_count": "2"})
    for _ in range(2):
        page = await follow(client, link(page, "next") or "")
    assert match_ids(page) == created[4:]
    page = await follow(client, link(page, "previous") or "")
    assert match_ids(page) == created[2:4]
    assert link(page, "next") is not None
    page = await follow(client, link(page, "next") or "")
    assert match_ids(page) == created[4:]
    assert link(page, "next") is None


async def test_paging_a_sorted_search_with_ties_and_missing_values(
        client: httpx.AsyncClient) -> None:
    dates = ["1980-01-01", None, "1970-01-01", "1980-01-01", None, "1990-01-01", "1980-01-01"]
    cities = ["Lyon", None, "Évry", None, "Lyon", "Paris", None]
    for d, city in zip(dates, cities, strict=True):
        resource = patient(birth_date=d) if d else without_birthdate(patient())
        if city:
            resource["address"] = [{"city": city}]
        await create(client, resource)
    for order in ("birthdate", "-birthdate", "family,-birthdate", "address-city",
                  "-address-city,birthdate"):
        everything = await ids(client, "Patient", {"_sort": order, "_count": "100"})
        first = await search(client, "Patient", {"_sort": order, "_count": "2"})
        forward = await walk(client, first, "next")
        assert [i for page in forward for i in page] == everything, order
        last = first
        while (url := link(last, "next")) is not None:
            last = await follow(client, url)
        assert await walk(client, last, "previous") == forward[::-1], order


async def test_paging_is_stable_while_resources_are_created(client: httpx.AsyncClient) -> None:
    originals = await patients(client, *(patient() for _ in range(5)))
    for order in ("_id", "-_lastUpdated"):
        page = await search(client, "Patient", {"_count": "2", "_sort": order})
        seen = match_ids(page)
        while (url := link(page, "next")) is not None:
            await create(client, patient())
            page = await follow(client, url)
            seen.extend(match_ids(page))
        assert len(seen) == len(set(seen)), order
        assert set(originals) <= set(seen), order


async def test_paging_links_keep_the_query_and_replace_the_cursor(
        client: httpx.AsyncClient) -> None:
    await patients(client, *(patient(gender="female") for _ in range(3)))
    first = await search(client, "Patient", {"gender": "female", "_count": "1"})
    second = await follow(client, link(first, "next") or "")
    third = await follow(client, link(second, "next") or "")
    url = link(third, "self") or ""
    assert url.count("_cursor=") == 1
    assert "gender=female" in url
    assert "_count=1" in url
    assert link(third, "first") == f"{BASE}/Patient?gender=female&_count=1"


@pytest.mark.parametrize("bad", [
    "!!!", "bm90IGpzb24", cursor([1]), cursor({"k": [1, 2], "b": False}),
    cursor({"k": [1], "b": "yes"}), cursor({"k": ["x"], "b": False}),
    cursor({"k": [True], "b": False}), cursor({"k": [1.5], "b": False}),
    cursor({"k": [2**63], "b": False}), cursor({"k": [-(2**63) - 1], "b": False}),
    cursor({"b": False}), "é",
])
async def test_a_garbage_cursor_is_a_400(client: httpx.AsyncClient, bad: str) -> None:
    await create(client, patient())
    outcome = await search(client, "Patient", {"_cursor": bad}, status=400)
    assert issue_expressions(outcome) == ["_cursor"]


@pytest.mark.parametrize(("sort", "bad"), [
    ("birthdate", cursor({"k": ["x", 1], "b": False})),
    ("family", cursor({"k": [5, 1], "b": False})),
    ("_id", cursor({"k": ["a\x00", 1], "b": False})),
    ("_lastUpdated", cursor({"k": [1, "x"], "b": True})),
])
async def test_a_cursor_with_values_of_the_wrong_kind_is_a_400(client: httpx.AsyncClient,
                                                              sort: str, bad: str) -> None:
    await create(client, patient())
    outcome = await search(client, "Patient", {"_sort": sort, "_cursor": bad}, status=400)
    assert issue_expressions(outcome) == ["_cursor"]


async def test_a_cursor_from_another_sort_is_a_400(client: httpx.AsyncClient) -> None:
    await patients(client, patient(), patient())
    first = await search(client, "Patient", {"_count": "1", "_sort": "birthdate"})
    next_url = link(first, "next") or ""
    token = next_url.split("_cursor=")[1]
    await search(client, "Patient", {"_cursor": token}, status=400)


# ------------------------------------------------------------------ POST and handling


async def test_post_search_with_a_form_body_equals_get(client: httpx.AsyncClient) -> None:
    mine, _ = await patients(client, patient("Lefèvre", gender="female"), patient("Dupont"))
    await create(client, patient("Lefebvre", gender="male"))
    params = {"family": "lefe", "gender": "female", "_count": "5"}
    get = await search(client, "Patient", params)
    response = await client.post("/fhir/Patient/_search", data=params)
    assert response.status_code == 200, response.text
    post = response.json()
    assert match_ids(post) == match_ids(get) == [mine]
    assert post["total"] == get["total"] == 1
    assert link(post, "self") == link(get, "self")
    via_search = await follow(client, "/fhir/Patient/_search?family=lefe&gender=female")
    assert match_ids(via_search) == [mine]


async def test_post_search_merges_url_and_form_parameters(client: httpx.AsyncClient) -> None:
    female, _ = await patients(client, patient("Lefèvre", gender="female"),
                               patient("Lefèvre", gender="male"))
    response = await client.post("/fhir/Patient/_search?gender=female",
                                 data={"family": "lefevre"})
    assert response.status_code == 200, response.text
    assert match_ids(response.json()) == [female]


async def test_post_search_with_json_is_a_415(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient/_search", json={"family": "x"},
                                 headers=FHIR_JSON)
    assert response.status_code == 415
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_an_unknown_parameter_is_reported_in_an_outcome_entry(
        client: httpx.AsyncClient) -> None:
    created = (await create(client, patient()))["id"]
    bundle = await search(client, "Patient", {"shoe-size": "42", "_count": "5"})
    assert match_ids(bundle) == [created]
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    outcome = outcomes[0]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "warning"
    assert issue_expressions(outcome) == ["shoe-size"]
    assert "shoe-size" in outcome["issue"][0]["diagnostics"]
    assert bundle["total"] == 1


async def test_an_unknown_parameter_is_a_400_under_strict_handling(
        client: httpx.AsyncClient) -> None:
    await create(client, patient())
    outcome = await search(client, "Patient", {"shoe-size": "42"}, status=400,
                           headers={"Prefer": "handling=strict"})
    assert issue_expressions(outcome) == ["shoe-size"]
    outcome = await search(client, "Patient", {"family:nope": "x"}, status=400,
                           headers={"Prefer": "handling=strict"})
    assert issue_expressions(outcome) == ["family:nope"]
    bundle = await search(client, "Patient", {"family": "dup"},
                          headers={"Prefer": "handling=strict"})
    assert len(match_ids(bundle)) == 1


async def test_include_iterate_is_reported_as_unsupported(client: httpx.AsyncClient,
                                                          database: Database) -> None:
    p = await ins_patient(client, database)
    await file_document(client, p)
    params = {"_include": "DocumentReference:subject",
              "_include:iterate": "Patient:general-practitioner"}
    bundle = await search(client, "DocumentReference", params)
    assert included(bundle) == [f"Patient/{p}"]
    outcome = next(e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome")
    assert issue_expressions(outcome) == ["_include:iterate"]
    outcome = await search(client, "DocumentReference", params, status=400,
                           headers={"Prefer": "handling=strict"})
    assert issue_expressions(outcome) == ["_include:iterate"]


async def test_a_nul_character_in_a_value_is_a_400(client: httpx.AsyncClient) -> None:
    for key, value in (("family", "a\x00b"), ("identifier", "a\x00"), ("_id", "a\x00"),
                       ("family:exact", "\x00"), ("_lastUpdated", "2023\x00")):
        outcome = await search(client, "Patient", {key: value}, status=400)
        assert issue_expressions(outcome) == [key.partition(":")[0]]
    await search(client, "DocumentReference", {"patient": "Patient/\x00"}, status=400)


async def test_search_on_an_unsupported_or_unknown_type_is_a_404(
        client: httpx.AsyncClient) -> None:
    for path in ("/fhir/Medication", "/fhir/Foo", "/fhir/Foo/_search"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.json()["issue"][0]["code"] == "not-found"
    response = await client.post("/fhir/Medication/_search", data={"code": "x"})
    assert response.status_code == 404
