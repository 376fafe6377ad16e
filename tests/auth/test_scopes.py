"""SMART App Launch v2 scopes: parsing, permission checks and narrowing a request."""

from __future__ import annotations

import re

import pytest

from auth.scopes import PERMISSIONS, Scope, ScopeError, ScopeSet, parse_scope


def scopes(text: str) -> ScopeSet:
    return ScopeSet.parse(text)


# ----------------------------------------------------------------------------- parse_scope


def test_a_v2_scope_gives_its_context_type_and_permission_letters() -> None:
    assert parse_scope("patient/DocumentReference.rs") == Scope(
        "patient", "DocumentReference", frozenset("rs")
    )


def test_every_context_is_accepted() -> None:
    for context in ("patient", "user", "system"):
        scope = parse_scope(f"{context}/Observation.c")
        assert scope is not None
        assert scope.context == context


def test_all_five_letters_in_order_are_accepted() -> None:
    scope = parse_scope("user/Patient.cruds")
    assert scope is not None
    assert scope.permissions == frozenset(PERMISSIONS)


def test_a_wildcard_resource_type_is_kept_as_a_star() -> None:
    assert parse_scope("system/*.rs") == Scope("system", "*", frozenset("rs"))


@pytest.mark.parametrize(
    ("v1", "v2"),
    [
        ("patient/Observation.read", "patient/Observation.rs"),
        ("patient/Observation.write", "patient/Observation.cud"),
        ("patient/Observation.*", "patient/Observation.cruds"),
        ("user/*.*", "user/*.cruds"),
    ],
)
def test_v1_suffixes_mean_their_v2_letters(v1: str, v2: str) -> None:
    assert str(parse_scope(v1)) == v2


def test_a_scope_prints_its_letters_in_canonical_order() -> None:
    assert str(Scope("patient", "DocumentReference", frozenset("sr"))) == (
        "patient/DocumentReference.rs"
    )


@pytest.mark.parametrize("text", ["patient/Observation.sr", "patient/Observation.dus",
                                  "patient/Observation.rr", "patient/Observation.RS",
                                  "patient/Observation.rx", "patient/Observation.reads"])
def test_letters_out_of_order_repeated_or_unknown_are_rejected(text: str) -> None:
    with pytest.raises(ScopeError, match="in that order"):
        parse_scope(text)


@pytest.mark.parametrize("text", ["patient/Observation.", "patient/Observation", "patient/"])
def test_a_scope_without_permissions_is_rejected(text: str) -> None:
    with pytest.raises(ScopeError, match="no permissions"):
        parse_scope(text)


def test_an_unknown_context_is_rejected() -> None:
    with pytest.raises(ScopeError, match="unknown context 'admin'"):
        parse_scope("admin/x.r")


@pytest.mark.parametrize("type_", ["observation", "Observation1", "O", "Obs-ervation", "**"])
def test_a_resource_type_that_is_not_a_fhir_type_name_is_rejected(type_: str) -> None:
    with pytest.raises(ScopeError, match="not a FHIR resource type"):
        parse_scope(f"patient/{type_}.rs")


def test_query_parameters_are_rejected_as_unsupported() -> None:
    text = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/x|laboratory"
    with pytest.raises(ScopeError, match=r"^scopes with query parameters are not supported$"):
        parse_scope(text)


def test_a_scope_error_is_a_value_error() -> None:
    assert issubclass(ScopeError, ValueError)


@pytest.mark.parametrize(
    "text",
    ["openid", "fhirUser", "profile", "offline_access", "online_access", "launch",
     "launch/patient", "launch/encounter", "scope_all", "", "https://example.org/scopes/x.r"],
)
def test_non_resource_scopes_parse_to_none(text: str) -> None:
    assert parse_scope(text) is None


def test_a_scope_cannot_be_built_with_invalid_parts() -> None:
    with pytest.raises(ScopeError):
        Scope("patient", "Observation", frozenset())
    with pytest.raises(ScopeError):
        Scope("patient", "Observation", frozenset("x"))
    with pytest.raises(ScopeError):
        Scope("patient", "observation", frozenset("r"))


# ----------------------------------------------------------------------------- ScopeSet.parse


def test_a_scope_string_splits_into_resource_scopes_and_other_scopes() -> None:
    parsed = scopes("openid fhirUser patient/Observation.rs offline_access")
    assert parsed.resource_scopes == (Scope("patient", "Observation", frozenset("rs")),)
    assert parsed.other == ("fhirUser", "offline_access", "openid")


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_an_empty_or_blank_scope_string_is_an_empty_set(text: str) -> None:
    assert scopes(text) == ScopeSet((), ())
    assert str(scopes(text)) == ""


def test_a_malformed_scope_in_a_string_raises_and_names_the_scope() -> None:
    with pytest.raises(ScopeError, match=re.escape("'patient/Observation.sr'")):
        scopes("openid patient/Observation.sr")


def test_has_finds_non_resource_scopes_only() -> None:
    parsed = scopes("openid launch/patient patient/*.rs")
    assert parsed.has("openid")
    assert parsed.has("launch/patient")
    assert not parsed.has("offline_access")
    assert not parsed.has("patient/*.rs")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("patient/Observation.rs", "patient/Observation.rs"),
        ("openid   patient/Observation.read  fhirUser", "fhirUser openid patient/Observation.rs"),
        ("patient/Observation.r patient/Observation.s", "patient/Observation.rs"),
        ("system/Patient.r user/Patient.r patient/Patient.r",
         "patient/Patient.r user/Patient.r system/Patient.r"),
        ("patient/Patient.r patient/*.s patient/Encounter.r",
         "patient/*.s patient/Encounter.r patient/Patient.r"),
        ("openid openid patient/*.rs patient/*.rs", "openid patient/*.rs"),
    ],
)
def test_a_scope_set_prints_canonically_and_round_trips(text: str, canonical: str) -> None:
    assert str(scopes(text)) == canonical
    assert str(scopes(canonical)) == canonical
    assert scopes(canonical) == scopes(text)


