"""Engines, request transactions and schema migrations.

The request owns the transaction: ``Database.read()`` and ``Database.write()``
yield a connection inside a transaction that commits when the block ends
normally and rolls back on any error. Repositories only execute statements.

SQLite (the embedded default) allows one writer at a time, so write
transactions there start with ``BEGIN IMMEDIATE`` and queue on a one-connection
pool instead of failing with "database is locked" half-way through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage.errors import DatabaseBusy

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_KEY = 7_270_001  # any constant shared by every Carnet process


def _sqlite_engine(url: str, begin: str, **kwargs: Any) -> AsyncEngine:
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


class Database:
    """The database behind one Carnet process: SQLite or PostgreSQL."""

    def __init__(self, url: str, *, pool_size: int = 20, pool_timeout: float = 30.0) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self._reader = _sqlite_engine(url, "BEGIN", pool_timeout=pool_timeout)
            self._writer = _sqlite_engine(url, "BEGIN IMMEDIATE", pool_size=1, max_overflow=0,
                                          pool_timeout=2 * pool_timeout)
            self._query = self._reader
        elif self.dialect == "postgresql":
            # Searches and writes plan every statement for its values: the search SQL is one
            # prepared statement per query shape, and a generic plan for, say, patient + type
            # picks the type index (tens of thousands of rows) over the patient's ten
            # documents (2 s instead of 0.3 ms).
            # The two engines share the process's budget (CARNET_DB_POOL_SIZE connections):
            # a quarter for point reads; the rest, and as many again in bursts, for the others.
            readers = max(1, pool_size // 4)
            self._writer = create_async_engine(
                url, pool_size=max(1, pool_size - readers),
                max_overflow=max(1, pool_size - readers), pool_timeout=pool_timeout,
                connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}})
            # Reads need no BEGIN/COMMIT round trips: one statement, autocommit.
            self._query = self._writer.execution_options(isolation_level="AUTOCOMMIT")
            # Point reads (by id, a record's access state) are planned once per connection:
            # planning those statements for each value cost more than running them (0.4 ms
            # of PostgreSQL CPU for a policy-filtered search, 64 µs for the record's state).
            # No overflow: a point read holds its connection for well under a millisecond,
            # so waiting for one is cheaper than the overflow connection SQLAlchemy would
            # open and close again for it (16 wrk connections of audited reads opened 24
            # PostgreSQL connections a second; p99 43 -> 29 ms without them). Nothing may
            # ask for a second reader while holding one.
            self._reader = create_async_engine(
                url, pool_size=readers, max_overflow=0, pool_timeout=pool_timeout,
                connect_args={"server_settings": {"plan_cache_mode": "auto"}},
            ).execution_options(isolation_level="AUTOCOMMIT")
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read by key: a resource by id, a record's access state, an identifier."""
        async with self._reading(self._reader) as conn:
            yield conn

    @asynccontextmanager
    async def query(self) -> AsyncIterator[AsyncConnection]:
        """A search or a history: each statement planned for the values it is given."""
        async with self._reading(self._query) as conn:
            yield conn

    @asynccontextmanager
    async def _reading(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        with _busy_after_timeout():
            if self.dialect == "postgresql":
                # Autocommit: there is no transaction to begin or commit, so skip
                # SQLAlchemy's begin()/commit() calls (a greenlet switch each).
                async with engine.connect() as conn:
                    yield conn
                return
            async with engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        with _busy_after_timeout():
            async with self._writer.begin() as conn:
                yield conn

    async def migrate(self) -> None:
        """Bring the schema to the latest revision; safe with several processes starting."""
        async with self.write() as conn:
            if self.is_postgresql:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _MIGRATION_LOCK_KEY})
            await conn.run_sync(_upgrade_to_head)

    async def current_revision(self) -> str | None:
        async with self.read() as conn:
            return await conn.run_sync(_current_revision)

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def listen(self, channel: str, callback: Callable[[], None]) -> Any:
        """PostgreSQL: a connection of its own that calls ``callback`` at each ``NOTIFY
        channel``; ``close()`` what this returns to stop."""
        import asyncpg

        url = make_url(self.url).set(drivername="postgresql")
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
        await conn.add_listener(channel, lambda *_: callback())
        return conn

    async def dispose(self) -> None:
        await self._writer.dispose()
        await self._reader.dispose()


@contextmanager
def _busy_after_timeout() -> Iterator[None]:
    """A pool that gave no connection within its timeout is an overload, not a bug."""
    try:
        yield
    except PoolTimeout as exc:
        raise DatabaseBusy("no database connection came free in time") from exc


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade_to_head(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


def _current_revision(connection: Connection) -> str | None:
    """Read alembic's version table directly: asked at every readiness probe, where
    alembic's migration context would log two lines each time."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()
