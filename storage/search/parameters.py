"""The search parameters Carnet supports, as data.

Paths follow FHIR's element names (choice types spelled out: ``effectiveDateTime``).
See https://hl7.org/fhir/R4/searchparameter-registry.html
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ParamType = Literal["token", "string", "date", "reference", "uri"]



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


# Path steps beyond element names: ``resolve()`` follows a ``#id`` reference into
# ``contained``; ``extension:<name>`` keeps the extensions with that URL.
RESOLVE = "resolve()"
EXTENSION_STEP = "extension:"
EXTENSION_URLS = {
    "isArchived": "http://esante.gouv.fr/cisis/fhir/StructureDefinition/PDSm_isArchived",
    "designationType": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType",
    "sourceId": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
}
# MHD's author.given / author.family: the names of the document's authors, carried in
# the document itself (contained, as MHD and PDSm have them), directly or via a
# contained PractitionerRole's practitioner.
_AUTHOR_NAME = ("author.resolve().name", "author.resolve().practitioner.resolve().name")


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
        _p("author.given", "string", *(f"{path}.given" for path in _AUTHOR_NAME)),
        _p("author.family", "string", *(f"{path}.family" for path in _AUTHOR_NAME)),
        _p("isArchived", "token", "extension:isArchived.valueBoolean"),
        # Who wrote the document, by national identifier: a masked document stays visible to
        # its authors (auth/policy.py).
        _p("author.identifier", "token", "author.resolve().identifier",
           "author.resolve().practitioner.resolve().identifier"),
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
        _p("designationType", "token", "extension:designationType.valueCodeableConcept"),
        _p("sourceId", "token", "extension:sourceId.valueIdentifier"),
        _p("isArchived", "token", "extension:isArchived.valueBoolean"),
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
    "CareTeam": (
        _p("identifier", "token", "identifier"),
        _patient_ref("subject"),
        _p("subject", "reference", "subject", targets=("Patient",)),
        _p("status", "token", "status"),
        _p("participant", "reference", "participant.member",
           targets=("Practitioner", "PractitionerRole", "Organization", "Patient")),
        _p("category", "token", "category"),
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
        # Carnet's own: the message answered (the conversation), and the professionals named
        # as parties by national identifier: a message is visible only to its parties
        # (auth/policy.py), as a masked document to its authors.
        _p("in-response-to", "reference", "inResponseTo", targets=("Communication",)),
        _p("sender.identifier", "token", "sender.identifier", "sender.resolve().identifier"),
        _p("recipient.identifier", "token", "recipient.identifier",
           "recipient.resolve().identifier"),
    ),
    # Served from the audit log (service/fhir/audit_trail.py), one patient at a time.
    "AuditEvent": (
        _p("date", "date", "recorded"),
        _patient_ref("entity.what"),
        # Carnet's own: who acted (professional, patient, app, system), e.g. a patient's
        # history without their own reads: agent-kind:not=patient (service/audit.py).
        _p("agent-kind", "token", "agent.type"),
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
