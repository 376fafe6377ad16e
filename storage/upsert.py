"""Inserts that may meet an existing key, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def conflict_insert(conn: AsyncConnection, table: Table) -> Any:
    """``INSERT`` of the connection's dialect, the one with ``on_conflict_do_nothing`` and
    ``on_conflict_do_update`` (both dialects spell them alike)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


async def put_row(conn: AsyncConnection, table: Table, key: dict[str, Any],
                  values: dict[str, Any]) -> None:
    """Seeding runs this repeatedly: the second run must refresh, not duplicate. One
    statement (``INSERT ... ON CONFLICT DO UPDATE``), so that processes starting together
    (each API worker registers the portal's client) cannot both find no row and both
    insert it: the second would fail on the key."""
    statement = conflict_insert(conn, table).values(**key, **values)
    await conn.execute(statement.on_conflict_do_update(index_elements=list(key), set_=values))
