"""The decision point: SMART scopes first (counted only in the context that fits the
caller), then the consent rules on one resource (decide)."""

from __future__ import annotations

import pytest

from auth.policy import (
    RECORD_LEVEL,
    AccessContext,
    AccessMode,
    Decision,
    Deny,
    Interaction,
    Permit,
    Target,
    decide,
    scope_context,
    scope_decision,
)
from auth.principal import App, Exercice, Patient, Principal, Professional
from auth.scopes import ScopeSet
from storage.access import AccessLabels, Emergency, RecordChoices, RecordState, Relation

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
    assert scope_decision(principal(context, f"{context}/Patient.{letter}"), interaction,
                  "Patient") == Permit()
    others = "".join(p for p in "cruds" if p != letter)
    denied = scope_decision(principal(context, f"{context}/Patient.{others}"), interaction,
                            "Patient")
    assert isinstance(denied, Deny)
    assert denied.rule == "smart-scope"
    assert f"needs {context}/Patient.{letter}" in denied.reason
    assert interaction.value in denied.reason


@pytest.mark.parametrize("context", ["system", "user", "patient"])
def test_a_scope_on_another_type_permits_nothing(context: str) -> None:
    caller = principal(context, f"{context}/Observation.cruds")
    assert isinstance(scope_decision(caller, Interaction.READ, "Patient"), Deny)
    assert scope_decision(caller, Interaction.READ, "Observation") == Permit()


@pytest.mark.parametrize("context", ["system", "user", "patient"])
def test_a_wildcard_scope_covers_every_type(context: str) -> None:
    caller = principal(context, f"{context}/*.rs")
    for resource_type in ("Patient", "DocumentReference", "Observation", "Binary"):
        assert scope_decision(caller, Interaction.SEARCH, resource_type) == Permit()
        assert isinstance(scope_decision(caller, Interaction.CREATE, resource_type), Deny)


@pytest.mark.parametrize(("kind", "foreign"), [
    ("patient", "user/*.cruds system/*.cruds"),
    ("user", "patient/*.cruds system/*.cruds"),
    ("system", "patient/*.cruds user/*.cruds"),
])
def test_scopes_of_another_context_count_for_nothing(kind: str, foreign: str) -> None:
    caller = principal(kind, f"openid scope_all {foreign}")
    for interaction, _letter in NEEDS:
        decision = scope_decision(caller, interaction, "DocumentReference")
        assert isinstance(decision, Deny), interaction
        assert f"needs {kind}/DocumentReference." in decision.reason


def test_identity_scopes_grant_nothing() -> None:
    caller = professional("openid offline_access scope_all")  # not expanded: built by hand
    assert isinstance(scope_decision(caller, Interaction.READ, "Patient"), Deny)


def test_v1_scopes_count_like_their_v2_letters() -> None:
    caller = app("system/Patient.read")
    assert scope_decision(caller, Interaction.READ, "Patient") == Permit()
    assert scope_decision(caller, Interaction.SEARCH, "Patient") == Permit()
    assert isinstance(scope_decision(caller, Interaction.UPDATE, "Patient"), Deny)


def test_ins_lookup_is_never_for_patients_whatever_their_scopes() -> None:
    caller = patient("patient/*.cruds user/*.cruds system/*.cruds")
    decision = scope_decision(caller, Interaction.INS_LOOKUP, "Patient")
    assert isinstance(decision, Deny)
    assert decision.rule == "insi-professionals-only"


@pytest.mark.parametrize("context", ["system", "user"])
def test_ins_lookup_needs_patient_search_for_professionals_and_apps(context: str) -> None:
    assert scope_decision(principal(context, f"{context}/Patient.s"), Interaction.INS_LOOKUP,
                  "Patient") == Permit()
    denied = scope_decision(principal(context, f"{context}/Patient.cr"), Interaction.INS_LOOKUP,
                    "Patient")
    assert isinstance(denied, Deny)
    assert denied.rule == "smart-scope"


def test_ins_lookup_needs_a_scope_in_the_callers_context() -> None:
    decision = scope_decision(professional("system/Patient.s"), Interaction.INS_LOOKUP, "Patient")
    assert isinstance(decision, Deny)
    assert decision.rule == "smart-scope"


