"""Who sees a conversation, walked as a table: a message is its two parties' (and the
patient's apps'); any other professional, even the attending doctor, gets exactly what a
missing id gets, and never finds it in a search, a total, an include or a history.
Notifications are the patient's (and her apps')."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhir_profiles.messaging import CATEGORY_SYSTEM
from tests.factories import give_consent
from tests.service.access.conftest import (
    AUTHORISED,
    BLOCKED,
    COLLEAGUE,
    DOCTOR,
    MISSING_ID,
    STRANGER,
    answer_without_id,
    as_professional,
    denial_rule,
    ids_of,
)
from tests.service.messaging.conftest import Conversation
from tests.tokens import OPERATOR_APP, Tokens, bearer

Outcome = int | str  # 200, 404, or the rule a 403 names
KEYS = ("message", "answer", "stranger", "no_reply", "notification")


def row(default: Outcome, **exceptions: Outcome) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = dict.fromkeys(KEYS, default)
    outcomes.update(exceptions)
    return outcomes


# Per caller: each message's answer, and what a search aimed at her record answers when the
# record itself is refused (None: the search runs, filtered).
EXPECTED: dict[str, tuple[dict[str, Outcome], str | None]] = {
    "patient": (row(200), None),
    # Dr Bernard wrote the message and the no-reply one, and was answered.
    "sender": (row(404, message=200, answer=200, no_reply=200), None),
    # Dr Lefèvre may not open her record, but wrote to her: he sees his message only.
    "unauthorised sender": (row(404, stranger=200), None),
    "attending doctor": (row(404), None),
    "authorised doctor": (row(404), None),
    "blocked doctor": (row(404), "professional-blocked"),
    "granted app": (row(200), None),
    "app without grant": (row("app-not-granted"), "app-not-granted"),
    "operator": (row(200), None),
}
PROFESSIONALS = {"sender": AUTHORISED, "unauthorised sender": STRANGER,
                 "attending doctor": DOCTOR, "authorised doctor": COLLEAGUE,
                 "blocked doctor": BLOCKED}


def headers_for(kind: str, tokens: Tokens) -> dict[str, str]:
    if kind in PROFESSIONALS:
        return as_professional(tokens, PROFESSIONALS[kind])
    if kind == "patient":
        return bearer(tokens.patient("openid patient/*.rs"))
    client_id = {"granted app": "granted-app", "operator": OPERATOR_APP}.get(kind, "other-app")
    return bearer(tokens.app("system/*.rs", client_id=client_id))


def outcome_of(response: httpx.Response) -> Outcome:
    return denial_rule(response) if response.status_code == 403 else response.status_code


async def walk(http: httpx.AsyncClient, conversation: Conversation, headers: dict[str, str],
               expected: dict[str, Outcome], record_denial: str | None) -> list[str]:
    problems: list[str] = []

    def check(what: str, got: Any, wanted: Any) -> None:
        if got != wanted:
            problems.append(f"{what}: got {got!r}, expected {wanted!r}")

    for key, wanted in expected.items():
        message_id = getattr(conversation, key)
        check(f"read {key}", outcome_of(await http.get(
            f"/fhir/Communication/{message_id}", headers=headers)), wanted)
        check(f"vread {key}", outcome_of(await http.get(
            f"/fhir/Communication/{message_id}/_history/1", headers=headers)), wanted)
    visible = {getattr(conversation, k) for k, v in expected.items() if v == 200}
    patient_id = conversation.record.patient_id

    aimed = await http.get("/fhir/Communication", params={"patient": patient_id},
                           headers=headers)
    count = await http.get("/fhir/Communication", params={"subject": f"Patient/{patient_id}",
                                                          "_summary": "count"},
                           headers=headers)
    if record_denial is not None:
        check("search of her record", outcome_of(aimed), record_denial)
        check("count of her record", outcome_of(count), record_denial)
    else:
        check("search of her record", ids_of(aimed.json(), "Communication"), visible)
        check("total of her record", aimed.json().get("total"), len(visible))
        check("count of her record", count.json().get("total"), len(visible))

    everything = await http.get("/fhir/Communication", params={"_count": "100"},
                                headers=headers)
    check("search without patient", ids_of(everything.json(), "Communication"), visible)
    check("total without patient", everything.json().get("total"), len(visible))
    paged = await http.get("/fhir/Communication", params={"_count": "1"}, headers=headers)
    check("total of a paged search", paged.json().get("total"), len(visible))
    included = await http.get("/fhir/Communication", params={
        "_count": "100", "_include": "Communication:in-response-to"}, headers=headers)
    check("included answered messages", ids_of(included.json(), "Communication", "include")
          - visible, set())
    revinclude = await http.get("/fhir/Patient", params={
        "_id": patient_id, "_revinclude": "Communication:subject"}, headers=headers)
    if revinclude.status_code == 200:
        check("messages included with her Patient",
              ids_of(revinclude.json(), "Communication", "include"), visible)
    history = await http.get("/fhir/Communication/_history", params={"_count": "100"},
                             headers=headers)
    check("type history", ids_of(history.json(), "Communication"), visible)
    return problems


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_each_caller_sees_the_conversations_the_rules_give_them(
        kind: str, client: httpx.AsyncClient, tokens: Tokens,
        conversation: Conversation) -> None:
    await give_consent(client, conversation.record.patient_id, "app", "permit",
                       apps=("granted-app",))
    expected, record_denial = EXPECTED[kind]
    problems = await walk(client, conversation, headers_for(kind, tokens), expected,
                          record_denial)
    assert problems == [], f"{kind}:\n" + "\n".join(problems)


async def test_a_message_of_others_looks_exactly_like_a_missing_one(
        anonymous: httpx.AsyncClient, tokens: Tokens, conversation: Conversation) -> None:
    headers = as_professional(tokens, DOCTOR)

    async def answer(path: str, message_id: str) -> tuple[int, dict[str, str], str]:
        return await answer_without_id(anonymous, path, headers, message_id)

    missing = MISSING_ID
    for path in ("/fhir/Communication/{}", "/fhir/Communication/{}/_history",
                 "/fhir/Communication/{}/_history/1"):
        assert await answer(path.format(conversation.message), conversation.message) == \
            await answer(path.format(missing), missing), path


async def test_a_party_reads_the_history_of_their_message(
        anonymous: httpx.AsyncClient, tokens: Tokens, conversation: Conversation) -> None:
    response = await anonymous.get(f"/fhir/Communication/{conversation.message}/_history",
                                   headers=as_professional(tokens, AUTHORISED))
    assert response.status_code == 200, response.text


async def test_the_patients_inbox(anonymous: httpx.AsyncClient, as_patient: dict[str, str],
                                  conversation: Conversation) -> None:
    """What was sent to her, newest first; by category; by status."""
    patient = f"Patient/{conversation.record.patient_id}"

    async def found(**params: str) -> list[str]:
        response = await anonymous.get("/fhir/Communication", params=params,
                                       headers=as_patient)
        assert response.status_code == 200, response.text
        return [e["resource"]["id"] for e in response.json().get("entry", [])]

    assert await found(recipient=patient, _sort="-sent") == [
        conversation.no_reply, conversation.stranger, conversation.notification,
        conversation.message]
    assert await found(recipient=patient, category=f"{CATEGORY_SYSTEM}|notification") == [
        conversation.notification]
    assert set(await found(subject=patient, category="message")) == conversation.ids(
        "message", "answer", "stranger", "no_reply")
    assert await found(recipient=patient, status="in-progress") == [conversation.message]
    assert await found(**{"sender.identifier": AUTHORISED.idnat, "_sort": "sent"}) == [
        conversation.message, conversation.no_reply]
    assert await found(**{"in-response-to": f"Communication/{conversation.message}"}) == [
        conversation.answer]
