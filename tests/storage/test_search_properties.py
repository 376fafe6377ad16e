"""Property tests of the search parser (``storage.search.criteria``): what a client writes by
the FHIR rules (https://hl7.org/fhir/R4/search.html#escaping: ``\\`` escapes ``,`` ``|`` ``$``
and itself; ``,`` separates OR-ed values; ``|`` separates a token's system and code) parses
back to the values it meant, through the URL encoding a query string goes through; dates give
the ranges computed here with ``datetime``; and no text at all makes the parser fail with
anything but ``InvalidSearch`` (the 400 OperationOutcome)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode

from hypothesis import example, given, settings
from hypothesis import strategies as st

from storage.errors import InvalidSearch
from storage.search.criteria import (
    ANY_SYSTEM,
    DATE_PREFIXES,
    RESULT_PARAMETERS,
    SORTABLE_TYPES,
    DateValue,
    ReferenceValue,
    SearchQuery,
    TokenValue,
    parse_query,
)
from storage.search.parameters import RESOURCE_COLUMNS, SUPPORTED_TYPES, params_for
from tests.properties import PROPERTY, passed

MAX_COUNT = 100
# Any text an HTTP query can carry (no lone surrogates), the search syntax's own characters
# often, and never NUL (refused on purpose, checked with the arbitrary texts below).
CHARACTERS = st.one_of(st.sampled_from(",|$\\:&=+%# ."),
                       st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))
TEXT = st.text(CHARACTERS, max_size=12)
WORD = st.text(CHARACTERS, min_size=1, max_size=12)


def escape(value: str) -> str:
    """A search value as a client writes it (FHIR search, Escaping Search Parameters)."""
    for special in "\\,|$":
        value = value.replace(special, "\\" + special)
    return value


def through_url(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs as the server reads them from the query string a client sent."""
    return parse_qsl(urlencode(pairs), keep_blank_values=True)


def parse(resource_type: str, pairs: list[tuple[str, str]]) -> SearchQuery:
    return parse_query(resource_type, through_url(pairs), default_count=20,
                       max_count=MAX_COUNT)


Token = tuple[object, str | None]  # (ANY_SYSTEM, code) or (system or None, code or None)
TOKENS: st.SearchStrategy[Token] = st.one_of(
    st.tuples(st.just(ANY_SYSTEM), WORD),
    st.tuples(st.one_of(st.none(), WORD), st.one_of(st.none(), WORD)))


def token_text(token: Token) -> str:
    system, code = token
    if system is ANY_SYSTEM:
        return escape(str(code))
    return f"{escape(str(system or ''))}|{escape(code or '')}"


@settings(PROPERTY, max_examples=150)
@given(st.lists(TOKENS, min_size=1, max_size=3), st.sampled_from([None, "not"]))
@example([(ANY_SYSTEM, "a,b"), ("urn:x|y", "\\|$")], None)
def test_token_values_parse_back_to_the_systems_and_codes_written(
        tokens: list[Token], modifier: str | None) -> None:
    key = "identifier" + (f":{modifier}" if modifier else "")
    query = parse("Patient", [(key, ",".join(token_text(t) for t in tokens))])
    assert not query.unknown
    [criterion] = query.criteria
    assert (criterion.name, criterion.modifier) == ("identifier", modifier)
    assert criterion.values == tuple(TokenValue(system, code) for system, code in tokens)
    passed("search")


@settings(PROPERTY, max_examples=150)
@given(st.lists(WORD, min_size=1, max_size=3), st.sampled_from([None, "exact", "contains"]),
       st.sampled_from(["family", "given", "name", "address-city"]))
@example(["Dupont, Jr", "A|B", "\\", "1$", "a\\,b"], "exact", "family")
def test_string_values_parse_back_to_the_texts_written(words: list[str], modifier: str | None,
                                                       name: str) -> None:
    key = name + (f":{modifier}" if modifier else "")
    [criterion] = parse("Patient", [(key, ",".join(escape(w) for w in words))]).criteria
    assert (criterion.name, criterion.modifier) == (name, modifier)
    assert criterion.values == tuple(words)
    passed("search")


