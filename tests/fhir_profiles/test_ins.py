"""FR Core INS patient validator (``fhir_profiles.ins``)."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from fhir_profiles.ins import (
    INS_SLICES,
    QUALIFIED,
    Ins,
    InsTraits,
    find_ins,
    ins_issues,
    nir_key,
    nir_problem,
    normalise_trait,
    patient_with_ins,
    reliability_status,
    traits_match,
    traits_of,
)
from fhir_profiles.outcome import Issue
from fhir_profiles.structure import validate_structure

CORSICA_2A = "253072A07300443"
CORSICA_2B = "253072B07300470"
TYPE_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
STATUS_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status"
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
INSEE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
GIVEN_LIST = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"

TRAITS = InsTraits(birth_family_name="Santoni", first_given="Marie-Hélène",
                   given_names=("Marie-Hélène", "Lucie"), gender="female",
                   birth_date="1953-07-14", birth_place="2A073")


def qualified_patient() -> dict[str, Any]:
    return patient_with_ins("INS-NIR", CORSICA_2A, TRAITS)


def rules(issues: list[Issue]) -> dict[str, list[str]]:
    """Rule id -> expression of each issue, after checking the issue's shape."""
    found: dict[str, list[str]] = {}
    for issue in issues:
        assert issue.code == "invariant" and issue.severity == "error"
        assert issue.diagnostics.startswith("[") and len(issue.expression) == 1
        found.setdefault(issue.diagnostics[1:].split("]")[0], []).extend(issue.expression)
    return found


def only_rule(patient: dict[str, Any]) -> tuple[str, str]:
    found = rules(ins_issues(patient))
    assert len(found) == 1 and len(next(iter(found.values()))) == 1, found
    rule, paths = next(iter(found.items()))
    return rule, paths[0]


# --- NIR key and format ---------------------------------------------------------------------

@pytest.mark.parametrize("nir", [CORSICA_2A, CORSICA_2B, "185077505612323"])
def test_valid_nirs_including_both_corsican_departments_have_no_problem(nir: str) -> None:
    assert nir_problem(nir) is None


def test_the_key_is_97_minus_the_number_mod_97_with_corsica_counted_as_19_and_18() -> None:
    assert nir_key("1850775056123") == "23"  # 97 - 1850775056123 % 97, computed by hand
    assert nir_key("253072A073004") == "43"
    assert nir_key("253072B073004") == "70"


def test_a_key_below_ten_is_written_on_two_digits() -> None:
    assert len(nir_key("1850775056100")) == 2
    assert any(nir_key(f"18507750561{n:02d}").startswith("0") for n in range(100))


def test_nir_key_refuses_what_is_not_13_nir_characters() -> None:
    with pytest.raises(ValueError):
        nir_key("12345")
    with pytest.raises(ValueError):
        nir_key("1850775X56123")


@pytest.mark.parametrize("nir", ["123456789012244", "123456789012345"])
def test_published_example_values_fail_the_key_check(nir: str) -> None:
    problem = nir_problem(nir)
    assert problem is not None and "key check failed" in problem


def test_the_key_problem_names_the_expected_key() -> None:
    assert nir_problem("253072A07300444") == (
        "INS key check failed for 253072A07300444: the key should be 43")


@pytest.mark.parametrize("nir", ["25307207300443", "2530720730044312", "553072A07300443",
                                 "253132A07300443", "253072C07300443", "25307A207300443"])
def test_badly_shaped_nirs_are_reported_as_such(nir: str) -> None:
    problem = nir_problem(nir)
    assert problem is not None and "key check failed" not in problem


# --- the whole patient ----------------------------------------------------------------------

def test_a_fully_valid_qualified_patient_has_no_issue() -> None:
    assert ins_issues(qualified_patient()) == []


def test_a_patient_without_ins_is_allowed() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Martin"}],
               "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.2", "value": "x"}]}
    assert find_ins(patient) is None
    assert ins_issues(patient) == []
    assert ins_issues({"resourceType": "Patient"}) == []


@pytest.mark.parametrize("slice_name", sorted(INS_SLICES))
def test_patient_with_ins_builds_a_valid_patient_for_each_slice(slice_name: str) -> None:
    patient = patient_with_ins(INS_SLICES[slice_name], CORSICA_2B, TRAITS)
    assert ins_issues(patient) == []
    assert validate_structure(patient)["resourceType"] == "Patient"
    ins = find_ins(patient)
    assert ins == Ins(slice_name, INS_SLICES[slice_name], CORSICA_2B, 0)