# ----------------------------------------------------------------------------- allows


def test_a_specific_scope_allows_only_its_type_and_letters() -> None:
    granted = scopes("patient/DocumentReference.rs")
    assert granted.allows("DocumentReference", "r")
    assert granted.allows("DocumentReference", "s")
    assert not granted.allows("DocumentReference", "c")
    assert not granted.allows("Observation", "r")


def test_a_wildcard_scope_allows_any_type() -> None:
    granted = scopes("user/*.cu")
    assert granted.allows("Observation", "c")
    assert granted.allows("Binary", "u")
    assert not granted.allows("Binary", "d")


def test_permissions_from_several_scopes_add_up() -> None:
    granted = scopes("patient/Observation.r patient/*.s user/Observation.d")
    assert granted.allows("Observation", "r")
    assert granted.allows("Observation", "s")
    assert granted.allows("Observation", "d")
    assert not granted.allows("Patient", "r")
    assert granted.allows("Patient", "s")


def test_allows_can_be_restricted_to_some_contexts() -> None:
    granted = scopes("patient/Observation.rs system/*.c")
    assert granted.allows("Observation", "r", contexts=("patient",))
    assert not granted.allows("Observation", "r", contexts=("user", "system"))
    assert granted.allows("Observation", "c", contexts=("system",))
    assert not granted.allows("Observation", "c", contexts=("patient", "user"))
    assert not granted.allows("Observation", "r", contexts=())


def test_a_single_context_may_be_given_as_a_bare_string() -> None:
    granted = scopes("user/Observation.r")
    assert granted.allows("Observation", "r", contexts="user")
    assert not granted.allows("Observation", "r", contexts="patient")


def test_an_unknown_context_in_allows_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="patients"):
        scopes("patient/*.r").allows("Observation", "r", contexts=("patients",))


@pytest.mark.parametrize("permission", ["", "rs", "x", "read", "R"])
def test_a_permission_that_is_not_one_letter_of_cruds_is_a_value_error(permission: str) -> None:
    with pytest.raises(ValueError, match="permission must be one of"):
        scopes("patient/*.cruds").allows("Observation", permission)


def test_non_resource_scopes_allow_nothing() -> None:
    assert not scopes("openid fhirUser offline_access").allows("Patient", "r")


def test_contexts_allowing_lists_every_context_that_grants_the_permission() -> None:
    granted = scopes("patient/Observation.rs user/*.r system/Patient.r")
    assert granted.contexts_allowing("Observation", "r") == {"patient", "user"}
    assert granted.contexts_allowing("Patient", "r") == {"user", "system"}
    assert granted.contexts_allowing("Observation", "s") == {"patient"}
    assert granted.contexts_allowing("Observation", "d") == frozenset()


# ----------------------------------------------------------------------------- narrowed_to


def narrow(requested: str, allowed: str) -> str:
    return str(scopes(requested).narrowed_to(scopes(allowed)))


def test_narrowing_keeps_only_the_permissions_the_registration_grants() -> None:
    assert narrow("patient/Observation.cruds", "patient/Observation.rs") == "patient/Observation.rs"


def test_narrowing_to_an_exact_match_changes_nothing() -> None:
    assert narrow("user/Patient.rs", "user/Patient.rs user/Observation.r") == "user/Patient.rs"


def test_an_allowed_wildcard_covers_any_requested_type() -> None:
    assert narrow("patient/Observation.rds patient/Patient.r", "patient/*.rs") == (
        "patient/Observation.rs patient/Patient.r"
    )


def test_a_requested_wildcard_stays_a_wildcard_only_against_an_allowed_wildcard() -> None:
    assert narrow("patient/*.cruds", "patient/*.rs") == "patient/*.rs"


def test_a_requested_wildcard_becomes_the_specifically_allowed_types() -> None:
    assert narrow("patient/*.rs", "patient/Observation.cruds patient/Patient.r") == (
        "patient/Observation.rs patient/Patient.r"
    )


def test_permissions_from_several_allowed_scopes_add_up() -> None:
    assert narrow("patient/Observation.cruds", "patient/Observation.r patient/*.s") == (
        "patient/Observation.rs"
    )


def test_narrowing_never_crosses_contexts() -> None:
    assert narrow("user/Observation.rs", "patient/*.cruds system/*.cruds") == ""


def test_scopes_left_without_permissions_or_types_are_dropped() -> None:
    assert narrow("patient/Observation.cud patient/Patient.rs", "patient/Observation.rs") == ""


def test_other_scopes_are_kept_only_when_registered() -> None:
    narrowed = scopes("openid fhirUser offline_access launch/patient").narrowed_to(
        scopes("openid launch/patient online_access")
    )
    assert narrowed.other == ("launch/patient", "openid")
    assert narrowed.resource_scopes == ()


def test_a_narrowed_set_is_itself_canonical() -> None:
    narrowed = scopes("patient/*.rs openid").narrowed_to(
        scopes("openid patient/Observation.r patient/*.s")
    )
    assert str(narrowed) == "openid patient/*.s patient/Observation.r"
    assert scopes(str(narrowed)) == narrowed
