"""FHIR instance and type interactions as plain functions over a connection.

Each function implements one section of https://hl7.org/fhir/R4/http.html and
knows nothing of FastAPI: the route parses HTTP, opens the transaction and
calls in. Reads serve the stored bytes without parsing them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import SUBSCRIPTION, Interaction, Rule, labels_of, row_filter
from fhir_profiles.clinical import ELEMENTS as CLINICAL_ELEMENTS
from fhir_profiles.clinical import clinical_issues
from fhir_profiles.consent import consent_issues
from fhir_profiles.ins import ins_issues
from fhir_profiles.messaging import communication_issues
from fhir_profiles.outcome import Issue, ValidationFailed
from fhir_profiles.pdsm import (
    FOLDER,
    SUBMISSION_SET,
    document_reference_issues,
    folder_issues,
    list_kind,
    security_codes,
    submission_set_issues,
)
from fhir_profiles.structure import is_fhir_type, validate_structure
from service import messaging, subscriptions
from service.access import Access, not_known
from service.consent import PROJECTED_TYPES, check_consent_actors, refresh_record
from service.documents.metadata import check_document_update, check_label_change
from service.errors import (
    BadRequest,
    Forbidden,
    Gone,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
)
from service.fhir.http import fhir_instant, now_micros
from service.fhir.patch import Patch
from service.identity import check_patient_identity
from service.notify import events
from storage import documents as registry
from storage import resources as repo
from storage.resources import AccessFacts
from storage.search.criteria import parse_query
from storage.search.extract import patient_of
from storage.search.parameters import SUPPORTED_TYPES
from storage.search.query import search_page

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class Written:
    """The outcome of a write: what the response's headers and body need."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: int
    content: bytes
    created: bool

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id}"


def check_type(resource_type: str) -> None:
    """404 for a type Carnet does not serve (an unknown one, or one it does not store)."""
    if resource_type not in SUPPORTED_TYPES:
        if is_fhir_type(resource_type):
            raise NotFound(f"resource type {resource_type} is not supported by this server")
        raise NotFound(f"unknown resource type {resource_type!r}")


_READ_ONLY_TYPES = {"AuditEvent": "the audit trail is written by Carnet only, and never changes"}


def check_writable(resource_type: str) -> None:
    """405 for the types no client may write."""
    if resource_type in _READ_ONLY_TYPES:
        raise MethodNotAllowed(f"{resource_type}: {_READ_ONLY_TYPES[resource_type]}")


def check_id(resource_id: str) -> None:
    if not ID_PATTERN.match(resource_id):
        raise BadRequest(f"{resource_id!r} is not a valid FHIR id "
                         "(1-64 characters: letters, digits, '-' and '.')")


def validate(resource: dict[str, Any], resource_type: str | None = None) -> dict[str, Any]:
    """Base FHIR validation; ``resource_type`` is the type the URL names, if any."""
    given = resource.get("resourceType")
    if resource_type is not None and given != resource_type:
        raise BadRequest(f"resourceType {given!r} does not match the URL's {resource_type}",
                         expression="resourceType")
    validated = validate_structure(resource)
    check_type(validated["resourceType"])
    issues = profile_issues(validated)
    if issues:
        raise ValidationFailed(issues, "profile")
    return validated


def profile_issues(resource: dict[str, Any]) -> list[Issue]:
    """The profiles Carnet enforces: FR Core INS, PDSm documents and lists, messages,
    coded clinical data (what a summary is built from)."""
    resource_type = resource["resourceType"]
    if resource_type == "Patient":
        return ins_issues(resource)
    if resource_type == "DocumentReference":
        return document_reference_issues(resource)
    if resource_type == "Consent":
        return consent_issues(resource)
    if resource_type == "Communication":
        return communication_issues(resource)
    if resource_type in CLINICAL_ELEMENTS:
        return clinical_issues(resource)
    if resource_type == "List":
        kind = list_kind(resource)
        if kind == SUBMISSION_SET:
            return submission_set_issues(resource)
        if kind == FOLDER:
            return folder_issues(resource)
    return []