FHIR_ID = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)


@settings(PROPERTY, max_examples=100)
@given(st.lists(st.tuples(st.sampled_from([None, "Patient", "Practitioner", "Organization"]),
                          FHIR_ID), min_size=1, max_size=3))
def test_reference_values_parse_back_to_the_type_and_id_written(
        references: list[tuple[str | None, str]]) -> None:
    raw = ",".join(f"{t}/{i}" if t else i for t, i in references)
    [criterion] = parse("Observation", [("subject", raw)]).criteria
    assert criterion.values == tuple(ReferenceValue(t, i) for t, i in references)
    passed("search")


PRECISIONS = ("year", "month", "day", "minute", "second", "fraction")
ZONES = st.one_of(st.none(), st.just("Z"), st.integers(-14 * 60, 14 * 60))


def date_text(moment: datetime, precision: str, digits: int, zone: str | int | None) -> str:
    text = f"{moment.year:04d}"
    if precision != "year":
        text += f"-{moment.month:02d}"
    if precision not in ("year", "month"):
        text += f"-{moment.day:02d}"
    if precision in ("minute", "second", "fraction"):
        text += f"T{moment.hour:02d}:{moment.minute:02d}"
        if precision != "minute":
            text += f":{moment.second:02d}"
        if precision == "fraction":
            text += "." + f"{moment.microsecond:06d}"[:digits]
        if isinstance(zone, int):
            text += f"{'+' if zone >= 0 else '-'}{abs(zone) // 60:02d}:{abs(zone) % 60:02d}"
        elif zone:
            text += zone
    return text


