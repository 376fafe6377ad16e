"""Every access to a record leaves an AuditEvent the patient reads; nobody rewrites them."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import update

from service.audit import AuditUnavailable
from storage.audit import AUDIT_LOG, verify_chains
from storage.db import Database
from tests.factories import FHIR_JSON, file_document
from tests.service.access.conftest import (
    DOCTOR,
    STRANGER,
    Record,
    as_professional,
    denial_rule,
)
from tests.tokens import Tokens


async def trail(anonymous: httpx.AsyncClient, headers: dict[str, str],
                **params: str) -> list[dict[str, Any]]:
    response = await anonymous.get("/fhir/AuditEvent", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def by(entries: list[dict[str, Any]], professional_rpps: str) -> list[dict[str, Any]]:
    return [e for e in entries
            if e["agent"][0]["who"]["identifier"]["value"] == "8" + professional_rpps]


async def test_the_patient_sees_who_read_what_and_who_was_refused(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    document = f"DocumentReference/{record.documents['lab']}"
    assert (await anonymous.get(f"/fhir/{document}",
                                headers=as_professional(tokens, DOCTOR))).status_code == 200
    assert (await anonymous.get(f"/fhir/{document}",
                                headers=as_professional(tokens, STRANGER))).status_code == 403
    found = await anonymous.get("/fhir/DocumentReference", params={
        "patient": record.patient_id, "type": "http://loinc.org|11502-2"},
        headers=as_professional(tokens, DOCTOR))
    assert found.json()["total"] == 1

    entries = await trail(anonymous, as_patient)
    read = next(e for e in by(entries, DOCTOR.rpps) if e["subtype"][0]["code"] == "read")
    assert read["outcome"] == "0" and read["action"] == "R"
    assert {"reference": document} in [e["what"] for e in read["entity"]]
    assert {"reference": f"Patient/{record.patient_id}"} in [e["what"] for e in read["entity"]]
    refused = by(entries, STRANGER.rpps)
    assert [e["outcome"] for e in refused] == ["4"]
    assert "[not-authorised]" in refused[0]["outcomeDesc"]
    search = next(e for e in by(entries, DOCTOR.rpps) if e["subtype"][0]["code"] ==
                  "search-type")
    query = next(e["query"] for e in search["entity"] if "query" in e)
    assert "11502-2" in base64.b64decode(query).decode()
    assert {"reference": document} in [e.get("what") for e in search["entity"]]


async def test_the_trail_filters_on_who_acted(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    """A patient's history without their own reads (the portal's), in the query itself."""
    document = f"/fhir/DocumentReference/{record.documents['lab']}"
    assert (await anonymous.get(document, headers=as_patient)).status_code == 200
    assert (await anonymous.get(document, headers=as_patient)).status_code == 200
    assert (await anonymous.get(document, headers=as_professional(tokens, DOCTOR))
            ).status_code == 200

    def kinds(entries: list[dict[str, Any]]) -> set[str]:
        return {e["agent"][0]["type"]["coding"][0]["code"] for e in entries}

    everyone = await trail(anonymous, as_patient, _count="500")
    assert {"PAT", "PROV"} <= kinds(everyone)
    others = await anonymous.get("/fhir/AuditEvent", headers=as_patient,
                                 params={"agent-kind:not": "patient", "_count": "2"})
    assert "PAT" not in kinds([e["resource"] for e in others.json()["entry"]])
    assert others.json()["total"] == len([e for e in everyone
                                          if e["agent"][0]["type"]["coding"][0]["code"]
                                          != "PAT"])
    following = next(link["url"] for link in others.json()["link"]
                     if link["relation"] == "next")
    assert "agent-kind%3Anot=patient" in following  # the filter holds on every page
    own = await trail(anonymous, as_patient, **{"agent-kind": "patient"})
    assert kinds(own) == {"PAT"} and len(own) >= 2
    assert await trail(anonymous, as_patient, **{"agent-kind": "nobody"}) == []
    twice = await anonymous.get("/fhir/AuditEvent", headers=as_patient, params=[
        ("agent-kind", "app"), ("agent-kind:not", "patient")])
    assert twice.status_code == 400


async def test_the_trail_is_the_patients_own(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        as_patient: dict[str, str]) -> None:
    doctor = as_professional(tokens, DOCTOR)
    assert (await anonymous.get(f"/fhir/DocumentReference/{record.documents['lab']}",
                                headers=doctor)).status_code == 200
    assert denial_rule(await anonymous.get("/fhir/AuditEvent", params={
        "patient": record.patient_id}, headers=doctor)) == "audit-trail-is-the-patients"
    assert denial_rule(await anonymous.get("/fhir/AuditEvent", params={
        "patient": record.other_patient_id}, headers=as_patient)) == "patient-own-record-only"
    mine = await trail(anonymous, as_patient, patient=record.patient_id)
    assert mine
    entry_id = mine[0]["id"]
    assert (await anonymous.get(f"/fhir/AuditEvent/{entry_id}",
                                headers=as_patient)).status_code == 200
    assert (await anonymous.get(f"/fhir/AuditEvent/{entry_id}",
                                headers=doctor)).status_code == 404


async def test_audit_entries_cannot_be_written_changed_or_deleted(
        client: httpx.AsyncClient, record: Record, as_patient: dict[str, str],
        anonymous: httpx.AsyncClient) -> None:
    entry = (await trail(anonymous, as_patient))[0]
    body = orjson.dumps(entry)
    assert (await client.post("/fhir/AuditEvent", content=body,
                              headers=FHIR_JSON)).status_code == 405
    assert (await client.put(f"/fhir/AuditEvent/{entry['id']}", content=body,
                             headers=FHIR_JSON)).status_code == 405
    assert (await client.delete(f"/fhir/AuditEvent/{entry['id']}")).status_code == 405
    assert (await client.patch(f"/fhir/AuditEvent/{entry['id']}", content=b"[]", headers={
        "Content-Type": "application/json-patch+json"})).status_code == 405
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": entry, "request": {"method": "PUT", "url": f"AuditEvent/{entry['id']}"}}]}
    assert (await client.post("/fhir", content=orjson.dumps(bundle),
                              headers=FHIR_JSON)).status_code == 405


async def test_a_write_is_audited_with_the_data_and_the_chain_verifies(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record, database: Database,
        as_patient: dict[str, str]) -> None:
    anonymous.headers.update(as_professional(tokens, DOCTOR))
    document = await file_document(anonymous, record.patient_id)
    del anonymous.headers["Authorization"]
    created = [e for e in by(await trail(anonymous, as_patient), DOCTOR.rpps)
               if e["action"] == "C"]
    assert {"reference": f"DocumentReference/{document['id']}"} in \
        [x["what"] for e in created for x in e["entity"]]
    async with database.read() as conn:
        report = await verify_chains(conn)
    assert report.problems == [] and report.entries > 0
    async with database.write() as conn:
        await conn.execute(update(AUDIT_LOG).where(AUDIT_LOG.c.seq == 2,
                                                   AUDIT_LOG.c.patient_id == record.patient_id)
                           .values(content=b'{"tampered": true}'))
    async with database.read() as conn:
        report = await verify_chains(conn)
    assert [(p.patient_id, p.seq) for p in report.problems] == [(record.patient_id, 2)]


async def test_no_answer_goes_out_without_its_audit_entry(
        anonymous: httpx.AsyncClient, tokens: Tokens, record: Record,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def unavailable(self: Any, records: Any) -> None:
        raise AuditUnavailable("the audit database is down")

    async def down(conn: Any, records: Any) -> None:
        raise OSError("the audit database is down")

    # The group-commit writer under a served app; the direct write where no lifespan runs.
    monkeypatch.setattr("service.audit.AuditWriter.record", unavailable)
    monkeypatch.setattr("service.access.record_in", down)
    response = await anonymous.get(f"/fhir/DocumentReference/{record.documents['lab']}",
                                   headers=as_professional(tokens, DOCTOR))
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Binary" not in response.text and "11502-2" not in response.text
