"""The Alembic migrations build exactly the schema the SQLModel tables describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from storage.db import Database


async def test_migrated_schema_matches_the_table_models(database: Database) -> None:
    async with database.read() as conn:
        differences = await conn.run_sync(lambda sync: compare_metadata(
            MigrationContext.configure(sync, opts={"compare_type": True}), SQLModel.metadata))
    assert differences == []
