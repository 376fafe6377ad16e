"""decide(): SMART scopes, counted only in the context that fits the caller."""

from __future__ import annotations

import pytest

from auth.policy import Deny, Interaction, Permit, scope_context
from auth.policy import scope_decision as decide
from auth.principal import App, Exercice, Patient, Principal, Professional
from auth.scopes import ScopeSet

NIR = "253072A07300443"
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"
# Every interaction with the SMART permission letter it needs.
NEEDS = [(Interaction.READ, "r"), (Interaction.VREAD, "r"), (Interaction.HISTORY_INSTANCE, "r"),
         (Interaction.HISTORY_TYPE, "s"), (Interaction.SEARCH, "s"), (Interaction.CREATE, "c"),
         (Interaction.UPDATE, "u"), (Interaction.DELETE, "d")]


def app(scope: str) -> App:
    return App("lab", ScopeSet.parse(scope), "j", "lab")


def professional(scope: str) -> Professional:
    return Professional("810000000001", ScopeSet.parse(scope), "j", "test-app",
                        idnat="810000000001", exercices=(Exercice("10", "C", None),))


def patient(scope: str) -> Patient:
    return Patient(NIR, ScopeSet.parse(scope), "j", "test-app", ins_system=INS_TEST, ins=NIR)


def principal(context: str, scope: str) -> Principal:
    if context == "system":
        return app(scope)
    return professional(scope) if context == "user" else patient(scope)


def test_each_kind_of_caller_has_its_own_context() -> None:
    assert scope_context(app("")) == "system"
    assert scope_context(professional("")) == "user"
    assert scope_context(patient("")) == "patient"


def test_interaction_names_are_the_fhir_ones() -> None:
    assert Interaction.SEARCH.value == "search-type"
    assert Interaction.HISTORY_TYPE.value == "history-type"


@pytest.mark.parametrize("context", ["system", "user", "patient"])
@pytest.mark.parametrize(("interaction", "letter"), NEEDS)
def test_an_interaction_is_permitted_by_exactly_its_letter(
        context: str, interaction: Interaction, letter: str) -> None:
    assert decide(principal(context, f"{context}/Patient.{letter}"), interaction,
                  "Patient") == Permit()
    others = "".join(p for p in "cruds" if p != letter)
    denied = decide(principal(context, f"{context}/Patient.{others}"), interaction, "Patient")
    assert isinstance(denied, Deny)
    assert denied.rule == "smart-scope"
    assert f"needs {context}/Patient.{letter}" in denied.reason
    assert interaction.value in denied.reason


@pytest.mark.parametrize("context", ["system", "user", "patient"])
def test_a_scope_on_another_type_permits_nothing(context: str) -> None:
    caller = principal(context, f"{context}/Observation.cruds")
    assert isinstance(decide(caller, Interaction.READ, "Patient"), Deny)
    assert decide(caller, Interaction.READ, "Observation") == Permit()


@pytest.mark.parametrize("context", ["system", "user", "patient"])
def test_a_wildcard_scope_covers_every_type(context: str) -> None:
    caller = principal(context, f"{context}/*.rs")
    for resource_type in ("Patient", "DocumentReference", "Observation", "Binary"):
        assert decide(caller, Interaction.SEARCH, resource_type) == Permit()
        assert isinstance(decide(caller, Interaction.CREATE, resource_type), Deny)


@pytest.mark.parametrize(("kind", "foreign"), [
    ("patient", "user/*.cruds system/*.cruds"),
    ("user", "patient/*.cruds system/*.cruds"),
    ("system", "patient/*.cruds user/*.cruds"),
])
def test_scopes_of_another_context_count_for_nothing(kind: str, foreign: str) -> None:
    caller = principal(kind, f"openid scope_all {foreign}")
    for interaction, _letter in NEEDS:
        decision = decide(caller, interaction, "DocumentReference")
        assert isinstance(decision, Deny), interaction
        assert f"needs {kind}/DocumentReference." in decision.reason


def test_identity_scopes_grant_nothing() -> None:
    caller = professional("openid offline_access scope_all")  # not expanded: built by hand
    assert isinstance(decide(caller, Interaction.READ, "Patient"), Deny)


def test_v1_scopes_count_like_their_v2_letters() -> None:
    caller = app("system/Patient.read")
    assert decide(caller, Interaction.READ, "Patient") == Permit()
    assert decide(caller, Interaction.SEARCH, "Patient") == Permit()
    assert isinstance(decide(caller, Interaction.UPDATE, "Patient"), Deny)


def test_ins_lookup_is_never_for_patients_whatever_their_scopes() -> None:
    caller = patient("patient/*.cruds user/*.cruds system/*.cruds")
    decision = decide(caller, Interaction.INS_LOOKUP, "Patient")
    assert isinstance(decision, Deny)
    assert decision.rule == "insi-professionals-only"


@pytest.mark.parametrize("context", ["system", "user"])
def test_ins_lookup_needs_patient_search_for_professionals_and_apps(context: str) -> None:
    assert decide(principal(context, f"{context}/Patient.s"), Interaction.INS_LOOKUP,
                  "Patient") == Permit()
    denied = decide(principal(context, f"{context}/Patient.cr"), Interaction.INS_LOOKUP,
                    "Patient")
    assert isinstance(denied, Deny)
    assert denied.rule == "smart-scope"


def test_ins_lookup_needs_a_scope_in_the_callers_context() -> None:
    decision = decide(professional("system/Patient.s"), Interaction.INS_LOOKUP, "Patient")
    assert isinstance(decision, Deny)
    assert decision.rule == "smart-scope"


def test_every_interaction_has_a_permission() -> None:
    caller = app("system/*.cruds")
    for interaction in Interaction:
        assert decide(caller, interaction, "Patient") == Permit()
