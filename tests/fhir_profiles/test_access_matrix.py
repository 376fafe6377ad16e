"""The access matrix (``fhir_profiles.access``): categories of resources, rights of professions."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_profiles.access import (
    CATEGORIES,
    PROFESSIONS,
    MatrixError,
    access_category,
    is_open,
    load_matrix,
    open_categories,
)
from fhir_profiles.pdsm import DATA_DIR
from service.documents.samples import document_reference

PATIENT = "Patient/ins-253072A07300443"
LOINC = "http://loinc.org"
TRE_A05 = ("https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/"
           "TRE-A05-TypeDocComplementaire")
DATA: dict[str, Any] = json.loads((DATA_DIR / "access_matrix.json").read_text(encoding="utf-8"))
MEDECIN, PHARMACIEN, SAGE_FEMME, INFIRMIER, INFIRMIER_PSY, KINE = "10", "21", "50", "60", "69", "70"


def doc(type_code: str = "11488-4", class_code: str = "10") -> dict[str, Any]:
    """A PDSm DocumentReference with a LOINC type and a TRE_A03 class."""
    return document_reference(PATIENT, type_code=type_code, class_code=class_code)


def with_type(system: str, code: str, class_code: str = "10") -> dict[str, Any]:
    document = doc(class_code=class_code)
    document["type"] = {"coding": [{"system": system, "code": code}]}
    return document


def test_pharmacien_reads_prescriptions_and_lab_reports() -> None:
    prescription = access_category(doc("57833-6", "42"))
    untyped_prescription = access_category(with_type(LOINC, "00000-0", "42"))
    lab = access_category(doc("11502-2", "10"))
    assert (prescription, untyped_prescription, lab) == ("prescription", "prescription",
                                                         "lab-result")
    assert is_open([PHARMACIEN], "prescription")
    assert is_open([PHARMACIEN], "lab-result")


def test_pharmacien_reads_neither_imaging_nor_psychiatry() -> None:
    imaging = access_category(with_type(LOINC, "00000-0", "31"))
    psychiatric = access_category(doc("28627-8", "10"))
    assert (imaging, psychiatric) == ("imaging", "psychiatric")
    assert not is_open([PHARMACIEN], "imaging")
    assert not is_open([PHARMACIEN], "psychiatric")


def test_medecin_reads_every_category() -> None:
    assert open_categories([MEDECIN]) == CATEGORIES
    assert all(is_open([MEDECIN], category) for category in CATEGORIES)


def test_kine_sees_far_less_than_a_medecin() -> None:
    kine = open_categories([KINE])
    assert kine < open_categories([MEDECIN])
    assert len(kine) <= len(CATEGORIES) // 2
    presc_kine = access_category(with_type(TRE_A05, "PRESC-KINE", "42"))
    assert presc_kine == "paramedical-prescription"
    assert is_open([KINE], presc_kine)
    assert not is_open([KINE], "psychiatric")
    assert not is_open([KINE], "prescription")  # the patient's medicines are not the kiné's


def test_psychiatric_nurse_is_a_nurse_plus_psychiatry() -> None:
    assert open_categories([INFIRMIER_PSY]) == open_categories([INFIRMIER]) | {"psychiatric"}


def test_sage_femme_reads_every_clinical_category_but_psychiatry() -> None:
    assert open_categories([SAGE_FEMME]) == CATEGORIES - {"psychiatric"}


def test_type_wins_over_class() -> None:
    assert access_category(doc("11502-2", "42")) == "lab-result"
    assert access_category(with_type(TRE_A05, "PROT_ALD", "10")) == "care-plan"
    # a TRE_A05 type given by its OID is the same type
    assert access_category(with_type("urn:oid:1.2.250.1.213.1.1.4.12", "IMG-KOS")) == "imaging"


def test_unknown_type_falls_back_to_class() -> None:
    assert access_category(doc("00000-0", "43")) == "dispensation"
    assert access_category(with_type("http://example.org/other", "57833-6", "45")) \
        == "administered-treatment"


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(category=[{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.1",
                                              "code": "77"}]}]),
    lambda d: d.pop("category"),
])
def test_unknown_type_and_class_fall_back(mutate: Any) -> None:
    document = doc("00000-0")
    mutate(document)
    assert access_category(document) == "other"
    assert open_categories([MEDECIN]) >= {"other"}
    assert not is_open([PHARMACIEN, KINE, INFIRMIER], "other")
    assert is_open([SAGE_FEMME], "other")


@pytest.mark.parametrize(("resource_type", "category"), [
    ("AllergyIntolerance", "summary"), ("Condition", "summary"), ("Composition", "summary"),
    ("MedicationStatement", "treatment"), ("Immunization", "vaccination"),
    ("Observation", "lab-result"), ("Communication", "message"),
    ("CarePlan", "other"),  # a clinical type the matrix does not know fails closed
])
def test_clinical_resources_by_type(resource_type: str, category: str) -> None:
    assert access_category({"resourceType": resource_type, "id": "x"}) == category


@pytest.mark.parametrize("resource_type", [
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Binary", "List", "Consent",
    "AuditEvent", "Subscription", "Bundle"])
def test_non_patient_data_has_no_category(resource_type: str) -> None:
    assert access_category({"resourceType": resource_type}) is None


def test_messages_are_open_to_every_profession() -> None:
    assert all(is_open([code], "message") for code in PROFESSIONS)


def test_unknown_profession_reads_nothing() -> None:
    assert open_categories(["99"]) == frozenset()
    assert open_categories([]) == frozenset()
    assert not is_open(["99"], "message")


def test_several_professions_union() -> None:
    assert open_categories([PHARMACIEN, KINE]) == open_categories([PHARMACIEN]) | \
        open_categories([KINE])


def test_shipped_matrix_names_every_profession_and_explains_it() -> None:
    assert set(DATA["professions"]) == set(PROFESSIONS)
    assert set(PROFESSIONS) <= set(DATA["_notes"])
    assert "not the official" in DATA["_about"].lower()
    # every category but the fallback is reachable from a document or a resource type
    reachable = {c for c, spec in DATA["categories"].items()
                 if spec.get("types") or spec.get("classes") or spec.get("resource_types")}
    assert reachable == CATEGORIES - {DATA["fallback"]}


def broken(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(DATA)
    change(data)
    return data


def test_load_matrix_accepts_the_shipped_file() -> None:
    assert load_matrix(DATA).categories == CATEGORIES


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["professions"]["21"].append("genetics"), "unknown category 'genetics'"),
    (lambda d: d["professions"].update({"99": ["summary"]}), "'99' is not a TRE_G15 code"),
    (lambda d: d.update(fallback="nowhere"), "fallback 'nowhere' is not a category"),
    (lambda d: d["categories"]["imaging"]["classes"].append("42"),
     "class 42 is in two categories"),
    (lambda d: d["categories"]["imaging"]["types"]["LOINC"].append("11502-2"),
     "type LOINC#11502-2 is in two categories"),
    (lambda d: d["categories"]["imaging"]["classes"].append("33"),
     "'33' is not a TRE_A03 class code"),
    (lambda d: d["categories"]["imaging"]["types"].update(ASTM=["X"]),
     "unknown type system 'ASTM'"),
    (lambda d: d["not_governed"].append("Observation"), "both governed and not governed"),
    (lambda d: d["professions"].update({"70": "all"}), "expected '*' or a list"),
    (lambda d: d["categories"]["imaging"]["codings"].append({"resourceType": "Observation"}),
     "each of 'codings' needs resourceType, element, system"),
])
def test_load_matrix_rejects_inconsistent_data(change: Any, message: str) -> None:
    with pytest.raises(MatrixError, match="invalid access matrix") as raised:
        load_matrix(broken(change))
    assert any(message in problem for problem in raised.value.problems), raised.value.problems


def test_load_matrix_reports_every_problem_at_once() -> None:
    def two_problems(d: dict[str, Any]) -> None:
        d["professions"]["21"].append("genetics")
        d["professions"]["70"].append("astrology")

    with pytest.raises(MatrixError) as raised:
        load_matrix(broken(two_problems))
    assert len(raised.value.problems) == 2


def test_star_expands_to_every_category() -> None:
    matrix = load_matrix(broken(lambda d: d["professions"].update({"70": "*"})))
    assert matrix.open_categories([KINE]) == CATEGORIES


ICD10 = "http://hl7.org/fhir/sid/icd-10"
CIM10 = "https://smt.esante.gouv.fr/terminologie-cim-10"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.mark.parametrize(("resource", "category"), [
    ({"resourceType": "Condition", "code": {"coding": [{"system": ICD10, "code": "F32.1"}]}},
     "psychiatric"),  # a depressive episode: mental and behavioural disorders (F00-F99)
    ({"resourceType": "Condition", "code": {"coding": [{"system": CIM10, "code": "F20"}]}},
     "psychiatric"),
    ({"resourceType": "Condition", "code": {"coding": [{"system": ICD10, "code": "E11.9"}]}},
     "summary"),
    ({"resourceType": "Condition", "code": {"coding": [
        {"system": "http://snomed.info/sct", "code": "35489007"}]}}, "summary"),
    ({"resourceType": "Observation", "category": [{"coding": [
        {"system": OBSERVATION_CATEGORY, "code": "imaging"}]}]}, "imaging"),
    ({"resourceType": "Observation", "category": [{"coding": [
        {"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}]}, "lab-result"),
])
def test_clinical_data_is_categorised_by_its_codes_where_they_matter(
        resource: dict[str, Any], category: str) -> None:
    """A psychiatric diagnosis or an imaging result is not a pharmacist's business."""
    assert access_category(resource) == category
    assert is_open([PHARMACIEN], category) == (category not in ("psychiatric", "imaging"))