async def _check_against_directories(conn: AsyncConnection, resource: dict[str, Any]) -> None:
    """Rules that need the national directories, checked inside the write's transaction."""
    if resource["resourceType"] == "Patient":
        await check_patient_identity(conn, resource)
    elif resource["resourceType"] == "Consent":
        await check_consent_actors(conn, resource)


def facts_of(resource: dict[str, Any]) -> AccessFacts:
    return AccessFacts(patient_of(resource), labels_of(resource))


async def _check_write(conn: AsyncConnection, access: Access, action: Interaction,
                       resource: dict[str, Any], old: dict[str, Any] | None) -> AccessFacts:
    """The policy on what a write leaves behind (and the attending doctor's declaration);
    the facts it decided on, which the stored row then carries."""
    facts = facts_of(resource)
    await access.check(conn, action, resource["resourceType"], resource.get("id") or "", facts)
    if (resource["resourceType"] == "Patient"
            and not (access.internal or access.operator or access.is_patient)
            and (old or {}).get("generalPractitioner") != resource.get("generalPractitioner")):
        raise Forbidden.denied(Rule.ATTENDING_BY_PATIENT, "the patient declares their "
                               "attending doctor (Patient.generalPractitioner)",
                               "Patient.generalPractitioner")
    return facts


async def _project(conn: AsyncConnection, access: Access, resource_type: str,
                   *patients: str | None, created: dict[str, Any] | None = None) -> None:
    """Keep the policy's projection of the patient's choices in step (same transaction).

    ``created``: a Patient just created (its record starts with no choice to read)."""
    if resource_type in PROJECTED_TYPES:
        for patient_id in sorted({p for p in patients if p is not None}):
            await refresh_record(conn, patient_id,
                                 created if resource_type == "Patient" else None)
            access.forget(patient_id)


def _stamp(resource: dict[str, Any], resource_id: str, version_id: int,
           last_updated: int) -> tuple[dict[str, Any], bytes]:
    """Set id and meta.versionId/lastUpdated; keep everything else in canonical order."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    stamped: dict[str, Any] = {"resourceType": resource["resourceType"], "id": resource_id,
                               "meta": {"versionId": str(version_id),
                                        "lastUpdated": fhir_instant(last_updated), **meta}}
    stamped.update((k, v) for k, v in resource.items()
                   if k not in ("resourceType", "id", "meta"))
    return stamped, orjson.dumps(stamped)


async def read(conn: AsyncConnection, resource_type: str, resource_id: str, access: Access,
               action: Interaction = Interaction.READ) -> tuple[bytes, int, int]:
    """https://hl7.org/fhir/R4/http.html#read — bytes, version, lastUpdated."""
    row = await repo.current_content(conn, resource_type, resource_id, access.state_wanted())
    if row is None:
        raise not_known(resource_type, resource_id)
    access.read_along(row.access.patient_id, row.record)
    await access.check(conn, action, resource_type, resource_id, row.access, row.content)
    content, version_id, last_updated = row.content, row.version_id, row.last_updated
    if row.deleted or content is None:
        raise Gone(f"{resource_type}/{resource_id} was deleted",
                   headers={"ETag": f'W/"{version_id}"'})
    return content, version_id, last_updated


async def vread(conn: AsyncConnection, resource_type: str, resource_id: str,
                version_id: int, access: Access) -> tuple[bytes, int]:
    """https://hl7.org/fhir/R4/http.html#vread — under the rules of the current version."""
    current = await repo.current_content(conn, resource_type, resource_id,
                                         access.state_wanted())
    if current is None:
        raise not_known(resource_type, resource_id)
    access.read_along(current.access.patient_id, current.record)
    await access.check(conn, Interaction.VREAD, resource_type, resource_id, current.access,
                       current.content)
    entry = await repo.specific_version(conn, resource_type, resource_id, version_id)
    if entry is None:
        raise not_known(resource_type, f"{resource_id}/_history/{version_id}")
    if entry.content is None:
        raise Gone(f"version {version_id} of {resource_type}/{resource_id} is a deletion")
    return entry.content, entry.last_updated


def new_id() -> str:
    return str(uuid.uuid4())


