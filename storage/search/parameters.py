"""The search parameters Carnet supports, as data, and their index extraction.

Paths follow FHIR's element names (choice types spelled out: ``effectiveDateTime``).
Values are read from the stored canonical JSON, with the data type inferred
from the JSON shape (a CodeableConcept has ``coding``, a Reference has
``reference``, a Period has ``start``/``end``...).
See https://hl7.org/fhir/R4/searchparameter-registry.html
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal

ParamType = Literal["token", "string", "date", "reference", "uri"]

MIN_INSTANT = -(2**62)
MAX_INSTANT = 2**62
# Widths of the index columns (storage/tables.py). Longer values are cut to fit,
# and query values are cut the same way so that they still find them.
CODE_WIDTH = 256  # token system and code, normalized string
TEXT_WIDTH = 1024  # exact string, reference target id
TYPE_WIDTH = 64


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: ParamType
    paths: tuple[str, ...]
    # For reference parameters: the resource types a bare id may point to, and
    # (when ``only_targets``) the only types indexed under this parameter.
    targets: tuple[str, ...] = ()
    only_targets: bool = False
    description: str = field(default="", compare=False)


def _p(name: str, kind: ParamType, *paths: str, targets: tuple[str, ...] = (),
       only: bool = False) -> SearchParam:
    return SearchParam(name, kind, paths, targets, only)


def _patient_ref(*paths: str) -> SearchParam:
    return _p("patient", "reference", *paths, targets=("Patient",), only=True)


COMMON: dict[str, SearchParam] = {
    p.name: p
    for p in (
        _p("_tag", "token", "meta.tag"),
        _p("_security", "token", "meta.security"),
        _p("_profile", "uri", "meta.profile"),
    )
}
# _id and _lastUpdated live on the resource row itself (see query.py).
RESOURCE_COLUMNS = {"_id": "token", "_lastUpdated": "date"}

_DEFINITIONS: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        _p("identifier", "token", "identifier"),
        _p("name", "string", "name"),
        _p("family", "string", "name.family"),
        _p("given", "string", "name.given"),
        _p("birthdate", "date", "birthDate"),
        _p("gender", "token", "gender"),
        _p("active", "token", "active"),
        _p("telecom", "token", "telecom"),
        _p("address-city", "string", "address.city"),
        _p("address-postalcode", "string", "address.postalCode"),
        _p("general-practitioner", "reference", "generalPractitioner",
           targets=("Practitioner", "PractitionerRole", "Organization")),
        _p("organization", "reference", "managingOrganization", targets=("Organization",)),
    ),
    "Practitioner": (
        _p("identifier", "token", "identifier"),
        _p("name", "string", "name"),
        _p("family", "string", "name.family"),
        _p("given", "string", "name.given"),
        _p("active", "token", "active"),
        _p("telecom", "token", "telecom"),
    ),
    "PractitionerRole": (
        _p("identifier", "token", "identifier"),
        _p("practitioner", "reference", "practitioner", targets=("Practitioner",)),
        _p("organization", "reference", "organization", targets=("Organization",)),
        _p("role", "token", "code"),
        _p("specialty", "token", "specialty"),
        _p("active", "token", "active"),
    ),
    "Organization": (
        _p("identifier", "token", "identifier"),
        _p("name", "string", "name", "alias"),
        _p("type", "token", "type"),
        _p("active", "token", "active"),
        _p("partof", "reference", "partOf", targets=("Organization",)),
    ),
    "DocumentReference": (
        _p("identifier", "token", "masterIdentifier", "identifier"),
        _patient_ref("subject"),
        _p("subject", "reference", "subject", targets=("Patient",)),
        _p("status", "token", "status"),
        _p("type", "token", "type"),
        _p("category", "token", "category"),
        _p("date", "date", "date"),
        _p("period", "date", "context.period"),
        _p("setting", "token", "context.practiceSetting"),
        _p("facility", "token", "context.facilityType"),
        _p("event", "token", "context.event"),
        _p("security-label", "token", "securityLabel"),
        _p("format", "token", "content.format"),
        _p("contenttype", "token", "content.attachment.contentType"),
        _p("language", "token", "content.attachment.language"),
        _p("related", "reference", "context.related"),
        _p("author", "reference", "author",
           targets=("Practitioner", "PractitionerRole", "Organization", "Patient")),
        _p("custodian", "reference", "custodian", targets=("Organization",)),
        _p("relatesto", "reference", "relatesTo.target", targets=("DocumentReference",)),
        _p("relation", "token", "relatesTo.code"),
        _p("description", "string", "description"),
    ),
    "Binary": (),
    "List": (
        _p("identifier", "token", "identifier"),
        _patient_ref("subject"),
        _p("subject", "reference", "subject", targets=("Patient",)),
        _p("code", "token", "code"),
        _p("status", "token", "status"),
        _p("date", "date", "date"),
        _p("source", "reference", "source",
           targets=("Practitioner", "PractitionerRole", "Patient")),
        _p("item", "reference", "entry.item"),
        _p("title", "string", "title"),
    ),
    "Consent": (
        _p("identifier", "token", "identifier"),
        _patient_ref("patient"),
        _p("status", "token", "status"),
        _p("scope", "token", "scope"),
        _p("category", "token", "category"),
        _p("date", "date", "dateTime"),
        _p("actor", "reference", "provision.actor.reference",
           targets=("Practitioner", "PractitionerRole", "Organization")),
        _p("action", "token", "provision.action"),
        _p("period", "date", "provision.period"),
    ),
    "Communication": (
        _p("identifier", "token", "identifier"),
        _patient_ref("subject"),
        _p("subject", "reference", "subject", targets=("Patient",)),
        _p("recipient", "reference", "recipient",
           targets=("Patient", "Practitioner", "PractitionerRole", "Organization")),
        _p("sender", "reference", "sender",
           targets=("Patient", "Practitioner", "PractitionerRole", "Organization")),
        _p("status", "token", "status"),
        _p("category", "token", "category"),
        _p("sent", "date", "sent"),
        _p("received", "date", "received"),
    ),
    "AuditEvent": (
        _p("date", "date", "recorded"),
        _p("type", "token", "type"),
        _p("subtype", "token", "subtype"),
        _p("action", "token", "action"),
        _p("outcome", "token", "outcome"),
        _p("agent", "reference", "agent.who",
           targets=("Practitioner", "PractitionerRole", "Organization", "Patient", "Device")),
        _p("entity", "reference", "entity.what"),
        _patient_ref("agent.who", "entity.what"),
    ),
    "Subscription": (
        _p("status", "token", "status"),
        _p("url", "uri", "channel.endpoint"),
        _p("criteria", "string", "criteria"),
        _p("type", "token", "channel.type"),
    ),
    "AllergyIntolerance": (
        _p("identifier", "token", "identifier"),
        _patient_ref("patient"),
        _p("clinical-status", "token", "clinicalStatus"),
        _p("verification-status", "token", "verificationStatus"),
        _p("code", "token", "code"),
        _p("category", "token", "category"),
        _p("criticality", "token", "criticality"),
        _p("type", "token", "type"),
        _p("date", "date", "recordedDate"),
    ),
    "Condition": (
        _p("identifier", "token", "identifier"),
        _patient_ref("subject"),
        _p("subject", "reference", "subject", targets=("Patient",)),
        _p("clinical-status", "token", "clinicalStatus"),
        _p("verification-status", "token", "verificationStatus"),
        _p("code", "token", "code"),
        _p("category", "token", "category"),
        _p("onset-date", "date", "onsetDateTime", "onsetPeriod"),
        _p("recorded-date", "date", "recordedDate"),
    ),
    "MedicationStatement": (
        _p("identifier", "token", "identifier"),
        _patient_ref("subject"),
        _p("subject", "reference", "subject", targets=("Patient",)),
        _p("status", "token", "status"),
        _p("code", "token", "medicationCodeableConcept"),
        _p("medication", "reference", "medicationReference", targets=("Medication",)),
        _p("effective", "date", "effectiveDateTime", "effectivePeriod"),
    ),
    "Immunization": (
        _p("identifier", "token", "identifier"),
        _patient_ref("patient"),
        _p("status", "token", "status"),
        _p("vaccine-code", "token", "vaccineCode"),
        _p("date", "date", "occurrenceDateTime"),
    ),
    "Observation": (
        _p("identifier", "token", "identifier"),
        _patient_ref("subject"),
        _p("subject", "reference", "subject", targets=("Patient",)),
        _p("status", "token", "status"),
        _p("code", "token", "code"),
        _p("category", "token", "category"),
        _p("date", "date", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
        _p("performer", "reference", "performer",
           targets=("Practitioner", "PractitionerRole", "Organization", "Patient")),
    ),
    "Composition": (
        _p("identifier", "token", "identifier"),
        _patient_ref("subject"),
        _p("subject", "reference", "subject", targets=("Patient",)),
        _p("status", "token", "status"),
        _p("type", "token", "type"),
        _p("category", "token", "category"),
        _p("date", "date", "date"),
        _p("author", "reference", "author",
           targets=("Practitioner", "PractitionerRole", "Organization", "Patient", "Device")),
        _p("title", "string", "title"),
        _p("section", "token", "section.code"),
        _p("entry", "reference", "section.entry"),
    ),
    "Bundle": (
        _p("identifier", "token", "identifier"),
        _p("type", "token", "type"),
        _p("timestamp", "date", "timestamp"),
    ),
}

SEARCH_PARAMETERS: dict[str, dict[str, SearchParam]] = {
    rtype: {**COMMON, **{p.name: p for p in params}} for rtype, params in _DEFINITIONS.items()
}
SUPPORTED_TYPES: tuple[str, ...] = tuple(_DEFINITIONS)


def params_for(resource_type: str) -> dict[str, SearchParam]:
    return SEARCH_PARAMETERS.get(resource_type, COMMON)


# --------------------------------------------------------------------------- values


def normalize_text(value: str) -> str:
    """Case- and accent-insensitive form used by the default string search."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})"
    r"(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def date_range(text: str) -> tuple[int, int]:
    """The half-open range [low, high) in epoch microseconds a FHIR date denotes.

    ``2023`` covers the whole year, ``2023-05-01T10:00Z`` one minute and
    ``...:00.5Z`` a tenth of a second: the precision given is the range. A
    value without a time zone is taken as UTC. Raises ValueError on a bad value.
    """
    match = _DATE_RE.match(text.strip())
    if not match:
        raise ValueError(f"not a FHIR date, dateTime or instant: {text!r}")
    g = match.groupdict()
    year = int(g["y"])
    if g["m"] is None:
        start = datetime(year, 1, 1, tzinfo=UTC)
        return to_micros(start), _months_later(start, 12)
    month = int(g["m"])
    if g["d"] is None:
        start = datetime(year, month, 1, tzinfo=UTC)
        return to_micros(start), _months_later(start, 1)
    day = date(year, month, int(g["d"]))
    if g["H"] is None:
        low = to_micros(datetime(day.year, day.month, day.day, tzinfo=UTC))
        return low, low + 86_400_000_000
    tz: timezone = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    if g["S"] is None:
        low = to_micros(datetime(day.year, day.month, day.day, int(g["H"]), int(g["M"]),
                                 tzinfo=tz))
        return low, low + 60_000_000
    digits = (g["f"] or ".")[1:7]
    low = to_micros(datetime(day.year, day.month, day.day, int(g["H"]), int(g["M"]),
                             int(g["S"]), int(digits.ljust(6, "0")), tzinfo=tz))
    return low, low + 10 ** (6 - len(digits))