def test_patient_with_ins_passes_base_fhir_validation() -> None:
    canonical = validate_structure(qualified_patient())
    assert canonical["identifier"][0]["value"] == CORSICA_2A
    assert ins_issues(canonical) == []


def test_patient_with_ins_refuses_an_unknown_slice_or_status() -> None:
    with pytest.raises(ValueError):
        patient_with_ins("INS-C", CORSICA_2A, TRAITS)
    with pytest.raises(ValueError):
        patient_with_ins("INS-NIR", CORSICA_2A, TRAITS, status="DOUT")


def test_several_broken_rules_are_all_reported() -> None:
    patient = qualified_patient()
    patient["identifier"][0]["value"] = "253072A07300444"
    patient["identifier"][0]["use"] = "temp"
    del patient["gender"]
    patient["extension"] = []
    assert rules(ins_issues(patient)) == {
        "ins-key": ["Patient.identifier[0].value"],
        "ins-use": ["Patient.identifier[0].use"],
        "ins-gender": ["Patient.gender"],
        "ins-birth-place": ["Patient.extension"],
        "ins-qualified": ["Patient.extension"],
    }


def test_the_key_issue_reads_as_documented() -> None:
    patient = qualified_patient()
    patient["identifier"][0]["value"] = "253072A07300444"
    assert ins_issues(patient) == [Issue(
        "[ins-key] INS key check failed for 253072A07300444: the key should be 43",
        code="invariant", expression=["Patient.identifier[0].value"])]


def test_every_ins_identifier_is_checked_at_its_own_index() -> None:
    patient = qualified_patient()
    second = copy.deepcopy(patient["identifier"][0])
    second["value"] = "253072A07300499"
    patient["identifier"] = [{"system": "urn:example:ipp", "value": "42"},
                             patient["identifier"][0], second]
    assert find_ins(patient) == Ins("INS-NIR", INS_SLICES["INS-NIR"], CORSICA_2A, 1)
    assert only_rule(patient) == ("ins-key", "Patient.identifier[2].value")


# --- one failing case per rule --------------------------------------------------------------

def test_ins_format() -> None:
    patient = qualified_patient()
    patient["identifier"][0]["value"] = "25307"
    assert only_rule(patient) == ("ins-format", "Patient.identifier[0].value")


def test_ins_format_when_the_value_is_missing() -> None:
    patient = qualified_patient()
    del patient["identifier"][0]["value"]
    assert only_rule(patient) == ("ins-format", "Patient.identifier[0].value")


def test_a_value_with_spaces_is_badly_shaped() -> None:
    patient = qualified_patient()
    patient["identifier"][0]["value"] = f" {CORSICA_2A}"
    assert only_rule(patient) == ("ins-format", "Patient.identifier[0].value")


def test_odd_json_shapes_do_not_crash_the_validator() -> None:
    patient = qualified_patient()
    patient["identifier"].append({"system": ["not", "a", "string"], "value": 7})
    patient["identifier"].append("not an object")
    patient["name"].append(None)
    assert ins_issues(patient) == []
    odd = {"resourceType": "Patient", "extension": "x", "name": {"given": 1},
           "identifier": [{"system": INS_SLICES["INS-NIA"], "value": 15, "type": "x"}]}
    assert set(rules(ins_issues(odd))) == {
        "ins-format", "ins-type", "ins-use", "ins-birth-name", "ins-first-name",
        "ins-given-list", "ins-gender", "ins-birth-date", "ins-birth-place", "ins-qualified"}


def test_ins_type_needs_the_slice_code_from_the_french_v2_0203() -> None:
    patient = qualified_patient()
    patient["identifier"][0]["type"] = {"coding": [{"system": TYPE_SYSTEM, "code": "INS-NIA"}]}
    assert only_rule(patient) == ("ins-type", "Patient.identifier[0].type")
    patient["identifier"][0]["type"] = {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "INS-NIR"}]}
    assert only_rule(patient) == ("ins-type", "Patient.identifier[0].type")
    del patient["identifier"][0]["type"]
    assert only_rule(patient) == ("ins-type", "Patient.identifier[0].type")


