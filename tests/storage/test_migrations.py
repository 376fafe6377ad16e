"""The Alembic migrations build exactly the schema the SQLModel tables describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from storage.db import Database


async def test_migrated_schema_matches_the_table_models(database: Database) -> None:
    async with database.read() as conn:
        differences = await conn.run_sync(lambda sync: compare_metadata(
            MigrationContext.configure(sync, opts={"compare_type": True}), SQLModel.metadata))
    assert differences == []


async def test_postgresql_plans_each_statement_for_its_values(database: Database) -> None:
    if not database.is_postgresql:
        pytest.skip("a PostgreSQL planner setting")

    async with database.read() as conn:
        mode = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
    assert mode == "force_custom_plan"
