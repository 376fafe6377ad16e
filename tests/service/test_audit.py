"""AuditEvents: their FHIR form, group commit of reads, the patient's trail, the CLI check."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from fhir_profiles.structure import validate_structure
from service.audit import (
    AuditRecord,
    AuditUnavailable,
    AuditWriter,
    audit_event,
    audit_search,
    read_audit_event,
    record_in,
)
from service.cli import main
from service.errors import BadRequest
from storage import audit as storage_audit
from storage.audit import AUDIT_LOG
from storage.db import Database

BASE = "http://carnet.test/fhir"
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def read(patient_id: str = "pat1", n: int = 0, **changes: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "patient_id": patient_id, "interaction": "read", "action": "R", "outcome": "0",
        "agent_kind": "professional", "agent_id": "810000000001",
        "agent_name": "Claire MARTIN", "entities": (f"DocumentReference/d{n}",),
        "recorded": T0 + n * 1_000_000}
    return AuditRecord(**{**values, **changes})


async def stored_count(database: Database) -> int:
    async with database.read() as conn:
        count: int = (await conn.execute(select(func.count()).select_from(AUDIT_LOG))).scalar_one()
    return count


# -- the AuditEvent ---------------------------------------------------------------


@pytest.mark.parametrize("record", [
    read(),
    read(agent_kind="patient", agent_id="253072A07300443", agent_name=None, entities=()),
    read(interaction="search-type", entities=("DocumentReference/a", "DocumentReference/b"),
         query="patient=pat1&_count=10", agent_kind="app", agent_id="demo-app",
         agent_name=None),
    read(outcome="4", rule="not-in-care-team", access_mode="bris_de_glace",
         reason="unconscious patient in the emergency room", agent_kind="system",
         agent_id="batch"),
    read(interaction="create", action="C", access_mode="centre_15"),
])
def test_the_audit_event_is_a_valid_canonical_r4_resource(record: AuditRecord) -> None:
    # Validation writes a whole second without its fraction: keep one, to compare as is.
    event = audit_event(replace(record, recorded=T0 + 123_456), "e-1")
    canonical = validate_structure(orjson.loads(orjson.dumps(event)))
    assert canonical == event
    assert orjson.dumps(canonical) == orjson.dumps(event)  # same element order too
    assert event["id"] == "e-1"
    assert event["recorded"] == event["meta"]["lastUpdated"] == "2026-01-01T00:00:00.123456Z"
    assert event["subtype"][0]["code"] == record.interaction
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == record.access_mode
    patient = [e for e in event["entity"] if e.get("role", {}).get("code") == "1"]
    assert patient == [{"what": {"reference": f"Patient/{record.patient_id}"},
                        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                                 "code": "1", "display": "Patient"}}]


def test_the_audit_event_says_who_why_and_what() -> None:
    event = audit_event(read(outcome="4", rule="no-consent", access_mode="bris_de_glace",
                             reason="coma", interaction="search-type",
                             query="patient=pat1&type=x"))
    assert event["id"]  # a fresh UUID
    assert event["outcomeDesc"] == "access denied [no-consent]"
    assert event["purposeOfEvent"] == [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.248",
                                                    "code": "bris_de_glace"}], "text": "coma"}]
    agent = event["agent"][0]
    assert agent["who"] == {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1",
                                           "value": "810000000001"},
                            "display": "Claire MARTIN"}
    assert agent["type"]["coding"][0]["code"] == "PROV" and agent["requestor"] is True
    query = [e for e in event["entity"] if e.get("role", {}).get("code") == "24"]
    assert base64.b64decode(query[0]["query"]) == b"patient=pat1&type=x"
    assert event["entity"][0] == {"what": {"reference": "DocumentReference/d0"}}
    plain = audit_event(read())
    assert "outcomeDesc" not in plain and "text" not in plain["purposeOfEvent"][0]
    assert audit_event(read(agent_kind="patient"))["agent"][0]["who"]["identifier"]["system"] \
        == "urn:oid:1.2.250.1.213.1.4.8"


# -- writes: in the caller's transaction ---------------------------------------------


async def test_record_in_commits_and_rolls_back_with_the_caller(database: Database) -> None:
    async with database.write() as conn:
        await record_in(conn, [read(n=1), read(n=2)])
    with pytest.raises(RuntimeError):
        async with database.write() as conn:
            await record_in(conn, [read(n=3)])
            raise RuntimeError("the write failed")
    assert await stored_count(database) == 2


# -- reads: group commit -----------------------------------------------------------


def count_transactions(database: Database, monkeypatch: pytest.MonkeyPatch,
                       fail: bool = False) -> list[int]:
    """Wrap ``database.write``: one item per transaction; ``fail`` rolls each one back."""
    opened: list[int] = []
    real_write = database.write

    @asynccontextmanager
    async def write() -> AsyncIterator[AsyncConnection]:
        opened.append(1)
        async with real_write() as conn:
            yield conn
            if fail:  # after the entries were inserted: the rollback must undo them
                assert await stored_count_in(conn) > 0
                raise OSError("the disk is full")

    monkeypatch.setattr(database, "write", write)
    return opened


async def stored_count_in(conn: AsyncConnection) -> int:
    count: int = (await conn.execute(select(func.count()).select_from(AUDIT_LOG))).scalar_one()
    return count


async def test_concurrent_records_are_group_committed(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = count_transactions(database, monkeypatch)
    writer = AuditWriter(database, max_batch=64)
    await writer.start()
    try:
        await writer.record([read(n=0)])  # a lone read is written at once
        assert len(opened) == 1
        await asyncio.gather(*(writer.record([read(f"pat{n % 7}", n)]) for n in range(200)))
        await writer.record([])
    finally:
        await writer.stop()
    assert await stored_count(database) == 201
    transactions = len(opened) - 1
    assert 200 / 64 <= transactions < 20  # batches of up to 64, far fewer than 200
    async with database.read() as conn:
        report = await storage_audit.verify_chains(conn)
    assert report.ok and report.patients == 7


async def test_a_failed_write_fails_every_waiting_caller_and_stores_nothing(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    count_transactions(database, monkeypatch, fail=True)
    writer = AuditWriter(database)
    await writer.start()
    try:
        results = await asyncio.gather(*(writer.record([read(n=n)]) for n in range(20)),
                                       return_exceptions=True)
    finally:
        await writer.stop()
    assert all(isinstance(r, AuditUnavailable) and isinstance(r.__cause__, OSError)
               for r in results), results
    monkeypatch.undo()
    assert await stored_count(database) == 0


async def test_the_writer_recovers_after_a_failed_batch(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    real_append = storage_audit.append
    failures = [True]

    async def flaky_append(conn: AsyncConnection, entries: Any) -> list[int]:
        if failures.pop() if failures else False:
            raise ConnectionError("connection reset")
        return await real_append(conn, entries)

    monkeypatch.setattr(storage_audit, "append", flaky_append)
    writer = AuditWriter(database)
    await writer.start()
    try:
        with pytest.raises(AuditUnavailable):
            await writer.record([read(n=1)])
        await writer.record([read(n=2)])
    finally:
        await writer.stop()
    assert await stored_count(database) == 1


async def test_stop_flushes_what_is_queued_then_refuses(database: Database) -> None:
    writer = AuditWriter(database, max_batch=4)
    await writer.start()
    pending = [asyncio.create_task(writer.record([read(n=n), read("pat2", n)]))
               for n in range(10)]
    await asyncio.sleep(0)  # every call is queued, none written yet
    await writer.stop()
    assert all(task.done() and task.exception() is None for task in pending)
    assert await stored_count(database) == 20
    with pytest.raises(AuditUnavailable):
        await writer.record([read(n=99)])
    await writer.stop()  # twice is harmless


async def test_record_before_start_is_refused(database: Database) -> None:
    with pytest.raises(AuditUnavailable):
        await AuditWriter(database).record([read()])


# -- the patient's trail -------------------------------------------------------------


async def search(database: Database, pairs: list[tuple[str, str]],
                 patient_id: str = "pat1") -> dict[str, Any]:
    async with database.read() as conn:
        found: dict[str, Any] = orjson.loads(await audit_search(
            conn, patient_id, pairs, base=BASE, default_count=4, max_count=5))
    return found


def next_pairs(page: dict[str, Any]) -> list[tuple[str, str]] | None:
    links = {link["relation"]: link["url"] for link in page.get("link", [])}
    return parse_qsl(urlsplit(links["next"]).query) if "next" in links else None


async def test_the_trail_pages_newest_first(database: Database) -> None:
    async with database.write() as conn:
        await record_in(conn, [read(n=n) for n in range(10)] + [read("pat2", 50)])
    seen: list[str] = []
    pairs: list[tuple[str, str]] | None = [("patient", "pat1")]
    pages = 0
    while pairs is not None:
        page = await search(database, pairs)
        assert page["type"] == "searchset" and page["total"] == 10
        for e in page.get("entry", []):
            assert e["fullUrl"] == f"{BASE}/AuditEvent/{e['resource']['id']}"
            seen.append(e["resource"]["entity"][0]["what"]["reference"])
        pairs, pages = next_pairs(page), pages + 1
    assert seen == [f"DocumentReference/d{n}" for n in range(9, -1, -1)]
    assert pages == 3  # 4 + 4 + 2
    capped = await search(database, [("_count", "50"), ("_total", "none")])
    assert len(capped["entry"]) == 5 and "total" not in capped
    empty = await search(database, [("_count", "0")])
    assert empty["total"] == 10 and "entry" not in empty and next_pairs(empty) is None
    async with database.read() as conn:
        event_id = capped["entry"][0]["resource"]["id"]
        found = await read_audit_event(conn, event_id)
        assert found is not None and found[0] == "pat1"
        assert orjson.loads(found[1]) == capped["entry"][0]["resource"]
        assert await read_audit_event(conn, "unknown") is None


@pytest.mark.parametrize("dates, expected", [
    (["ge2026-01-01T00:00:03Z"], [9, 8, 7, 6, 5, 4, 3]),
    (["gt2026-01-01T00:00:03Z"], [9, 8, 7, 6, 5, 4]),  # a second's precision: 3.x excluded
    (["lt2026-01-01T00:00:03Z"], [2, 1, 0]),
    (["le2026-01-01T00:00:03Z"], [3, 2, 1, 0]),
    (["ge2026-01-01T00:00:02Z", "lt2026-01-01T00:00:05Z"], [4, 3, 2]),
    (["2026-01-01T00:00:07Z"], [7]),
    (["eq2026-01-01"], list(range(9, -1, -1))),
    (["ge2026-01-02"], []),
])
async def test_the_trail_filters_on_date(database: Database, dates: list[str],
                                         expected: list[int]) -> None:
    async with database.write() as conn:
        await record_in(conn, [read(n=n) for n in range(10)])
    page = await search(database, [("date", d) for d in dates] + [("_count", "20")])
    # max_count 5 caps the page; the total counts every match
    assert page["total"] == len(expected)
    refs = [e["resource"]["entity"][0]["what"]["reference"] for e in page.get("entry", [])]
    assert refs == [f"DocumentReference/d{n}" for n in expected[:5]]


@pytest.mark.parametrize("pairs, parameter", [
    ([("code", "x")], "code"),
    ([("date", "sa2026")], "date"),
    ([("date", "ge2026-13")], "date"),
    ([("_count", "-1")], "_count"),
    ([("_total", "always")], "_total"),
    ([("_cursor", "not-a-cursor")], "_cursor"),
])
async def test_bad_trail_searches_are_refused(database: Database,
                                              pairs: list[tuple[str, str]],
                                              parameter: str) -> None:
    with pytest.raises(BadRequest) as refused:
        await search(database, pairs)
    assert refused.value.issues[0].expression == [parameter]


# -- carnet audit verify -------------------------------------------------------------


async def run_verify(database: Database, tmp_path: Path) -> Result:
    env = {"CARNET_DATA_DIR": str(tmp_path), "CARNET_DATABASE_URL": database.url}
    return await asyncio.to_thread(CliRunner().invoke, main, ["audit", "verify"], env=env)


async def test_audit_verify_exits_1_once_the_trail_was_tampered_with(
        database: Database, tmp_path: Path) -> None:
    async with database.write() as conn:
        await record_in(conn, [read(n=n) for n in range(3)] + [read("pat2", 1)])
    clean = await run_verify(database, tmp_path)
    assert clean.exit_code == 0, clean.output
    assert "checked 4 audit entries of 2 patient(s)" in clean.output
    async with database.write() as conn:
        await conn.execute(text("UPDATE audit_log SET outcome = '4', content = :c "
                                "WHERE patient_id = 'pat1' AND seq = 2"), {"c": b"{}"})
    tampered = await run_verify(database, tmp_path)
    assert tampered.exit_code == 1, tampered.output
    assert "patient pat1 seq 2: hash mismatch" in tampered.output
