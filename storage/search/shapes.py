"""Search statements built and compiled once per query *shape*, values bound per request.

Two searches that differ only in their values (``identifier=a|1`` and
``identifier=b|2``) have the same SQL text. ``collect`` walks a query once and
returns its shape key (everything the SQL text depends on) and a ``Binder``
holding the values, each labelled, in the order the SQL builders in
``query.py`` ask for them. On a cache miss the builders run with that binder:
``Binder.take(label)`` hands out the placeholder ``p<i>`` and fails if the
builder asks for a different label than was collected at that position, and
``done()`` fails if a value went unused. The statement is then compiled once
per dialect, and its positional parameter order is read from the compiled
form, so the order of the values sent can never drift from the SQL. On a hit
only ``collect`` runs (no SQLAlchemy construction, cache key or execution
context) and the values go straight to the driver.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import BindParameter, ColumnElement, Integer, Select, Table, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.driver import autocommit_driver, driver_call
from storage.search.criteria import Criterion, DateValue, SearchQuery, TokenValue
from storage.search.values import CODE_WIDTH, TEXT_WIDTH, normalize_text

HIGHEST_TEXT = "\U0010ffff"
CACHE_SIZE = 512


class Binder:
    """The labelled values of one statement, in the order the SQL builders consume them."""

    __slots__ = ("_taken", "labels", "values")

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.values: list[Any] = []
        self._taken = 0

    def add(self, label: str, value: Any) -> None:
        self.labels.append(label)
        self.values.append(value)

    def take(self, label: str) -> BindParameter[Any]:
        """The placeholder for the next collected value, which must carry ``label``."""
        i = self._taken
        if i >= len(self.labels) or self.labels[i] != label:
            found = self.labels[i] if i < len(self.labels) else "nothing"
            raise AssertionError(f"search SQL asked for {label!r} as value {i}, "
                                 f"but the shape collected {found!r} there")
        self._taken += 1
        # Untyped: the placeholder takes the type of the column it is compared with,
        # so the SQL text never depends on a value's Python type.
        return bindparam(f"p{i}", type_=Integer if label == "limit" else None)

    def done(self) -> None:
        if self._taken != len(self.labels):
            raise AssertionError(f"search SQL used {self._taken} of {len(self.labels)} values")

    def params(self) -> dict[str, Any]:
        return {f"p{i}": v for i, v in enumerate(self.values)}


Bind = Callable[[str, Any], Any]  # (label, value) -> the placeholder to put in the SQL


class RowFilter(Protocol):
    """A condition on the resource table that every row of a search, and every row a chain
    follows, must meet: the access policy's (auth/policy.py), cached with the query's shape.

    ``values`` lists the labelled values in the order ``clause`` asks ``bind`` for them.
    """

    @property
    def key(self) -> Hashable: ...

    def values(self) -> list[tuple[str, Any]]: ...

    def clause(self, table: Table, bind: Bind) -> ColumnElement[bool]: ...


def taking(b: Binder) -> Bind:
    """``bind`` for ``RowFilter.clause`` inside a shape: the binder's next placeholder."""
    return lambda label, _value: b.take(label)


def literal_bind(_label: str, value: Any) -> Any:
    """``bind`` for ``RowFilter.clause`` outside a shape: the value itself, bound."""
    return bindparam(None, value)


# ------------------------------------------------------------------ one traversal: shape + values


def collect(query: SearchQuery, purpose: str,
            cursor: tuple[Sequence[Any], bool] | None = None,
            row_filter: RowFilter | None = None) -> tuple[Hashable, Binder]:
    """The shape key of ``query`` for ``purpose`` ("page" or "count") and its values.

    The order of ``add`` calls must be the order of ``take`` calls in query.py;
    ``Binder.take`` checks it on every cache miss.
    """
    b = Binder()
    key: list[Hashable] = [purpose, query.resource_type,
                           tuple(_criterion(c, b, row_filter) for c in query.criteria)]
    if row_filter is not None:
        key.append(row_filter.key)
        _add_filter(row_filter, b)
    if purpose == "page":
        key.append(tuple((k.name, k.descending, k.param.type if k.param else None)
                         for k in query.sort))
        key.append(None if cursor is None else cursor[1])
        if cursor is not None:
            for value in cursor[0]:
                b.add("cursor", value)
        b.add("limit", (query.count or 0) + 1)
    return tuple(key), b


def _add_filter(row_filter: RowFilter, b: Binder) -> None:
    for label, value in row_filter.values():
        b.add(label, value)


