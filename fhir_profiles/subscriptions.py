"""App Subscriptions: R4 ``Subscription`` in the topic-based style of the Subscriptions R5
Backport IG (hl7.fhir.uv.subscriptions-backport, STU 1.1, R4 profiles), and the notification
Bundles sent to them.

Facts from the IG (HL7/fhir-subscription-backport-ig, ``input/fsh/BackportSubscription.fsh``,
``BackportNotificationR4.fsh``, ``input/pagecontent/payloads.md``):

- ``Subscription.criteria`` holds the topic's canonical URL; filters are
  ``backport-filter-criteria`` extensions (valueString) on the criteria primitive (``_criteria``);
- ``channel.payload`` carries the ``backport-payload-content`` extension (valueCode
  ``empty`` | ``id-only`` | ``full-resource``) on its primitive (``_payload``);
- a notification is a ``history`` Bundle whose first entry is a ``Parameters`` resource with
  the ``backport-subscription-status-r4`` profile; ``empty`` notifications carry no reference
  to a resource and no other entry, ``id-only`` ones name the focus in
  ``notification-event.focus`` and may add an entry with the resource's URL in ``fullUrl`` and
  ``request``.

Carnet offers ``empty`` and ``id-only`` only: a notification carries no health data, the app
fetches the resource with its own token, where the access policy applies.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fhir_profiles.outcome import Issue

DOCUMENT_TOPIC = "https://carnet.esante.example/fhir/SubscriptionTopic/patient-document"
TOPICS = (DOCUMENT_TOPIC,)

_IG = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
FILTER_CRITERIA = f"{_IG}/backport-filter-criteria"
PAYLOAD_CONTENT = f"{_IG}/backport-payload-content"
NOTIFICATION_PROFILE = f"{_IG}/backport-subscription-notification-r4"
STATUS_PROFILE = f"{_IG}/backport-subscription-status-r4"

REST_HOOK = "rest-hook"
FHIR_JSON = "application/fhir+json"
EMPTY, ID_ONLY, FULL_RESOURCE = "empty", "id-only", "full-resource"
CONTENTS = (EMPTY, ID_ONLY)
STATUSES = ("requested", "active")
KINDS = ("event-notification", "handshake", "heartbeat")

_ID = r"[A-Za-z0-9\-.]{1,64}"
_FILTER = re.compile(rf"DocumentReference\?patient=(?:Patient/)?(?P<id>{_ID})", re.ASCII)
# RFC 9110 field name (a token), a colon, a value without control characters.
_HEADER = re.compile(r"(?P<name>[!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(?P<value>[^\x00-\x1f\x7f]*)",
                     re.ASCII)
# The notifier sets these itself; an app's value would break or smuggle the request.
_RESERVED_HEADERS = frozenset({"host", "content-type", "content-length", "transfer-encoding",
                               "connection", "expect", "upgrade", "te", "trailer"})


@dataclass(frozen=True)
class SubscriptionRequest:
    """What a valid Subscription asks for: where and how to notify about which patient."""

    topic: str
    patient_id: str
    endpoint: str
    headers: tuple[str, ...]
    content: str  # "empty" or "id-only"
    end: str | None


def _issue(rule: str, text: str, path: str, code: str = "invariant") -> Issue:
    return Issue(f"[{rule}] {text}", code=code, expression=[path])


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _extensions(element: Any, url: str) -> list[dict[str, Any]]:
    """The extensions with ``url`` on a primitive's ``_element`` object."""
    found = _dict(element).get("extension")
    return [e for e in found if isinstance(e, dict) and e.get("url") == url] \
        if isinstance(found, list) else []


def _filters(resource: dict[str, Any]) -> list[Any]:
    return [e.get("valueString") for e in _extensions(resource.get("_criteria"), FILTER_CRITERIA)]


def _content(channel: dict[str, Any]) -> list[Any]:
    return [e.get("valueCode") for e in _extensions(channel.get("_payload"), PAYLOAD_CONTENT)]


def _is_absolute_http_url(value: Any) -> bool:
    if not isinstance(value, str) or value != value.strip() or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) \
            and (parts.port is None or parts.port > 0)
    except ValueError:  # a bad port or IPv6 literal
        return False


