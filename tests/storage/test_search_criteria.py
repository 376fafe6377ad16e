"""Parsing a FHIR search query into criteria and result parameters."""

from __future__ import annotations

import pytest

from storage.errors import InvalidSearch
from storage.search.criteria import (
    ANY_SYSTEM,
    Criterion,
    DateValue,
    IncludeSpec,
    ReferenceValue,
    SearchQuery,
    TokenValue,
    parse_query,
)
from storage.search.values import date_range


def parse(resource_type: str, *pairs: tuple[str, str], max_count: int = 100) -> SearchQuery:
    return parse_query(resource_type, list(pairs), default_count=20, max_count=max_count)


def only(query: SearchQuery) -> Criterion:
    assert not query.unknown
    assert len(query.criteria) == 1
    return query.criteria[0]


def invalid(resource_type: str, *pairs: tuple[str, str]) -> InvalidSearch:
    with pytest.raises(InvalidSearch) as caught:
        parse(resource_type, *pairs)
    return caught.value


# ----------------------------------------------------------------------------- tokens


def test_a_token_without_a_bar_matches_the_code_in_any_system() -> None:
    criterion = only(parse("Patient", ("gender", "female")))
    assert criterion.name == "gender"
    assert criterion.type == "token"
    assert criterion.values == (TokenValue(ANY_SYSTEM, "female"),)


def test_a_token_with_system_and_code_matches_both() -> None:
    criterion = only(parse("Patient", ("identifier", "urn:oid:1.2|123")))
    assert criterion.values == (TokenValue("urn:oid:1.2", "123"),)


def test_a_token_with_an_empty_system_matches_codes_without_a_system() -> None:
    assert only(parse("Patient", ("identifier", "|123"))).values == (TokenValue(None, "123"),)


def test_a_token_with_only_a_system_matches_any_code_in_it() -> None:
    assert only(parse("Patient", ("identifier", "urn:oid:1.2|"))).values == (
        TokenValue("urn:oid:1.2", None),)


def test_a_system_may_itself_contain_colons_and_slashes() -> None:
    assert only(parse("DocumentReference", ("type", "http://loinc.org|11488-4"))).values == (
        TokenValue("http://loinc.org", "11488-4"),)


def test_escaped_commas_bars_and_dollars_are_literal() -> None:
    assert only(parse("Patient", ("identifier", r"a\,b"))).values == (
        TokenValue(ANY_SYSTEM, "a,b"),)
    assert only(parse("Patient", ("identifier", r"s|a\|b"))).values == (TokenValue("s", "a|b"),)
    assert only(parse("Patient", ("identifier", r"s\|x|y"))).values == (TokenValue("s|x", "y"),)
    assert only(parse("Patient", ("identifier", r"a\$b"))).values == (
        TokenValue(ANY_SYSTEM, "a$b"),)


def test_an_escaped_backslash_does_not_escape_the_separator() -> None:
    assert only(parse("Patient", ("identifier", "a\\\\,b"))).values == (
        TokenValue(ANY_SYSTEM, "a\\"), TokenValue(ANY_SYSTEM, "b"))


def test_escapes_in_string_values_are_removed() -> None:
    assert only(parse("Patient", ("family", r"a\,b"))).values == ("a,b",)


def test_a_comma_separates_alternatives() -> None:
    criterion = only(parse("Patient", ("gender", "male,female")))
    assert criterion.values == (TokenValue(ANY_SYSTEM, "male"), TokenValue(ANY_SYSTEM, "female"))


def test_a_repeated_parameter_adds_a_criterion_that_must_also_match() -> None:
    query = parse("Patient", ("family", "dupont"), ("family", "durand,martin"))
    assert [c.values for c in query.criteria] == [("dupont",), ("durand", "martin")]


def test_an_empty_value_is_invalid() -> None:
    assert invalid("Patient", ("gender", "")).param == "gender"
    assert invalid("Patient", ("gender", ",")).param == "gender"


# -------------------------------------------------------------------------- modifiers


def test_missing_true_and_false_are_parsed() -> None:
    assert only(parse("Patient", ("birthdate:missing", "true"))).missing is True
    criterion = only(parse("Patient", ("birthdate:missing", "false")))
    assert criterion.missing is False
    assert criterion.modifier == "missing"


def test_missing_takes_only_true_or_false() -> None:
    assert invalid("Patient", ("gender:missing", "yes")).param == "gender"


def test_not_applies_to_tokens() -> None:
    criterion = only(parse("Patient", ("gender:not", "male")))
    assert criterion.modifier == "not"
    assert criterion.values == (TokenValue(ANY_SYSTEM, "male"),)


