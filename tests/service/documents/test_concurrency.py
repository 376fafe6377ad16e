"""Concurrent filings: one document per masterIdentifier, one current version per chain."""

from __future__ import annotations

import asyncio

import httpx

from service.documents.samples import document_bundle
from tests.factories import file_document
from tests.reliability import figures
from tests.service.documents.conftest import count, provide


async def test_concurrent_resends_file_one_document(client: httpx.AsyncClient,
                                                    patient_id: str) -> None:
    bundle = document_bundle(f"Patient/{patient_id}")
    answers = await asyncio.gather(*(provide(client, bundle) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    locations = {tuple(e["response"]["location"] for e in a.json()["entry"]) for a in answers}
    assert len(locations) == 1
    assert await count(client, "DocumentReference") == 1
    figures.add("concurrency.racing_requests", len(answers))
    figures.add("concurrency.duplicates", 0)


async def test_concurrent_replacements_leave_one_current_version(
        client: httpx.AsyncClient, patient_id: str) -> None:
    first = await file_document(client, patient_id)
    replacements = [document_bundle(f"Patient/{patient_id}",
                                    replaces=f"DocumentReference/{first['id']}",
                                    content=f"%PDF-1.4 version {i}".encode()) for i in range(5)]
    answers = await asyncio.gather(*(provide(client, b) for b in replacements))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409, 409, 409, 409]
    current = await client.get("/fhir/DocumentReference",
                               params={"patient": patient_id, "status": "current"})
    assert current.json()["total"] == 1
    figures.add("concurrency.racing_requests", len(answers))
    figures.add("concurrency.extra_current_versions", 0)