def _criteria_issues(resource: dict[str, Any]) -> list[Issue]:
    issues = []
    if resource.get("criteria") not in TOPICS:
        issues.append(_issue("sub-topic", f"Subscription.criteria must be a topic Carnet offers: "
                             f"{', '.join(TOPICS)}", "Subscription.criteria", "value"))
    filters = _filters(resource)
    path = "Subscription.criteria.extension"
    if len(filters) != 1:
        issues.append(_issue("sub-filter", "a subscription names its patient with exactly one "
                             f"{FILTER_CRITERIA} extension on Subscription.criteria, found "
                             f"{len(filters)}", path, "required" if not filters else "invariant"))
    elif not isinstance(filters[0], str) or not _FILTER.fullmatch(filters[0]):
        issues.append(_issue("sub-filter-patient", "the filter criteria must be "
                             "DocumentReference?patient=Patient/<id> (or patient=<id>), not "
                             f"{filters[0]!r}", f"{path}.valueString"))
    return issues


def _channel_issues(channel: dict[str, Any]) -> list[Issue]:
    issues = []
    if channel.get("type") != REST_HOOK:
        issues.append(_issue("sub-channel-type", f"Subscription.channel.type must be {REST_HOOK}, "
                             f"not {channel.get('type')!r}", "Subscription.channel.type",
                             "not-supported"))
    if not _is_absolute_http_url(channel.get("endpoint")):
        issues.append(_issue("sub-endpoint", "Subscription.channel.endpoint must be an absolute "
                             "http:// or https:// URL", "Subscription.channel.endpoint", "value"))
    if channel.get("payload") != FHIR_JSON:
        issues.append(_issue("sub-payload", f"Subscription.channel.payload must be {FHIR_JSON}, "
                             f"not {channel.get('payload')!r}", "Subscription.channel.payload",
                             "not-supported"))
    contents, path = _content(channel), "Subscription.channel.payload.extension"
    if len(contents) == 1 and contents[0] == FULL_RESOURCE:
        issues.append(_issue("sub-content-full-resource", "full-resource notifications are "
                             "refused: a notification carries no health data; ask for id-only "
                             "(or empty) and fetch the resource with the app's own token",
                             f"{path}.valueCode", "not-supported"))
    elif len(contents) != 1 or contents[0] not in CONTENTS:
        issues.append(_issue("sub-content", f"Subscription.channel.payload needs one "
                             f"{PAYLOAD_CONTENT} extension with valueCode empty or id-only",
                             path, "required" if not contents else "value"))
    headers = channel.get("header")
    for index, header in enumerate(headers if isinstance(headers, list) else []):
        where = f"Subscription.channel.header[{index}]"
        found = _HEADER.fullmatch(header) if isinstance(header, str) else None
        if not found or not found["value"].strip():
            issues.append(_issue("sub-header", "a channel header looks like \"Name: value\" "
                                 "(one line)", where, "value"))
        elif found["name"].lower() in _RESERVED_HEADERS:
            issues.append(_issue("sub-header-reserved", f"the {found['name']} header is set by "
                                 "Carnet, not by the subscription", where, "value"))
    return issues


def subscription_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every reason Carnet cannot honour this Subscription, each with its rule id."""
    issues = []
    if resource.get("status") not in STATUSES:
        issues.append(_issue("sub-status", "a subscription is written with status requested or "
                             f"active, not {resource.get('status')!r}", "Subscription.status",
                             "value"))
    issues += _criteria_issues(resource)
    return issues + _channel_issues(_dict(resource.get("channel")))


def read_subscription(resource: dict[str, Any]) -> SubscriptionRequest:
    """What a Subscription without ``subscription_issues`` asks for."""
    channel = _dict(resource.get("channel"))
    found = _FILTER.fullmatch(_filters(resource)[0])
    if found is None:  # pragma: no cover - subscription_issues says so first
        raise ValueError("the Subscription's filter criteria name no patient")
    end = resource.get("end")
    return SubscriptionRequest(topic=resource["criteria"], patient_id=found["id"],
                               endpoint=channel["endpoint"],
                               headers=tuple(channel.get("header") or ()),
                               content=_content(channel)[0],
                               end=end if isinstance(end, str) else None)


OWNER_SYSTEM = "https://carnet.esante.example/fhir/CodeSystem/subscription-owner"


def owned_by(resource: dict[str, Any], owner: str) -> dict[str, Any]:
    """A copy tagged with the app that owns it (``app:<client id>``): only that app (and
    operators) may read, change or end it, since its channel headers are the app's secrets."""
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict)
                                                      and t.get("system") == OWNER_SYSTEM)]
    meta["tag"] = [*tags, {"system": OWNER_SYSTEM, "code": owner}]
    return {**resource, "meta": meta}


