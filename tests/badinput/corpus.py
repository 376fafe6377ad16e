"""The bad-input corpus (issue 11): requests no client should send, as data.

Each :class:`Case` is one request and what Carnet must answer. Most are *refused*: a 4xx
``OperationOutcome`` (one of ``statuses``). Some inputs look like attacks but are legal
FHIR search values (``name=' OR 1=1--``, ``%``, ``_``): refusing them would refuse
O'Brien, so those are *harmless* cases: a 200 searchset whose ``total`` is exactly the
number the value matches as plain data (0, or 1 where it names the seeded patient), which
proves that it was not read as SQL or FHIRPath. Either way the store must be unchanged
(tests/badinput/conftest.py checks it).

Paths and bodies may hold placeholders, replaced with the seeded record's values when the
case is sent: ``@patient@`` (the Patient id), ``@document@`` (its DocumentReference),
``@binary@`` (the document's Binary) and ``@blob@`` (that Binary's blob key, a SHA-256).
Paths are sent as written: percent escapes reach the server undecoded.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from fhir_profiles.ins import InsTraits, patient_with_ins
from fhir_profiles.messaging import CATEGORY_SYSTEM, MESSAGE
from fhir_profiles.subscriptions import document_subscription
from service.demo import INS_NIR_TEST
from service.documents.samples import document_bundle
from tests.factories import consent

Principal = Literal["app", "professional", "patient"]
FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"
JSON_PATCH = "application/json-patch+json"
BAD = frozenset({400})
NOT_FOUND = frozenset({404})
BAD_OR_NOT_FOUND = frozenset({400, 404})
INVALID = frozenset({400, 422})
TOO_LARGE = frozenset({413})
# The seeded patient (the demo's first identity, tests.tokens.PATIENT).
NIR = "253072A07300443"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    statuses: frozenset[int] = BAD
    """The acceptable 4xx statuses; unused for a harmless search."""
    principal: Principal = "app"
    total: int | None = None
    """Set for a harmless search: 200, a searchset with exactly this total."""


def j(value: Any) -> bytes:
    return orjson.dumps(value)


def fhir(name: str, method: str, path: str, body: bytes | dict[str, Any] | list[Any],
         statuses: frozenset[int] = BAD, principal: Principal = "app",
         media: str = FHIR_JSON, **headers: str) -> Case:
    """A case with a body (FHIR JSON unless ``media`` says otherwise)."""
    raw = body if isinstance(body, bytes) else j(body)
    return Case(name, method, path, raw, {"Content-Type": media, **headers}, statuses,
                principal)


def get(name: str, path: str, statuses: frozenset[int] = BAD, principal: Principal = "app",
        **headers: str) -> Case:
    return Case(name, "GET", path, headers=dict(headers), statuses=statuses,
                principal=principal)


def harmless(name: str, path: str, total: int, principal: Principal = "app") -> Case:
    return Case(name, "GET", path, principal=principal, total=total)


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "DUPONT", "given": ["Jean"]}],
            "gender": "male", "birthDate": "1970-01-01", **extra}


def ins_patient(family: str = "CORSE", given: str = "Marie") -> dict[str, Any]:
    """The seeded patient's INS identity with other traits: INSi must refuse it."""
    return patient_with_ins(INS_NIR_TEST, NIR, InsTraits(family, given, (given,), "female",
                                                         "1953-07-21", "2A073"))


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def get_entry(url: str, full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": "GET", "url": url}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def iti65(edit: Any = None, documents: int = 1) -> dict[str, Any]:
    """An ITI-65 Provide Document Bundle for the seeded patient, changed by ``edit``. Its
    bytes are the seeded document's own sample PDF, so a refusal after they reach the
    content-addressed blob store leaves its files as they were."""
    bundle = document_bundle("Patient/@patient@", documents=documents)
    if edit is not None:
        edit({e["resource"]["resourceType"]: e for e in bundle["entry"]}, bundle)
    return bundle


def message(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Communication", "status": "completed",
            "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": MESSAGE}]}],
            "recipient": [{"reference": "Patient/@patient@"}],
            "payload": [{"contentString": "Bonjour"}], **extra}