async def create(conn: AsyncConnection, resource: dict[str, Any], *, access: Access,
                 resource_id: str | None = None, method: str = "POST") -> Written:
    """https://hl7.org/fhir/R4/http.html#create — the server assigns the id.

    ``resource_id`` is given for update-as-create (PUT) and for transaction
    entries whose id was assigned while resolving ``urn:uuid:`` references.
    """
    assigned = resource_id or new_id()
    if resource["resourceType"] == messaging.COMMUNICATION:
        resource = await messaging.prepare(conn, access, resource)
    elif resource["resourceType"] == SUBSCRIPTION:
        resource = await subscriptions.prepare(conn, access, resource)
    facts = await _check_write(conn, access, Interaction.CREATE,
                               {**resource, "id": assigned}, None)
    await _check_against_directories(conn, resource)
    last_updated = now_micros()
    stamped, content = _stamp(resource, assigned, 1, last_updated)
    await repo.insert_resource(conn, stamped, content, last_updated=last_updated, method=method,
                               labels=facts.labels)
    # A POST's id is new: no Consent can name it yet. A PUT may create a record whose
    # Consents were written first.
    await _project(conn, access, stamped["resourceType"], facts.patient_id,
                   created=stamped if method == "POST" else None)
    if stamped["resourceType"] == messaging.COMMUNICATION:
        await messaging.stored(conn, access, stamped)
    elif stamped["resourceType"] == SUBSCRIPTION:
        await subscriptions.stored(conn, stamped)
    return Written(stamped["resourceType"], assigned, 1, last_updated, content, created=True)


async def update(conn: AsyncConnection, resource_type: str, resource_id: str,
                 resource: dict[str, Any], *, if_match: int | None = None,
                 method: str = "PUT", access: Access) -> Written:
    """https://hl7.org/fhir/R4/http.html#update — update-as-create is allowed.

    The caller must see the current version (404 otherwise, as for a missing
    one) and may write the new one.
    """
    if resource.get("id") != resource_id:
        raise BadRequest(f"the resource's id {resource.get('id')!r} must equal the URL's "
                         f"{resource_id!r}", expression=f"{resource_type}.id")
    existing = await repo.current_version(conn, resource_type, resource_id, for_update=True)
    if existing is not None:
        await access.check(conn, Interaction.READ, resource_type, resource_id, existing.access,
                           existing.content)
    if if_match is not None and (existing is None or existing.version_id != if_match):
        current = "does not exist" if existing is None else f"is at version {existing.version_id}"
        raise PreconditionFailed(f"If-Match asked for version {if_match} but "
                                 f"{resource_type}/{resource_id} {current}")
    old = orjson.loads(existing.content) if existing and existing.content else None
    if resource_type == "DocumentReference":
        if old is None or existing is None or existing.deleted:
            raise MethodNotAllowed("a document is filed with POST (ITI-65 transaction or "
                                   "DocumentReference create), not created by PUT")
        check_document_update(old, resource, access.principal,
                              await registry.filed_document_by_id(conn, resource_id))
        if security_codes(old) != security_codes(resource):
            check_label_change(old, resource, actor=access.principal,
                               trusted=access.internal or access.operator,
                               attending=await access.is_attending(conn,
                                                                   existing.access.patient_id))
    if existing is None:
        return await create(conn, resource, resource_id=resource_id, method=method,
                            access=access)
    if resource_type == messaging.COMMUNICATION:
        messaging.check_change(access, old, resource)
    elif resource_type == SUBSCRIPTION:
        resource = await subscriptions.prepare(conn, access, resource, old)
    facts = await _check_write(conn, access, Interaction.UPDATE, resource, old)
    await _check_against_directories(conn, resource)
    version_id = existing.version_id + 1
    last_updated = now_micros()
    stamped, content = _stamp(resource, resource_id, version_id, last_updated)
    await repo.replace_resource(conn, existing, stamped, content, version_id=version_id,
                                last_updated=last_updated, method=method,
                                labels=facts.labels)
    await _project(conn, access, resource_type, existing.access.patient_id, facts.patient_id)
    if resource_type == SUBSCRIPTION:
        await subscriptions.stored(conn, stamped)
    elif (resource_type == "DocumentReference" and facts.patient_id is not None
          and existing.access.labels.hidden_from_patient
          and not facts.labels.hidden_from_patient):
        # INVISIBLE_PATIENT lifted: the patient is told now, as at filing.
        await events.document_visible(conn, facts.patient_id, resource_id, last_updated)
    return Written(resource_type, resource_id, version_id, last_updated, content,
                   created=existing.deleted)


