"""The IPS summary document: sections, narratives, references, and the structure checker."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_profiles.ips import (
    LOINC,
    SECTIONS,
    partial_sentence,
    summary_bundle,
    summary_structure_issues,
)

BASE = "https://carnet.example/fhir"
PATIENT_URL = f"{BASE}/Patient/p1"
NOW = "2026-11-26T07:00:00.000+00:00"
SCT = "http://snomed.info/sct"

PATIENT = {"resourceType": "Patient", "id": "p1",
           "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "248092A00101234"}],
           "name": [{"family": "Martin", "given": ["Jeanne"]}],
           "generalPractitioner": [{"reference": "Practitioner/gp1", "display": "Dr Durand"}]}


def clinical() -> list[dict[str, Any]]:
    subject = {"reference": "Patient/p1"}
    return [
        {"resourceType": "Condition", "id": "c1", "subject": subject,
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                        "condition-clinical", "code": "active"}]},
         "code": {"coding": [{"system": "https://smt.esante.gouv.fr/terminologie-cim-10",
                              "code": "E06.3"}],
                  "text": "Thyroïdite <script>alert('x')</script> & co"},
         "onsetDateTime": "2024-01-11", "recorder": {"reference": "Practitioner/pr9"}},
        {"resourceType": "Condition", "id": "c2", "subject": subject,
         "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
         "code": {"coding": [{"system": SCT, "code": "38341003"}]}},
        {"resourceType": "AllergyIntolerance", "id": "a1", "patient": subject,
         "code": {"coding": [{"system": SCT, "code": "387517004", "display": "Paracetamol"}]},
         "criticality": "low", "asserter": {"reference": "Practitioner/pr9",
                                            "display": "Dr Petit"}},
        {"resourceType": "MedicationStatement", "id": "m1", "status": "active",
         "subject": {"reference": PATIENT_URL},
         "medicationCodeableConcept": {"coding": [{"system": "urn:oid:1.2.250.1.213.2.3.1",
                                                   "code": "63107752",
                                                   "display": "LEVOTHYROX 75 µg"}]},
         "dosage": [{"text": "1 cp le matin"}],
         "reasonReference": [{"reference": "Condition/c1"}],
         "informationSource": {"reference": "PractitionerRole/role7"}},
        {"resourceType": "Immunization", "id": "i1", "status": "completed",
         "patient": subject, "occurrenceDateTime": "2009-09-28", "lotNumber": "4456672",
         "vaccineCode": {"coding": [{"system": "urn:oid:1.2.250.1.213.2.3.1",
                                     "code": "61402736", "display": "REVAXIS"}]},
         "performer": [{"actor": {"reference": "Organization/o3"}}]},
        {"resourceType": "Observation", "id": "o1", "status": "final", "subject": subject,
         "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hémoglobine"}]},
         "effectiveDateTime": "2026-10-01", "valueQuantity": {"value": 13.2, "unit": "g/dL"},
         "hasMember": [{"reference": "Observation/hidden"}]},
        {"resourceType": "Observation", "id": "o1", "status": "final", "subject": subject,
         "code": {"coding": [{"system": LOINC, "code": "718-7"}]}},  # duplicate: left out
        {"resourceType": "Procedure", "id": "x1", "subject": subject},  # not a section type
    ]


def build(resources: list[dict[str, Any]] | None = None, *, partial: bool = False,
          language: str = "fr-FR", author: dict[str, Any] | None = None) -> dict[str, Any]:
    return summary_bundle(patient=PATIENT, patient_url=PATIENT_URL,
                          resources=clinical() if resources is None else resources,
                          author=author, author_display="Carnet", now=NOW,
                          bundle_id="b6a1c1d2-0000-4000-8000-000000000001",
                          identifier_value="9f0e8d7c-0000-4000-8000-000000000002", base=BASE,
                          partial=partial, language=language)


def section(bundle: dict[str, Any], code: str) -> dict[str, Any]:
    composition = bundle["entry"][0]["resource"]
    return next(s for s in composition["section"]
                if s["code"]["coding"][0] == {"system": LOINC, "code": code,
                                              "display": s["code"]["coding"][0]["display"]})


def resource_at(bundle: dict[str, Any], url: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["fullUrl"] == url)


def test_a_full_summary_passes_the_structure_rules() -> None:
    bundle = build()
    assert summary_structure_issues(bundle) == []
    assert bundle["type"] == "document" and bundle["timestamp"] == NOW
    assert bundle["identifier"] == {"system": "urn:ietf:rfc:3986",
                                    "value": "urn:uuid:9f0e8d7c-0000-4000-8000-000000000002"}
    composition = bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition" and composition["status"] == "final"
    assert composition["type"]["coding"][0]["code"] == "60591-5"
    assert composition["subject"] == {"reference": PATIENT_URL}
    assert composition["title"] == "Synthèse médicale du patient"
    assert composition["confidentiality"] == "N" and composition["date"] == NOW
    assert bundle["entry"][1] == {"fullUrl": PATIENT_URL, "resource": bundle["entry"][1]
                                  ["resource"]}
    author = resource_at(bundle, composition["author"][0]["reference"])
    assert author["resourceType"] == "Device"


def test_sections_have_their_codes_entries_and_narratives() -> None:
    bundle = build()
    codes = [s["code"]["coding"][0]["code"] for s in bundle["entry"][0]["resource"]["section"]]
    assert codes == [s.loinc for s in SECTIONS]
    expected = {"11450-4": [f"{BASE}/Condition/c1"],
                "48765-2": [f"{BASE}/AllergyIntolerance/a1"],
                "10160-0": [f"{BASE}/MedicationStatement/m1"],
                "11369-6": [f"{BASE}/Immunization/i1"],
                "30954-2": [f"{BASE}/Observation/o1"]}
    for code, urls in expected.items():
        found = section(bundle, code)
        assert [e["reference"] for e in found["entry"]] == urls
        assert "emptyReason" not in found
        assert found["text"]["status"] == "generated"
        assert found["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
        assert "<table>" in found["text"]["div"]
    assert "LEVOTHYROX 75 µg" in section(bundle, "10160-0")["text"]["div"]
    assert "1 cp le matin" in section(bundle, "10160-0")["text"]["div"]
    assert "13.2 g/dL" in section(bundle, "30954-2")["text"]["div"]
    assert "REVAXIS" in section(bundle, "11369-6")["text"]["div"]


def test_entries_are_the_composition_patient_author_then_the_records() -> None:
    bundle = build()
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Composition", "Patient", "Device", "Condition", "AllergyIntolerance",
                     "MedicationStatement", "Immunization", "Observation"]
    urls = [e["fullUrl"] for e in bundle["entry"][3:]]
    assert urls == [f"{BASE}/Condition/c1", f"{BASE}/AllergyIntolerance/a1",
                    f"{BASE}/MedicationStatement/m1", f"{BASE}/Immunization/i1",
                    f"{BASE}/Observation/o1"]


def test_resource_text_is_escaped_in_the_narrative() -> None:
    div = section(build(), "11450-4")["text"]["div"]
    assert "<script>" not in div
    assert "Thyroïdite &lt;script&gt;alert('x')&lt;/script&gt; &amp; co" in div


def test_references_resolve_inside_or_become_display_only() -> None:
    bundle = build()
    condition = resource_at(bundle, f"{BASE}/Condition/c1")
    assert condition["subject"] == {"reference": PATIENT_URL}
    assert condition["recorder"] == {"display": "Non inclus dans la synthèse"}
    allergy = resource_at(bundle, f"{BASE}/AllergyIntolerance/a1")
    assert allergy["asserter"] == {"display": "Dr Petit"}
    statement = resource_at(bundle, f"{BASE}/MedicationStatement/m1")
    assert statement["reasonReference"] == [{"reference": f"{BASE}/Condition/c1"}]
    assert "reference" not in statement["informationSource"]
    observation = resource_at(bundle, f"{BASE}/Observation/o1")
    assert observation["hasMember"] == [{"display": "Non inclus dans la synthèse"}]
    patient = resource_at(bundle, PATIENT_URL)
    assert patient["generalPractitioner"] == [{"display": "Dr Durand"}]


def test_the_input_resources_are_not_modified() -> None:
    resources = clinical()
    before = copy.deepcopy(resources)
    build(resources)
    assert resources == before


def test_an_empty_summary_keeps_every_section_with_its_empty_reason() -> None:
    bundle = build([])
    assert summary_structure_issues(bundle) == []
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "Composition", "Patient", "Device"]
    for spec in SECTIONS:
        found = section(bundle, spec.loinc)
        assert "entry" not in found
        assert found["emptyReason"]["coding"][0] == {
            "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
            "code": "unavailable", "display": "Unavailable"}
        assert "Aucune information disponible." in found["text"]["div"]


def test_entered_in_error_records_are_left_out() -> None:
    only_error = [r for r in clinical() if r["id"] == "c2"]
    problems = section(build(only_error), "11450-4")
    assert "entry" not in problems and "emptyReason" in problems


def test_partial_adds_the_sentence_to_every_section() -> None:
    sentence = partial_sentence("fr-FR")
    assert "règles d'accès" in sentence
    full, partial = build(), build(partial=True)
    for spec in SECTIONS:
        assert "règles d'accès" not in section(full, spec.loinc)["text"]["div"]
        assert "règles d'accès" in section(partial, spec.loinc)["text"]["div"]
    assert "règles d'accès" in section(build([], partial=True), "11450-4")["text"]["div"]


def test_english_summary_has_the_ips_title() -> None:
    bundle = build(language="en-GB")
    composition = bundle["entry"][0]["resource"]
    assert composition["title"] == "International Patient Summary"
    assert section(bundle, "48765-2")["title"] == "Allergies and Intolerances"


def test_a_given_author_is_included_and_referenced() -> None:
    doctor = {"resourceType": "Practitioner", "id": "pr9",
              "name": [{"family": "Petit"}]}
    bundle = build(author=doctor)
    assert summary_structure_issues(bundle) == []
    composition = bundle["entry"][0]["resource"]
    assert composition["author"][0]["reference"] == f"{BASE}/Practitioner/pr9"
    # now that the recorder is in the Bundle, references to it resolve to it
    condition = resource_at(bundle, f"{BASE}/Condition/c1")
    assert condition["recorder"] == {"reference": f"{BASE}/Practitioner/pr9"}


# --- the structure checker catches each broken rule ------------------------------------------

def _composition(bundle: dict[str, Any]) -> dict[str, Any]:
    composition: dict[str, Any] = bundle["entry"][0]["resource"]
    return composition


def _drop_section(bundle: dict[str, Any]) -> None:
    _composition(bundle)["section"] = [s for s in _composition(bundle)["section"]
                                       if s["code"]["coding"][0]["code"] != "48765-2"]


def _dangling(bundle: dict[str, Any]) -> None:
    bundle["entry"][3]["resource"]["recorder"] = {"reference": "Practitioner/nowhere"}


def _swap_first(bundle: dict[str, Any]) -> None:
    bundle["entry"][0], bundle["entry"][1] = bundle["entry"][1], bundle["entry"][0]


def _no_narrative(bundle: dict[str, Any]) -> None:
    del _composition(bundle)["section"][0]["text"]


def _duplicate(bundle: dict[str, Any]) -> None:
    bundle["entry"].append(copy.deepcopy(bundle["entry"][3]))


def _empty_section(bundle: dict[str, Any]) -> None:
    del _composition(bundle)["section"][2]["entry"]


def _wrong_subject(bundle: dict[str, Any]) -> None:
    _composition(bundle)["subject"] = {"reference": f"{BASE}/Condition/c1"}


def _wrong_entry_type(bundle: dict[str, Any]) -> None:
    _composition(bundle)["section"][0]["entry"] = [{"reference": f"{BASE}/Observation/o1"}]


def _second_composition(bundle: dict[str, Any]) -> None:
    bundle["entry"].append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000009",
                            "resource": copy.deepcopy(_composition(bundle))})


BROKEN: list[tuple[str, Any, str]] = [
    ("type", lambda b: b.update(type="collection"), "ips-bundle-type"),
    ("identifier", lambda b: b.pop("identifier"), "ips-bundle-identifier"),
    ("timestamp", lambda b: b.pop("timestamp"), "ips-bundle-timestamp"),
    ("fullUrl", lambda b: b["entry"][4].pop("fullUrl"), "ips-fullurl"),
    ("relative fullUrl", lambda b: b["entry"][4].update(fullUrl="Condition/c1"), "ips-fullurl"),
    ("duplicate", _duplicate, "ips-fullurl-unique"),
    ("composition not first", _swap_first, "ips-composition-first"),
    ("two compositions", _second_composition, "ips-one-composition"),
    ("composition type", lambda b: _composition(b).update(
        type={"coding": [{"system": LOINC, "code": "34133-9"}]}), "ips-composition-type"),
    ("no title", lambda b: _composition(b).pop("title"), "ips-composition-element"),
    ("subject", _wrong_subject, "ips-composition-subject"),
    ("section removed", _drop_section, "ips-section-required"),
    ("narrative", _no_narrative, "ips-section-narrative"),
    ("section title", lambda b: _composition(b)["section"][1].pop("title"), "ips-section-title"),
    ("empty section", _empty_section, "ips-section-empty"),
    ("entry type", _wrong_entry_type, "ips-section-entry"),
    ("dangling reference", _dangling, "ips-reference"),
]


@pytest.mark.parametrize(("name", "breaks", "rule"), BROKEN, ids=[b[0] for b in BROKEN])
def test_the_checker_catches_each_broken_rule(name: str, breaks: Any, rule: str) -> None:
    bundle = build()
    breaks(bundle)
    issues = summary_structure_issues(bundle)
    assert any(i.startswith(f"[{rule}]") for i in issues), issues


def test_relative_and_urn_references_resolve() -> None:
    bundle = build()
    condition = bundle["entry"][3]["resource"]
    condition["subject"] = {"reference": "Patient/p1"}  # relative to the entry's RESTful base
    composition = _composition(bundle)
    device_url = composition["author"][0]["reference"]
    assert device_url.startswith("urn:uuid:")
    condition["asserter"] = {"reference": device_url}
    condition["evidence"] = [{"detail": [{"reference": "#contained-1"}]}]  # local: skipped
    assert summary_structure_issues(bundle) == []
    condition["subject"] = {"reference": "Patient/p2"}
    assert summary_structure_issues(bundle) == [
        f"[ips-reference] Patient/p2 (in {BASE}/Condition/c1) does not resolve in the Bundle"]


def test_a_recommended_section_may_carry_narrative_only() -> None:
    bundle = build([])
    results = section(bundle, "30954-2")
    del results["emptyReason"]
    assert summary_structure_issues(bundle) == []
    del section(bundle, "10160-0")["emptyReason"]
    assert [i.split("]")[0] for i in summary_structure_issues(bundle)] == ["[ips-section-empty"]