def subscription(**extra: Any) -> dict[str, Any]:
    return {**document_subscription("Patient/@patient@", "https://app.example.org/notify"),
            **extra}


def deep_extensions(levels: int) -> bytes:
    """Extensions nested ``levels`` times (two JSON levels each), as JSON text: orjson does
    not write that deep."""
    return (b'[{"url":"http://example.org/x","extension":' * levels
            + b'[{"url":"http://example.org/x","valueString":"x"}]' + b"}]" * levels)


def deep(levels: int) -> bytes:
    """A Patient whose extensions nest ``levels`` times."""
    return b'{"resourceType":"Patient","extension":' + deep_extensions(levels) + b"}"


# -- one matrix: JSON no parser or validator should take, at every endpoint taking JSON --

# (name, method, path, resourceType the body claims, principal)
JSON_ENDPOINTS: list[tuple[str, str, str, str, Principal]] = [
    ("create", "POST", "/fhir/Patient", "Patient", "app"),
    ("update", "PUT", "/fhir/Patient/@patient@", "Patient", "app"),
    ("conditional-update", "PUT", f"/fhir/Patient?identifier={INS_NIR_TEST}|{NIR}", "Patient",
     "app"),
    ("fhirpath-patch", "PATCH", "/fhir/Patient/@patient@", "Parameters", "app"),
    ("transaction", "POST", "/fhir", "Bundle", "app"),
    ("binary-json", "POST", "/fhir/Binary", "Binary", "app"),
    ("document", "POST", "/fhir/DocumentReference", "DocumentReference", "professional"),
    ("consent", "POST", "/fhir/Consent", "Consent", "patient"),
    ("communication", "POST", "/fhir/Communication", "Communication", "professional"),
    ("subscription", "POST", "/fhir/Subscription", "Subscription", "app"),
    ("summary", "POST", "/fhir/Patient/$summary", "Parameters", "professional"),
    ("ins-lookup", "POST", "/fhir/Patient/$ins-lookup", "Parameters", "professional"),
]


def garbage(resource_type: str) -> Iterator[tuple[str, bytes]]:
    t = resource_type.encode()
    yield "truncated", b'{"resourceType":"' + t + b'","id":"x","meta":{"ver'
    yield "trailing-garbage", b'{"resourceType":"' + t + b'"} and then some'
    yield "xml-sent-as-json", b'<' + t + b' xmlns="http://hl7.org/fhir"><id value="x"/></' \
        + t + b'>'
    yield "invalid-utf8", b'{"resourceType":"' + t + b'","id":"\xff\xfe\xc0\xaf"}'
    yield "lone-surrogate", b'{"resourceType":"' + t + b'","id":"a\\ud800b"}'
    yield "nan", b'{"resourceType":"' + t + b'","x":NaN}'
    yield "nested-10000-arrays", b"[" * 10_000 + b"]" * 10_000
    yield "nested-10000-objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    yield "not-an-object", b'["resourceType","' + t + b'"]'
    yield "empty", b""


def json_matrix() -> Iterator[Case]:
    """Two flaws per endpoint, in turn, so that each flaw meets several endpoints (every
    pair would be 120 cases, and they all go through the same parser)."""
    slot = itertools.count()
    for endpoint, method, path, resource_type, principal in JSON_ENDPOINTS:
        flaws = list(garbage(resource_type))
        for _ in range(2):
            flaw, body = flaws[next(slot) % len(flaws)]
            yield fhir(f"{endpoint}-{flaw}", method, path, body, principal=principal)


# -- the cases written one by one ---------------------------------------------------------

