"""The Alembic migrations build exactly the schema the SQLModel tables describe."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from service.documents.samples import document_reference
from storage.db import Database, _alembic_config


async def test_migrated_schema_matches_the_table_models(database: Database) -> None:
    async with database.read() as conn:
        differences = await conn.run_sync(lambda sync: compare_metadata(
            MigrationContext.configure(sync, opts={"compare_type": True}), SQLModel.metadata))
    assert differences == []


async def test_postgresql_plans_searches_and_writes_for_their_values(database: Database) -> None:
    """A search's generic plan can pick the wrong index (2 s instead of 0.3 ms); a read by
    key has one good plan, and planning it again for each value costs more than running it."""
    if not database.is_postgresql:
        pytest.skip("a PostgreSQL planner setting")

    show = text("SHOW plan_cache_mode")
    async with database.query() as conn:
        assert (await conn.execute(show)).scalar_one() == "force_custom_plan"
    async with database.write() as conn:
        assert (await conn.execute(show)).scalar_one() == "force_custom_plan"
    async with database.read() as conn:
        assert (await conn.execute(show)).scalar_one() == "auto"


async def test_an_upgrade_labels_the_resources_stored_before_it(tmp_path: Path) -> None:
    """Patient data stored before the access policy must not become open to everyone."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'before-access.db'}")
    async with database.write() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0004"))
        document = document_reference("Patient/p1", security=("N", "MASQUE_PS"))
        rows = [("Patient", "p1", {"resourceType": "Patient"}),
                ("DocumentReference", "d1", document),
                ("Practitioner", "pr1", {"resourceType": "Practitioner"})]
        for resource_type, resource_id, content in rows:
            await conn.execute(text(
                "INSERT INTO resource (resource_type, resource_id, version_id, last_updated, "
                "deleted, content) VALUES (:t, :i, 1, 0, false, :c)"),
                {"t": resource_type, "i": resource_id, "c": orjson.dumps(content)})
    await database.migrate()
    async with database.read() as conn:
        found = {row[0]: tuple(row[1:]) for row in (await conn.execute(text(
            "SELECT resource_id, patient_id, category, masked FROM resource"))).all()}
        policies = (await conn.execute(text("SELECT patient_id FROM record_policy"))).all()
    await database.dispose()
    assert found == {"p1": ("p1", "identity", False),
                     "d1": ("p1", "consultation-report", True),
                     "pr1": (None, None, False)}
    assert [row[0] for row in policies] == ["p1"]