def test_every_interaction_has_a_permission() -> None:
    caller = app("system/*.cruds")
    for interaction in Interaction:
        assert scope_decision(caller, interaction, "Patient") == Permit()


# --- the consent rules: decide() on one resource --------------------------------------------

DOCTOR_KEY = "idnat:810000000001"


def record(*relations: Relation, attending: str | None = None, closed: bool = False,
           emergency_opposed: bool = False, care_team_objection: bool = False,
           emergency: bool = False) -> AccessContext:
    state = RecordState(RecordChoices(closed, emergency_opposed, care_team_objection,
                                      attending), frozenset(relations),
                        Emergency("bris_de_glace", "r", 1) if emergency else None)
    return AccessContext(record=state)


def document(*labels: str, category: str = "consultation-report") -> Target:
    return Target("DocumentReference", "p1", AccessLabels(
        category, "MASQUE_PS" in labels, "INVISIBLE_PATIENT" in labels))


def rule(decision: Decision) -> str | None:
    return decision.rule if isinstance(decision, Deny) else None


@pytest.mark.parametrize(("context", "expected"), [
    (record(Relation.AUTHORISED), None),
    (record(), "not-authorised"),
    (record(Relation.CARE_TEAM), None),
    (record(Relation.CARE_TEAM, care_team_objection=True), "care-team-objection"),
    (record(Relation.AUTHORISED, Relation.BLOCKED), "professional-blocked"),
    (record(Relation.BLOCKED, attending=DOCTOR_KEY), None),  # the attending doctor: never
    (record(attending=DOCTOR_KEY, closed=True), "record-closed"),
    (record(emergency=True), None),
    (record(emergency=True, emergency_opposed=True), "not-authorised"),
])
def test_a_professional_opens_a_record_by_the_patients_choices(
        context: AccessContext, expected: str | None) -> None:
    assert rule(decide(professional("user/*.cruds"), Interaction.READ, document(),
                       context)) == expected


def test_emergency_mode_is_refused_when_the_patient_opposed_it() -> None:
    context = record(emergency_opposed=True)
    emergency = AccessContext(record=context.record, mode=AccessMode.BREAK_GLASS)
    assert rule(decide(professional("user/*.cruds"), Interaction.READ, document(),
                       emergency)) == "emergency-opposed"


def test_the_matrix_and_masking_hide_documents() -> None:
    doctor, context = professional("user/*.cruds"), record(Relation.AUTHORISED)
    masked = decide(doctor, Interaction.READ, document("MASQUE_PS"), context)
    assert isinstance(masked, Deny) and masked.hidden and masked.rule == "masked-from-professionals"
    authored = Target("DocumentReference", "p1", AccessLabels("x", True, False), True)
    assert rule(decide(doctor, Interaction.READ, authored, context)) == "profession-matrix"
    pharmacist = Professional("810000000003", ScopeSet.parse("user/*.cruds"), "j", "a",
                              idnat="810000000003", exercices=(Exercice("21", "C", None),))
    imaging = decide(pharmacist, Interaction.READ, document(category="imaging"), context)
    assert isinstance(imaging, Deny) and imaging.hidden and imaging.rule == "profession-matrix"
    assert rule(decide(pharmacist, Interaction.READ, document(category="lab-result"),
                       context)) is None


@pytest.mark.parametrize(("context", "expected"), [
    (record(Relation.AUTHORISED), None),
    (record(), "not-authorised"),
    (record(Relation.AUTHORISED, Relation.BLOCKED), "professional-blocked"),
    (record(attending=DOCTOR_KEY), None),
])
def test_a_search_of_one_record_is_decided_on_the_record_not_on_a_document_type(
        context: AccessContext, expected: str | None) -> None:
    """The search then filters the record's rows by matrix and masking only; a decision
    that looked for the type "*" in the matrix would hide the record from everyone."""
    whole_record = Target("DocumentReference", "p1", AccessLabels(RECORD_LEVEL))
    assert rule(decide(professional("user/*.cruds"), Interaction.SEARCH, whole_record,
                       context)) == expected
    pharmacist = Professional("810000000003", ScopeSet.parse("user/*.cruds"), "j", "a",
                              idnat="810000000003", exercices=(Exercice("21", "C", None),))
    assert rule(decide(pharmacist, Interaction.SEARCH, whole_record,
                       record(Relation.AUTHORISED))) is None


