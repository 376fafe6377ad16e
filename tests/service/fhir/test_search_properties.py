"""Property test of search paging over HTTP: for generated criteria (escaped values, OR lists,
date prefixes, sorts, page sizes), every self and next link of the searchset Bundles carries
the query that was asked, unchanged but for the cursor, and following the next links walks
exactly the matches a simple model of the criteria finds, each once, in the order of the
one-page search. Few examples: each is several requests, on both back-ends."""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.factories import FHIR_JSON, patient
from tests.properties import SHARED_FIXTURE, passed
from tests.service.fhir.test_search import create, follow, link, match_ids, search
from tests.storage.test_search_properties import escape

# Family names full of the search syntax's own characters, and accents.
PEOPLE = [("Dupont, Jr", "male", "1970-03-01"), ("A|B", "female", "1985-12-31"),
          ("Back\\slash", "other", "1990-06-15"), ("Dollar$", "female", "2001-01-01"),
          ("Dupond", "male", "1970-11-30"), ("Lefèvre", "female", "1999-07-14"),
          ("Lefebvre", "unknown", "2010-02-02")]
YEARS = (1970, 1985, 1990, 1999, 2001, 2010, 2000)
COMPARE = {"eq": int.__eq__, "ne": int.__ne__, "lt": int.__lt__, "le": int.__le__,
           "gt": int.__gt__, "ge": int.__ge__}


def folded(text: str) -> str:
    """Case and accents ignored, as the default string search does."""
    bare = unicodedata.normalize("NFKD", text)
    return "".join(c for c in bare if not unicodedata.combining(c)).casefold()


def matches(person: tuple[str, str, str], key: str, value: str) -> bool:
    """The model: one criterion, the comma-separated values as generated (unescaped)."""
    family, gender, born = person
    if key == "family":
        return any(folded(family).startswith(folded(v)) for v in value)
    if key == "family:exact":
        return family in value
    if key == "gender":
        return gender in value
    prefix, year = value
    return bool(COMPARE[prefix](int(born[:4]), int(year)))


CRITERIA = st.one_of(
    st.tuples(st.just("family"), st.lists(
        st.sampled_from(PEOPLE).flatmap(lambda p: st.integers(1, len(p[0])).map(
            lambda n: p[0][:n])), min_size=1, max_size=2)),
    st.tuples(st.just("family:exact"), st.lists(st.sampled_from([p[0] for p in PEOPLE]),
                                                min_size=1, max_size=2)),
    st.tuples(st.just("gender"), st.lists(st.sampled_from(["male", "female", "other",
                                                           "unknown"]),
                                          min_size=1, max_size=2)),
    st.tuples(st.just("birthdate"), st.tuples(st.sampled_from(sorted(COMPARE)),
                                              st.sampled_from(YEARS).map(str))))
SORTS = st.sampled_from([None, "_id", "-_id", "birthdate", "-birthdate,_id", "family",
                         "-_lastUpdated", "gender,-family"])


def query_value(key: str, value: Any) -> str:
    if key == "birthdate":
        return "".join(value)
    return ",".join(escape(v) for v in value)


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


@pytest.fixture
async def people(client: httpx.AsyncClient) -> dict[str, tuple[str, str, str]]:
    """The seeded patients by id (once per test: the examples only read)."""
    return {(await create(client, patient(family, gender=gender, birth_date=born)))["id"]:
            (family, gender, born) for family, gender, born in PEOPLE}


@settings(SHARED_FIXTURE, max_examples=15)
@given(criteria=st.lists(CRITERIA, min_size=1, max_size=2), sort=SORTS,
       count=st.integers(1, 3))
@example(criteria=[("family:exact", ["Dupont, Jr", "Dollar$", "A|B"])], sort="-birthdate,_id",
         count=1)
@example(criteria=[("family", ["dup", "lefe"]), ("birthdate", ("ge", "1985"))], sort=None,
         count=1)
async def test_next_links_keep_the_query_and_walk_exactly_the_matches(
        client: httpx.AsyncClient, people: dict[str, tuple[str, str, str]],
        criteria: list[tuple[str, Any]], sort: str | None, count: int) -> None:
    asked = [(key, query_value(key, value)) for key, value in criteria]
    asked += [("_sort", sort)] if sort else []
    expected = {i for i, person in people.items()
                if all(matches(person, key, value) for key, value in criteria)}
    everything = match_ids(await search(client, "Patient", [*asked, ("_count", "100")]))
    assert set(everything) == expected and len(everything) == len(expected)

    page = await search(client, "Patient", [*asked, ("_count", str(count))])
    walked = match_ids(page)
    while (url := link(page, "next")) is not None:
        assert [p for p in query_of(url) if p[0] != "_cursor"] == [*asked, ("_count",
                                                                            str(count))]
        page = await follow(client, url)
        assert query_of(link(page, "self") or "") == query_of(url)
        assert len(match_ids(page)) <= count and page["total"] == len(expected)
        walked += match_ids(page)
    assert walked == everything
    passed("search")


async def test_numbers_of_thousands_of_digits_are_capped_or_refused_never_a_500(
        client: httpx.AsyncClient) -> None:
    """int() raises on 4,301 digits and more: no parameter may hand it such a string."""
    created = await create(client, patient())
    huge = "9" * 5000
    bundle = await search(client, "Patient", {"_count": huge})
    assert len(match_ids(bundle)) == 1  # capped at the maximum page size
    outcome = await search(client, "Patient", {"_count": huge + "x"}, status=400)
    assert outcome["issue"][0]["expression"] == ["_count"]
    instance = f"/fhir/Patient/{created['id']}"
    for url, refused in [(f"/fhir/Patient/_history?_count={huge}", "_count"),
                         (f"{instance}/_history?_count={huge}", "_count"),
                         (f"/fhir/AuditEvent?patient={created['id']}&_count={huge}", "_count"),
                         (f"{instance}/_history/{huge}", None)]:
        response = await client.get(url)
        assert response.status_code == 400, url
        [issue] = response.json()["issue"]
        assert issue["severity"] == "error" and issue.get("expression", [None]) == [refused]
    response = await client.put(instance, json=created,
                                headers={"If-Match": f'W/"{huge}"', **FHIR_JSON})
    assert response.status_code == 412
    assert response.json()["issue"][0]["severity"] == "error"
    passed("search")
