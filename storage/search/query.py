"""Search criteria -> SQL, and the search repository functions.

Every filter is a semi-join on an index table, so a search costs the same
whether the store holds a thousand resources or a hundred million. Paging is
keyset paging: a cursor holds the sort key of the last (or first) row of a
page, so pages stay correct while new resources arrive.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Column, ColumnElement, Select, Table, and_, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from storage.errors import InvalidSearch
from storage.search.criteria import (
    Criterion,
    DateValue,
    IncludeSpec,
    ReferenceValue,
    SearchQuery,
    SortKey,
    TokenValue,
)
from storage.search.shapes import (
    HIGHEST_TEXT,
    Binder,
    RowFilter,
    collect,
    fetch,
    literal_bind,
    taking,
)
from storage.search.values import MAX_INSTANT, MIN_INSTANT
from storage.tables import (
    DateIndexRow,
    ReferenceIndexRow,
    ResourceRow,
    StringIndexRow,
    TokenIndexRow,
)

Columns = ReadOnlyColumnCollection[str, Column[Any]]
RESOURCE_TABLE: Table = ResourceRow.__table__  # type: ignore[attr-defined]
R: Columns = RESOURCE_TABLE.c
TOKENS: Columns = TokenIndexRow.__table__.c  # type: ignore[attr-defined]
STRINGS: Columns = StringIndexRow.__table__.c  # type: ignore[attr-defined]
DATES: Columns = DateIndexRow.__table__.c  # type: ignore[attr-defined]
REFERENCES: Columns = ReferenceIndexRow.__table__.c  # type: ignore[attr-defined]
_INDEX_FOR = {"token": TOKENS, "uri": TOKENS, "string": STRINGS, "date": DATES,
              "reference": REFERENCES}
_HIGHEST_TEXT = HIGHEST_TEXT


@dataclass(frozen=True)
class Match:
    pk: int
    resource_type: str
    resource_id: str
    content: bytes
    sort_values: tuple[Any, ...]
    patient_id: str | None = None  # whose record: the audit trail names it


@dataclass(frozen=True)
class Page:
    matches: list[Match]
    has_more: bool  # more rows in the paging direction


# ----------------------------------------------------------------------------- filters


def _date_clause(low: Any, high: Any, value: DateValue, b: Binder) -> ColumnElement[bool]:
    """FHIR date comparison between a stored range and a query range (both [low, high))."""
    pl, ph = b.take("date.low"), b.take("date.high")
    clauses: dict[str, ColumnElement[bool]] = {
        "eq": and_(low >= pl, high <= ph),
        "ne": or_(low < pl, high > ph),
        "lt": low < pl,
        "gt": high > ph,
        "le": or_(low < pl, high <= ph),
        "ge": or_(high > ph, low >= pl),
        "sa": low >= ph,
        "eb": high <= pl,
    }
    return clauses[value.prefix]


def _value_clause(kind: str, value: Any, modifier: str | None,
                  b: Binder) -> ColumnElement[bool]:
    """Values (cut, normalised, escaped) come from ``shapes.collect``; only structure here."""
    if kind in ("token", "uri"):
        assert isinstance(value, TokenValue)
        parts: list[ColumnElement[bool]] = []
        if value.code is not None:
            parts.append(TOKENS.code == b.take("token.code"))
        if value.system is None:
            parts.append(TOKENS.system.is_(None))
        elif isinstance(value.system, str):
            parts.append(TOKENS.system == b.take("token.system"))
        return and_(true(), *parts)
    if kind == "string":
        assert isinstance(value, str)
        if modifier == "exact":
            return STRINGS.exact == b.take("string.exact")
        if modifier == "contains":
            return STRINGS.normalized.like(b.take("string.like"), escape="\\")
        return and_(STRINGS.normalized >= b.take("string.from"),
                    STRINGS.normalized < b.take("string.below"))
    if kind == "date":
        assert isinstance(value, DateValue)
        return _date_clause(DATES.low, DATES.high, value, b)
    assert isinstance(value, ReferenceValue)
    clause = REFERENCES.target_id == b.take("reference.id")
    if value.target_type is not None:
        clause = and_(clause, REFERENCES.target_type == b.take("reference.type"))
    return clause


def criterion_clause(resource_type: str, criterion: Criterion, b: Binder,
                     row_filter: RowFilter | None = None) -> ColumnElement[bool]:
    """A WHERE clause on the resource table for one criterion.

    ``row_filter`` (the access policy) limits the resources a chain may follow: a
    search must not filter on what the caller may not see.
    """
    if criterion.name == "_id":
        ids = [b.take("id") for _ in criterion.values]
        return R.resource_id.not_in(ids) if criterion.modifier == "not" else R.resource_id.in_(ids)
    if criterion.name == "_lastUpdated":
        return or_(*(_date_clause(R.last_updated, R.last_updated + 1, v, b)
                     for v in criterion.values if isinstance(v, DateValue)))
    if criterion.either is not None:
        return or_(*(criterion_clause(resource_type, alternative, b, row_filter)
                     for alternative in criterion.either))

    index = _INDEX_FOR[criterion.type]
    rows = select(index.resource_pk).where(index.resource_type == resource_type,
                                           index.param == criterion.name)
    if criterion.missing is not None:
        return R.pk.not_in(rows) if criterion.missing else R.pk.in_(rows)
    if criterion.chain is not None:
        target_types, inner = criterion.chain
        per_target = []
        for target_type, chained in zip(target_types.split(","), inner, strict=True):
            targets = select(R.resource_id).where(
                R.resource_type == target_type, R.deleted == false(),
                criterion_clause(target_type, chained, b, row_filter))
            if row_filter is not None:
                targets = targets.where(row_filter.clause(RESOURCE_TABLE, taking(b)))
            per_target.append(and_(REFERENCES.target_type == target_type,
                                   REFERENCES.target_id.in_(targets)))
        return R.pk.in_(rows.where(or_(*per_target)))
    matching = rows.where(or_(*(_value_clause(criterion.type, v, criterion.modifier, b)
                                for v in criterion.values)))
    if criterion.modifier == "not":
        return R.pk.not_in(matching)
    return R.pk.in_(matching)


def _filters(query: SearchQuery, b: Binder,
             row_filter: RowFilter | None) -> list[ColumnElement[bool]]:
    clauses = [R.resource_type == query.resource_type, R.deleted == false()]
    clauses.extend(criterion_clause(query.resource_type, c, b, row_filter)
                   for c in query.criteria)
    if row_filter is not None:
        clauses.append(row_filter.clause(RESOURCE_TABLE, taking(b)))
    return clauses


# -------------------------------------------------------------------------------- sort


def _sort_expression(resource_type: str, key: SortKey) -> Any:
    if key.name == "_id":
        return R.resource_id
    if key.name == "_lastUpdated":
        return R.last_updated
    assert key.param is not None
    index = _INDEX_FOR[key.param.type]
    column, low_sentinel, high_sentinel = {
        "date": (DATES.low, MIN_INSTANT, MAX_INSTANT),
        "string": (STRINGS.normalized, "", _HIGHEST_TEXT),
        "token": (TOKENS.code, "", _HIGHEST_TEXT),
        "uri": (TOKENS.code, "", _HIGHEST_TEXT),
    }[key.param.type]
    aggregate = func.max(column) if key.descending else func.min(column)
    value = (select(aggregate)
             .where(index.resource_pk == R.pk, index.resource_type == resource_type,
                    index.param == key.name)
             .scalar_subquery())
    # Resources without a value sort last in either direction.
    return func.coalesce(value, low_sentinel if key.descending else high_sentinel)


def _keyset_clause(expressions: list[Any], directions: list[bool],
                   values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order given by ``directions`` (True = descending)."""
    alternatives = []
    for i, (expr, descending) in enumerate(zip(expressions, directions, strict=True)):
        equal = [expressions[j] == values[j] for j in range(i)]
        beyond = expr < values[i] if descending else expr > values[i]
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


