"""The audit log: per-patient hash chains, their verification, concurrent appends."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from storage import audit
from storage.audit import AUDIT_CHAIN, AUDIT_LOG, GENESIS, AuditEntry, link_hash
from storage.db import Database


def entry(patient_id: str, n: int, recorded: int | None = None) -> AuditEntry:
    return AuditEntry(event_id=f"{patient_id}-{n}", patient_id=patient_id,
                      recorded=1_700_000_000_000_000 + n if recorded is None else recorded,
                      agent="idnat:810000000001", outcome="0",
                      content=b'{"resourceType":"AuditEvent","n":%d}' % n)


async def chain_of(database: Database, patient_id: str) -> list[tuple[int, str, str]]:
    async with database.read() as conn:
        rows = (await conn.execute(
            select(AUDIT_LOG.c.seq, AUDIT_LOG.c.prev_hash, AUDIT_LOG.c.hash)
            .where(AUDIT_LOG.c.patient_id == patient_id).order_by(AUDIT_LOG.c.seq))).all()
    return [(seq, prev, linked) for seq, prev, linked in rows]


async def fill(database: Database) -> list[int]:
    """p1: five entries, p2: three, appended in two mixed batches."""
    async with database.write() as conn:
        first = await audit.append(conn, [entry("p2", 1), entry("p1", 1), entry("p1", 2),
                                          entry("p2", 2)])
    async with database.write() as conn:
        second = await audit.append(conn, [entry("p1", 3), entry("p1", 4), entry("p2", 3),
                                           entry("p1", 5)])
    return [*first, *second]


async def verify(database: Database) -> audit.VerifyReport:
    async with database.read() as conn:
        return await audit.verify_chains(conn)


def test_link_hash_is_the_documented_formula() -> None:
    expected = hashlib.sha256(b"0" * 64 + b"\np1\n1\n42\n{}").hexdigest()
    assert link_hash(GENESIS, "p1", 1, 42, b"{}") == expected
    assert link_hash(GENESIS, "p1", 2, 42, b"{}") != expected


async def test_append_chains_each_patient_and_returns_keys_in_input_order(
        database: Database) -> None:
    pks = await fill(database)
    assert len(set(pks)) == 8
    async with database.read() as conn:
        for pk, (patient, n) in zip(pks, [("p2", 1), ("p1", 1), ("p1", 2), ("p2", 2),
                                          ("p1", 3), ("p1", 4), ("p2", 3), ("p1", 5)],
                                    strict=True):
            assert await audit.entry_by_pk(conn, pk) == (patient, entry(patient, n).content)
        assert await audit.entry_by_event_id(conn, "p1-4") == ("p1", entry("p1", 4).content)
        assert await audit.entry_by_event_id(conn, "nope") is None
        heads = dict((await conn.execute(select(AUDIT_CHAIN.c.patient_id,
                                                AUDIT_CHAIN.c.head))).all())
    for patient, length in (("p1", 5), ("p2", 3)):
        chain = await chain_of(database, patient)
        assert [seq for seq, _, _ in chain] == list(range(1, length + 1))
        prev = GENESIS
        for seq, prev_hash, linked in chain:
            assert prev_hash == prev
            assert linked == link_hash(prev, patient, seq, entry(patient, seq).recorded,
                                       entry(patient, seq).content)
            prev = linked
        assert heads[patient] == prev
    report = await verify(database)
    assert (report.entries, report.patients, report.problems) == (8, 2, [])
    assert report.ok
    async with database.write() as conn:
        assert await audit.append(conn, []) == []


async def test_event_ids_are_unique(database: Database) -> None:
    await fill(database)
    with pytest.raises(IntegrityError):
        async with database.write() as conn:
            await audit.append(conn, [entry("p1", 1)])  # same event id as before
    assert len(await chain_of(database, "p1")) == 5  # rolled back whole


async def test_patient_entries_newest_first_with_filters_and_cursor(database: Database) -> None:
    async with database.write() as conn:
        pks = await audit.append(conn, [entry("p1", n, recorded=n * 10) for n in range(1, 8)]
                                 + [entry("p2", 1, recorded=30)])
    async with database.read() as conn:
        page = await audit.patient_entries(conn, "p1", limit=3)
        assert [e.event_id for e in page] == ["p1-7", "p1-6", "p1-5"]
        assert page[0].pk == pks[6] and page[0].content == entry("p1", 7).content
        rest = await audit.patient_entries(conn, "p1", before_pk=page[-1].pk, limit=10)
        assert [e.event_id for e in rest] == ["p1-4", "p1-3", "p1-2", "p1-1"]
        window = await audit.patient_entries(conn, "p1", since=20, until=50, limit=10)
        assert [e.event_id for e in window] == ["p1-4", "p1-3", "p1-2"]
        assert await audit.count_patient_entries(conn, "p1", since=20, until=50) == 3
        assert await audit.count_patient_entries(conn, "p1") == 7
        assert await audit.count_patient_entries(conn, "p3") == 0


async def test_a_clean_trail_verifies_and_an_empty_one_too(database: Database) -> None:
    assert (await verify(database)).problems == []
    await fill(database)
    assert (await verify(database)).ok


async def test_altered_content_is_reported_at_its_seq(database: Database) -> None:
    await fill(database)
    async with database.write() as conn:
        await conn.execute(text("UPDATE audit_log SET content = :c "
                                "WHERE patient_id = 'p1' AND seq = 3"), {"c": b'{"n":0}'})
    report = await verify(database)
    assert [(p.patient_id, p.seq) for p in report.problems] == [("p1", 3)]
    assert "hash mismatch" in report.problems[0].problem
    assert report.entries == 8  # the rest is still read


async def test_a_rewritten_hash_breaks_the_next_link(database: Database) -> None:
    await fill(database)
    async with database.write() as conn:
        row = (await conn.execute(select(AUDIT_LOG.c.prev_hash, AUDIT_LOG.c.recorded)
                                  .where(AUDIT_LOG.c.patient_id == "p1",
                                         AUDIT_LOG.c.seq == 2))).one()
        forged = link_hash(row.prev_hash, "p1", 2, row.recorded, b"{}")
        await conn.execute(text("UPDATE audit_log SET content = :c, hash = :h "
                                "WHERE patient_id = 'p1' AND seq = 2"), {"c": b"{}", "h": forged})
    report = await verify(database)
    assert [(p.patient_id, p.seq) for p in report.problems] == [("p1", 3)]
    assert "prev_hash mismatch" in report.problems[0].problem


async def test_a_deleted_middle_entry_is_a_gap(database: Database) -> None:
    await fill(database)
    async with database.write() as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE patient_id = 'p2' AND seq = 2"))
    report = await verify(database)
    assert [(p.patient_id, p.seq) for p in report.problems] == [("p2", 2)]
    assert "gap" in report.problems[0].problem


async def test_a_deleted_newest_entry_is_a_truncation(database: Database) -> None:
    await fill(database)
    async with database.write() as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE patient_id = 'p1' AND seq = 5"))
    report = await verify(database)
    assert [(p.patient_id, p.seq) for p in report.problems] == [("p1", 5)]
    assert "truncated" in report.problems[0].problem


async def test_a_whole_deleted_chain_and_a_moved_head_are_reported(database: Database) -> None:
    await fill(database)
    async with database.write() as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE patient_id = 'p2'"))
        await conn.execute(text("UPDATE audit_chain SET head = :h WHERE patient_id = 'p1'"),
                           {"h": "f" * 64})
    report = await verify(database)
    assert sorted((p.patient_id, p.seq) for p in report.problems) == [("p1", 5), ("p2", 1)]
    problems = {p.patient_id: p.problem for p in report.problems}
    assert "head mismatch" in problems["p1"] and "truncated" in problems["p2"]


async def test_entries_without_a_chain_row_are_reported(database: Database) -> None:
    await fill(database)
    async with database.write() as conn:
        await conn.execute(text("DELETE FROM audit_chain WHERE patient_id = 'p2'"))
    report = await verify(database)
    assert [(p.patient_id, p.seq) for p in report.problems] == [("p2", 1)]


async def test_verify_pages_through_many_patients_and_entries(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "_CHAIN_PAGE", 3)
    monkeypatch.setattr(audit, "_LOG_PAGE", 4)
    async with database.write() as conn:
        await audit.append(conn, [entry(f"q{p}", n) for p in range(7) for n in range(1, 6)])
        await conn.execute(text("DELETE FROM audit_log WHERE patient_id = 'q4' AND seq = 3"))
    report = await verify(database)
    assert (report.entries, report.patients) == (34, 7)
    assert [(p.patient_id, p.seq) for p in report.problems] == [("q4", 3)]


async def test_concurrent_appends_for_one_patient_make_a_gapless_chain(
        database: Database) -> None:
    async def one(n: int) -> None:
        async with database.write() as conn:
            # Several patients, listed in varying orders: locks are still taken sorted.
            batch = [entry("shared", n * 10 + k) for k in range(3)]
            batch += [entry(f"other{(n + k) % 4}", n * 10 + k) for k in range(2)]
            await audit.append(conn, batch[::-1] if n % 2 else batch)

    await asyncio.gather(*(one(n) for n in range(20)))
    chain = await chain_of(database, "shared")
    assert [seq for seq, _, _ in chain] == list(range(1, 61))
    report = await verify(database)
    assert report.problems == []
    assert report.entries == 100