def owner_of(resource: dict[str, Any]) -> str | None:
    for tag in (resource.get("meta") or {}).get("tag") or []:
        if isinstance(tag, dict) and tag.get("system") == OWNER_SYSTEM:
            code = tag.get("code")
            return code if isinstance(code, str) else None
    return None


def activated(resource: dict[str, Any]) -> dict[str, Any]:
    """Carnet needs no handshake before notifying: a written subscription is active at once."""
    copied = copy.deepcopy(resource)
    copied["status"] = "active"
    return copied


def document_subscription(patient: str, endpoint: str, *, content: str = ID_ONLY,
                          headers: Sequence[str] = (), status: str = "requested",
                          reason: str = "Nouveaux documents du patient") -> dict[str, Any]:
    """What an app POSTs to be told of a patient's new documents (``patient``: an id or
    ``Patient/<id>``): the one shape Carnet accepts, for clients, harnesses and tests."""
    return {
        "resourceType": "Subscription", "status": status, "reason": reason,
        "criteria": DOCUMENT_TOPIC,
        "_criteria": {"extension": [{"url": FILTER_CRITERIA,
                                     "valueString": f"DocumentReference?patient={patient}"}]},
        "channel": {"type": REST_HOOK, "endpoint": endpoint, "payload": FHIR_JSON,
                    "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]},
                    "header": list(headers)}}


def _reference(base: str, reference: str) -> str:
    return reference if reference.startswith(("http://", "https://")) else f"{base}/{reference}"


def notification_bundle(*, subscription_id: str, topic: str, events_since_start: int,
                        event_number: int, timestamp: str, focus: str | None, content: str,
                        base: str, kind: str = "event-notification") -> dict[str, Any]:
    """The R4 backport notification Bundle (``history``) for one event, handshake or heartbeat.

    ``focus`` is the resource's reference (``DocumentReference/<id>``); ``base`` the FHIR base
    URL. The IG asks not to name the topic in ``empty`` notifications; ``id-only`` ones name it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}; use one of {', '.join(KINDS)}")
    if content not in CONTENTS:
        raise ValueError(f"Carnet sends {' or '.join(CONTENTS)} notifications, not {content!r}")
    base = base.rstrip("/")
    subscription = f"{base}/Subscription/{subscription_id}"
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": subscription}}]
    if content == ID_ONLY:
        parameters.append({"name": "topic", "valueCanonical": topic})
    parameters += [{"name": "status", "valueCode": "active"},
                   {"name": "type", "valueCode": kind},
                   {"name": "events-since-subscription-start",
                    "valueString": str(events_since_start)}]
    focus_url = None
    if kind == "event-notification":
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(event_number)},
                                       {"name": "timestamp", "valueInstant": timestamp}]
        if content == ID_ONLY:
            if not focus:
                raise ValueError("an id-only event notification names its focus")
            focus_url = _reference(base, focus)
            parts.append({"name": "focus", "valueReference": {"reference": focus_url}})
        parameters.append({"name": "notification-event", "part": parts})
    status_id = str(uuid.uuid4())
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{status_id}",
        "resource": {"resourceType": "Parameters", "id": status_id,
                     "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters},
        "request": {"method": "GET", "url": f"{subscription}/$status"},
        "response": {"status": "200"}}]
    if focus_url is not None:
        # history Bundles need request and response; the app GETs the resource itself.
        relative = focus_url.removeprefix(f"{base}/")
        entries.append({"fullUrl": focus_url, "request": {"method": "GET", "url": relative},
                        "response": {"status": "200"}})
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()),
            "meta": {"profile": [NOTIFICATION_PROFILE]}, "type": "history",
            "timestamp": timestamp, "entry": entries}