def test_any_professional_files_into_a_record_not_closed_to_them() -> None:
    doctor = professional("user/*.cruds")
    assert rule(decide(doctor, Interaction.CREATE, document(), record())) is None
    assert rule(decide(doctor, Interaction.CREATE, document(), record(Relation.BLOCKED))) == \
        "professional-blocked"
    assert rule(decide(doctor, Interaction.CREATE, document(), record(closed=True))) == \
        "record-closed"


def test_a_patient_reads_their_own_record_but_not_what_is_hidden_from_them() -> None:
    me = patient("patient/*.cruds")
    mine = AccessContext(own_record="p1")
    assert rule(decide(me, Interaction.READ, document(), mine)) is None
    hidden = decide(me, Interaction.READ, document("INVISIBLE_PATIENT"), mine)
    assert isinstance(hidden, Deny) and hidden.hidden
    elsewhere = decide(me, Interaction.READ, document(), AccessContext(own_record="p2"))
    assert isinstance(elsewhere, Deny) and elsewhere.hidden
    assert rule(decide(me, Interaction.CREATE, document(), mine)) == \
        "patient-files-own-documents-only"
    assert rule(decide(me, Interaction.CREATE, document(category="patient-document"),
                       mine)) is None


def test_an_app_needs_the_patients_grant() -> None:
    lab = app("system/*.cruds")
    assert rule(decide(lab, Interaction.READ, document(), record())) == "app-not-granted"
    assert rule(decide(lab, Interaction.READ, document(), record(Relation.APP))) is None
    hidden = decide(lab, Interaction.READ, document("INVISIBLE_PATIENT"), record(Relation.APP))
    assert isinstance(hidden, Deny) and hidden.hidden
    assert rule(decide(lab, Interaction.READ, document(), AccessContext(operator=True))) is None


def test_scopes_come_first() -> None:
    assert rule(decide(professional("user/Patient.r"), Interaction.READ, document(),
                       record(Relation.AUTHORISED))) == "smart-scope"


# ---------------------------------------------------------------------- secure messaging

SENDER = "810000000001"  # professional("...")'s idNat_PS


def conversation(*parties: str, notification: bool = False) -> Target:
    from auth.policy import NOTIFICATION, MessageLabels

    if notification:
        return Target("Communication", "p1", AccessLabels(NOTIFICATION))
    return Target("Communication", "p1", MessageLabels("message", parties=frozenset(parties)))


@pytest.mark.parametrize(("target", "context", "expected", "hidden"), [
    # A party converses while the record is not closed to them: no authorisation needed.
    (conversation(SENDER), record(), None, False),
    (conversation("10000000001"), record(), None, False),  # named by RPPS
    (conversation(SENDER), record(Relation.BLOCKED), "professional-blocked", False),
    (conversation(SENDER), record(Relation.BLOCKED, attending=DOCTOR_KEY), None, False),
    (conversation(SENDER), record(closed=True), "record-closed", False),
    # Anyone else is told nothing, whatever they may open.
    (conversation("810000000009"), record(Relation.AUTHORISED), "message-parties-only", True),
    (conversation("810000000009"), record(attending=DOCTOR_KEY), "message-parties-only", True),
    (conversation("810000000009"), record(emergency=True), "message-parties-only", True),
    (Target("Communication", "p1", AccessLabels("message")), record(Relation.AUTHORISED),
     "message-parties-only", True),  # parties unknown: fail closed
    (conversation(notification=True), record(attending=DOCTOR_KEY),
     "notification-for-the-patient-only", True),
])
def test_a_message_is_its_parties_business(target: Target, context: AccessContext,
                                           expected: str | None, hidden: bool) -> None:
    decision = decide(professional("user/*.cruds"), Interaction.READ, target, context)
    assert rule(decision) == expected
    assert isinstance(decision, Deny) == (expected is not None)
    if isinstance(decision, Deny):
        assert decision.hidden == hidden