def _criterion(c: Criterion, b: Binder, row_filter: RowFilter | None = None) -> Hashable:
    if c.name == "_id":
        for v in c.values:
            b.add("id", v.code if isinstance(v, TokenValue) else None)
        return (c.name, c.modifier, len(c.values))
    if c.name == "_lastUpdated":
        return (c.name, tuple(_date(v, b) for v in c.values if isinstance(v, DateValue)))
    if c.either is not None:
        return (c.name, "either", tuple(_criterion(alternative, b, row_filter)
                                        for alternative in c.either))
    if c.missing is not None:
        return (c.name, c.type, "missing", c.missing)
    if c.chain is not None:
        inner = []
        for chained in c.chain[1]:  # as query.py builds it: the target's criterion, its filter
            inner.append(_criterion(chained, b, row_filter))
            if row_filter is not None:
                _add_filter(row_filter, b)
        return (c.name, "chain", c.chain[0], tuple(inner))
    return (c.name, c.type, c.modifier, tuple(_value(c.type, v, c.modifier, b)
                                              for v in c.values))


def _date(v: DateValue, b: Binder) -> Hashable:
    b.add("date.low", v.low)
    b.add("date.high", v.high)
    return v.prefix


def _value(kind: str, value: Any, modifier: str | None, b: Binder) -> Hashable:
    if kind in ("token", "uri"):
        if value.code is not None:
            b.add("token.code", value.code[:CODE_WIDTH])
        if value.system is None:
            return ("null", value.code is not None)
        if isinstance(value.system, str):
            b.add("token.system", value.system[:CODE_WIDTH])
            return ("given", value.code is not None)
        return ("any", value.code is not None)
    if kind == "string":
        if modifier == "exact":
            b.add("string.exact", value[:TEXT_WIDTH])
            return "exact"
        text = normalize_text(value)[:CODE_WIDTH]
        if modifier == "contains":
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            b.add("string.like", f"%{escaped}%")
            return "contains"
        b.add("string.from", text)
        b.add("string.below", text + HIGHEST_TEXT)
        return "prefix"
    if kind == "date":
        return _date(value, b)
    b.add("reference.id", value.target_id[:TEXT_WIDTH])
    if value.target_type is not None:
        b.add("reference.type", value.target_type)
    return value.target_type is not None


# ----------------------------------------------------------------------- compiled statements


@dataclass(frozen=True)
class CompiledShape:
    """SQL text for one dialect and, per positional parameter, a value index or a constant."""

    sql: str
    slots: tuple[tuple[int, Any], ...]  # (index into Binder.values, or -1 and the constant)

    def params(self, values: Sequence[Any]) -> list[Any]:
        return [values[i] if i >= 0 else constant for i, constant in self.slots]


_cache: OrderedDict[tuple[str, Hashable], CompiledShape] = OrderedDict()


def compiled_for(dialect: Dialect, key: Hashable, binder: Binder,
                 build: Callable[[Binder], Select[Any]]) -> CompiledShape:
    """The compiled statement of shape ``key``; ``build`` runs only on a miss."""
    cache_key = (f"{dialect.name}+{dialect.driver}", key)
    found = _cache.get(cache_key)
    if found is not None:
        _cache.move_to_end(cache_key)
        return found
    statement = build(binder)
    binder.done()
    compiled = statement.compile(dialect=dialect)
    if compiled.positiontup is None or "POSTCOMPILE" in compiled.string:
        raise AssertionError("search statements must compile to plain positional SQL")
    if any(compiled._bind_processors.get(name) for name in compiled.positiontup):
        raise AssertionError("search parameters must not need bind processors")
    ours = {f"p{i}": i for i in range(len(binder.values))}
    slots = tuple((ours[name], None) if name in ours
                  else (-1, compiled.binds[name].effective_value)
                  for name in compiled.positiontup)
    entry = CompiledShape(compiled.string, slots)
    _cache[cache_key] = entry
    if len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return entry


async def fetch(conn: AsyncConnection, key: Hashable, binder: Binder,
                build: Callable[[Binder], Select[Any]]) -> Sequence[Sequence[Any]]:
    """Rows of the statement of shape ``key`` with ``binder``'s values.

    PostgreSQL autocommit reads go straight to asyncpg; other positional drivers
    (SQLite, or asyncpg inside a transaction) go through ``exec_driver_sql``, which
    keeps SQLAlchemy's transaction handling. A driver with named parameters
    (psycopg) gets the statement built and executed the usual way.
    """
    dialect = conn.dialect
    if not dialect.positional:
        statement = build(binder)
        binder.done()
        built: Sequence[Sequence[Any]] = (await conn.execute(statement, binder.params())).all()
        return built
    compiled = compiled_for(dialect, key, binder, build)
    params = compiled.params(binder.values)
    driver = await autocommit_driver(conn) if dialect.driver == "asyncpg" else None
    if driver is not None:
        rows: Sequence[Sequence[Any]] = await driver_call(conn, driver.fetch(compiled.sql,
                                                                             *params))
        return rows
    return (await conn.exec_driver_sql(compiled.sql, tuple(params))).all()