def _months_later(start: datetime, months: int) -> int:
    """Integer arithmetic, so ranges ending after year 9999 do not overflow ``datetime``."""
    index = start.year * 12 + start.month - 1 + months
    if index // 12 > _END_OF_TIME.year:
        return to_micros(_END_OF_TIME) + 1
    return to_micros(start.replace(year=index // 12, month=index % 12 + 1))


def _walk(node: Any, parts: list[str]) -> Iterator[Any]:
    if not parts:
        if isinstance(node, list):
            yield from node
        elif node is not None:
            yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, parts)
        return
    if isinstance(node, dict):
        yield from _walk(node.get(parts[0]), parts[1:])


def values_at(resource: dict[str, Any], path: str) -> Iterator[Any]:
    yield from _walk(resource, path.split("."))


_STRING_PARTS = ("text", "family", "given", "prefix", "suffix",
                 "line", "city", "district", "state", "postalCode", "country")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in _STRING_PARTS:
            part = value.get(key)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))


def _tokens(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                yield from _tokens(coding)
        elif "code" in value and isinstance(value["code"], str):
            yield value.get("system"), value["code"]
        elif isinstance(value.get("value"), str):  # Identifier, ContactPoint
            yield value.get("system"), value["value"]


def _dates(value: Any) -> Iterator[tuple[int, int]]:
    if isinstance(value, str):
        yield date_range(value)
    elif isinstance(value, dict) and ("start" in value or "end" in value):
        low = date_range(value["start"])[0] if "start" in value else MIN_INSTANT
        high = date_range(value["end"])[1] if "end" in value else MAX_INSTANT
        yield low, high


def split_reference(reference: str) -> tuple[str | None, str]:
    """``Patient/1`` -> ("Patient", "1"); anything else -> (None, reference)."""
    path = reference
    if "://" in reference:
        path = reference.split("://", 1)[1]
    parts = path.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    typed = (len(parts) >= 2 and parts[-2][:1].isupper() and parts[-2].isalpha()
             and len(parts[-2]) <= TYPE_WIDTH)
    if typed and ("://" in reference or len(parts) == 2):
        return parts[-2], parts[-1]
    return None, reference


def _references(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and not ref.startswith("#"):
            yield split_reference(ref)
    elif isinstance(value, str):
        yield None, value


@dataclass
class IndexEntries:
    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)
    strings: list[tuple[str, str, str]] = field(default_factory=list)
    dates: list[tuple[str, int, int]] = field(default_factory=list)
    references: list[tuple[str, str | None, str]] = field(default_factory=list)


def extract_index_entries(resource: dict[str, Any]) -> IndexEntries:
    """Every index value of every supported search parameter of ``resource``."""
    entries = IndexEntries()
    for param in params_for(resource["resourceType"]).values():
        for path in param.paths:
            for value in values_at(resource, path):
                _add(entries, param, value)
    return entries


def _add(entries: IndexEntries, param: SearchParam, value: Any) -> None:
    if param.type == "token":
        for system, code in _tokens(value):
            entries.tokens.append((param.name, system and system[:CODE_WIDTH],
                                   code[:CODE_WIDTH]))
    elif param.type == "uri":
        if isinstance(value, str):
            entries.tokens.append((param.name, None, value[:CODE_WIDTH]))
    elif param.type == "string":
        for text in _strings(value):
            entries.strings.append((param.name, normalize_text(text)[:CODE_WIDTH],
                                    text[:TEXT_WIDTH]))
    elif param.type == "date":
        for low, high in _dates(value):
            entries.dates.append((param.name, low, high))
    elif param.type == "reference":
        for target_type, target_id in _references(value):
            if param.only_targets and target_type not in param.targets:
                continue
            entries.references.append((param.name, target_type, target_id[:TEXT_WIDTH]))
