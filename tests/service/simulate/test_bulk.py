"""The bulk path (service/simulate/bulk.py) on both databases: what it stores is what any
ITI-65 filing stores (searchable, registered, with its events), stages add without
collision, and loading a stage again files nothing new."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from service.simulate import bulk, corpus
from storage import directory
from storage.blobs import BlobStore, open_blob_store
from storage.db import Database
from storage.documents import filed_document_by_id
from storage.outbox import OUTBOX

PROFESSIONALS = 30  # enough for every document kind (corpus.directory: 9 roles first)


@pytest.fixture
async def blobs(settings: Any) -> AsyncIterator[BlobStore]:
    """The store of the app the ``client`` fixture serves (the same data directory)."""
    store = open_blob_store(None, Path(settings.data_dir))
    yield store
    await store.close()


async def load(database: Database, blobs: BlobStore, first: int, patients: int,
               **options: Any) -> bulk.LoadStats:
    return await bulk.bulk_load(database, blobs, first_patient=first, patients=patients,
                                professionals=PROFESSIONALS, seed=5,
                                **{"documents_per_patient": 3, "tasks": 2, "generators": 0,
                                   **options})


async def total(client: httpx.AsyncClient, resource_type: str, **params: str) -> int:
    r = await client.get(f"/fhir/{resource_type}", params={"_summary": "count", **params})
    assert r.status_code == 200, r.text
    count: int = r.json()["total"]
    return count


async def patient_ids(client: httpx.AsyncClient) -> dict[str, str]:
    """INS -> Patient id of every stored Patient."""
    r = await client.get("/fhir/Patient", params={"_count": "100"})
    assert r.status_code == 200, r.text
    return {next(i["value"] for i in e["resource"]["identifier"]
                 if i["system"] == corpus.INS_NIR_TEST): e["resource"]["id"]
            for e in r.json().get("entry", [])}


async def events(database: Database) -> tuple[int, int]:
    """(outbox events, of which not fanned out yet)."""
    async with database.read() as conn:
        every = (await conn.execute(select(func.count()).select_from(OUTBOX))).scalar_one()
        waiting = (await conn.execute(select(func.count()).select_from(OUTBOX).where(
            OUTBOX.c.fanned_out == False))).scalar_one()  # noqa: E712
    return every, waiting


async def test_a_small_load_files_every_document_as_an_iti65_would(
        database: Database, blobs: BlobStore, client: httpx.AsyncClient) -> None:
    seen: list[tuple[int, int]] = []
    stats = await load(database, blobs, 0, 5, progress=lambda d, t: seen.append((d, t)),
                       generators=1)  # drawn in a worker process, as a real load does
    assert (stats.patients, stats.documents) == (5, 15)
    assert stats.documents_per_second > 0
    assert seen[-1] == (15, 15) and len(seen) == 5

    assert await total(client, "Patient") == 5
    assert await total(client, "DocumentReference") == 15
    assert await total(client, "List", code="submissionset") == 5
    ids = await patient_ids(client)
    people = {p.idnat for p in bulk.professionals_of(5, PROFESSIONALS)}
    async with database.read() as conn:
        for index in range(5):  # the INSi mock knows each patient, under the same NIR
            assert await directory.identity_by_nir(
                conn, bulk.plan_patient(5, index, 3, PROFESSIONALS, 64_000).identity.nir)
        for person in bulk.professionals_of(5, PROFESSIONALS):
            assert await directory.professional_by_rpps(conn, person.rpps)
    for ins, patient_id in ids.items():
        r = await client.get(f"/fhir/Patient/{patient_id}")
        doctor = r.json()["generalPractitioner"][0]["identifier"]
        assert doctor["value"] in people, ins  # the attending doctor, by idNat_PS
        r = await client.get("/fhir/DocumentReference", params={"patient": patient_id})
        documents = [e["resource"] for e in r.json()["entry"]]
        assert len(documents) == 3
        for document in documents:
            assert document["subject"]["reference"] == f"Patient/{patient_id}"
            async with database.read() as conn:  # the registry knows it
                filed = await filed_document_by_id(conn, document["id"])
            assert filed is not None and filed.patient_id == patient_id
            binary = document["content"][0]["attachment"]["url"].rsplit("Binary/", 1)[1]
            r = await client.get(f"/fhir/Binary/{binary}", headers={"Accept": "*/*"})
            assert r.status_code == 200
            assert len(r.content) == document["content"][0]["attachment"]["size"] <= 64_000
    # Searches by what the documents say work as for any filing (indexed).
    kinds = {kind.loinc for kind in corpus.KINDS}
    by_type = [await total(client, "DocumentReference", type=f"http://loinc.org|{code}")
               for code in kinds]
    assert sum(by_type) == 15
    # A back-fill: every document's event is kept, none is left to fan out.
    assert await events(database) == (15, 0)


async def test_stages_add_without_collision(database: Database, blobs: BlobStore,
                                            client: httpx.AsyncClient) -> None:
    await load(database, blobs, 0, 5)
    before = await patient_ids(client)
    stats = await load(database, blobs, 5, 4)
    assert (stats.patients, stats.documents) == (4, 12)
    after = await patient_ids(client)
    assert len(after) == 9 and {k: after[k] for k in before} == before
    assert await total(client, "DocumentReference") == 27
    assert await events(database) == (27, 0)


async def test_loading_a_stage_again_files_nothing_new(database: Database, blobs: BlobStore,
                                                       client: httpx.AsyncClient) -> None:
    await load(database, blobs, 0, 4)
    ids = await patient_ids(client)
    again = await load(database, blobs, 0, 4, tasks=1)  # the registry answers each re-send
    assert (again.patients, again.documents) == (4, 12)
    assert await patient_ids(client) == ids
    assert await total(client, "DocumentReference") == 12
    assert await total(client, "List", code="submissionset") == 4
    assert await events(database) == (12, 0)
    # An overlapping stage adds only the patients it did not hold.
    await load(database, blobs, 2, 4)
    assert len(await patient_ids(client)) == 6
    assert await total(client, "DocumentReference") == 18


async def test_filing_processes_load_the_same_corpus(database: Database, blobs: BlobStore,
                                                     client: httpx.AsyncClient) -> None:
    """PostgreSQL: forked filing processes, each with its own connections (SQLite: one)."""
    seen: list[int] = []
    stats = await load(database, blobs, 0, 2 * bulk.CHUNK + 3, documents_per_patient=1,
                       processes=2, progress=lambda d, _t: seen.append(d))
    assert (stats.patients, stats.documents) == (103, 103) and seen[-1] == 103
    assert await total(client, "Patient") == 103
    assert await total(client, "DocumentReference") == 103
    assert await events(database) == (103, 0)


async def test_notify_leaves_the_events_to_the_dispatcher(database: Database,
                                                          blobs: BlobStore) -> None:
    await load(database, blobs, 0, 2, notify=True)
    assert await events(database) == (6, 6)


def test_a_patient_is_drawn_from_the_seed_and_the_index_alone() -> None:
    one = bulk.plan_patient(3, 42, 4, PROFESSIONALS, 16_000)
    assert one == bulk.plan_patient(3, 42, 4, PROFESSIONALS, 16_000)
    assert one.identity.nir != bulk.plan_patient(3, 43, 4, PROFESSIONALS, 16_000).identity.nir
    entries = [e["resource"] for e in one.bundle["entry"]]
    assert [r["resourceType"] for r in entries].count("DocumentReference") == 4
    submission_set = entries[0]
    assert len(submission_set["entry"]) == 4  # one SubmissionSet lists every document
