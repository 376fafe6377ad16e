"""Sending a read straight to the asyncpg connection under a SQLAlchemy one.

Shared by the read-by-id path (``storage.resources``) and search
(``storage.search.shapes``); one copy of each helper.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection


async def autocommit_driver(conn: AsyncConnection) -> Any | None:
    """The asyncpg connection under ``conn`` if a read may go to it directly, else None.

    Only for PostgreSQL connections in autocommit mode (``Database.read()``): no
    transaction is open or due to be opened by SQLAlchemy, so a statement sent
    straight to asyncpg means exactly what it would mean through SQLAlchemy, and
    skips its per-statement cost (statement cache key, execution context, greenlet
    switch, result wrapping: about 80 µs of CPU on the read-by-id path, a third of
    its database time). asyncpg keeps its own per-connection prepared statements.
    """
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "asyncpg":
        return None
    raw = await conn.get_raw_connection()
    if not getattr(raw.dbapi_connection, "autocommit", False):
        return None
    return raw.driver_connection


async def driver_call(conn: AsyncConnection, call: Awaitable[Any]) -> Any:
    """Await a direct asyncpg call; a connection it found broken leaves the pool."""
    try:
        return await call
    except Exception as exc:
        raw = await conn.get_raw_connection()
        if raw.driver_connection is None or raw.driver_connection.is_closed():
            await conn.invalidate(exc)
        raise
