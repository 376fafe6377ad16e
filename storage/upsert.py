"""Insert-or-update of one row by its natural key, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection


async def put_row(conn: AsyncConnection, table: Table, key: dict[str, Any],
                  values: dict[str, Any]) -> None:
    """Seeding runs this repeatedly: the second run must refresh, not duplicate."""
    condition = [table.c[name] == value for name, value in key.items()]
    changed = await conn.execute(update(table).where(*condition).values(values))
    if changed.rowcount == 0:
        await conn.execute(insert(table).values(**key, **values))