def encode_cursor(values: Sequence[Any], backwards: bool) -> str:
    raw = orjson.dumps({"k": list(values), "b": backwards})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> tuple[list[Any], bool]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        values, backwards = data["k"], data["b"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidSearch("the paging cursor is not valid", "_cursor") from exc
    if (not isinstance(values, list) or len(values) != width or not isinstance(backwards, bool)
            or not all(_fits(v, int | str) for v in values)):
        raise InvalidSearch("the paging cursor does not belong to this search", "_cursor")
    return values, backwards


def decode_search_cursor(cursor: str, sort: Sequence[SortKey]) -> tuple[list[Any], bool]:
    """Also checks each value's kind: PostgreSQL will not compare a number with text."""
    kinds: list[Any] = [int if key.name == "_lastUpdated"
                        or (key.param is not None and key.param.type == "date") else str
                        for key in sort]
    values, backwards = decode_cursor(cursor, len(kinds) + 1)
    if not all(_fits(v, kind) for v, kind in zip(values, [*kinds, int], strict=True)):
        raise InvalidSearch("the paging cursor does not belong to this search", "_cursor")
    return values, backwards


def _fits(value: Any, kind: Any) -> bool:
    """A tampered value the database cannot bind (too big, NUL) must not reach it."""
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return "\x00" not in value


def _page_statement(query: SearchQuery, backwards: bool, b: Binder,
                    row_filter: RowFilter | None = None) -> Select[Any]:
    """The page query; takes values in ``shapes.collect`` order (filters, cursor, limit)."""
    expressions = [_sort_expression(query.resource_type, key) for key in query.sort] + [R.pk]
    directions = [key.descending for key in query.sort] + [False]
    stmt: Select[Any] = select(R.pk, R.resource_type, R.resource_id, R.content, R.patient_id,
                               *expressions[:-1]).where(*_filters(query, b, row_filter))
    if query.cursor:
        if backwards:
            directions = [not d for d in directions]
        values = [b.take("cursor") for _ in expressions]
        stmt = stmt.where(_keyset_clause(expressions, directions, values))
    order = [e.desc() if d else e.asc() for e, d in zip(expressions, directions, strict=True)]
    return stmt.order_by(*order).limit(b.take("limit"))


def _count_statement(query: SearchQuery, b: Binder,
                     row_filter: RowFilter | None = None) -> Select[Any]:
    return select(func.count()).select_from(RESOURCE_TABLE).where(
        *_filters(query, b, row_filter))


async def search_page(conn: AsyncConnection, query: SearchQuery,
                      row_filter: RowFilter | None = None) -> Page:
    """One page of matches, ordered by ``query.sort`` then insertion order.

    The statement comes compiled from the shape cache (``storage.search.shapes``);
    ``row_filter`` (the access policy) is part of the shape, its values bound.
    """
    cursor = decode_search_cursor(query.cursor, query.sort) if query.cursor else None
    backwards = cursor is not None and cursor[1]
    key, b = collect(query, "page", cursor, row_filter)
    rows = await fetch(conn, key, b,
                       lambda binder: _page_statement(query, backwards, binder, row_filter))
    limit = query.count or 0
    matches = [Match(row[0], row[1], row[2], row[3], (*row[5:], row[0]), row[4])
               for row in rows[:limit]]
    if backwards:
        matches.reverse()
    return Page(matches, has_more=len(rows) > limit)


async def count_matches(conn: AsyncConnection, query: SearchQuery,
                        row_filter: RowFilter | None = None) -> int:
    key, b = collect(query, "count", None, row_filter)
    rows = await fetch(conn, key, b, lambda binder: _count_statement(query, binder, row_filter))
    return int(rows[0][0])


async def included_resources(conn: AsyncConnection, spec: IncludeSpec, matches: Sequence[Match],
                             row_filter: RowFilter | None = None) -> list[Match]:
    """Resources named by ``_include`` / ``_revinclude`` for one page of matches, among
    what ``row_filter`` (the access policy) lets through."""
    if not matches:
        return []
    target = ResourceRow.__table__.alias("target")  # type: ignore[attr-defined]
    if spec.reverse:
        ids_by_type: dict[str, list[str]] = {}
        for m in matches:
            ids_by_type.setdefault(m.resource_type, []).append(m.resource_id)
        pointing = or_(*(and_(REFERENCES.target_type == t, REFERENCES.target_id.in_(ids))
                         for t, ids in ids_by_type.items()))
        stmt = (select(target.c.pk, target.c.resource_type, target.c.resource_id,
                       target.c.content, target.c.patient_id)
                .join(ReferenceIndexRow.__table__,  # type: ignore[attr-defined]
                      REFERENCES.resource_pk == target.c.pk)
                .where(REFERENCES.resource_type == spec.source_type,
                       REFERENCES.param == spec.param, pointing,
                       target.c.deleted == false()))
    else:
        stmt = (select(target.c.pk, target.c.resource_type, target.c.resource_id,
                       target.c.content, target.c.patient_id)
                .join(ReferenceIndexRow.__table__,  # type: ignore[attr-defined]
                      and_(REFERENCES.target_type == target.c.resource_type,
                           REFERENCES.target_id == target.c.resource_id))
                .where(REFERENCES.resource_pk.in_([m.pk for m in matches]),
                       REFERENCES.param == spec.param, target.c.deleted == false()))
        if spec.target_type:
            stmt = stmt.where(target.c.resource_type == spec.target_type)
    if row_filter is not None:
        stmt = stmt.where(row_filter.clause(target, literal_bind))
    unique = {r[0]: r for r in (await conn.execute(stmt)).all()}
    return [Match(r[0], r[1], r[2], r[3], (), r[4]) for r in unique.values()]