def test_a_professional_writes_messages_in_their_own_name() -> None:
    doctor = professional("user/*.cruds")
    assert rule(decide(doctor, Interaction.CREATE, conversation(SENDER), record())) is None
    assert rule(decide(doctor, Interaction.CREATE, conversation("810000000009"),
                       record())) == "message-sender-is-the-caller"
    assert rule(decide(doctor, Interaction.CREATE, conversation(SENDER),
                       record(Relation.BLOCKED))) == "professional-blocked"


@pytest.mark.parametrize("caller", ["patient", "professional", "app"])
def test_nobody_but_carnet_deletes_a_message_or_writes_a_notification(caller: str) -> None:
    who = {"patient": patient("patient/*.cruds"), "professional": professional("user/*.cruds"),
           "app": app("system/*.cruds")}[caller]
    context = record(Relation.APP, attending=DOCTOR_KEY)
    if caller == "patient":
        context = AccessContext(own_record="p1")
    assert rule(decide(who, Interaction.DELETE, conversation(SENDER), context)) == \
        "message-sealed"
    assert rule(decide(who, Interaction.CREATE, conversation(notification=True),
                       context)) == "notification-by-carnet-only"
    carnet = AccessContext(internal=True)
    assert rule(decide(who, Interaction.DELETE, conversation(SENDER), carnet)) is None


def test_the_patient_and_her_apps_see_messages_and_notifications() -> None:
    me, lab = patient("patient/*.cruds"), app("system/*.cruds")
    for target in (conversation(SENDER), conversation(notification=True)):
        assert rule(decide(me, Interaction.READ, target, AccessContext(own_record="p1"))) is None
        assert rule(decide(lab, Interaction.READ, target, record(Relation.APP))) is None
        assert rule(decide(lab, Interaction.READ, target, record())) == "app-not-granted"
        assert rule(decide(lab, Interaction.READ, target,
                           AccessContext(operator=True))) is None


@pytest.mark.parametrize(("context", "expected", "hidden"), [
    (record(), "not-authorised", True),  # the SQL then shows them their own conversations
    (record(Relation.AUTHORISED), None, False),
    (record(Relation.BLOCKED), "professional-blocked", False),
    (record(closed=True), "record-closed", False),
])
def test_a_search_of_messages_in_a_record_one_may_not_open(context: AccessContext,
                                                           expected: str | None,
                                                           hidden: bool) -> None:
    whole_record = Target("Communication", "p1", AccessLabels(RECORD_LEVEL))
    decision = decide(professional("user/*.cruds"), Interaction.SEARCH, whole_record, context)
    assert rule(decision) == expected
    if isinstance(decision, Deny):
        assert decision.hidden == hidden
    documents = Target("DocumentReference", "p1", AccessLabels(RECORD_LEVEL))
    assert not getattr(decide(professional("user/*.cruds"), Interaction.SEARCH, documents,
                              record()), "hidden", True)


def test_a_message_carries_its_parties_and_a_notification_its_own_category() -> None:
    import orjson

    from auth.policy import MessageLabels, labels_of, with_parties

    stored = {"resourceType": "Communication",
              "category": [{"coding": [{"system": "https://carnet.esante.example/fhir/"
                                        "CodeSystem/communication-category",
                                        "code": "message"}]}],
              "sender": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1",
                                        "value": SENDER}},
              "recipient": [{"reference": "Patient/p1"}]}
    labels = labels_of(stored)
    assert isinstance(labels, MessageLabels)
    assert labels.category == "message" and labels.parties == {SENDER}
    row = AccessLabels("message")
    assert with_parties(row, orjson.dumps(stored)) == labels
    assert with_parties(row, None) == row
    assert with_parties(AccessLabels("lab-result"), b"{}") == AccessLabels("lab-result")
    notice = {**stored, "category": [{"coding": [{
        "system": stored["category"][0]["coding"][0]["system"], "code": "notification"}]}]}
    assert labels_of(notice) == AccessLabels("notification")
