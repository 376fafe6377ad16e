"""Repository functions for resources, their versions and their search indexes.

https://hl7.org/fhir/R4/http.html — the storage side of read, vread, create,
update, delete and history. Callers hold the transaction (``Database.write``);
index rows are rewritten in that same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.access import NO_LABELS, AccessLabels, RecordState, state_columns, state_of_row
from storage.driver import autocommit_driver, driver_call
from storage.errors import DuplicateResource, VersionConflict
from storage.search.extract import IndexEntries, extract_index_entries, patient_of
from storage.tables import (
    DATES,
    INDEX_TABLES,
    REFERENCES,
    RESOURCES,
    STRINGS,
    TOKENS,
    VERSIONS,
)


@dataclass(frozen=True)
class AccessFacts:
    """The access columns of a stored resource: whose record, and its labels."""

    patient_id: str | None
    labels: AccessLabels


@dataclass(frozen=True)
class StoredResource:
    pk: int
    resource_type: str
    resource_id: str
    version_id: int
    last_updated: int  # epoch microseconds
    deleted: bool
    content: bytes | None
    access: AccessFacts


def _facts(row: Any, start: int) -> AccessFacts:
    return AccessFacts(row[start], AccessLabels(row[start + 1], bool(row[start + 2]),
                                                bool(row[start + 3])))


@dataclass(frozen=True)
class HistoryEntry:
    pk: int
    resource_type: str
    resource_id: str
    version_id: int
    last_updated: int
    method: str
    content: bytes | None
    patient_id: str | None = None


_ACCESS_COLUMNS = (RESOURCES.c.patient_id, RESOURCES.c.category, RESOURCES.c.masked,
                   RESOURCES.c.hidden_from_patient)
_CURRENT_COLUMNS = (RESOURCES.c.pk, RESOURCES.c.resource_type, RESOURCES.c.resource_id,
                    RESOURCES.c.version_id, RESOURCES.c.last_updated, RESOURCES.c.deleted,
                    RESOURCES.c.content, *_ACCESS_COLUMNS)


async def current_version(conn: AsyncConnection, resource_type: str, resource_id: str, *,
                          for_update: bool = False) -> StoredResource | None:
    """The current row of a resource (deleted or not), optionally locked for an update."""
    stmt = select(*_CURRENT_COLUMNS).where(RESOURCES.c.resource_type == resource_type,
                                           RESOURCES.c.resource_id == resource_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    return StoredResource(*row[:7], _facts(row, 7)) if row else None


@dataclass(frozen=True)
class CurrentContent:
    content: bytes | None
    version_id: int
    last_updated: int
    deleted: bool
    access: AccessFacts
    record: RecordState | None = None  # the record's state for the actor asked about


_CURRENT_CONTENT = select(
    RESOURCES.c.content, RESOURCES.c.version_id, RESOURCES.c.last_updated, RESOURCES.c.deleted,
    *_ACCESS_COLUMNS,
).where(RESOURCES.c.resource_type == bindparam("resource_type"),
        RESOURCES.c.resource_id == bindparam("resource_id"))
_PG_CURRENT_CONTENT = ("SELECT content, version_id, last_updated, deleted, patient_id, category, "
                       "masked, hidden_from_patient FROM resource "
                       "WHERE resource_type = $1 AND resource_id = $2")


def _with_state_sql(dialect: str, type_: str, id_: str, actor: str, now: str) -> str:
    return ("SELECT r.content, r.version_id, r.last_updated, r.deleted, r.patient_id, "
            "r.category, r.masked, r.hidden_from_patient, "
            f"{state_columns(dialect, 'r.patient_id', actor, now)}\n"
            "FROM resource r LEFT JOIN record_policy rp ON rp.patient_id = r.patient_id\n"
            f"WHERE r.resource_type = {type_} AND r.resource_id = {id_}")


_PG_WITH_STATE = _with_state_sql("postgresql", "$1", "$2", "$3", "$4")
_BOUND_WITH_STATE = {dialect: text(_with_state_sql(dialect, ":resource_type", ":resource_id",
                                                   ":actor", ":now"))
                     for dialect in ("sqlite", "postgresql")}


async def current_content(conn: AsyncConnection, resource_type: str, resource_id: str,
                          state_for: tuple[str, int] | None = None) -> CurrentContent | None:
    """The hot read path: stored bytes, version, lastUpdated, deleted flag, access columns.

    ``state_for`` = (actor key, now): the same statement also reads the record's state for
    that actor (a professional's read needs it to decide).
    """
    driver = await autocommit_driver(conn)
    if state_for is not None:
        if driver is not None:
            row = await driver_call(conn, driver.fetchrow(_PG_WITH_STATE, resource_type,
                                                          resource_id, *state_for))
        else:
            row = (await conn.execute(_BOUND_WITH_STATE[conn.dialect.name], {
                "resource_type": resource_type, "resource_id": resource_id,
                "actor": state_for[0], "now": state_for[1]})).first()
        if row is None:
            return None
        record = state_of_row(row, 8) if row[4] is not None else None
        return CurrentContent(row[0], row[1], row[2], row[3], _facts(row, 4), record)
    if driver is not None:
        row = await driver_call(conn, driver.fetchrow(_PG_CURRENT_CONTENT, resource_type,
                                                      resource_id))
    else:
        row = (await conn.execute(_CURRENT_CONTENT, {"resource_type": resource_type,
                                                     "resource_id": resource_id})).first()
    return CurrentContent(row[0], row[1], row[2], row[3], _facts(row, 4)) if row else None


async def record_resources(conn: AsyncConnection, patient_id: str, resource_types: list[str],
                           visible: ColumnElement[bool] | None, *,
                           limit: int) -> list[tuple[str, str, bytes]]:
    """A record's current resources of ``resource_types`` that ``visible`` lets through
    (type, id, content), oldest first: one probe of the record index."""
    if not resource_types:
        return []
    stmt = (select(RESOURCES.c.resource_type, RESOURCES.c.resource_id, RESOURCES.c.content)
            .where(RESOURCES.c.patient_id == patient_id,
                   RESOURCES.c.resource_type.in_(resource_types),
                   RESOURCES.c.deleted == false())
            .order_by(RESOURCES.c.pk).limit(limit))
    if visible is not None:
        stmt = stmt.where(visible)
    return [(r[0], r[1], r[2]) for r in (await conn.execute(stmt)).all()]


async def specific_version(conn: AsyncConnection, resource_type: str, resource_id: str,
                           version_id: int) -> HistoryEntry | None:
    stmt = select(VERSIONS.c.pk, VERSIONS.c.resource_type, VERSIONS.c.resource_id,
                  VERSIONS.c.version_id, VERSIONS.c.last_updated, VERSIONS.c.method,
                  VERSIONS.c.content).where(VERSIONS.c.resource_type == resource_type,
                                            VERSIONS.c.resource_id == resource_id,
                                            VERSIONS.c.version_id == version_id)
    row = (await conn.execute(stmt)).first()
    return HistoryEntry(*row) if row else None


# PostgreSQL: a new resource, its first version and all its index rows in one
# statement (one round trip instead of five or more). Data-modifying CTEs all
# run exactly once; when the id already exists ``new_resource`` is empty, so
# nothing else is inserted and no pk comes back, as in the generic path.
_PG_INSERT_RESOURCE = text("""
WITH new_resource AS (
    INSERT INTO resource (resource_type, resource_id, version_id, last_updated, deleted, content,
                          patient_id, category, masked, hidden_from_patient)
    VALUES (:resource_type, :resource_id, 1, :last_updated, false, :content,
            :patient_id, :category, :masked, :hidden_from_patient)
    ON CONFLICT (resource_type, resource_id) DO NOTHING
    RETURNING pk, resource_type, resource_id, version_id, last_updated, content
), new_version AS (
    INSERT INTO resource_version
        (resource_pk, resource_type, resource_id, version_id, last_updated, method, content)
    SELECT pk, resource_type, resource_id, version_id, last_updated,
           CAST(:method AS varchar), content
    FROM new_resource
), new_tokens AS (
    INSERT INTO token_index (resource_pk, resource_type, param, system, code)
    SELECT r.pk, r.resource_type, v.param, v.system, v.code
    FROM new_resource AS r,
         unnest(CAST(:token_param AS text[]), CAST(:token_system AS text[]),
                CAST(:token_code AS text[])) AS v(param, system, code)
), new_strings AS (
    INSERT INTO string_index (resource_pk, resource_type, param, normalized, exact)
    SELECT r.pk, r.resource_type, v.param, v.normalized, v.exact
    FROM new_resource AS r,
         unnest(CAST(:string_param AS text[]), CAST(:string_normalized AS text[]),
                CAST(:string_exact AS text[])) AS v(param, normalized, exact)
), new_dates AS (
    INSERT INTO date_index (resource_pk, resource_type, param, low, high)
    SELECT r.pk, r.resource_type, v.param, v.low, v.high
    FROM new_resource AS r,
         unnest(CAST(:date_param AS text[]), CAST(:date_low AS bigint[]),
                CAST(:date_high AS bigint[])) AS v(param, low, high)
), new_references AS (
    INSERT INTO reference_index (resource_pk, resource_type, param, target_type, target_id)
    SELECT r.pk, r.resource_type, v.param, v.target_type, v.target_id
    FROM new_resource AS r,
         unnest(CAST(:reference_param AS text[]), CAST(:reference_target_type AS text[]),
                CAST(:reference_target_id AS text[])) AS v(param, target_type, target_id)
)
SELECT pk FROM new_resource
""")


# How each kind of IndexEntries tuple maps onto its index table: one mapping for
# both write paths (the PostgreSQL statement's arrays and the generic inserts).
_ENTRY_COLUMNS: tuple[tuple[Table, str, tuple[str, ...]], ...] = (
    (TOKENS, "tokens", ("param", "system", "code")),
    (STRINGS, "strings", ("param", "normalized", "exact")),
    (DATES, "dates", ("param", "low", "high")),
    (REFERENCES, "references", ("param", "target_type", "target_id")),
)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Index entries as one list per column (the arrays ``unnest`` reads)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def _access_columns(resource: dict[str, Any], labels: AccessLabels) -> dict[str, Any]:
    return {"patient_id": patient_of(resource), "category": labels.category,
            "masked": labels.masked, "hidden_from_patient": labels.hidden_from_patient}


async def insert_resource(conn: AsyncConnection, resource: dict[str, Any], content: bytes, *,
                          last_updated: int, method: str,
                          labels: AccessLabels = NO_LABELS) -> int:
    """Store version 1 of a new resource with its indexes; returns its row key."""
    resource_type, resource_id = resource["resourceType"], resource["id"]
    entries = extract_index_entries(resource)
    access = _access_columns(resource, labels)
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {"resource_type": resource_type, "resource_id": resource_id,
                                  "last_updated": last_updated, "content": content,
                                  "method": method, **access}
        for table, attribute, columns in _ENTRY_COLUMNS:
            prefix = table.name.removesuffix("_index")
            values = _columns(getattr(entries, attribute), len(columns))
            params.update((f"{prefix}_{column}", values[i]) for i, column in enumerate(columns))
        new_pk = (await conn.execute(_PG_INSERT_RESOURCE, params)).scalar_one_or_none()
        if new_pk is None:
            raise DuplicateResource(f"{resource_type}/{resource_id} already exists")
        return int(new_pk)
    stmt = (sqlite_insert(RESOURCES)
            .values(resource_type=resource_type, resource_id=resource_id, version_id=1,
                    last_updated=last_updated, deleted=False, content=content, **access)
            .on_conflict_do_nothing(index_elements=["resource_type", "resource_id"])
            .returning(RESOURCES.c.pk))
    pk: int | None = (await conn.execute(stmt)).scalar_one_or_none()
    if pk is None:
        raise DuplicateResource(f"{resource_type}/{resource_id} already exists")
    await _insert_version(conn, pk, resource_type, resource_id, 1, last_updated, method, content)
    await _write_indexes(conn, pk, resource_type, entries)
    return pk


async def replace_resource(conn: AsyncConnection, existing: StoredResource,
                           resource: dict[str, Any], content: bytes, *, version_id: int,
                           last_updated: int, method: str,
                           labels: AccessLabels = NO_LABELS) -> None:
    """Make ``content`` the current version of ``existing`` (whose version must not have moved)."""
    entries = extract_index_entries(resource)
    await _advance(conn, existing, version_id, last_updated, content, deleted=False,
                   access=_access_columns(resource, labels))
    await _insert_version(conn, existing.pk, existing.resource_type, existing.resource_id,
                          version_id, last_updated, method, content)
    await _delete_indexes(conn, existing.pk)
    await _write_indexes(conn, existing.pk, existing.resource_type, entries)


async def mark_deleted(conn: AsyncConnection, existing: StoredResource, *,
                       last_updated: int) -> int:
    """Logical delete: a new version with no content; returns that version id."""
    version_id = existing.version_id + 1
    await _advance(conn, existing, version_id, last_updated, None, deleted=True)
    await _insert_version(conn, existing.pk, existing.resource_type, existing.resource_id,
                          version_id, last_updated, "DELETE", None)
    await _delete_indexes(conn, existing.pk)
    return version_id


async def _advance(conn: AsyncConnection, existing: StoredResource, version_id: int,
                   last_updated: int, content: bytes | None, *, deleted: bool,
                   access: dict[str, Any] | None = None) -> None:
    """A deletion keeps the access columns: its history stays under the record's rules."""
    result = await conn.execute(
        update(RESOURCES)
        .where(RESOURCES.c.pk == existing.pk, RESOURCES.c.version_id == existing.version_id)
        .values(version_id=version_id, last_updated=last_updated, content=content,
                deleted=deleted, **(access or {})))
    if result.rowcount != 1:
        raise VersionConflict(
            f"{existing.resource_type}/{existing.resource_id} was changed concurrently", None)


async def _insert_version(conn: AsyncConnection, pk: int, resource_type: str, resource_id: str,
                          version_id: int, last_updated: int, method: str,
                          content: bytes | None) -> None:
    await conn.execute(insert(VERSIONS).values(
        resource_pk=pk, resource_type=resource_type, resource_id=resource_id,
        version_id=version_id, last_updated=last_updated, method=method, content=content))


async def _delete_indexes(conn: AsyncConnection, pk: int) -> None:
    for table in INDEX_TABLES:
        await conn.execute(delete(table).where(table.c.resource_pk == pk))


async def _write_indexes(conn: AsyncConnection, pk: int, rtype: str,
                         entries: IndexEntries) -> None:
    for table, attribute, columns in _ENTRY_COLUMNS:
        rows = [dict(zip(columns, values, strict=True), resource_pk=pk, resource_type=rtype)
                for values in getattr(entries, attribute)]
        if rows:
            await conn.execute(insert(table), rows)


async def history_page(conn: AsyncConnection, *, resource_type: str | None,
                       resource_id: str | None, since: int | None, limit: int,
                       after: tuple[int, int] | None,
                       visible: ColumnElement[bool] | None = None,
                       ) -> tuple[list[HistoryEntry], bool]:
    """Versions newest first; ``after`` is the (last_updated, pk) key of the previous page's end.

    ``visible``: a condition on the resource table (the access policy) the versions'
    resource must meet.
    """
    stmt = (select(VERSIONS.c.pk, VERSIONS.c.resource_type, VERSIONS.c.resource_id,
                   VERSIONS.c.version_id, VERSIONS.c.last_updated, VERSIONS.c.method,
                   VERSIONS.c.content, RESOURCES.c.patient_id)
            .join(RESOURCES, RESOURCES.c.pk == VERSIONS.c.resource_pk))
    if visible is not None:
        stmt = stmt.where(visible)
    if resource_type is not None:
        stmt = stmt.where(VERSIONS.c.resource_type == resource_type)
    if resource_id is not None:
        stmt = stmt.where(VERSIONS.c.resource_id == resource_id)
    if since is not None:
        stmt = stmt.where(VERSIONS.c.last_updated >= since)
    if after is not None:
        stmt = stmt.where(or_(VERSIONS.c.last_updated < after[0],
                              and_(VERSIONS.c.last_updated == after[0], VERSIONS.c.pk < after[1])))
    stmt = stmt.order_by(VERSIONS.c.last_updated.desc(), VERSIONS.c.pk.desc()).limit(limit + 1)
    rows = (await conn.execute(stmt)).all()
    return [HistoryEntry(*row) for row in rows[:limit]], len(rows) > limit


async def lock_key(conn: AsyncConnection, key: str) -> None:
    """Serialise writers that must not race on ``key`` (conditional creates).

    PostgreSQL: a transaction-scoped advisory lock. SQLite: writers are already
    serialised by BEGIN IMMEDIATE, so nothing to do.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
