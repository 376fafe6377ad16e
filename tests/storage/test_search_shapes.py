"""The search statement cache: one compiled statement per query shape, values per request."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import sqlite

from storage import resources as repo
from storage.db import Database
from storage.search import shapes
from storage.search.criteria import SearchQuery, parse_query
from storage.search.query import _count_statement, count_matches, encode_cursor, search_page


def query(resource_type: str, *pairs: tuple[str, str], count: int = 20) -> SearchQuery:
    return parse_query(resource_type, list(pairs), default_count=count, max_count=100)


def patient(resource_id: str, family: str, code: str) -> dict:
    return {"resourceType": "Patient", "id": resource_id, "name": [{"family": family}],
            "identifier": [{"system": "urn:x", "value": code}]}


async def load(database: Database) -> None:
    async with database.write() as conn:
        for i, (family, code) in enumerate([("Dupont", "a"), ("Durand", "b"), ("Dupont", "c")]):
            await repo.insert_resource(conn, patient(f"p{i}", family, code), b"{}",
                                       last_updated=i + 1, method="POST")


def test_queries_differing_only_in_values_share_a_shape() -> None:
    key_a, binder_a = shapes.collect(query("Patient", ("identifier", "urn:x|a")), "page")
    key_b, binder_b = shapes.collect(query("Patient", ("identifier", "urn:y|b")), "page")
    assert key_a == key_b
    assert binder_a.values != binder_b.values


@pytest.mark.parametrize("other", [
    query("Patient", ("identifier", "a")),  # any system
    query("Patient", ("identifier", "|a")),  # no system
    query("Patient", ("identifier", "urn:x|")),  # any code
    query("Patient", ("identifier", "urn:x|a,urn:x|b")),  # two OR values
    query("Patient", ("identifier", "urn:x|a"), ("_sort", "name")),
    query("Patient", ("identifier:not", "urn:x|a")),
    query("Observation", ("identifier", "urn:x|a")),
])
def test_structurally_different_queries_do_not_share_a_shape(other: SearchQuery) -> None:
    base, _ = shapes.collect(query("Patient", ("identifier", "urn:x|a")), "page")
    assert shapes.collect(other, "page")[0] != base


def test_a_cursor_changes_the_shape() -> None:
    q = query("Patient", ("identifier", "urn:x|a"))
    without, _ = shapes.collect(q, "page")
    forwards, _ = shapes.collect(q, "page", ([1], False))
    backwards, _ = shapes.collect(q, "page", ([1], True))
    assert len({without, forwards, backwards}) == 3


def test_the_builder_must_take_values_in_collected_order() -> None:
    binder = shapes.Binder()
    binder.add("token.code", "a")
    binder.add("token.system", "urn:x")
    with pytest.raises(AssertionError):
        binder.take("token.system")
    binder.take("token.code")
    with pytest.raises(AssertionError):
        binder.done()


async def test_one_compiled_shape_serves_different_values(database: Database) -> None:
    await load(database)
    shapes._cache.clear()
    async with database.read() as conn:
        a = await search_page(conn, query("Patient", ("identifier", "urn:x|a")))
        assert len(shapes._cache) == 1
        b = await search_page(conn, query("Patient", ("identifier", "urn:x|b")))
        none = await search_page(conn, query("Patient", ("identifier", "urn:other|b")))
        assert len(shapes._cache) == 1
        assert await count_matches(conn, query("Patient", ("family", "dup"))) == 2
        assert await count_matches(conn, query("Patient", ("family", "dur"))) == 1
    assert [m.resource_id for m in a.matches] == ["p0"]
    assert [m.resource_id for m in b.matches] == ["p1"]
    assert none.matches == []
    assert len(shapes._cache) == 2  # one page shape, one count shape


async def test_cursor_pages_and_transactions_use_their_own_shapes(database: Database) -> None:
    await load(database)
    shapes._cache.clear()
    q = query("Patient", ("family", "du"), ("_sort", "-_id"), count=2)
    async with database.read() as conn:
        first = await search_page(conn, q)
    assert [m.resource_id for m in first.matches] == ["p2", "p1"] and first.has_more
    q.cursor = encode_cursor(first.matches[-1].sort_values, False)
    async with database.write() as conn:  # inside a transaction: not the direct driver path
        second = await search_page(conn, q)
    assert [m.resource_id for m in second.matches] == ["p0"] and not second.has_more
    assert len(shapes._cache) == 2


def test_the_cache_is_bounded() -> None:
    shapes._cache.clear()
    dialect = sqlite.dialect()
    for n in range(1, shapes.CACHE_SIZE + 10):
        q = query("Patient", ("_id", ",".join(f"i{k}" for k in range(n))))
        key, binder = shapes.collect(q, "count")
        shapes.compiled_for(dialect, key, binder, lambda b, q=q: _count_statement(q, b))
    assert len(shapes._cache) == shapes.CACHE_SIZE
