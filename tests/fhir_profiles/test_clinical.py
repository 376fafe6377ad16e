"""The codes that matter in clinical resources: accepted systems, text-only refusal, formats."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_profiles.clinical import (
    ABSENT_UNKNOWN_SYSTEM,
    RULES,
    clinical_issues,
    luhn_valid,
    verhoeff_valid,
)

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CIM10 = "https://smt.esante.gouv.fr/terminologie-cim-10"
CIS = "urn:oid:1.2.250.1.213.2.3.1"
CIP = "urn:oid:1.2.250.1.213.2.3.2"
UCD = "urn:oid:1.2.250.1.213.2.61"
BDPM = "https://smt.esante.gouv.fr/terminologie-bdpm"
ATC_FR = "https://smt.esante.gouv.fr/terminologie-atc"

ELEMENT = {"AllergyIntolerance": "code", "Condition": "code",
           "MedicationStatement": "medicationCodeableConcept", "Immunization": "vaccineCode",
           "Observation": "code"}


def coded(kind: str, *codings: tuple[str | None, str | None], text: str | None = None,
          **extra: Any) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = [{k: v for k, v in (("system", s), ("code", c)) if v is not None}
                             for s, c in codings]
    if text is not None:
        concept["text"] = text
    return {"resourceType": kind, "id": "r1", ELEMENT[kind]: concept, **extra}


def rules(resource: dict[str, Any]) -> list[str]:
    return [i.diagnostics.split("]")[0].lstrip("[") for i in clinical_issues(resource)]


VALID = [
    # international
    coded("AllergyIntolerance", (SCT, "716186003")),            # no known allergy
    coded("AllergyIntolerance", (SCT, "387517004")),            # paracetamol (substance)
    coded("AllergyIntolerance", (ATC, "J01CA04"), category=["medication"]),
    coded("AllergyIntolerance", (ABSENT_UNKNOWN_SYSTEM, "no-known-allergies")),
    coded("Condition", (SCT, "38341003")),                      # hypertension
    coded("Condition", (ICD10, "E11.9")),
    coded("Condition", (ABSENT_UNKNOWN_SYSTEM, "no-problem-info")),
    coded("MedicationStatement", (ATC, "C09AA05")),
    coded("MedicationStatement", (SCT, "787481004")),           # no known medications
    coded("MedicationStatement", (ABSENT_UNKNOWN_SYSTEM, "no-medication-info")),
    coded("Immunization", (SCT, "836377006")),                  # influenza vaccine
    coded("Immunization", (ATC, "J07BB02")),
    coded("Immunization", (ABSENT_UNKNOWN_SYSTEM, "no-immunization-info")),
    coded("Observation", (LOINC, "718-7")),                     # hemoglobin
    coded("Observation", (LOINC, "2345-7")),
    coded("Observation", (SCT, "1287211007")),                  # no information available
    # French
    coded("Condition", (CIM10, "E06.3"), text="Thyroïdite auto-immune"),
    coded("Condition", ("urn:oid:2.16.840.1.113883.6.3", "I841")),
    coded("MedicationStatement", (CIS, "63107752")),
    coded("MedicationStatement", (CIP, "3400933516390")),
    coded("MedicationStatement", (UCD, "9360937")),
    coded("MedicationStatement", (BDPM, "63107752")),
    coded("MedicationStatement", (ATC_FR, "H03AA01")),
    coded("Immunization", (CIS, "61402736")),
    coded("Immunization", (BDPM, "61402736")),
    coded("AllergyIntolerance", (CIP, "3400933516390"), category=["medication"]),
    # an accepted coding with a translation into another system
    coded("Condition", (SCT, "73211009"), ("http://hl7.org/fhir/sid/icpc-2", "T90")),
    # other resource types are not this module's business
    {"resourceType": "Procedure", "code": {"text": "anything"}},
]


@pytest.mark.parametrize("resource", VALID)
def test_valid_codes_have_no_issue(resource: dict[str, Any]) -> None:
    assert clinical_issues(resource) == []


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"resourceType": "Condition", "id": "c"}, "clinical-code-required"),
    ({"resourceType": "Immunization", "vaccineCode": {}}, "clinical-code-required"),
    (coded("Condition", text="Diabète"), "clinical-code-text-only"),
    (coded("Observation", text="Hémoglobine"), "clinical-code-text-only"),
    (coded("Condition", (SCT, None)), "clinical-coding-incomplete"),
    (coded("Condition", (None, "38341003")), "clinical-coding-incomplete"),
    (coded("Condition", ("http://example.org/local", "HTA")), "clinical-code-system"),
    (coded("Observation", (ICD10, "E11.9")), "clinical-code-system"),
    (coded("AllergyIntolerance", (ICD10, "T88.7")), "clinical-code-system"),
    (coded("Immunization", (CIP, "3400933516390")), "clinical-code-system"),
    (coded("Condition", (ABSENT_UNKNOWN_SYSTEM, "no-known-allergies")),
     "clinical-absent-unknown"),
    (coded("AllergyIntolerance", (ABSENT_UNKNOWN_SYSTEM, "no-problem-info")),
     "clinical-absent-unknown"),
    (coded("Condition", (SCT, "HTA")), "clinical-snomed-format"),
    (coded("Condition", (SCT, "12345")), "clinical-snomed-format"),
    (coded("Condition", (SCT, "38341013")), "clinical-snomed-format"),  # description partition
    (coded("Condition", (SCT, "38341004")), "clinical-snomed-check"),   # typo in check digit
    (coded("Condition", (SCT, "38314003")), "clinical-snomed-check"),   # swapped digits
    (coded("Observation", (LOINC, "718")), "clinical-loinc-format"),
    (coded("Observation", (LOINC, "LP1234-5")), "clinical-loinc-format"),
    (coded("Observation", (LOINC, "718-6")), "clinical-loinc-check"),
    (coded("MedicationStatement", (ATC, "c09aa05")), "clinical-atc-format"),
    (coded("MedicationStatement", (ATC, "C9AA05")), "clinical-atc-format"),
    (coded("Condition", (ICD10, "E1")), "clinical-icd10-format"),
    (coded("Condition", (CIM10, "diabète")), "clinical-icd10-format"),
    (coded("MedicationStatement", (CIS, "6310775")), "clinical-cis-format"),
    (coded("MedicationStatement", (CIP, "34009335163")), "clinical-cip-format"),
    (coded("MedicationStatement", (UCD, "93609")), "clinical-ucd-format"),
    (coded("AllergyIntolerance", (ATC, "J01CA04"), category=["food"]),
     "clinical-allergy-medication"),
    ({"resourceType": "MedicationStatement", "status": "active",
      "medicationReference": {"reference": "Medication/m1"}}, "clinical-medication-reference"),
]


@pytest.mark.parametrize(("resource", "rule"), INVALID)
def test_each_rule_is_reported_with_its_id_and_path(resource: dict[str, Any], rule: str) -> None:
    issues = clinical_issues(resource)
    assert rule in rules(resource), issues
    issue = next(i for i in issues if i.diagnostics.startswith(f"[{rule}]"))
    assert issue.expression and issue.expression[0].startswith(resource["resourceType"])
    assert issue.severity == "error"


def test_every_rule_has_an_invalid_example() -> None:
    assert {rule for _, rule in INVALID} == set(RULES)


def test_text_only_says_what_is_missing() -> None:
    [issue] = clinical_issues(coded("Condition", text="Diabète de type 2"))
    assert "text only" in issue.diagnostics and "SNOMED CT" in issue.diagnostics
    assert issue.expression == ["Condition.code"]


def test_paths_name_the_coding() -> None:
    resource = coded("Condition", (SCT, "73211009"), (SCT, "38341004"))
    [issue] = clinical_issues(resource)
    assert issue.expression == ["Condition.code.coding[1].code"]


def test_an_incomplete_translation_is_refused_even_beside_an_accepted_coding() -> None:
    assert rules(coded("Condition", (SCT, "73211009"), ("http://x.org", None))) == [
        "clinical-coding-incomplete"]


def test_medication_allergy_without_category_is_accepted() -> None:
    assert clinical_issues(coded("AllergyIntolerance", (ATC, "J01CA04"))) == []


def test_check_digits() -> None:
    for code in ("716186003", "1287211007", "16217661000119109", "160245001"):
        assert verhoeff_valid(code)
    assert not verhoeff_valid("716186004") and not verhoeff_valid("12a")
    for code in ("11450-4", "60591-5", "48765-2", "10160-0", "11369-6", "30954-2"):
        assert luhn_valid(code.replace("-", ""))
    assert not luhn_valid("114505")
