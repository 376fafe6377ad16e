"""Repository functions: versions, logical delete and index rows in one transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from storage import resources as repo
from storage.db import Database, head_revision
from storage.errors import DuplicateResource, VersionConflict
from storage.tables import INDEX_TABLES, RESOURCES, TOKENS, VERSIONS


def patient(resource_id: str, family: str) -> dict:
    return {"resourceType": "Patient", "id": resource_id, "name": [{"family": family}],
            "identifier": [{"system": "urn:x", "value": resource_id}]}


async def row_counts(database: Database) -> dict[str, int]:
    async with database.read() as conn:
        counts = {}
        for table in (RESOURCES, VERSIONS, *INDEX_TABLES):
            counts[table.name] = (await conn.execute(
                select(func.count()).select_from(table))).scalar_one()
        return counts


async def test_insert_writes_resource_version_and_index_rows(database: Database) -> None:
    async with database.write() as conn:
        await repo.insert_resource(conn, patient("a", "Dupont"), b"{}", last_updated=1,
                                   method="POST")
    counts = await row_counts(database)
    assert counts["resource"] == 1
    assert counts["resource_version"] == 1
    assert counts["token_index"] == 1
    assert counts["string_index"] == 2  # the family name, under "name" and "family"


async def test_a_failed_transaction_leaves_nothing_behind(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.write() as conn:
            await repo.insert_resource(conn, patient("a", "Dupont"), b"{}", last_updated=1,
                                       method="POST")
            raise RuntimeError("the request failed after the insert")
    assert set((await row_counts(database)).values()) == {0}


async def test_duplicate_id_is_reported_without_breaking_the_transaction(
        database: Database) -> None:
    async with database.write() as conn:
        await repo.insert_resource(conn, patient("a", "Un"), b"{}", last_updated=1, method="PUT")
        with pytest.raises(DuplicateResource):
            await repo.insert_resource(conn, patient("a", "Deux"), b"{}", last_updated=2,
                                       method="PUT")
        await repo.insert_resource(conn, patient("b", "Trois"), b"{}", last_updated=3,
                                   method="PUT")
    assert (await row_counts(database))["resource"] == 2


async def test_replace_rewrites_the_index_rows(database: Database) -> None:
    async with database.write() as conn:
        await repo.insert_resource(conn, patient("a", "Avant"), b"{}", last_updated=1,
                                   method="POST")
    async with database.write() as conn:
        existing = await repo.current_version(conn, "Patient", "a", for_update=True)
        assert existing is not None
        changed = {**patient("a", "Apres"), "identifier": [{"system": "urn:x", "value": "new"}]}
        await repo.replace_resource(conn, existing, changed, b"{}", version_id=2,
                                    last_updated=2, method="PUT")
    async with database.read() as conn:
        codes = (await conn.execute(select(TOKENS.c.code))).scalars().all()
    assert codes == ["new"]
    assert (await row_counts(database))["resource_version"] == 2


async def test_replace_of_a_moved_version_is_a_conflict(database: Database) -> None:
    async with database.write() as conn:
        await repo.insert_resource(conn, patient("a", "Un"), b"{}", last_updated=1, method="POST")
        stale = await repo.current_version(conn, "Patient", "a")
        assert stale is not None
        await repo.replace_resource(conn, stale, patient("a", "Deux"), b"{}", version_id=2,
                                    last_updated=2, method="PUT")
        with pytest.raises(VersionConflict):
            await repo.replace_resource(conn, stale, patient("a", "Trois"), b"{}",
                                        version_id=2, last_updated=3, method="PUT")


async def test_mark_deleted_keeps_history_and_drops_indexes(database: Database) -> None:
    async with database.write() as conn:
        await repo.insert_resource(conn, patient("a", "Un"), b'{"v":1}', last_updated=1,
                                   method="POST")
        existing = await repo.current_version(conn, "Patient", "a")
        assert existing is not None
        assert await repo.mark_deleted(conn, existing, last_updated=2) == 2
    async with database.read() as conn:
        current = await repo.current_version(conn, "Patient", "a")
        first = await repo.specific_version(conn, "Patient", "a", 1)
        second = await repo.specific_version(conn, "Patient", "a", 2)
    assert current is not None and current.deleted and current.content is None
    assert first is not None and first.content == b'{"v":1}'
    assert second is not None and second.method == "DELETE" and second.content is None
    counts = await row_counts(database)
    assert counts["token_index"] == counts["string_index"] == 0


async def test_migrations_are_at_head_and_can_run_again(database: Database) -> None:
    assert await database.current_revision() == head_revision()
    await database.migrate()
    assert await database.current_revision() == head_revision()


async def test_fresh_database_is_migrated_from_scratch(tmp_path) -> None:
    fresh = Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert await fresh.current_revision() is None
        await fresh.migrate()
        assert await fresh.current_revision() == head_revision()
    finally:
        await fresh.dispose()


async def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        Database("mysql+aiomysql://x/y")