def content_types() -> Iterator[Case]:
    body = j(patient())
    unsupported = frozenset({415})
    yield fhir("create-text-plain", "POST", "/fhir/Patient", body, unsupported, media="text/plain")
    yield fhir("create-fhir-xml", "POST", "/fhir/Patient",
               b'<Patient xmlns="http://hl7.org/fhir"/>', unsupported,
               media="application/fhir+xml")
    yield Case("create-without-content-type", "POST", "/fhir/Patient", body, {}, unsupported)
    yield fhir("patch-text-plain", "PATCH", "/fhir/Patient/@patient@", b"gender=female",
               unsupported, media="text/plain")
    yield fhir("patch-merge-patch", "PATCH", "/fhir/Patient/@patient@", b'{"gender":"female"}',
               unsupported, media="application/merge-patch+json")
    yield fhir("search-post-json", "POST", "/fhir/Patient/_search", b'{"name":"CORSE"}',
               unsupported)
    yield fhir("latin1-declared-json", "POST", "/fhir/Patient",
               b'{"resourceType":"Patient","name":[{"family":"L\xe9a"}]}',
               media="application/fhir+json; charset=iso-8859-1")
    yield fhir("pdf-declared-json", "POST", "/fhir/Binary", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    yield fhir("create-accepting-xml", "POST", "/fhir/Patient", body, frozenset({406}),
               Accept="application/fhir+xml")


def wrong_types() -> Iterator[Case]:
    for name, extra in [("gender-number", {"gender": 5}), ("name-string", {"name": "DUPONT"}),
                        ("active-string", {"active": "yes"}),
                        ("multiple-birth-string", {"multipleBirthInteger": "2"}),
                        ("given-nested-arrays", {"name": [{"given": [["Jean"]]}]})]:
        yield fhir(f"patient-{name}", "POST", "/fhir/Patient", patient(**extra))
    yield fhir("resource-type-number", "POST", "/fhir/Patient", {"resourceType": 5})
    yield fhir("resource-type-null", "POST", "/fhir/Patient", {"resourceType": None})
    yield fhir("resource-type-other", "POST", "/fhir/Patient", {"resourceType": "Observation"})
    yield fhir("consent-status-number", "POST", "/fhir/Consent",
               {**consent("@patient@", "professional"), "status": 1}, principal="patient")
    yield fhir("communication-payload-string", "POST", "/fhir/Communication",
               message(payload="Bonjour"), principal="professional")
    yield fhir("subscription-end-number", "POST", "/fhir/Subscription", subscription(end=1))
    yield fhir("binary-data-number", "POST", "/fhir/Binary",
               {"resourceType": "Binary", "contentType": "text/plain", "data": 42})
    yield fhir("summary-identifier-number", "POST", "/fhir/Patient/$summary",
               {"resourceType": "Parameters",
                "parameter": [{"name": "identifier", "valueIdentifier": 42}]},
               BAD_OR_NOT_FOUND, "professional")
    yield fhir("summary-parameter-a-number", "POST", "/fhir/Patient/$summary",
               {"resourceType": "Parameters", "parameter": 7}, principal="professional")
    yield fhir("ins-lookup-parameter-a-number", "POST", "/fhir/Patient/$ins-lookup",
               {"resourceType": "Parameters", "parameter": 7}, principal="professional")
    yield fhir("fhirpath-patch-parameter-a-number", "PATCH", "/fhir/Patient/@patient@",
               {"resourceType": "Parameters", "parameter": 7})
    yield fhir("summary-not-parameters", "POST", "/fhir/Patient/$summary", patient(),
               principal="professional")
    yield fhir("ins-lookup-traits-numbers", "POST", "/fhir/Patient/$ins-lookup",
               {"resourceType": "Parameters", "parameter": [
                   {"name": "family", "valueString": 1}, {"name": "given", "valueString": 2},
                   {"name": "gender", "valueCode": 3}, {"name": "birthDate", "valueDate": 4}]},
               principal="professional")
    yield fhir("bundle-entry-object", "POST", "/fhir",
               {"resourceType": "Bundle", "type": "transaction", "entry": {"request": {}}})
    yield fhir("bundle-request-string", "POST", "/fhir", transaction({"request": "POST Patient"}))


def dates() -> Iterator[Case]:
    for name, value in [("february-30", "1970-02-30"), ("unpadded", "1970-1-1"),
                        ("five-digit-year", "19700-01-01")]:
        yield fhir(f"birthdate-{name}", "POST", "/fhir/Patient", patient(birthDate=value))

    def local_time(by_type: dict[str, Any], _bundle: dict[str, Any]) -> None:
        by_type["DocumentReference"]["resource"]["date"] = "2026-01-01T10:00:00"  # no zone

    yield fhir("iti65-instant-without-zone", "POST", "/fhir", iti65(local_time), INVALID)

    def period_backwards(by_type: dict[str, Any], _bundle: dict[str, Any]) -> None:
        by_type["DocumentReference"]["resource"]["context"]["period"] = {
            "start": "2026-02-31", "end": "2026-01-01"}

    yield fhir("iti65-period-february-31", "POST", "/fhir", iti65(period_backwards), INVALID)
    yield fhir("subscription-end-not-a-date", "POST", "/fhir/Subscription",
               subscription(end="2026-99-99T00:00:00Z"))
    yield get("search-birthdate-february-30", "/fhir/Patient?birthdate=1970-02-30")
    yield get("search-date-injection", "/fhir/Patient?birthdate=ge1970-01-01%27%20OR%201%3D1")
    yield get("audit-date-garbage", "/fhir/AuditEvent?patient=@patient@&date=ge2026-13-45")


def unknown_elements() -> Iterator[Case]:
    yield fhir("patient-unknown-element", "POST", "/fhir/Patient", patient(shoeSize=42))
    yield fhir("patient-unknown-nested-element", "POST", "/fhir/Patient",
               patient(name=[{"family": "DUPONT", "nickname": "Jeannot"}]))
    yield fhir("unknown-resource-type-at-base", "POST", "/fhir", {"resourceType": "Spaceship"})
    yield fhir("unknown-resource-type-in-entry", "POST", "/fhir",
               transaction(post_entry({"resourceType": "Spaceship"})), BAD_OR_NOT_FOUND)
    yield fhir("consent-unknown-element", "POST", "/fhir/Consent",
               {**consent("@patient@", "professional"), "mood": "cross"}, principal="patient")
    yield fhir("communication-unknown-element", "POST", "/fhir/Communication",
               message(urgency="high"), principal="professional")


def base64_data() -> Iterator[Case]:
    for name, data in [("bad-padding", "QUJ"), ("non-ascii", "QUJD€"),
                       ("url-safe-alphabet", "_-_-")]:
        yield fhir(f"binary-base64-{name}", "POST", "/fhir/Binary",
                   {"resourceType": "Binary", "contentType": "text/plain", "data": data})

    def bad_bytes(by_type: dict[str, Any], _bundle: dict[str, Any]) -> None:
        by_type["Binary"]["resource"]["data"] = "%%%not base64%%%"

    yield fhir("iti65-binary-base64", "POST", "/fhir", iti65(bad_bytes), INVALID)
    yield fhir("patch-entry-binary-base64", "POST", "/fhir", transaction(
        {"resource": {"resourceType": "Binary", "contentType": JSON_PATCH, "data": "!!"},
         "request": {"method": "PATCH", "url": "Patient/@patient@"}}))


def bundles() -> Iterator[Case]:
    a, b = "urn:uuid:" + "1" * 8 + "-1111-4111-8111-" + "1" * 12, \
        "urn:uuid:" + "2" * 8 + "-2222-4222-8222-" + "2" * 12
    yield fhir("transaction-duplicate-full-urls", "POST", "/fhir",
               transaction(post_entry(patient(), a), post_entry(patient(), a)))
    yield fhir("batch-duplicate-full-urls", "POST", "/fhir",
               transaction(post_entry(patient(), a), post_entry(patient(), a), kind="batch"))
    # Over CARNET_MAX_BUNDLE_ENTRIES (1,000 by default): refused before any entry is read.
    yield fhir("transaction-10000-duplicate-full-urls", "POST", "/fhir",
               transaction(*[get_entry("Patient/x", "urn:x")] * 10_000), TOO_LARGE)
    yield fhir("transaction-10000-entries-without-request", "POST", "/fhir",
               transaction(*[{}] * 10_000), TOO_LARGE)
    yield fhir("transaction-10000-valid-creates", "POST", "/fhir",
               transaction(*[post_entry(patient())] * 10_000), TOO_LARGE)
    yield fhir("batch-1001-reads", "POST", "/fhir",
               transaction(*[get_entry("Patient/@patient@")] * 1001, kind="batch"), TOO_LARGE)
    yield fhir("transaction-unknown-urn-reference", "POST", "/fhir", transaction(
        post_entry(patient(generalPractitioner=[{"reference": b}]), a)))

    def self_replacing(by_type: dict[str, Any], _bundle: dict[str, Any]) -> None:
        entry = by_type["DocumentReference"]
        entry["resource"]["relatesTo"] = [{"code": "replaces",
                                           "target": {"reference": entry["fullUrl"]}}]

    yield fhir("iti65-document-replaces-itself", "POST", "/fhir", iti65(self_replacing),
               frozenset({400, 404, 409, 412, 422}))

    def cross_replacing(_by_type: dict[str, Any], bundle: dict[str, Any]) -> None:
        first, second = [e for e in bundle["entry"]
                         if e["resource"]["resourceType"] == "DocumentReference"]
        for entry, other in ((first, second), (second, first)):
            entry["resource"]["relatesTo"] = [{"code": "replaces",
                                               "target": {"reference": other["fullUrl"]}}]

    yield fhir("iti65-documents-replace-each-other", "POST", "/fhir",
               iti65(cross_replacing, documents=2), frozenset({400, 404, 409, 412, 422}))

    def list_in_itself(by_type: dict[str, Any], _bundle: dict[str, Any]) -> None:
        entry = by_type["List"]
        entry["resource"]["entry"].append({"item": {"reference": entry["fullUrl"]}})

    yield fhir("iti65-submission-set-lists-itself", "POST", "/fhir", iti65(list_in_itself),
               INVALID)

    def two_sets(_by_type: dict[str, Any], bundle: dict[str, Any]) -> None:
        bundle["entry"].append({**bundle["entry"][0], "fullUrl": a})

    yield fhir("iti65-two-submission-sets", "POST", "/fhir", iti65(two_sets), INVALID)

    def attachment(url: str) -> Any:
        def edit(by_type: dict[str, Any], bundle: dict[str, Any]) -> None:
            by_type["DocumentReference"]["resource"]["content"][0]["attachment"]["url"] = url
            bundle["entry"] = [e for e in bundle["entry"]
                               if e["resource"]["resourceType"] != "Binary"]
        return edit

    for name, url in [("file-url", "file:///etc/passwd"),
                      ("dot-dot", "Binary/../../../etc/passwd"),
                      ("encoded-dot-dot", "Binary/..%2F..%2Fblobs"),
                      ("blob-key", "Binary/@blob@")]:
        yield fhir(f"iti65-attachment-{name}", "POST", "/fhir", iti65(attachment(url)),
                   frozenset({400, 404, 409, 412, 422}))
    yield fhir("entry-url-dot-dot", "POST", "/fhir",
               transaction(get_entry("../../etc/passwd")), BAD_OR_NOT_FOUND)
    yield fhir("entry-method-trace", "POST", "/fhir",
               transaction({"request": {"method": "TRACE", "url": "Patient"}}),
               frozenset({400, 405}))
    yield fhir("entry-put-overlong-id", "POST", "/fhir", transaction(
        {"resource": patient(), "request": {"method": "PUT", "url": "Patient/" + "a" * 65}}))
    yield fhir("entry-conditional-reference-injection", "POST", "/fhir", transaction(
        post_entry(patient(generalPractitioner=[
            {"reference": "Practitioner?name=' OR 1=1--"}]))), frozenset({400, 412}))
    yield fhir("bundle-document-type", "POST", "/fhir",
               {"resourceType": "Bundle", "type": "document", "entry": []})
    yield fhir("transaction-atomic-after-a-good-update", "POST", "/fhir", transaction(
        {"resource": {**ins_patient(), "id": "@patient@"},
         "request": {"method": "PUT", "url": "Patient/@patient@"}},
        post_entry(patient(gender="robot"))))
    yield fhir("transaction-delete-then-invalid", "POST", "/fhir", transaction(
        {"request": {"method": "DELETE", "url": "DocumentReference/@document@"}},
        post_entry(patient(birthDate="1970-02-30"))), frozenset({400, 405}))


def huge() -> Iterator[Case]:
    big = {"status": "generated", "div": "<div>" + "x" * 1_100_000 + "</div>"}
    yield fhir("create-over-the-body-limit", "POST", "/fhir/Patient", patient(text=big),
               frozenset({413}))
    yield fhir("patient-1000-wrong-names", "POST", "/fhir/Patient", patient(name=[1] * 1000))
    yield fhir("patient-nested-300-extensions", "POST", "/fhir/Patient", deep(300))
    yield fhir("patient-nested-40-extensions", "POST", "/fhir/Patient", deep(40))
    yield fhir("patch-nested-300-extensions", "PATCH", "/fhir/Patient/@patient@",
               b'[{"op":"add","path":"/extension","value":' + deep_extensions(300) + b"}]",
               media=JSON_PATCH)
    yield fhir("update-overlong-id", "PUT", "/fhir/Patient/" + "a" * 65,
               {**patient(), "id": "a" * 65})
    yield fhir("update-60k-id", "PUT", "/fhir/Patient/" + "a" * 60_000, patient())
    yield fhir("ins-patient-overlong-family", "POST", "/fhir/Patient",
               ins_patient(family="CORSE" * 2000), INVALID)


def unicode_names() -> Iterator[Case]:
    for name, family in [("nul", "COR\u0000SE"), ("escape", "CORSE\u001b[31m")]:
        yield fhir(f"patient-name-{name}", "POST", "/fhir/Patient", patient(
            name=[{"family": family, "given": ["Jean"]}]))
    yield fhir("patient-name-lone-high-surrogate", "POST", "/fhir/Patient",
               b'{"resourceType":"Patient","name":[{"family":"CORSE\\ud800"}]}')
    yield fhir("patient-name-utf8-encoded-surrogate", "POST", "/fhir/Patient",
               b'{"resourceType":"Patient","name":[{"family":"CORSE\xed\xa0\x80"}]}')
    yield fhir("patient-element-name-nul", "POST", "/fhir/Patient",
               b'{"resourceType":"Patient","gen\\u0000der":"male"}')
    # An INS patient's traits are INSi's: other characters are other traits, refused.
    for name, family, given in [("rtl-override", "\u202eESROC", "Marie"),
                                ("combining-marks", "C\u0301\u0301\u0301ORSE", "Marie"),
                                ("emoji", "CORSE", "Marie\U0001f600"),
                                ("fullwidth", "\uff23\uff2f\uff32\uff33\uff25", "Marie")]:
        yield fhir(f"ins-patient-{name}", "POST", "/fhir/Patient", ins_patient(family, given),
                   INVALID)
    yield fhir("ins-lookup-nul-family", "POST", "/fhir/Patient/$ins-lookup",
               {"resourceType": "Parameters", "parameter": [
                   {"name": "family", "valueString": "COR\u0000SE"},
                   {"name": "given", "valueString": "Marie"},
                   {"name": "gender", "valueCode": "female"},
                   {"name": "birthDate", "valueDate": "1953-07-21"}]},
               principal="professional")
    yield fhir("ins-lookup-emoji-family", "POST", "/fhir/Patient/$ins-lookup",
               {"resourceType": "Parameters", "parameter": [
                   {"name": "family", "valueString": "\U0001f600\u202e"},
                   {"name": "given", "valueString": "Marie"},
                   {"name": "gender", "valueCode": "female"},
                   {"name": "birthDate", "valueDate": "1953-07-21"}]},
               NOT_FOUND, "professional")
    yield fhir("summary-parameters-identifier-nul", "POST", "/fhir/Patient/$summary",
               {"resourceType": "Parameters", "parameter": [{
                   "name": "identifier",
                   "valueIdentifier": {"system": INS_NIR_TEST, "value": NIR + "\u0000"}}]},
               principal="professional")
    yield fhir("json-patch-nul-value", "PATCH", "/fhir/Patient/@patient@",
               j([{"op": "replace", "path": "/name/0/family", "value": "CORSE\u0000"}]),
               media=JSON_PATCH)
    yield fhir("communication-nul-text", "POST", "/fhir/Communication",
               message(payload=[{"contentString": "Bonjour\u0000"}]), principal="professional")
    # As search values they are plain data: they match nothing, or the accent-folded name.
    yield harmless("search-name-emoji", "/fhir/Patient?name=%F0%9F%98%80", 0)
    yield harmless("search-name-rtl-override", "/fhir/Patient?name=%E2%80%AEESROC", 0)
    yield harmless("search-name-combining-marks-fold",
                   "/fhir/Patient?family=CO%CC%81RSE", 1)
    yield harmless("search-name-60k-characters", "/fhir/Patient?name=" + "A" * 60_000, 0)
    yield get("search-name-nul", "/fhir/Patient?name=COR%00SE")


def searches() -> Iterator[Case]:
    for name, query, total in [
            ("sql-or", "name=%27%20OR%201%3D1--", 0),
            ("sql-drop", "family=x%27%3B%20DROP%20TABLE%20resource%3B--", 0),
            ("like-percent", "name:contains=%25", 0), ("like-underscore", "name:contains=_", 0),
            ("backslash", "name=%5C", 0),
            ("fhirpath-value", "name=name.where(true)", 0),
            ("repeated-and", "name=CORSE&name=%27%20OR%201%3D1--", 0),
            ("or-list-with-injection", "name=CORSE,%27%20OR%201%3D1--", 1),
            ("id-list-with-injection", "_id=@patient@,x%27%20OR%201%3D1", 1),
            ("identifier-injection", "identifier=%7C%27%20OR%201%3D1--", 0),
            ("count-over-the-maximum", "_count=99999999999999999999999", 1)]:
        yield harmless(f"search-{name}", f"/fhir/Patient?{query}", total)
    yield harmless("search-reference-drop-table",
                   "/fhir/DocumentReference?patient=Patient/1;DROP%20TABLE%20resource", 0)
    yield harmless("search-chain-injection",
                   "/fhir/DocumentReference?patient.name=%27%20OR%201%3D1--", 0)
    yield harmless("search-as-patient-injection",
                   "/fhir/DocumentReference?patient=@patient@%27%20OR%20%271%27=%271", 0,
                   "patient")
    strict = {"Prefer": "handling=strict"}
    yield get("search-fhirpath-parameter", "/fhir/Patient?name.where(true)=x", **strict)
    yield get("search-fhirpath-chain", "/fhir/DocumentReference?subject:Patient.name.where"
              "(true)=x", **strict)
    yield get("search-sql-parameter-name", "/fhir/Patient?name%27%3B--=x", **strict)
    yield get("search-reverse-chain-injection",
              "/fhir/Patient?_has:DocumentReference:patient:_id=%27%20OR%201%3D1", **strict)
    yield get("search-sort-unknown", "/fhir/Patient?_sort=shoeSize")
    yield get("search-sort-sql", "/fhir/Patient?_sort=family%3B%20DROP%20TABLE%20resource")
    yield get("search-count-negative", "/fhir/Patient?_count=-1")
    yield get("search-count-repeated-with-garbage", "/fhir/Patient?_count=1&_count=x")
    yield get("search-cursor-forged", "/fhir/Patient?_cursor=%27%20OR%201%3D1--")
    yield get("search-nul-parameter", "/fhir/Patient?_id=%00")
    yield get("search-audit-trail-injection", "/fhir/AuditEvent?patient=%27%20OR%201%3D1--")
    yield get("search-audit-trail-nul", "/fhir/AuditEvent?patient=a%00")
    yield fhir("search-form-audit-trail-nul", "POST", "/fhir/AuditEvent/_search",
               b"patient=a%00", media=FORM)
    yield Case("search-form-bad-encoding", "POST", "/fhir/Patient/_search", b"name=%ff%fe",
               {"Content-Type": FORM}, total=0)
    yield get("search-type-traversal", "/fhir/..%2F..%2Fetc%2Fpasswd", NOT_FOUND)
    yield get("summary-identifier-traversal",
              "/fhir/Patient/$summary?identifier=..%2F..%2Fetc%7Cpasswd", NOT_FOUND,
              "professional")
    yield get("summary-query-identifier-nul", f"/fhir/Patient/$summary?identifier={INS_NIR_TEST}%7C"
              f"{NIR}%00", principal="professional")


def traversal() -> Iterator[Case]:
    for name, id_ in [("dot-dot-slash", "..%2F..%2Fetc%2Fpasswd"),
                      ("encoded-dots", "%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
                      ("overlong", "a" * 65), ("blob-key", "@blob@"),
                      ("binary-then-dot-dot", "@binary@%2F..%2F..%2F@blob@")]:
        yield get(f"retrieve-binary-{name}", f"/fhir/Binary/{id_}", BAD_OR_NOT_FOUND,
                  "professional")
    for name, id_ in [("dot-dot-slash", "..%2F..%2Fetc%2Fpasswd"), ("overlong", "a" * 65)]:
        yield get(f"read-patient-{name}", f"/fhir/Patient/{id_}", BAD_OR_NOT_FOUND)
    for path in ["/fhir/Patient/a%00", "/fhir/Binary/@binary@%00", "/fhir/AuditEvent/a%00",
                 "/fhir/Patient/a%00/_history/1", "/fhir/Patient/a%00/$summary"]:
        yield get("nul-in-" + path.removeprefix("/fhir/").replace("/", "-").replace("%00", "")
                  .replace("?", "-").replace("$", "").replace("@", "").lower(), path)
    yield get("retrieve-binary-blob-key-fhir-json", "/fhir/Binary/@blob@", NOT_FOUND,
              Accept=FHIR_JSON)
    yield get("vread-binary-blob-key", "/fhir/Binary/@blob@/_history/1", NOT_FOUND)
    yield get("vread-version-traversal", "/fhir/Patient/@patient@/_history/..%2F1",
              BAD_OR_NOT_FOUND)
    yield Case("delete-nul-id", "DELETE", "/fhir/Patient/a%00")
    yield Case("delete-traversal", "DELETE", "/fhir/Patient/..%2F..%2Fetc",
               statuses=frozenset({400, 404, 405}))
    yield fhir("patch-nul-id", "PATCH", "/fhir/Patient/a%00",
               j([{"op": "replace", "path": "/gender", "value": "male"}]), media=JSON_PATCH)
    yield fhir("update-traversal-id", "PUT", "/fhir/Patient/..%2F..%2Fx",
               {**patient(), "id": "x"}, BAD_OR_NOT_FOUND)
    yield fhir("update-id-with-newline", "PUT", "/fhir/Patient/abc%0A",
               {**patient(), "id": "abc\n"})
    yield fhir("update-binary-blob-key", "PUT", "/fhir/Binary/@blob@",
               {"resourceType": "Binary", "id": "@blob@", "contentType": "text/plain",
                "data": base64.b64encode(b"other bytes").decode()},
               frozenset({400, 405}))
    yield Case("raw-binary-security-context-traversal", "POST", "/fhir/Binary", b"%PDF-1.4",
               {"Content-Type": "application/pdf",
                "X-Security-Context": "../../etc/passwd"})
    yield Case("raw-binary-security-context-nul", "POST", "/fhir/Binary", b"%PDF-1.4",
               {"Content-Type": "application/pdf", "X-Security-Context": "DocumentReference/a"
                                                                         "\x00"})
    yield fhir("json-patch-traversal-path", "PATCH", "/fhir/Patient/@patient@",
               j([{"op": "replace", "path": "/../../etc/passwd", "value": "x"}]),
               frozenset({400, 409, 422}), media=JSON_PATCH)
    yield fhir("json-patch-replace-id", "PATCH", "/fhir/Patient/@patient@",
               j([{"op": "replace", "path": "/id", "value": "../../x"}]),
               frozenset({400, 409, 422}), media=JSON_PATCH)
    yield fhir("json-patch-unknown-op", "PATCH", "/fhir/Patient/@patient@",
               j([{"op": "exec", "path": "/gender", "value": "rm -rf /"}]), media=JSON_PATCH)


def corpus() -> list[Case]:
    cases = list(itertools.chain(json_matrix(), content_types(), wrong_types(), dates(),
                                 unknown_elements(), base64_data(), bundles(), huge(),
                                 unicode_names(), searches(), traversal()))
    names = [case.name for case in cases]
    duplicates = {name for name in names if names.count(name) > 1}
    assert not duplicates, f"case names must be unique: {sorted(duplicates)}"
    return cases


CASES = corpus()