@pytest.mark.parametrize(("slice_name", "use", "ok"), [
    ("INS-NIR", "official", True), ("INS-NIR", "old", True), ("INS-NIR", "temp", False),
    ("INS-NIA", "temp", True), ("INS-NIA", "official", False),
    ("INS-NIR-TEST", "official", True), ("INS-NIR-TEST", "old", False),
    ("INS-NIR-DEMO", "official", True), ("INS-NIR-DEMO", None, False),
])
def test_ins_use_depends_on_the_slice(slice_name: str, use: str | None, ok: bool) -> None:
    patient = patient_with_ins(slice_name, CORSICA_2A, TRAITS)
    patient["identifier"][0]["use"] = use
    if ok:
        assert ins_issues(patient) == []
    else:
        assert only_rule(patient) == ("ins-use", "Patient.identifier[0].use")


def test_ins_birth_name_needs_a_family_on_the_official_name() -> None:
    patient = qualified_patient()
    del patient["name"][0]["family"]
    assert only_rule(patient) == ("ins-birth-name", "Patient.name[0].family")


def test_ins_birth_name_needs_an_official_name() -> None:
    patient = qualified_patient()
    patient["name"][0]["use"] = "usual"
    assert rules(ins_issues(patient)) == {"ins-birth-name": ["Patient.name"],
                                          "ins-first-name": ["Patient.name"],
                                          "ins-given-list": ["Patient.name"]}


def test_ins_first_name_is_the_official_names_first_given() -> None:
    patient = qualified_patient()
    patient["name"].insert(0, {"use": "usual", "family": "Rossi", "given": ["Lucie"]})
    patient["name"][1]["given"] = [""]
    assert only_rule(patient) == ("ins-first-name", "Patient.name[1].given[0]")
    del patient["name"][1]["given"]
    assert only_rule(patient) == ("ins-first-name", "Patient.name[1].given")


def test_ins_given_list_must_be_present() -> None:
    patient = qualified_patient()
    del patient["name"][0]["extension"]
    assert only_rule(patient) == ("ins-given-list", "Patient.name[0].extension")


def test_ins_given_list_must_start_with_the_first_given_name() -> None:
    patient = qualified_patient()
    patient["name"][0]["extension"][0]["valueString"] = "Lucie Marie-Hélène"
    assert only_rule(patient) == ("ins-given-list", "Patient.name[0].extension[0].valueString")


def test_ins_given_list_is_compared_after_normalisation() -> None:
    patient = qualified_patient()
    patient["name"][0]["extension"][0]["valueString"] = "MARIE HELENE LUCIE"
    assert ins_issues(patient) == []


@pytest.mark.parametrize("gender", [None, "other", "M"])
def test_ins_gender_is_male_female_or_unknown(gender: str | None) -> None:
    patient = qualified_patient()
    patient["gender"] = gender
    assert only_rule(patient) == ("ins-gender", "Patient.gender")


@pytest.mark.parametrize("born", [None, "1953", "1953-07", "1953-02-30", "14/07/1953"])
def test_ins_birth_date_is_a_full_date(born: str | None) -> None:
    patient = qualified_patient()
    patient["birthDate"] = born
    assert "ins-birth-date" in rules(ins_issues(patient))
    assert rules(ins_issues(patient))["ins-birth-date"] == ["Patient.birthDate"]


def test_ins_birth_place_extension_must_be_present() -> None:
    patient = patient_with_ins("INS-NIR", CORSICA_2A, replace(TRAITS, birth_place=None))
    assert only_rule(patient) == ("ins-birth-place", "Patient.extension")


def test_ins_birth_place_needs_an_insee_code_extension() -> None:
    patient = qualified_patient()
    patient["extension"][1]["valueAddress"] = {"city": "Ajaccio"}
    assert only_rule(patient) == ("ins-birth-place",
                                  "Patient.extension[1].valueAddress.extension")


@pytest.mark.parametrize("code", ["2C073", "2A07", "ABCDE", "975010"])
def test_ins_birth_place_insee_code_has_five_characters(code: str) -> None:
    patient = qualified_patient()
    patient["extension"][1]["valueAddress"]["extension"][0]["valueCoding"]["code"] = code
    assert only_rule(patient) == (
        "ins-birth-place", "Patient.extension[1].valueAddress.extension[0].valueCoding.code")


@pytest.mark.parametrize("code", ["2B033", "75056", "99100"])
def test_ins_birth_place_accepts_corsica_mainland_and_foreign_codes(code: str) -> None:
    assert ins_issues(patient_with_ins("INS-NIR", CORSICA_2A,
                                       replace(TRAITS, birth_place=code))) == []