def expected_range(moment: datetime, precision: str, digits: int,
                   zone: str | int | None) -> tuple[int, int]:
    """[low, high) in epoch microseconds, with datetime: the value's whole precision."""
    offset = timezone(timedelta(minutes=zone)) if isinstance(zone, int) else UTC
    if precision == "year":
        start, end = datetime(moment.year, 1, 1), datetime(moment.year + 1, 1, 1)
    elif precision == "month":
        start = datetime(moment.year, moment.month, 1)
        end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1)
    elif precision == "day":
        start = datetime(moment.year, moment.month, moment.day)
        end = start + timedelta(days=1)
    elif precision == "minute":
        start = moment.replace(second=0, microsecond=0)
        end = start + timedelta(minutes=1)
    elif precision == "second":
        start = moment.replace(microsecond=0)
        end = start + timedelta(seconds=1)
    else:
        kept = int(f"{moment.microsecond:06d}"[:digits].ljust(6, "0"))
        start = moment.replace(microsecond=kept)
        end = start + timedelta(microseconds=10 ** (6 - digits))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    zoned = offset if precision in ("minute", "second", "fraction") else UTC
    return ((start.replace(tzinfo=zoned) - epoch) // timedelta(microseconds=1),
            (end.replace(tzinfo=zoned) - epoch) // timedelta(microseconds=1))


@settings(PROPERTY, max_examples=150)
@given(st.sampled_from(("", *DATE_PREFIXES)),
       st.datetimes(datetime(1, 1, 2), datetime(9998, 12, 30)),
       st.sampled_from(PRECISIONS), st.integers(1, 6), ZONES)
def test_a_date_with_a_prefix_parses_to_the_range_its_precision_covers(
        prefix: str, moment: datetime, precision: str, digits: int,
        zone: str | int | None) -> None:
    text = date_text(moment, precision, digits, zone)
    [criterion] = parse("Patient", [("birthdate", prefix + text)]).criteria
    low, high = expected_range(moment, precision, digits, zone)
    assert criterion.values == (DateValue(prefix or "eq", low, high),), text  # type: ignore[arg-type]
    passed("search")


def sortable(resource_type: str) -> list[str]:
    return [*RESOURCE_COLUMNS, *(name for name, p in params_for(resource_type).items()
                                 if p.type in SORTABLE_TYPES)]


@settings(PROPERTY, max_examples=100)
@given(st.sampled_from(["Patient", "DocumentReference", "Observation"]).flatmap(
    lambda t: st.tuples(st.just(t), st.lists(st.tuples(st.sampled_from(sortable(t)),
                                                       st.booleans()), max_size=3))))
def test_sort_keys_parse_back_in_order_with_their_direction(
        sort: tuple[str, list[tuple[str, bool]]]) -> None:
    resource_type, keys = sort
    raw = ",".join(("-" if descending else "") + name for name, descending in keys)
    query = parse(resource_type, [("_sort", raw)])
    assert [(k.name, k.descending) for k in query.sort] == keys
    passed("search")


def capped(digits: str) -> int:
    """What ``_count`` asks for, capped at the server's maximum, without int() of a
    thousand-digit string."""
    significant = digits.lstrip("0") or "0"
    return MAX_COUNT if len(significant) > 3 else min(int(significant), MAX_COUNT)


@settings(PROPERTY, max_examples=100)
@given(st.one_of(st.text(max_size=8), st.from_regex(r"[0-9]{1,30}", fullmatch=True),
                 st.integers(4000, 6000).map("9".__mul__)))
@example("9" * 5000)  # more digits than int() converts (sys.get_int_max_str_digits)
@example("0" * 5000 + "7")
def test_count_is_a_plain_number_capped_at_the_maximum_or_a_400(raw: str) -> None:
    try:
        query = parse_query("Patient", [("_count", raw)], default_count=20,
                            max_count=MAX_COUNT)
    except InvalidSearch as refused:
        assert not (raw.isascii() and raw.isdigit()), raw
        assert refused.param == "_count"
    else:
        assert raw.isascii() and raw.isdigit()
        assert query.count == capped(raw)
    passed("search")


def keys_for(resource_type: str) -> st.SearchStrategy[str]:
    """Parameter names the type knows (with modifiers and chains) and any other text."""
    known = [*params_for(resource_type), *RESOURCE_COLUMNS, *RESULT_PARAMETERS]
    return st.one_of(
        st.sampled_from(known),
        st.tuples(st.sampled_from(known), st.sampled_from(":."), TEXT).map("".join),
        st.tuples(st.sampled_from(known), st.sampled_from([":missing", ":exact", ":not",
                                                           ":contains", ":Patient",
                                                           ".name", ".identifier"])).map(
            "".join),
        st.text(max_size=10))


VALUES = st.one_of(st.text(max_size=20), TEXT.map(lambda t: t + "\0"),
                   st.tuples(st.sampled_from(("", *DATE_PREFIXES, "ap")),
                             st.from_regex(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9:.+Z-]{0,20})?)?)?",
                                           fullmatch=True)).map("".join),
                   st.sampled_from(["true", "false", "Patient/1", "a|b", "|", "\\", ",",
                                    "DocumentReference:subject", "Patient:link:Patient"]))


@settings(PROPERTY, max_examples=200)
@given(st.sampled_from(SUPPORTED_TYPES).flatmap(
    lambda t: st.tuples(st.just(t), st.lists(st.tuples(keys_for(t), VALUES), max_size=4))))
def test_any_query_parses_or_is_refused_as_an_invalid_search(
        query: tuple[str, list[tuple[str, str]]]) -> None:
    resource_type, pairs = query
    try:
        parsed = parse_query(resource_type, pairs, default_count=20, max_count=MAX_COUNT)
    except InvalidSearch as refused:
        assert str(refused)
    else:
        assert parsed.count is not None and 0 <= parsed.count <= MAX_COUNT
        assert all(c.name for c in parsed.criteria)
    passed("search")
