"""The shape of a Communication in Carnet: category, one recipient, payloads, no-reply."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_profiles.messaging import (
    CATEGORY_SYSTEM,
    NO_REPLY_URL,
    category_of,
    communication_issues,
    is_no_reply,
    mark_no_reply,
    professional_codes,
    referenced_documents,
)

IDNAT = "urn:oid:1.2.250.1.71.4.2.1"


def message(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Communication", "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "message"}]}],
        "recipient": [{"reference": "Patient/p1"}],
        "payload": [{"contentString": "Bonjour"},
                    {"contentReference": {"reference": "DocumentReference/d1"}}]}
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


def rules(resource: dict[str, Any]) -> list[str]:
    return [i.diagnostics.split("]")[0].lstrip("[") for i in communication_issues(resource)]


def test_a_message_and_a_notification_have_no_issue() -> None:
    assert communication_issues(message()) == []
    notice = message(category=[{"coding": [{"system": CATEGORY_SYSTEM,
                                            "code": "notification"}]}])
    assert communication_issues(notice) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"category": None}, ["message-category"]),
    ({"category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "alert"}]}]},
     ["message-category"]),
    ({"category": [{"coding": [{"system": "urn:other", "code": "message"}]}]},
     ["message-category"]),
    ({"category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "message"}]}] * 2},
     ["message-category"]),
    ({"recipient": None}, ["message-recipient"]),
    ({"recipient": [{"reference": "Patient/p1"}, {"reference": "Patient/p2"}]},
     ["message-recipient"]),
    ({"payload": None}, ["message-payload"]),
    ({"payload": [{"contentAttachment": {"contentType": "text/plain"}}]}, ["message-payload"]),
    ({"payload": [{"contentReference": {"reference": "Binary/b1"}}]}, ["message-attachment"]),
    ({"payload": [{"contentReference": {"reference": "DocumentReference/a/b"}}]},
     ["message-attachment"]),
    ({"payload": [{"contentReference": {"display": "le compte rendu"}}]},
     ["message-attachment"]),
    ({"category": None, "recipient": None, "payload": None},
     ["message-category", "message-recipient", "message-payload"]),
])
def test_each_broken_rule_is_named(changes: dict[str, Any], expected: list[str]) -> None:
    assert rules(message(**changes)) == expected


def test_issues_point_at_the_element() -> None:
    issue = communication_issues(message(payload=[{"contentString": "a"}, {
        "contentReference": {"reference": "Binary/b1"}}]))[0]
    assert issue.expression == ["Communication.payload[1].contentReference"]


def test_the_category_is_read_from_carnets_code_system() -> None:
    assert category_of(message()) == "message"
    assert category_of(message(category=[{"text": "message"}])) is None
    assert category_of({"resourceType": "Communication"}) is None


def test_no_reply_is_an_extension_set_to_true() -> None:
    assert not is_no_reply(message())
    marked = mark_no_reply(message(extension=[{"url": "urn:x", "valueString": "kept"},
                                              {"url": NO_REPLY_URL, "valueBoolean": False}]))
    assert is_no_reply(marked)
    assert marked["extension"] == [{"url": "urn:x", "valueString": "kept"},
                                   {"url": NO_REPLY_URL, "valueBoolean": True}]
    assert mark_no_reply(marked) == marked  # once
    assert not is_no_reply(message(extension=[{"url": NO_REPLY_URL, "valueBoolean": False}]))


@pytest.mark.parametrize(("reference", "expected"), [
    ({"identifier": {"system": IDNAT, "value": "810000000001"}}, {"810000000001"}),
    ({"identifier": {"system": "https://rpps.esante.gouv.fr", "value": "10000000001"}},
     {"10000000001"}),
    ({"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "253072A07300443"}},
     set()),
    ({"reference": "Practitioner/x"}, set()),
    (None, set()),
])
def test_professionals_are_named_by_national_identifier(reference: Any,
                                                        expected: set[str]) -> None:
    assert professional_codes(reference) == expected


def test_documents_are_found_in_the_payload() -> None:
    assert referenced_documents(message()) == [(1, "d1")]
    assert referenced_documents(message(payload=[{"contentReference": {
        "reference": "http://elsewhere/DocumentReference/d1"}}])) == [(0, None)]
