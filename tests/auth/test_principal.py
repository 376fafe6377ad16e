"""principal_from_claims: one verified token becomes exactly one kind of caller, or none."""

from __future__ import annotations

from typing import Any

import pytest

from auth.principal import App, Exercice, Patient, Professional, principal_from_claims
from auth.scopes import ScopeSet
from auth.tokens import InvalidToken

IDNAT = "810000000001"
NIR = "253072A07300443"
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"


def professional(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": IDNAT, "jti": "j-1", "client_id": "test-app", "scope": "openid scope_all",
        "SubjectNameID": IDNAT,
        "SubjectRefPro": {"exercices": [{"codeProfession": "10",
                                         "codeCategorieProfessionnelle": "C",
                                         "codeSavoirFaire": "SM54"}]},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def patient(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": NIR, "jti": "j-2", "client_id": "test-app",
                              "scope": "openid patient/*.rs",
                              "ins": {"system": INS_TEST, "value": NIR}}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def app(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "lab-system", "jti": "j-3", "client_id": "lab-system",
                              "scope": "system/Observation.cruds"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def refused(claims: dict[str, Any]) -> str:
    with pytest.raises(InvalidToken) as caught:
        principal_from_claims(claims)
    return caught.value.reason


# --- professionals -----------------------------------------------------------------------------

def test_a_psc_token_is_a_professional_with_its_exercices() -> None:
    principal = principal_from_claims(professional())
    assert isinstance(principal, Professional)
    assert principal.idnat == IDNAT
    assert principal.rpps == "10000000001"
    assert principal.subject == IDNAT
    assert principal.token_id == "j-1"
    assert principal.client_id == "test-app"
    assert principal.exercices == (Exercice("10", "C", "SM54"),)
    assert principal.profession_codes == ("10",)


def test_an_adeli_professional_has_no_rpps() -> None:
    principal = principal_from_claims(professional(SubjectNameID="0123456789"))
    assert isinstance(principal, Professional)
    assert principal.rpps is None


def test_several_exercices_are_all_kept() -> None:
    claims = professional(SubjectRefPro={"exercices": [{"codeProfession": "10"},
                                                       {"codeProfession": "21"}]})
    principal = principal_from_claims(claims)
    assert isinstance(principal, Professional)
    assert principal.profession_codes == ("10", "21")
    assert principal.exercices[1] == Exercice("21", None, None)


def test_scope_all_expands_to_every_user_scope() -> None:
    principal = principal_from_claims(professional(scope="openid scope_all"))
    assert principal.scopes.has("scope_all")
    assert principal.scopes.has("openid")
    for letter in "cruds":
        assert principal.scopes.allows("DocumentReference", letter, ("user",))
    assert not principal.scopes.allows("Patient", "r", ("patient",))
    assert not principal.scopes.allows("Patient", "r", ("system",))


def test_without_scope_all_a_professional_has_only_the_scopes_granted() -> None:
    principal = principal_from_claims(professional(scope="openid user/Patient.r"))
    assert principal.scopes == ScopeSet.parse("openid user/Patient.r")
    assert not principal.scopes.allows("Patient", "s", ("user",))


def test_a_professional_with_only_openid_has_no_resource_scope() -> None:
    principal = principal_from_claims(professional(scope="openid"))
    assert principal.scopes.resource_scopes == ()


def test_scope_all_is_not_expanded_for_patients_or_apps() -> None:
    as_patient = principal_from_claims(patient(scope="openid scope_all"))
    as_app = principal_from_claims(app(scope="scope_all"))
    for principal in (as_patient, as_app):
        assert principal.scopes.resource_scopes == ()


@pytest.mark.parametrize("idnat", ["10000000001", "910000000001", "81000000000", "8100000000011",
                                   "012345678", "81000000000A", "", "810000000001\n",
                                   " 810000000001", "\uff1810000000001",
                                   "81000000000\u0663", 810000000001, None])
def test_a_subject_name_id_that_is_no_idnat_is_refused(idnat: Any) -> None:
    claims = professional()
    claims["SubjectNameID"] = idnat
    assert "SubjectNameID" in refused(claims)


@pytest.mark.parametrize("ref_pro", [None, "x", [], {}, {"exercices": []},
                                     {"exercices": "10"}, {"exercices": None}])
def test_a_professional_without_exercices_is_refused(ref_pro: Any) -> None:
    claims = professional()
    if ref_pro is None:
        del claims["SubjectRefPro"]
    else:
        claims["SubjectRefPro"] = ref_pro
    assert "exercices" in refused(claims)


@pytest.mark.parametrize("exercice", [{}, {"codeProfession": ""}, {"codeProfession": 10},
                                      "10", None])
def test_an_exercice_without_profession_code_is_refused(exercice: Any) -> None:
    claims = professional(SubjectRefPro={"exercices": [{"codeProfession": "10"}, exercice]})
    assert "codeProfession" in refused(claims)


# --- patients ----------------------------------------------------------------------------------

def test_a_token_with_an_ins_is_a_patient() -> None:
    principal = principal_from_claims(patient())
    assert isinstance(principal, Patient)
    assert principal.ins == NIR
    assert principal.ins_system == INS_TEST
    assert principal.subject == NIR
    assert principal.scopes.allows("Patient", "r", ("patient",))


@pytest.mark.parametrize("system", ["urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9",
                                    "urn:oid:1.2.250.1.213.1.4.11"])
def test_every_ins_system_is_accepted(system: str) -> None:
    principal = principal_from_claims(patient(ins={"system": system, "value": NIR}))
    assert isinstance(principal, Patient)
    assert principal.ins_system == system


@pytest.mark.parametrize("ins", [
    {"system": INS_TEST, "value": "253072A07300444"},  # bad key
    {"system": INS_TEST, "value": "253072A073004"},  # too short
    {"system": INS_TEST, "value": "953072A07300443"},  # bad sex digit
    {"system": "urn:oid:1.2.250.1.213.1.4.99", "value": NIR},  # no INS system
    {"system": INS_TEST},
    {"value": NIR},
    {"system": INS_TEST, "value": 253072},
    NIR,
    [NIR],
    None,
])
def test_a_bad_ins_is_refused(ins: Any) -> None:
    claims = patient()
    claims["ins"] = ins
    assert "ins" in refused(claims)


# --- apps --------------------------------------------------------------------------------------

def test_a_client_credentials_token_is_an_app() -> None:
    principal = principal_from_claims(app())
    assert isinstance(principal, App)
    assert principal.subject == principal.client_id == "lab-system"
    assert principal.scopes.allows("Observation", "c", ("system",))


def test_azp_names_the_client_when_client_id_is_absent() -> None:
    principal = principal_from_claims(app(client_id=None, azp="lab-system"))
    assert isinstance(principal, App)
    assert principal.client_id == "lab-system"


@pytest.mark.parametrize("client_id", [None, "other-app", "", 42])
def test_a_token_identifying_no_kind_of_caller_is_refused(client_id: Any) -> None:
    claims = app()
    del claims["client_id"]
    if client_id is not None:
        claims["client_id"] = client_id
    assert "no professional, patient or app" in refused(claims)


# --- ambiguity and scopes ----------------------------------------------------------------------

def test_a_token_that_is_both_professional_and_patient_is_refused() -> None:
    claims = professional(ins={"system": INS_TEST, "value": NIR})
    assert "both" in refused(claims)


def test_ambiguity_is_refused_even_when_the_client_is_the_subject() -> None:
    claims = patient(SubjectNameID=IDNAT, client_id=NIR)
    assert "both" in refused(claims)


@pytest.mark.parametrize("scope", ["system/Patient.xyz", "pirate/Patient.r", "system/patient.r",
                                   "system/Patient.sr", "system/Patient?x=1.r"])
def test_a_malformed_scope_refuses_the_token(scope: str) -> None:
    assert "scope" in refused(app(scope=scope))


def test_no_scope_claim_means_no_rights() -> None:
    principal = principal_from_claims(app(scope=None))
    assert isinstance(principal, App)
    assert principal.scopes.resource_scopes == ()