async def delete(conn: AsyncConnection, resource_type: str, resource_id: str, *,
                 access: Access, if_match: int | None = None) -> int | None:
    """https://hl7.org/fhir/R4/http.html#delete — logical; returns the deletion's version."""
    existing = await repo.current_version(conn, resource_type, resource_id, for_update=True)
    if existing is None:
        raise not_known(resource_type, resource_id)
    await access.check(conn, Interaction.READ, resource_type, resource_id, existing.access,
                       existing.content)
    await access.check(conn, Interaction.DELETE, resource_type, resource_id, existing.access)
    if if_match is not None and existing.version_id != if_match:
        raise PreconditionFailed(f"If-Match asked for version {if_match} but "
                                 f"{resource_type}/{resource_id} is at {existing.version_id}")
    if existing.deleted:
        return None
    version_id = await repo.mark_deleted(conn, existing, last_updated=now_micros())
    await _project(conn, access, resource_type, existing.access.patient_id)
    if resource_type == SUBSCRIPTION:
        await subscriptions.ended(conn, resource_id)
    return version_id


async def matching_ids(conn: AsyncConnection, resource_type: str, query_string: str,
                       *, access: Access, limit: int = 2) -> list[str]:
    """Ids matching a conditional-operation query, among what the caller may see."""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    if not pairs:
        raise BadRequest("a conditional operation needs search criteria")
    query = parse_query(resource_type, pairs, default_count=limit, max_count=limit)
    if query.unknown:
        raise BadRequest(f"unknown search parameter(s) {', '.join(query.unknown)} in "
                         "conditional operation")
    await repo.lock_key(conn, f"{resource_type}?{query_string}")
    page = await search_page(conn, query, row_filter(await access.viewer(conn)))
    return [m.resource_id for m in page.matches]


async def conditional_create(conn: AsyncConnection, resource: dict[str, Any],
                             if_none_exist: str, *, access: Access) -> Written:
    """https://hl7.org/fhir/R4/http.html#ccreate — 200 with the match, or 201, or 412."""
    rtype = resource["resourceType"]
    ids = await matching_ids(conn, rtype, if_none_exist, access=access)
    if len(ids) > 1:
        raise PreconditionFailed(f"If-None-Exist {if_none_exist!r} matches several {rtype}s")
    if ids:
        content, version_id, last_updated = await read(conn, rtype, ids[0], access)
        return Written(rtype, ids[0], version_id, last_updated, content, created=False)
    return await create(conn, resource, access=access)


async def conditional_update(conn: AsyncConnection, resource_type: str, query_string: str,
                             resource: dict[str, Any], *, access: Access) -> Written:
    """https://hl7.org/fhir/R4/http.html#cond-update"""
    ids = await matching_ids(conn, resource_type, query_string, access=access)
    if len(ids) > 1:
        raise PreconditionFailed(f"{query_string!r} matches several {resource_type}s")
    if not ids:
        given = resource.get("id")
        if given is not None:
            check_id(given)
            return await update(conn, resource_type, given, resource, access=access)
        return await create(conn, resource, access=access)
    if resource.get("id") not in (None, ids[0]):
        raise BadRequest(f"the resource's id {resource['id']!r} is not the matching "
                         f"{resource_type}/{ids[0]}")
    return await update(conn, resource_type, ids[0], {**resource, "id": ids[0]}, access=access)


async def patch(conn: AsyncConnection, resource_type: str, resource_id: str,
                change: Patch, *, if_match: int | None, access: Access) -> Written:
    """https://hl7.org/fhir/R4/http.html#patch — on the current version, then validated."""
    content, version_id, _ = await read(conn, resource_type, resource_id, access)
    if if_match is not None and if_match != version_id:
        raise PreconditionFailed(f"If-Match asked for version {if_match} but "
                                 f"{resource_type}/{resource_id} is at {version_id}")
    resource = validate(change(orjson.loads(content)), resource_type)
    return await update(conn, resource_type, resource_id, resource, if_match=version_id,
                        method="PATCH", access=access)