def test_exact_and_contains_apply_to_strings() -> None:
    assert only(parse("Patient", ("family:exact", "Lefèvre"))).modifier == "exact"
    assert only(parse("Patient", ("family:contains", "fev"))).modifier == "contains"


def test_a_type_modifier_restricts_a_reference() -> None:
    criterion = only(parse("DocumentReference", ("subject:Patient", "123")))
    assert criterion.modifier is None
    assert criterion.values == (ReferenceValue("Patient", "123"),)


def test_a_type_modifier_must_agree_with_a_typed_value() -> None:
    assert only(parse("DocumentReference", ("subject:Patient", "Patient/123"))).values == (
        ReferenceValue("Patient", "123"),)
    assert invalid("DocumentReference", ("subject:Patient", "Group/1")).param == "subject"


def test_reference_values_are_split_into_type_and_id() -> None:
    values = only(parse("DocumentReference", ("patient", "Patient/1,2,"
                                              "http://h/fhir/Patient/3/_history/4"))).values
    assert values == (ReferenceValue("Patient", "1"), ReferenceValue(None, "2"),
                      ReferenceValue("Patient", "3"))


def test_unsupported_modifiers_are_unknown() -> None:
    query = parse("Patient", ("gender:text", "x"), ("family:not", "x"), ("birthdate:exact", "x"),
                  ("identifier:of-type", "x"), ("_id:missing", "true"),
                  ("_lastUpdated:not", "2023"), ("subject:Patient", "1"))
    assert query.criteria == []
    assert query.unknown == ["gender:text", "family:not", "birthdate:exact",
                             "identifier:of-type", "_id:missing", "_lastUpdated:not",
                             "subject:Patient"]


def test_a_type_modifier_naming_an_unserved_type_is_unknown() -> None:
    assert parse("DocumentReference", ("subject:Medication", "1")).unknown == [
        "subject:Medication"]


# ---------------------------------------------------------------------------- chains


def test_a_chain_filters_on_the_referenced_resource() -> None:
    criterion = only(parse("DocumentReference", ("patient.identifier", "sys|val")))
    assert criterion.name == "patient"
    assert criterion.chain is not None
    targets, inner = criterion.chain
    assert targets == "Patient"
    assert [(c.name, c.values) for c in inner] == [("identifier", (TokenValue("sys", "val"),))]


def test_a_chain_may_name_the_target_type() -> None:
    criterion = only(parse("DocumentReference", ("subject:Patient.name", "x")))
    assert criterion.chain is not None
    targets, inner = criterion.chain
    assert targets == "Patient"
    assert inner[0].name == "name"
    assert inner[0].values == ("x",)


def test_a_chain_over_several_target_types_keeps_those_with_the_parameter() -> None:
    criterion = only(parse("DocumentReference", ("author.name", "x")))
    assert criterion.chain is not None
    assert criterion.chain[0].split(",") == ["Practitioner", "Organization", "Patient"]


def test_a_chained_modifier_applies_to_the_inner_parameter() -> None:
    criterion = only(parse("DocumentReference", ("patient.family:exact", "Dupont")))
    assert criterion.chain is not None
    assert criterion.chain[1][0].modifier == "exact"


def test_a_chain_on_an_unknown_or_non_reference_parameter_is_unknown() -> None:
    query = parse("DocumentReference", ("patient.nope", "1"), ("status.code", "1"),
                  ("subject:Binary.name", "x"), ("subject:Foo.name", "x"),
                  ("patient.family:nope", "x"))
    assert query.criteria == []
    assert query.unknown == ["patient.nope", "status.code", "subject:Binary.name",
                             "subject:Foo.name", "patient.family:nope"]


# ------------------------------------------------------------------------------ dates


@pytest.mark.parametrize("prefix", ["eq", "ne", "lt", "gt", "le", "ge", "sa", "eb"])
def test_every_date_prefix_is_parsed(prefix: str) -> None:
    low, high = date_range("2023-05")
    assert only(parse("Patient", ("birthdate", f"{prefix}2023-05"))).values == (
        DateValue(prefix, low, high),)  # type: ignore[arg-type]


def test_a_date_without_a_prefix_means_eq() -> None:
    value = only(parse("Patient", ("birthdate", "2023"))).values[0]
    assert isinstance(value, DateValue)
    assert value.prefix == "eq"


def test_an_invalid_date_names_the_parameter() -> None:
    error = invalid("Patient", ("birthdate", "ge2023-13"))
    assert error.param == "birthdate"
    assert invalid("Patient", ("_lastUpdated", "yesterday")).param == "_lastUpdated"
    assert invalid("Patient", ("birthdate", "xx2023")).param == "birthdate"


