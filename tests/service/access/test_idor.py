"""One patient aiming at another's ids (IDOR): Marie CORSE's own token, and her portal session,
against everything Julie LEROY's record holds - her Patient, document, Binary, SubmissionSet,
messages, choices (Consent) and audit entries.

What the access matrix (test_matrix.py) already walks for documents - a patient's read, vread,
history and Binary of another's DocumentReference, searches and includes of documents - and the
summary of another patient (summary/test_summary.py) are not repeated here. Here: every other
resource type, by id and as a search's subject (compared with a missing id: the answer must not
tell that Julie exists), every search and include without a subject (nothing of Julie's in the
body, totals matching), writes on her resources (refused, her versions unchanged), and the
portal's content and masking URLs with her document's id.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson
import pytest

from storage.db import Database
from tests.factories import FHIR_JSON, file_document, give_consent, ins_patient
from tests.reliability import figures
from tests.service.access.conftest import (
    BLOCKED,
    DOCTOR,
    MISSING_ID,
    Record,
    answer_without_id,
    as_professional,
)
from tests.service.messaging.conftest import message, sent
from tests.service.portal.conftest import (  # noqa: F401 - fixtures, used by name
    PortalBrowser,
    portal,
    portal_app,
    portal_http,
)
from tests.tokens import PATIENT, Tokens

TYPES = ("Patient", "DocumentReference", "List", "Communication", "Consent", "AuditEvent")


@dataclass
class Julie:
    ids: dict[str, list[str]]  # resource type -> her ids (Binary included)
    versions: dict[str, str]   # "Type/id" -> versionId, before the attempts
    markers: list[str]         # what must never reach Marie: ids, name, INS


async def _ids(client: httpx.AsyncClient, resource_type: str, **params: str) -> list[str]:
    found = await client.get(f"/fhir/{resource_type}", params={**params, "_count": "100"})
    assert found.status_code == 200, found.text
    return [e["resource"]["id"] for e in found.json().get("entry", [])
            if e["resource"]["resourceType"] == resource_type]


@pytest.fixture
async def record(client: httpx.AsyncClient, database: Database) -> Record:
    """Lighter than the access tests' record (the policy's cases are not the subject here):
    Marie CORSE (the patient token's INS) and Julie LEROY, one document each."""
    marie = await ins_patient(client, database, PATIENT.birth_family_name,
                              PATIENT.given_names[0], gender="female",
                              birth_date=PATIENT.birth_date, birth_place=PATIENT.birth_place,
                              nir=PATIENT.nir)
    julie = await ins_patient(client, database, "LEROY", "Julie", gender="female",
                              birth_date="1985-05-12")
    documents, binaries = {}, {}
    for key, patient_id in (("consultation", marie), ("other", julie)):
        filed = await file_document(client, patient_id, title=f"Document {key}")
        documents[key] = filed["id"]
        binaries[key] = filed["content"][0]["attachment"]["url"].rpartition("/")[2]
    return Record(marie, julie, documents, binaries, care_team_id="")


@pytest.fixture
async def julie(client: httpx.AsyncClient, tokens: Tokens, record: Record) -> Julie:
    """Julie's record, as the operator sees it: a document (from ``record``), a message from
    Dr Martin, a choice, and audit entries (the operator's reads are audited)."""
    other = record.other_patient_id
    await sent(client, as_professional(tokens, DOCTOR), message(other, "Julie, vos résultats."))
    await give_consent(client, other, "professional", "deny", rpps=(BLOCKED.rpps,))
    assert (await client.get(f"/fhir/DocumentReference/{record.documents['other']}"))\
        .status_code == 200  # an audited read of hers
    audit = await _ids(client, "AuditEvent", patient=other)
    ids = {"Patient": [other], "DocumentReference": [record.documents["other"]],
           "Binary": [record.binaries["other"]],
           "List": await _ids(client, "List", patient=other),
           "Communication": await _ids(client, "Communication", recipient=f"Patient/{other}"),
           "Consent": await _ids(client, "Consent", patient=other),
           "AuditEvent": audit[:2]}  # two by id are enough: they are all alike to Marie
    assert all(ids.values()), ids
    versions = {}
    for resource_type in ("Patient", "DocumentReference", "List", "Communication", "Consent"):
        for resource_id in ids[resource_type]:
            stored = await client.get(f"/fhir/{resource_type}/{resource_id}")
            versions[f"{resource_type}/{resource_id}"] = stored.json()["meta"]["versionId"]
    patient = (await client.get(f"/fhir/Patient/{other}")).json()
    nir = patient["identifier"][0]["value"]
    return Julie(ids, versions,
                 [*{i for v in ids.values() for i in v} | set(audit), "LEROY", nir])


def leaks(body: str, julie: Julie) -> list[str]:
    return [marker for marker in julie.markers if marker in body]


async def by_id_they_look_missing(anonymous: httpx.AsyncClient, as_patient: dict[str, str],
                                  julie: Julie) -> int:
    attempts = 0
    for resource_type in ("Patient", "List", "Communication", "Consent", "AuditEvent"):
        for resource_id in julie.ids[resource_type]:
            for path in ("/fhir/{t}/{i}", "/fhir/{t}/{i}/_history", "/fhir/{t}/{i}/_history/1"):
                hers = await answer_without_id(anonymous, path.format(t=resource_type,
                                                                      i=resource_id),
                                               as_patient, resource_id)
                missing = await answer_without_id(anonymous, path.format(t=resource_type,
                                                                         i=MISSING_ID),
                                                  as_patient, MISSING_ID)
                # 405: the audit trail has no history, whatever the id (tells nothing)
                assert hers[0] in (404, 405), (path, resource_type, hers)
                assert hers == missing, (path, resource_type)
                attempts += 1
    return attempts


# A search aimed at Julie: (resource type, parameter, value template).
AIMED = [
    ("Patient", "_id", "{p}"),
    ("Patient", "identifier", "urn:oid:1.2.250.1.213.1.4.10|{nir}"),
    ("DocumentReference", "subject", "Patient/{p}"),
    ("List", "patient", "{p}"),
    ("List", "subject", "Patient/{p}"),
    ("Communication", "recipient", "Patient/{p}"),
    ("Communication", "subject", "Patient/{p}"),
    ("Consent", "patient", "{p}"),
    ("AuditEvent", "patient", "{p}"),
]
MISSING_NIR = "299999999999913"


def same_but_for(answer: httpx.Response, value: str) -> str:
    """The answer without what differs from one request to the next (a Bundle's id and
    time) and without the value asked for (echoed in the self link)."""
    body = answer.json()
    body.pop("id", None)
    body.pop("meta", None)
    return orjson.dumps(body).decode().replace(
        str(httpx.QueryParams({"v": value}))[2:], "<x>").replace(value, "<x>")


async def searches_aimed_at_her_answer_as_for_nobody(
        anonymous: httpx.AsyncClient, as_patient: dict[str, str], record: Record,
        julie: Julie) -> int:
    """The answer for Julie equals the answer for an id nobody has (refused or empty alike)."""
    nir = julie.markers[-1]
    attempts = 0
    for resource_type, parameter, template in AIMED:
        theirs = template.format(p=record.other_patient_id, nir=nir,
                                 d=record.documents["other"])
        nobody = template.format(p=MISSING_ID, nir=MISSING_NIR, d=MISSING_ID)
        for extra in ({}, {"_summary": "count"}):
            path = f"/fhir/{resource_type}?" + str(httpx.QueryParams({parameter: theirs,
                                                                      **extra}))
            hers = await anonymous.get(path, headers=as_patient)
            assert hers.status_code in (200, 403), (path, hers.text)
            if hers.status_code == 200:
                assert hers.json()["total"] == 0, path
                assert "entry" not in hers.json(), path
            none = await anonymous.get(
                f"/fhir/{resource_type}?" + str(httpx.QueryParams({parameter: nobody,
                                                                   **extra})),
                headers=as_patient)
            assert none.status_code == hers.status_code, path
            assert same_but_for(none, nobody) == same_but_for(hers, theirs), path
            attempts += 1
    return attempts


# Searches without a subject, with every include and revinclude that can reach her.
OPEN_SEARCHES = [
    *[(t, {}) for t in TYPES],
    *[(f"{t}/_history", {}) for t in TYPES],
    ("DocumentReference", {"_include": "DocumentReference:subject"}),
    ("DocumentReference", {"_include": "DocumentReference:patient"}),
    ("List", {"_include": "List:item"}),
    ("List", {"_include": "List:subject"}),
    ("Communication", {"_include": "Communication:recipient"}),
    ("Communication", {"_include": "Communication:subject"}),
    ("Consent", {"_include": "Consent:patient"}),
    ("Patient", {"_revinclude": "DocumentReference:subject"}),
    ("Patient", {"_revinclude": "Communication:recipient"}),
    ("Patient", {"_revinclude": "Consent:patient"}),
    ("Patient", {"_revinclude": "List:subject"}),
    ("Patient", {"_revinclude": "AuditEvent:patient"}),
    ("DocumentReference", {"_revinclude": "List:item"}),
]


async def open_searches_hold_nothing_of_hers(anonymous: httpx.AsyncClient,
                                            as_patient: dict[str, str], julie: Julie) -> int:
    attempts = 0
    for path, params in OPEN_SEARCHES:
        for extra in ({"_count": "100"},):
            answer = await anonymous.get(f"/fhir/{path}", params={**params, **extra},
                                         headers=as_patient)
            if answer.status_code == 400:  # an include the server does not offer
                assert answer.json()["resourceType"] == "OperationOutcome"
                continue
            if answer.status_code == 405:  # AuditEvent/_history: not offered to anyone
                assert "no history" in answer.text
                continue
            assert answer.status_code in (200, 403), (path, params, answer.text)
            assert leaks(answer.text, julie) == [], (path, params)
            bundle = answer.json()
            if answer.status_code == 200 and extra["_count"] == "100" \
                    and "_history" not in path and "total" in bundle:
                matches = [e for e in bundle.get("entry", [])
                           if e.get("search", {}).get("mode", "match") == "match"]
                assert bundle["total"] == len(matches), (path, params)
            attempts += 1
    return attempts


async def her_resources_cannot_be_changed(
        anonymous: httpx.AsyncClient, client: httpx.AsyncClient, as_patient: dict[str, str],
        record: Record, julie: Julie) -> int:
    attempts = 0
    patch = {"Content-Type": "application/json-patch+json"}
    for reference in julie.versions:
        current = (await client.get(f"/fhir/{reference}")).json()
        for method, options in [
            ("PUT", {"content": orjson.dumps(current), "headers": FHIR_JSON}),
            ("PATCH", {"content": orjson.dumps([{"op": "add", "path": "/language",
                                                 "value": "fr"}]), "headers": patch}),
            ("DELETE", {}),
        ]:
            options["headers"] = {**options.get("headers", {}), **as_patient}
            answer = await anonymous.request(method, f"/fhir/{reference}", **options)
            # 405: not offered for the type at all (documents are never deleted)
            assert answer.status_code in (403, 404, 405), (method, reference, answer.text)
            assert answer.json()["resourceType"] == "OperationOutcome"
            attempts += 1
    other = record.other_patient_id
    for method, path, body in [
        ("PUT", f"/fhir/Consent?patient={other}", "Consent"),
        ("DELETE", f"/fhir/Consent?patient={other}", None),
        ("DELETE", f"/fhir/Communication?recipient=Patient/{other}", None),
        ("DELETE", f"/fhir/DocumentReference?subject=Patient/{other}", None),
        ("DELETE", f"/fhir/Patient?_id={other}", None),
    ]:
        content = b""
        if body is not None:
            consent = (await client.get(f"/fhir/Consent/{julie.ids['Consent'][0]}")).json()
            content = orjson.dumps({k: v for k, v in consent.items() if k not in ("id", "meta")})
        answer = await anonymous.request(method, path, content=content or None,
                                         headers={**FHIR_JSON, **as_patient})
        assert answer.status_code in (200, 204, 403, 404, 405, 412), (method, path,
                                                                       answer.text)
        if answer.status_code in (200, 204):  # conditional delete matched nothing of hers
            assert leaks(answer.text, julie) == [], (method, path)
        attempts += 1
    for reference, version in julie.versions.items():
        stored = await client.get(f"/fhir/{reference}")
        assert stored.status_code == 200, (reference, stored.text)
        assert stored.json()["meta"]["versionId"] == version, reference
    return attempts


async def test_a_patient_reaches_nothing_of_another_patients_record(
        anonymous: httpx.AsyncClient, client: httpx.AsyncClient, as_patient: dict[str, str],
        record: Record, julie: Julie, portal: PortalBrowser) -> None:  # noqa: F811
    """By id, by search aimed at her, by open search and include, by writes, then through
    the portal: one test (one record built, one login) on each back-end, checks in order."""
    attempts = await by_id_they_look_missing(anonymous, as_patient, julie)
    attempts += await searches_aimed_at_her_answer_as_for_nobody(anonymous, as_patient,
                                                                 record, julie)
    attempts += await open_searches_hold_nothing_of_hers(anonymous, as_patient, julie)
    attempts += await her_resources_cannot_be_changed(anonymous, client, as_patient, record,
                                                      julie)
    attempts += await the_portal_opens_and_changes_nothing_of_hers(portal, client, record,
                                                                   julie)
    figures.add("access.idor_attempts", attempts)
    figures.add("access.idor_leaks", 0)  # every attempt above asserted no leak


async def the_portal_opens_and_changes_nothing_of_hers(
        portal: PortalBrowser, client: httpx.AsyncClient,  # noqa: F811
        record: Record, julie: Julie) -> int:
    """Marie's session with Julie's document, Binary and message ids in the portal's URLs."""
    document_id = record.documents["other"]
    attempts = 0
    for path in (f"/portal/documents/{document_id}/contenu",
                 f"/portal/documents/{document_id}/contenu?telecharger=true",
                 f"/portal/documents/{julie.ids['Binary'][0]}/contenu",
                 f"/portal/messages/{julie.ids['Communication'][0]}"):
        answer = await portal.http.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert [m for m in leaks(answer.text, julie) if m not in path] == [], path
        attempts += 1
    masked = await portal.submit(f"/documents/{document_id}/masquage", {"masquer": "oui"})
    assert masked.status_code == 404, masked.text
    attempts += 1
    stored = await client.get(f"/fhir/DocumentReference/{document_id}")
    assert stored.json()["meta"]["versionId"] == \
        julie.versions[f"DocumentReference/{document_id}"]
    for page in ("/portal/documents", "/portal/messages", "/portal/historique",
                 "/portal/historique?moi=oui", "/portal/confidentialite"):
        shown = await portal.http.get(page)
        assert shown.status_code == 200, page
        assert leaks(shown.text, julie) == [], page
        attempts += 1
    return attempts
