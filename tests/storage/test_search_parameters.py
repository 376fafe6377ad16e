"""Search parameter definitions, value ranges, text normalisation and index extraction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.documents.samples import document_reference
from storage.search.extract import extract_index_entries
from storage.search.parameters import params_for
from storage.search.values import (
    CODE_WIDTH,
    MAX_INSTANT,
    TEXT_WIDTH,
    date_range,
    normalize_text,
    split_reference,
    to_micros,
)
from tests.factories import IPP_SYSTEM, patient


def micros(*args: int, offset: timedelta | None = None) -> int:
    zone = UTC if offset is None else timezone(offset)
    return to_micros(datetime(*args, tzinfo=zone))  # type: ignore[misc]


SECOND = 1_000_000
MINUTE = 60 * SECOND
DAY = 86_400 * SECOND


# ------------------------------------------------------------------------- date_range


def test_a_year_covers_the_whole_year() -> None:
    assert date_range("2023") == (micros(2023, 1, 1), micros(2024, 1, 1))


def test_a_leap_year_is_one_day_longer() -> None:
    low, high = date_range("2024")
    assert high - low == 366 * DAY


def test_a_month_covers_the_whole_month() -> None:
    assert date_range("2023-02") == (micros(2023, 2, 1), micros(2023, 3, 1))
    assert date_range("2023-11") == (micros(2023, 11, 1), micros(2023, 12, 1))


def test_december_ends_on_the_first_of_january_of_the_next_year() -> None:
    assert date_range("2023-12") == (micros(2023, 12, 1), micros(2024, 1, 1))


def test_a_day_covers_twenty_four_hours() -> None:
    assert date_range("2023-05-31") == (micros(2023, 5, 31), micros(2023, 6, 1))
    assert date_range("2023-12-31") == (micros(2023, 12, 31), micros(2024, 1, 1))


def test_a_minute_covers_sixty_seconds() -> None:
    low, high = date_range("2023-05-01T10:00Z")
    assert low == micros(2023, 5, 1, 10, 0)
    assert high - low == MINUTE


def test_a_second_covers_one_second() -> None:
    low, high = date_range("2023-05-01T10:00:30Z")
    assert low == micros(2023, 5, 1, 10, 0, 30)
    assert high - low == SECOND


def test_fractional_seconds_cover_the_precision_they_are_given_with() -> None:
    low, high = date_range("2023-05-01T10:00:30.5Z")
    assert low == micros(2023, 5, 1, 10, 0, 30) + 500_000
    assert high - low == 100_000
    low, high = date_range("2023-05-01T10:00:30.123Z")
    assert low == micros(2023, 5, 1, 10, 0, 30) + 123_000
    assert high - low == 1_000
    low, high = date_range("2023-05-01T10:00:30.123456Z")
    assert low == micros(2023, 5, 1, 10, 0, 30) + 123_456
    assert high - low == 1


def test_fractions_finer_than_a_microsecond_are_truncated() -> None:
    low, high = date_range("2023-05-01T10:00:30.1234567Z")
    assert low == micros(2023, 5, 1, 10, 0, 30) + 123_456
    assert high - low == 1


def test_an_instant_with_an_offset_is_converted_to_utc() -> None:
    assert date_range("2023-05-01T10:00:00+02:00") == date_range("2023-05-01T08:00:00Z")
    assert date_range("2023-05-01T10:00-05:30") == date_range("2023-05-01T15:30Z")
    assert date_range("2023-05-01T10:00:00+02:00")[0] == micros(2023, 5, 1, 8, 0)


def test_a_time_without_a_zone_is_taken_as_utc() -> None:
    assert date_range("2023-05-01T10:00:00") == date_range("2023-05-01T10:00:00Z")


def test_surrounding_whitespace_is_ignored() -> None:
    assert date_range(" 2023-05-01 ") == date_range("2023-05-01")


def test_the_last_representable_values_do_not_overflow() -> None:
    year = date_range("9999")
    month = date_range("9999-12")
    day = date_range("9999-12-31")
    minute = date_range("9999-12-31T23:59Z")
    assert year[0] < month[0] < day[0] < minute[0]
    assert year[1] == month[1] == day[1] == minute[1]
    assert minute[1] > minute[0]
    west = date_range("9999-12-31T23:59-02:00")
    assert west[1] - west[0] == MINUTE


@pytest.mark.parametrize("value", [
    "", "20", "2023-5", "2023-13", "2023-00", "2023-02-30", "2023-05-32", "2023/05/01",
    "2023-05-01T", "2023-05-01T10", "2023-05-01T25:00Z", "2023-05-01T10:60Z",
    "2023-05-01T10:00:61Z", "2023-05-01Z", "2023-05-01T10:00+2:00", "2023-05-01T10:00+25:00",
    "0000", "next year", "ge2023", "\uff12\uff10\uff12\uff13",
])
def test_bad_dates_raise_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        date_range(value)


# ----------------------------------------------------------------------- normalize_text


def test_normalize_text_removes_accents() -> None:
    assert normalize_text("Lefèvre") == "lefevre"
    assert normalize_text("Éloïse Çağla") == "eloise cagla"


def test_normalize_text_ignores_case() -> None:
    assert normalize_text("DUPONT") == normalize_text("dupont") == "dupont"
    assert normalize_text("Straße") == "strasse"


def test_normalize_text_collapses_whitespace() -> None:
    assert normalize_text("  Jean \t  Pierre\n") == "jean pierre"


# -------------------------------------------------------------------- split_reference


def test_split_reference_splits_a_relative_reference() -> None:
    assert split_reference("Patient/123") == ("Patient", "123")


def test_split_reference_splits_an_absolute_reference() -> None:
    assert split_reference("http://example.org/fhir/Patient/123") == ("Patient", "123")
    assert split_reference("https://example.org/Organization/a.b-c") == ("Organization", "a.b-c")


def test_split_reference_drops_the_history_part() -> None:
    assert split_reference("Patient/123/_history/2") == ("Patient", "123")
    assert split_reference("http://example.org/fhir/Patient/123/_history/2") == (
        "Patient", "123")


def test_split_reference_keeps_what_it_cannot_split() -> None:
    assert split_reference("123") == (None, "123")
    assert split_reference("urn:uuid:0f1e2d3c") == (None, "urn:uuid:0f1e2d3c")
    assert split_reference("patient/123") == (None, "patient/123")
    assert split_reference("a/Patient/123") == (None, "a/Patient/123")
    long_type = "A" + "b" * 64 + "/1"
    assert split_reference(long_type) == (None, long_type)


# --------------------------------------------------------------------- index extraction


def test_patient_identifier_is_a_token_with_its_system() -> None:
    entries = extract_index_entries(patient(ipp="1234567890123"))
    assert ("identifier", IPP_SYSTEM, "1234567890123") in entries.tokens


def test_patient_name_parts_are_strings() -> None:
    resource = patient("Lefèvre", "Éloïse")
    resource["name"][0]["prefix"] = ["Mme"]
    entries = extract_index_entries(resource)
    assert ("family", "lefevre", "Lefèvre") in entries.strings
    assert ("given", "eloise", "Éloïse") in entries.strings
    names = {(n, e) for p, n, e in entries.strings if p == "name"}
    assert names == {("lefevre", "Lefèvre"), ("eloise", "Éloïse"), ("mme", "Mme")}


def test_patient_birthdate_is_indexed_as_the_day_range() -> None:
    entries = extract_index_entries(patient(birth_date="1980-02-29"))
    assert ("birthdate", *date_range("1980-02-29")) in entries.dates
    assert [d for d in entries.dates if d[0] == "birthdate"] == [
        ("birthdate", micros(1980, 2, 29), micros(1980, 3, 1))]


def test_patient_gender_and_active_are_tokens_without_system() -> None:
    entries = extract_index_entries(patient(gender="female", active=False))
    assert ("gender", None, "female") in entries.tokens
    assert ("active", None, "false") in entries.tokens
    assert ("active", None, "true") in extract_index_entries(patient(active=True)).tokens


def test_telecom_is_a_token_in_the_contact_point_system() -> None:
    resource = patient(telecom=[{"system": "email", "value": "a@b.fr"}])
    assert ("telecom", "email", "a@b.fr") in extract_index_entries(resource).tokens


def test_document_reference_codeable_concepts_are_tokens_per_coding() -> None:
    resource = document_reference("Patient/p1", type_code="11488-4", content_type="text/plain")
    resource["category"] = [{"coding": [{"system": "http://a", "code": "x"},
                                         {"system": "http://b", "code": "y"}]}]
    entries = extract_index_entries(resource)
    assert ("type", "http://loinc.org", "11488-4") in entries.tokens
    assert ("category", "http://a", "x") in entries.tokens
    assert ("category", "http://b", "y") in entries.tokens
    assert ("status", None, "current") in entries.tokens
    assert ("contenttype", None, "text/plain") in entries.tokens


def test_document_reference_references_are_split_by_type() -> None:
    resource = document_reference("Patient/p1", authors=["Practitioner/pr1"])
    entries = extract_index_entries(resource)
    assert ("subject", "Patient", "p1") in entries.references
    assert ("patient", "Patient", "p1") in entries.references
    assert ("author", "Practitioner", "pr1") in entries.references


def test_the_patient_parameter_indexes_only_patient_references() -> None:
    resource = document_reference("Patient/p1")
    resource["subject"] = {"reference": "Group/g1"}
    entries = extract_index_entries(resource)
    assert ("subject", "Group", "g1") in entries.references
    assert not [r for r in entries.references if r[0] == "patient"]


def test_contained_and_unsplittable_references_are_handled() -> None:
    resource = document_reference("Patient/p1")
    resource["author"] = [{"reference": "#c1"}, {"reference": "urn:uuid:abc"}]
    entries = extract_index_entries(resource)
    assert [r for r in entries.references if r[0] == "author"] == [
        ("author", None, "urn:uuid:abc")]


def test_long_values_are_cut_to_the_index_column_widths() -> None:
    resource = patient("N" * 2000, identifier=[{"system": "s" * 300, "value": "v" * 300}])
    entries = extract_index_entries(resource)
    (_, system, code), = [t for t in entries.tokens if t[0] == "identifier"]
    assert (system, code) == ("s" * CODE_WIDTH, "v" * CODE_WIDTH)
    (_, normalized, exact), = [s for s in entries.strings if s[0] == "family"]
    assert (normalized, exact) == ("n" * CODE_WIDTH, "N" * TEXT_WIDTH)


def test_document_reference_date_and_context_period_are_ranges() -> None:
    resource = document_reference("Patient/p1", date="2026-01-15T10:00:00+01:00")
    resource["context"] = {"period": {"start": "2026-01-01", "end": "2026-01-31"}}
    entries = extract_index_entries(resource)
    assert ("date", *date_range("2026-01-15T10:00:00+01:00")) in entries.dates
    assert ("period", micros(2026, 1, 1), micros(2026, 2, 1)) in entries.dates


def test_an_open_period_extends_to_the_end_of_time() -> None:
    resource = document_reference("Patient/p1")
    resource["context"] = {"period": {"start": "2026-01-01"}}
    entries = extract_index_entries(resource)
    assert ("period", micros(2026, 1, 1), MAX_INSTANT) in entries.dates


def test_every_supported_type_has_a_parameter_table() -> None:
    assert "identifier" in params_for("Patient")
    assert params_for("Patient")["birthdate"].type == "date"
    assert "_tag" in params_for("Binary")
    assert params_for("DocumentReference")["patient"].only_targets