@pytest.mark.parametrize("status", ["PROV", "RECUP", "VALI"])
def test_ins_qualified_refuses_a_non_qualified_status(status: str) -> None:
    patient = patient_with_ins("INS-NIR", CORSICA_2A, TRAITS, status=status)
    assert reliability_status(patient) == status
    rule, path = only_rule(patient)
    assert (rule, path) == ("ins-qualified", "Patient.extension[0].extension[0].valueCoding")
    assert "only a qualified identity may carry an INS used to file or share documents" in \
        ins_issues(patient)[0].diagnostics


def test_ins_qualified_needs_the_reliability_extension() -> None:
    patient = qualified_patient()
    patient["extension"] = patient["extension"][1:]
    assert reliability_status(patient) is None
    assert only_rule(patient) == ("ins-qualified", "Patient.extension")


def test_ins_qualified_needs_the_identity_status_sub_extension() -> None:
    patient = qualified_patient()
    patient["extension"][0]["extension"] = [{"url": "validationDate", "valueDate": "2024-01-02"}]
    assert only_rule(patient) == ("ins-qualified", "Patient.extension[0].extension")


def test_ins_qualified_needs_fr_cores_identity_status_system() -> None:
    patient = qualified_patient()
    patient["extension"][0]["extension"][0]["valueCoding"]["system"] = "urn:example:other"
    assert reliability_status(patient) is None
    assert only_rule(patient)[0] == "ins-qualified"


def test_ins_nir_gender_must_agree_with_the_first_digit() -> None:
    patient = qualified_patient()
    patient["gender"] = "male"
    assert only_rule(patient) == ("ins-nir-gender", "Patient.gender")


def test_ins_nir_gender_is_not_checked_for_unknown_gender_or_temporary_numbers() -> None:
    patient = qualified_patient()
    patient["gender"] = "unknown"
    assert ins_issues(patient) == []
    temporary = "753072A073004" + nir_key("753072A073004")
    patient = patient_with_ins("INS-NIA", temporary, replace(TRAITS, gender="male"))
    assert ins_issues(patient) == []


def test_ins_nir_birth_year_must_agree_with_birth_date() -> None:
    patient = qualified_patient()
    patient["birthDate"] = "1954-07-14"
    assert only_rule(patient) == ("ins-nir-birth-year", "Patient.birthDate")


def test_the_nir_consistency_rules_are_skipped_for_a_badly_shaped_nir() -> None:
    patient = qualified_patient()
    patient["identifier"][0]["value"] = "1XX"
    assert only_rule(patient) == ("ins-format", "Patient.identifier[0].value")


# --- traits ---------------------------------------------------------------------------------

def test_traits_of_reads_the_ins_traits_back() -> None:
    assert traits_of(qualified_patient()) == TRAITS
    assert reliability_status(qualified_patient()) == QUALIFIED


def test_traits_of_is_none_when_a_trait_is_missing() -> None:
    for key in ("gender", "birthDate", "name"):
        patient = qualified_patient()
        del patient[key]
        assert traits_of(patient) is None


def test_traits_of_leaves_unknown_list_and_birth_place_empty() -> None:
    patient = qualified_patient()
    del patient["name"][0]["extension"]
    patient["extension"] = patient["extension"][:1]
    assert traits_of(patient) == replace(TRAITS, given_names=(), birth_place=None)


def test_normalise_trait_folds_case_accents_hyphens_apostrophes_and_spaces() -> None:
    assert normalise_trait("  Marie-Hélène  d\u2019Ornano ") == "MARIE HELENE D ORNANO"
    assert normalise_trait("O'Brien") == normalise_trait("o brien")
    assert normalise_trait("Lætitia Cœur") == "LAETITIA COEUR"


def test_traits_match_despite_accents_case_and_hyphens() -> None:
    typed = InsTraits("SANTONI", "marie helene", ("MARIE HELENE", "lucie"), "female",
                      "1953-07-14", "2a073")
    assert traits_match(typed, TRAITS)


def test_traits_match_ignores_birth_place_and_given_list_when_one_side_lacks_them() -> None:
    typed = InsTraits("Santoni", "Marie-Hélène", (), "female", "1953-07-14", None)
    assert traits_match(typed, TRAITS)


@pytest.mark.parametrize("change", [
    {"birth_family_name": "Santini"}, {"first_given": "Lucie"}, {"gender": "male"},
    {"birth_date": "1953-07-15"}, {"birth_place": "2B073"},
    {"given_names": ("Marie-Hélène", "Louise")},
])
def test_traits_do_not_match_when_one_trait_differs(change: dict[str, Any]) -> None:
    assert not traits_match(replace(TRAITS, **change), TRAITS)
