"""App Subscriptions (R4, Subscriptions Backport IG style) and their notification Bundles."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_profiles.structure import validate_structure
from fhir_profiles.subscriptions import (
    DOCUMENT_TOPIC,
    FILTER_CRITERIA,
    NOTIFICATION_PROFILE,
    PAYLOAD_CONTENT,
    STATUS_PROFILE,
    SubscriptionRequest,
    activated,
    document_subscription,
    notification_bundle,
    read_subscription,
    subscription_issues,
)

BASE = "https://carnet.example.fr/fhir"
IG = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def subscription(**changes: Any) -> dict[str, Any]:
    """A Subscription Carnet accepts; ``changes`` replace top-level or channel elements."""
    resource = document_subscription("Patient/p-1", "https://app.example.org/notify",
                                     headers=["Authorization: Bearer app-token"],
                                     reason="Nouveaux documents de la patiente")
    resource["end"] = "2027-01-01T00:00:00Z"
    for name, value in changes.items():
        target = resource["channel"] if name in ("type", "endpoint", "payload", "_payload",
                                                 "header") else resource
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return resource


def filters(*values: str) -> dict[str, Any]:
    return {"extension": [{"url": FILTER_CRITERIA, "valueString": v} for v in values]}


def content(code: str) -> dict[str, Any]:
    return {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": code}]}


def rules(resource: dict[str, Any]) -> list[str]:
    return [issue.diagnostics.split("]")[0].lstrip("[") for issue in subscription_issues(resource)]


def test_the_extension_urls_are_the_igs() -> None:
    ours = {FILTER_CRITERIA, PAYLOAD_CONTENT, STATUS_PROFILE, NOTIFICATION_PROFILE}
    assert ours == {f"{IG}/{name}" for name in (
        "backport-filter-criteria", "backport-payload-content",
        "backport-subscription-status-r4", "backport-subscription-notification-r4")}


def test_a_good_subscription_is_valid_fhir_and_breaks_no_rule() -> None:
    resource = subscription()
    validate_structure(resource)
    assert subscription_issues(resource) == []


def test_what_a_subscription_asks_for() -> None:
    assert read_subscription(subscription()) == SubscriptionRequest(
        topic=DOCUMENT_TOPIC, patient_id="p-1", endpoint="https://app.example.org/notify",
        headers=("Authorization: Bearer app-token",), content="id-only",
        end="2027-01-01T00:00:00Z")


def test_the_patient_may_be_named_without_its_type_and_the_rest_may_be_absent() -> None:
    resource = subscription(_criteria=filters("DocumentReference?patient=p.2"),
                            _payload=content("empty"), header=None, end=None, status="active")
    assert subscription_issues(resource) == []
    found = read_subscription(resource)
    assert (found.patient_id, found.content, found.headers, found.end) == ("p.2", "empty", (),
                                                                           None)


@pytest.mark.parametrize(("changes", "rule", "path"), [
    ({"status": "off"}, "sub-status", "Subscription.status"),
    ({"status": None}, "sub-status", "Subscription.status"),
    ({"criteria": "Observation?patient=Patient/p-1"}, "sub-topic", "Subscription.criteria"),
    ({"criteria": "http://hl7.org/SubscriptionTopic/admission"}, "sub-topic",
     "Subscription.criteria"),
    ({"_criteria": None}, "sub-filter", "Subscription.criteria.extension"),
    ({"_criteria": filters("DocumentReference?patient=Patient/p-1",
                           "DocumentReference?patient=Patient/p-2")},
     "sub-filter", "Subscription.criteria.extension"),
    ({"_criteria": filters("DocumentReference?category=x")}, "sub-filter-patient",
     "Subscription.criteria.extension.valueString"),
    ({"_criteria": filters("Observation?patient=Patient/p-1")}, "sub-filter-patient",
     "Subscription.criteria.extension.valueString"),
    ({"_criteria": filters("DocumentReference?patient=Practitioner/x")}, "sub-filter-patient",
     "Subscription.criteria.extension.valueString"),
    ({"_criteria": filters("DocumentReference?patient=Patient/p-1&type=x")},
     "sub-filter-patient", "Subscription.criteria.extension.valueString"),
    ({"type": "websocket"}, "sub-channel-type", "Subscription.channel.type"),
    ({"type": "email"}, "sub-channel-type", "Subscription.channel.type"),
    ({"endpoint": "/notify"}, "sub-endpoint", "Subscription.channel.endpoint"),
    ({"endpoint": "ftp://app.example.org/x"}, "sub-endpoint", "Subscription.channel.endpoint"),
    ({"endpoint": "https:///nohost"}, "sub-endpoint", "Subscription.channel.endpoint"),
    ({"endpoint": "https://app.example.org/a b"}, "sub-endpoint",
     "Subscription.channel.endpoint"),
    ({"endpoint": "https://app.example.org:99999/"}, "sub-endpoint",
     "Subscription.channel.endpoint"),
    ({"endpoint": None}, "sub-endpoint", "Subscription.channel.endpoint"),
    ({"payload": "application/fhir+xml"}, "sub-payload", "Subscription.channel.payload"),
    ({"payload": None}, "sub-payload", "Subscription.channel.payload"),
    ({"_payload": None}, "sub-content", "Subscription.channel.payload.extension"),
    ({"_payload": content("everything")}, "sub-content",
     "Subscription.channel.payload.extension"),
    ({"_payload": content("full-resource")}, "sub-content-full-resource",
     "Subscription.channel.payload.extension.valueCode"),
    ({"header": ["Authorization Bearer x"]}, "sub-header", "Subscription.channel.header[0]"),
    ({"header": ["ok: 1", "X-A: 1\r\nX-B: 2"]}, "sub-header", "Subscription.channel.header[1]"),
    ({"header": [": value"]}, "sub-header", "Subscription.channel.header[0]"),
    ({"header": ["X-Empty:  "]}, "sub-header", "Subscription.channel.header[0]"),
    ({"header": [42]}, "sub-header", "Subscription.channel.header[0]"),
    ({"header": ["Host: evil.example"]}, "sub-header-reserved",
     "Subscription.channel.header[0]"),
    ({"header": ["Content-Length: 0"]}, "sub-header-reserved",
     "Subscription.channel.header[0]"),
])
def test_each_broken_rule_is_named_with_its_path(changes: dict[str, Any], rule: str,
                                                 path: str) -> None:
    [issue] = subscription_issues(subscription(**changes))
    assert issue.diagnostics.startswith(f"[{rule}] ")
    assert issue.expression == [path]
    assert issue.severity == "error"


def test_full_resource_is_refused_because_notifications_carry_no_health_data() -> None:
    [issue] = subscription_issues(subscription(_payload=content("full-resource")))
    assert "no health data" in issue.diagnostics
    assert "id-only" in issue.diagnostics and "own token" in issue.diagnostics
    assert issue.code == "not-supported"


def test_every_broken_rule_is_reported_at_once() -> None:
    resource = {"resourceType": "Subscription", "status": "error", "reason": "x",
                "criteria": "Patient?", "channel": {"type": "message", "header": ["bad"]}}
    assert rules(resource) == ["sub-status", "sub-topic", "sub-filter", "sub-channel-type",
                               "sub-endpoint", "sub-payload", "sub-content", "sub-header"]


def test_a_filter_with_another_url_does_not_count() -> None:
    resource = subscription()
    resource["_criteria"]["extension"].append({"url": "http://example.org/other",
                                               "valueString": "x"})
    assert subscription_issues(resource) == []


def test_activated_copies_with_status_active() -> None:
    resource = subscription()
    before = copy.deepcopy(resource)
    stored = activated(resource)
    assert stored["status"] == "active"
    assert resource == before
    stored["channel"]["header"].append("X: y")
    assert resource == before


# ---------------------------------------------------------------- notification Bundles


def bundle(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "subscription_id": "sub-1", "topic": DOCUMENT_TOPIC, "events_since_start": 7,
        "event_number": 7, "timestamp": "2026-11-26T06:00:00.123Z",
        "focus": "DocumentReference/doc-1", "content": "id-only", "base": BASE + "/"}
    arguments.update(changes)
    return notification_bundle(**arguments)


def status_parameters(notification: dict[str, Any]) -> dict[str, Any]:
    parameters = {p["name"]: p for p in notification["entry"][0]["resource"]["parameter"]}
    assert len(parameters) == len(notification["entry"][0]["resource"]["parameter"])
    return parameters


def test_an_id_only_notification_has_the_r4_backport_shape() -> None:
    notification = bundle()
    validate_structure(notification)
    assert notification["resourceType"] == "Bundle"
    assert notification["type"] == "history"
    assert notification["meta"]["profile"] == [f"{IG}/backport-subscription-notification-r4"]
    assert notification["timestamp"] == "2026-11-26T06:00:00.123Z"
    status, focus = notification["entry"]
    # first entry: the SubscriptionStatus as Parameters, with the R4 status profile
    assert status["resource"]["resourceType"] == "Parameters"
    assert status["resource"]["meta"]["profile"] == [f"{IG}/backport-subscription-status-r4"]
    assert status["fullUrl"] == f"urn:uuid:{status['resource']['id']}"
    assert status["request"] == {"method": "GET", "url": f"{BASE}/Subscription/sub-1/$status"}
    assert status["response"] == {"status": "200"}
    parameters = status_parameters(notification)
    assert parameters["subscription"]["valueReference"] == {
        "reference": f"{BASE}/Subscription/sub-1"}
    assert parameters["topic"]["valueCanonical"] == DOCUMENT_TOPIC
    assert parameters["status"]["valueCode"] == "active"
    assert parameters["type"]["valueCode"] == "event-notification"
    assert parameters["events-since-subscription-start"]["valueString"] == "7"
    assert parameters["notification-event"]["part"] == [
        {"name": "event-number", "valueString": "7"},
        {"name": "timestamp", "valueInstant": "2026-11-26T06:00:00.123Z"},
        {"name": "focus", "valueReference": {"reference": f"{BASE}/DocumentReference/doc-1"}}]
    # id-only: the focus's URL in fullUrl and request (history Bundles need a response too)
    assert focus == {"fullUrl": f"{BASE}/DocumentReference/doc-1",
                     "request": {"method": "GET", "url": "DocumentReference/doc-1"},
                     "response": {"status": "200"}}
    assert "resource" not in focus


def test_an_absolute_focus_is_kept() -> None:
    notification = bundle(focus=f"{BASE}/DocumentReference/doc-2")
    assert notification["entry"][1]["fullUrl"] == f"{BASE}/DocumentReference/doc-2"
    assert notification["entry"][1]["request"]["url"] == "DocumentReference/doc-2"


def test_an_empty_notification_names_no_resource() -> None:
    notification = bundle(content="empty")
    validate_structure(notification)
    assert len(notification["entry"]) == 1  # no entry but the status
    parameters = status_parameters(notification)
    assert "topic" not in parameters  # SHOULD NOT be present with empty payloads
    assert [p["name"] for p in parameters["notification-event"]["part"]] == [
        "event-number", "timestamp"]
    assert "DocumentReference" not in str(notification)


@pytest.mark.parametrize("kind", ["handshake", "heartbeat"])
def test_handshakes_and_heartbeats_carry_no_event(kind: str) -> None:
    notification = bundle(kind=kind, focus=None, events_since_start=3)
    validate_structure(notification)
    assert len(notification["entry"]) == 1
    parameters = status_parameters(notification)
    assert parameters["type"]["valueCode"] == kind
    assert parameters["events-since-subscription-start"]["valueString"] == "3"
    assert "notification-event" not in parameters


def test_each_notification_has_its_own_ids() -> None:
    first, second = bundle(), bundle()
    assert first["id"] != second["id"]
    assert first["entry"][0]["fullUrl"] != second["entry"][0]["fullUrl"]


@pytest.mark.parametrize(("changes", "why"), [
    ({"content": "full-resource"}, "not 'full-resource'"),
    ({"kind": "query-status"}, "unknown notification kind"),
    ({"focus": None}, "names its focus"),
])
def test_what_carnet_does_not_send(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        bundle(**changes)
