"""The patient summary (IPS ``Patient/$summary``), built for the caller's eyes only.

The clinical resources come from one query on the record under the caller's
SQL policy (the profession matrix, masking, what is hidden from the patient), so
a pharmacien's summary holds what a pharmacien may read; the narrative then says
that information may be missing, never what. Every call is audited with the
resources it showed. ``persist`` files the summary as a document (LOINC 60591-5,
the Bundle as its attachment) that replaces the previous generated one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Interaction, Permit, scope_decision, visible_clause
from auth.principal import Professional
from fhir_profiles.ips import summary_bundle, summary_structure_issues
from service.access import Access, not_known
from service.documents.samples import document_bundle
from service.errors import BadRequest, Forbidden
from service.fhir import transaction
from service.fhir.http import fhir_instant, now_micros
from storage import access as records
from storage import directory
from storage import resources as repo
from storage.blobs import BlobStore
from storage.db import Database
from storage.search.criteria import parse_query
from storage.search.query import search_page
from storage.tables import RESOURCES

# The resource types the IPS sections are built from (fhir_profiles/ips.py).
SUMMARY_TYPES = ("Condition", "AllergyIntolerance", "MedicationStatement", "Immunization",
                 "Observation")
LOINC = "http://loinc.org"
SUMMARY_LOINC = "60591-5"
GENERATED_TYPE = "application/fhir+json"  # a generated summary's attachment (a VSM is PDF/CDA)
MAX_RESOURCES = 2000  # beyond, the summary says it is partial


@dataclass(frozen=True)
class Summary:
    bundle: dict[str, Any]
    document_id: str | None = None  # the DocumentReference, when persisted


def identifier_of(value: str | None) -> tuple[str, str]:
    """``system|value`` (the patient's INS) from a query or a Parameters body."""
    system, bar, code = (value or "").partition("|")
    if not bar or not system or not code:
        raise BadRequest("identifier must be system|value, e.g. the patient's INS "
                         "urn:oid:1.2.250.1.213.1.4.8|<NIR>", expression="identifier")
    return system, code


async def patient_of_identifier(db: Database, system: str, value: str) -> str:
    async with db.read() as conn:
        found = await records.record_of_identifier(conn, system, value)
    if found is None:
        raise not_known("Patient", f"?identifier={system}|{value}")
    return found


async def build(db: Database, access: Access, patient_id: str, *, base: str) -> Summary:
    """The IPS document Bundle of ``patient_id`` as the caller may see it."""
    query = f"Patient/{patient_id}/$summary"
    async with db.query() as conn:
        patient_row = await repo.current_content(conn, "Patient", patient_id)
        if patient_row is None or patient_row.content is None or patient_row.deleted:
            raise not_known("Patient", patient_id)
        if access.is_patient and await access.own_record(conn) != patient_id:
            raise not_known("Patient", patient_id)  # as for any other patient's data
        viewer = await access.check_record(conn, Interaction.SEARCH, "Composition", patient_id,
                                           query)
        types = [t for t in SUMMARY_TYPES
                 if isinstance(scope_decision(access.principal, Interaction.SEARCH, t), Permit)]
        rows = await repo.record_resources(conn, patient_id, types,
                                           visible_clause(RESOURCES, viewer),
                                           limit=MAX_RESOURCES + 1)
    shown = rows[:MAX_RESOURCES]
    resources = [orjson.loads(content) for _, _, content in shown]
    # Anyone the policy filters may miss something: say so, always (saying it only when
    # something is hidden would tell that something is).
    partial = (not (access.internal or access.operator) or len(types) < len(SUMMARY_TYPES)
               or len(rows) > MAX_RESOURCES)
    now = now_micros()
    bundle = summary_bundle(
        patient=orjson.loads(patient_row.content), patient_url=f"{base}/Patient/{patient_id}",
        resources=resources, author=None, author_display="Carnet",
        now=fhir_instant(now), bundle_id=str(uuid.uuid4()),
        identifier_value=str(uuid.uuid4()), base=base, partial=partial)
    problems = summary_structure_issues(bundle)
    if problems:  # a bug of Carnet's, never to be served as a patient summary
        raise RuntimeError(f"the generated summary breaks the IPS rules: {problems}")
    access.note_results(Interaction.SEARCH,
                        [(patient_id, f"{t}/{i}") for t, i, _ in shown],
                        query, decided_for=patient_id)
    return Summary(bundle)


async def previous_summary(conn: AsyncConnection, patient_id: str) -> str | None:
    """The current generated summary document of the record (the one a new one replaces):
    found through the search indexes, as ITI-67 would find it."""
    query = parse_query("DocumentReference", [
        ("patient", patient_id), ("type", f"{LOINC}|{SUMMARY_LOINC}"), ("status", "current"),
        ("contenttype", GENERATED_TYPE), ("_sort", "-date"), ("_count", "1")],
        default_count=1, max_count=1)
    page = await search_page(conn, query)
    return page.matches[0].resource_id if page.matches else None


def check_may_persist(access: Access) -> None:
    """A filed summary names its author: the professional who asked for it. A patient's
    own documents are theirs to file (class 90); an app is nobody's author."""
    if not isinstance(access.principal, Professional):
        raise Forbidden("a patient summary is filed by the professional who authors it "
                        "(persist=true needs a professional's token)")


async def summarize(db: Database, access: Access, patient_id: str, *, base: str,
                    blobs: BlobStore, persist: bool) -> Summary:
    """The summary, and with ``persist`` the document that files it. Whether the caller
    may file it is known before anything is built or read."""
    if persist:
        check_may_persist(access)
    built = await build(db, access, patient_id, base=base)
    return await file_summary(db, access, built, patient_id, base=base,
                              blobs=blobs) if persist else built


async def file_summary(db: Database, access: Access, summary: Summary, patient_id: str, *,
                       base: str, blobs: BlobStore) -> Summary:
    """File the summary (ITI-65, as the caller: checked and audited like any filing)."""
    principal = access.principal
    assert isinstance(principal, Professional)  # check_may_persist
    rpps = principal.rpps or principal.idnat
    async with db.query() as conn:
        replaces = await previous_summary(conn, patient_id)
        found = await directory.professional_by_rpps(conn, rpps)
    bundle = summary_document_bundle(
        summary.bundle, patient_id, replaces, rpps=rpps,
        # Not in the directory (a professional from another source): named by RPPS.
        given=found.given_name if found else "Professionnel",
        family=found.family_name if found else f"RPPS {rpps}")
    answer = orjson.loads(await transaction.process(db, bundle, transaction.BundleContext(
        base, access, 20, 100, False, blobs)))
    document_id = next(e["response"]["location"].split("/")[1] for e in answer["entry"]
                       if e["response"]["location"].startswith("DocumentReference/"))
    return Summary(summary.bundle, document_id)


def summary_document_bundle(summary: dict[str, Any], patient_id: str, replaces: str | None, *,
                            rpps: str, given: str, family: str) -> dict[str, Any]:
    """The ITI-65 Bundle that files ``summary`` (its JSON as the Binary) for the patient,
    authored by the professional ``rpps``."""
    content = orjson.dumps(summary)
    when = summary["timestamp"]
    return document_bundle(
        f"Patient/{patient_id}", content=content, content_type=GENERATED_TYPE,
        type_code=SUMMARY_LOINC, class_code="11", title="Synthèse médicale (IPS)",
        date=when, period_start=when,
        replaces=f"DocumentReference/{replaces}" if replaces else None,
        author_rpps=rpps, author_given=given, author_family=family)
