"""The whole policy, walked as a table: each kind of caller x each rule x each document label,
through read, Binary retrieval, instance history, search (with totals), include and type
history. Each row says what every document must answer: 200, 404 (hidden: the same answer as
for a document that does not exist), or the name of the rule of a 403."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import give_consent
from tests.service.access.conftest import (
    AUTHORISED,
    BLOCKED,
    COLLEAGUE,
    DOCTOR,
    MISSING_ID,
    NURSE,
    PHARMACIST,
    PHYSIO,
    STRANGER,
    Record,
    answer_without_id,
    as_professional,
    denial_rule,
    ids_of,
)
from tests.tokens import Tokens, bearer

Outcome = int | str  # 200, 404, or the rule a 403 names
ALL_OF_HERS = ("consultation", "lab", "imaging", "psychiatric", "masked", "hidden")


def row(default: Outcome, other: Outcome, **exceptions: Outcome) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = dict.fromkeys(ALL_OF_HERS, default)
    outcomes.update(exceptions)
    outcomes["other"] = other
    return outcomes


EXPECTED: dict[str, dict[str, Outcome]] = {
    # The patient: all her record but what is not yet shown to her; nobody else's.
    "patient": row(200, 404, hidden=404),
    # The attending doctor: everything, masked included; no other record.
    "attending doctor": row(200, "not-authorised"),
    # An authorised doctor who wrote the masked document: everything.
    "authorised doctor, author": row(200, "not-authorised"),
    # An authorised doctor who did not write it: everything but the masked document.
    "authorised doctor": row(200, "not-authorised", masked=404),
    # Care team (nurse): only what the matrix opens to nurses (lab results here).
    "care-team nurse": row(404, "not-authorised", lab=200),
    # An authorised pharmacist: lab results, not consultation, imaging or psychiatry.
    "authorised pharmacist": row(404, "not-authorised", lab=200),
    # An authorised masseur-kinésithérapeute: imaging only.
    "authorised physiotherapist": row(404, "not-authorised", imaging=200),
    "blocked doctor": row("professional-blocked", "not-authorised"),
    "unrelated doctor": row("not-authorised", "not-authorised"),
    # An app the patient granted: what she sees; an app she did not: nothing.
    "granted app": row(200, "app-not-granted", hidden=404),
    "app without grant": row("app-not-granted", "app-not-granted"),
}


def headers_for(kind: str, tokens: Tokens) -> dict[str, str]:
    professionals = {"attending doctor": DOCTOR, "authorised doctor, author": AUTHORISED,
                     "authorised doctor": COLLEAGUE,
                     "care-team nurse": NURSE, "authorised pharmacist": PHARMACIST,
                     "authorised physiotherapist": PHYSIO, "blocked doctor": BLOCKED,
                     "unrelated doctor": STRANGER}
    if kind in professionals:
        return as_professional(tokens, professionals[kind])
    if kind == "patient":
        return bearer(tokens.patient("openid patient/*.rs"))
    client_id = "granted-app" if kind == "granted app" else "stranger-app"
    return bearer(tokens.app("system/*.rs", client_id=client_id))


def outcome_of(response: httpx.Response) -> Outcome:
    return denial_rule(response) if response.status_code == 403 else response.status_code


async def walk(client: httpx.AsyncClient, record: Record, headers: dict[str, str],
               expected: dict[str, Outcome]) -> list[str]:
    """Every check for one caller; the mismatches, as readable lines."""
    problems: list[str] = []

    def check(what: str, got: Any, wanted: Any) -> None:
        if got != wanted:
            problems.append(f"{what}: got {got!r}, expected {wanted!r}")

    for key, wanted in expected.items():
        document_id = record.documents[key]
        check(f"read {key}", outcome_of(await client.get(
            f"/fhir/DocumentReference/{document_id}", headers=headers)), wanted)
        check(f"Binary of {key}", outcome_of(await client.get(
            f"/fhir/Binary/{record.binaries[key]}", headers=headers)), wanted)
        check(f"history of {key}", outcome_of(await client.get(
            f"/fhir/DocumentReference/{document_id}/_history", headers=headers)), wanted)
        check(f"vread of {key}", outcome_of(await client.get(
            f"/fhir/DocumentReference/{document_id}/_history/1", headers=headers)), wanted)

    visible = {record.documents[k] for k, v in expected.items() if v == 200}
    hers = {record.documents[k] for k in ALL_OF_HERS} & visible
    record_denial = next((v for k, v in expected.items()
                          if k != "other" and isinstance(v, str)), None)

    by_patient = await client.get("/fhir/DocumentReference",
                                  params={"patient": record.patient_id}, headers=headers)
    count = await client.get("/fhir/DocumentReference",
                             params={"patient": record.patient_id, "_summary": "count"},
                             headers=headers)
    revinclude = await client.get("/fhir/Patient", params={
        "_id": record.patient_id, "_revinclude": "DocumentReference:subject"}, headers=headers)
    if record_denial is not None:
        check("search of her record", outcome_of(by_patient), record_denial)
        check("count of her record", outcome_of(count), record_denial)
        check("revinclude on her record", outcome_of(revinclude), record_denial)
    else:
        check("search of her record", ids_of(by_patient.json()), hers)
        check("total of her record", by_patient.json().get("total"), len(hers))
        check("count of her record", count.json().get("total"), len(hers))
        check("revinclude on her record", ids_of(revinclude.json(), mode="include"), hers)

    everything = await client.get("/fhir/DocumentReference", params={"_count": "100"},
                                  headers=headers)
    check("search without patient", ids_of(everything.json()), visible)
    check("total without patient", everything.json().get("total"), len(visible))
    paged = await client.get("/fhir/DocumentReference", params={"_count": "2"},
                             headers=headers)
    check("total of a paged search", paged.json().get("total"), len(visible))
    included = await client.get("/fhir/List", params={
        "code": "submissionset", "_include": "List:item", "_count": "100"}, headers=headers)
    if included.status_code == 200:
        check("documents included from SubmissionSets", ids_of(included.json(), mode="include"),
              visible)
    history = await client.get("/fhir/DocumentReference/_history", params={"_count": "100"},
                               headers=headers)
    check("type history", ids_of(history.json()), visible)
    return problems


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_each_caller_sees_what_the_rules_give_them(kind: str, client: httpx.AsyncClient,
                                                         anonymous: httpx.AsyncClient,
                                                         tokens: Tokens, record: Record) -> None:
    await give_consent(client, record.patient_id, "app", "permit", apps=("granted-app",))
    problems = await walk(anonymous, record, headers_for(kind, tokens), EXPECTED[kind])
    assert problems == [], f"{kind}:\n" + "\n".join(problems)


async def test_a_hidden_document_looks_exactly_like_a_missing_one(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    headers = as_professional(tokens, PHARMACIST)

    async def answer(path: str, document_id: str) -> tuple[int, dict[str, str], str]:
        return await answer_without_id(anonymous, path, headers, document_id)

    hidden = record.documents["imaging"]
    missing = MISSING_ID
    for path in ("/fhir/DocumentReference/{}", "/fhir/DocumentReference/{}/_history",
                 "/fhir/DocumentReference/{}/_history/1"):
        assert await answer(path.format(hidden), hidden) == \
            await answer(path.format(missing), missing), path
    hidden_binary, missing_binary = record.binaries["imaging"], missing
    assert await answer(f"/fhir/Binary/{hidden_binary}", hidden_binary) == \
        await answer(f"/fhir/Binary/{missing_binary}", missing_binary)


async def test_a_chain_does_not_follow_what_the_caller_may_not_see(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    """A SubmissionSet the pharmacist sees must not reveal, through a chained filter, that
    the record holds an imaging report."""
    pharmacist = as_professional(tokens, PHARMACIST)
    for loinc, expected in (("18748-4", 0), ("11502-2", 1)):
        found = await anonymous.get("/fhir/List", params={
            "patient": record.patient_id, "code": "submissionset",
            "item:DocumentReference.type": f"http://loinc.org|{loinc}"}, headers=pharmacist)
        assert found.status_code == 200, found.text
        assert found.json()["total"] == expected, loinc