def test_last_updated_and_id_are_resource_columns() -> None:
    query = parse("Patient", ("_lastUpdated", "gt2023-01-01"), ("_id", "a,b"))
    assert [(c.name, c.type) for c in query.criteria] == [("_lastUpdated", "date"),
                                                          ("_id", "token")]
    assert query.criteria[1].values == (TokenValue(ANY_SYSTEM, "a"), TokenValue(ANY_SYSTEM, "b"))


# ------------------------------------------------------------------ result parameters


def test_count_defaults_and_is_capped_at_the_maximum() -> None:
    assert parse("Patient").count == 20
    assert parse("Patient", ("_count", "7")).count == 7
    assert parse("Patient", ("_count", "0")).count == 0
    assert parse("Patient", ("_count", "5000"), max_count=100).count == 100


@pytest.mark.parametrize("value", ["-1", "ten", "", "1.5", "²", "٣"])
def test_count_must_be_a_plain_non_negative_integer(value: str) -> None:
    assert invalid("Patient", ("_count", value)).param == "_count"


def test_sort_keys_keep_their_order_and_direction() -> None:
    query = parse("Patient", ("_sort", "-birthdate,family,_id,-_lastUpdated"))
    assert [(k.name, k.descending) for k in query.sort] == [
        ("birthdate", True), ("family", False), ("_id", False), ("_lastUpdated", True)]
    assert query.sort[0].param is not None
    assert query.sort[2].param is None


@pytest.mark.parametrize("value", ["nope", "-nope", "general-practitioner", "--birthdate"])
def test_an_unsortable_key_is_invalid(value: str) -> None:
    assert invalid("Patient", ("_sort", value)).param == "_sort"


def test_total_takes_none_estimate_or_accurate() -> None:
    assert parse("Patient", ("_total", "none")).total == "none"
    assert parse("Patient", ("_total", "accurate")).total == "accurate"
    assert invalid("Patient", ("_total", "all")).param == "_total"


def test_summary_takes_true_false_count_or_data() -> None:
    assert parse("Patient", ("_summary", "count")).summary == "count"
    assert parse("Patient", ("_summary", "true")).summary == "true"
    assert invalid("Patient", ("_summary", "yes")).param == "_summary"


def test_elements_are_collected_from_every_occurrence() -> None:
    query = parse("Patient", ("_elements", "name, gender"), ("_elements", "birthDate,"))
    assert query.elements == ["name", "gender", "birthDate"]


def test_include_and_revinclude_are_parsed() -> None:
    query = parse("DocumentReference", ("_include", "DocumentReference:subject"),
                  ("_include", "DocumentReference:author:Practitioner"))
    assert query.includes == [
        IncludeSpec("DocumentReference", "subject", None, reverse=False),
        IncludeSpec("DocumentReference", "author", "Practitioner", reverse=False)]
    assert parse("Patient", ("_revinclude", "DocumentReference:subject")).includes == [
        IncludeSpec("DocumentReference", "subject", None, reverse=True)]


@pytest.mark.parametrize(("key", "value"), [
    ("_include", "DocumentReference"),
    ("_include", "*"),
    ("_include", "DocumentReference:status"),
    ("_include", "DocumentReference:nope"),
    ("_include", "DocumentReference:subject:Foo"),
    ("_include", "DocumentReference:subject:Patient:x"),
    ("_include", "Foo:subject"),
    ("_include", "Patient:organization"),
    ("_revinclude", "DocumentReference:date"),
])
def test_an_invalid_include_is_rejected(key: str, value: str) -> None:
    assert invalid("DocumentReference", (key, value)).param == key


def test_include_iterate_is_unknown_rather_than_an_error() -> None:
    query = parse("DocumentReference", ("_include:iterate", "DocumentReference:subject"),
                  ("_revinclude:iterate", "DocumentReference:subject"))
    assert query.includes == []
    assert query.unknown == ["_include:iterate", "_revinclude:iterate"]


def test_format_pretty_and_cursor_are_not_criteria() -> None:
    query = parse("Patient", ("_format", "json"), ("_pretty", "true"), ("_cursor", "abc"))
    assert query.criteria == []
    assert query.unknown == []
    assert query.cursor == "abc"


def test_unknown_parameters_are_listed_in_order() -> None:
    query = parse("Patient", ("foo", "1"), ("gender", "male"), ("_has:Observation", "x"),
                  ("_text", "x"))
    assert [c.name for c in query.criteria] == ["gender"]
    assert query.unknown == ["foo", "_has:Observation", "_text"]


def test_parameters_of_another_type_are_unknown() -> None:
    assert parse("Patient", ("subject", "Patient/1")).unknown == ["subject"]
    assert parse("Binary", ("_tag", "x")).unknown == []
