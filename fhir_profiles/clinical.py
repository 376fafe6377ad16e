"""The codes that matter in the clinical resources a patient summary is built from.

``AllergyIntolerance.code``, ``Condition.code``, ``MedicationStatement.medicationCodeableConcept``,
``Immunization.vaccineCode`` and ``Observation.code`` must each hold at least one ``coding``
with ``system`` and ``code`` from a system accepted for that element; other codings
(translations) may follow, but every coding names both its system and its code. Text alone
is refused: a summary read abroad, or by software, needs codes.

The accepted systems are data (``data/clinical_codes.json``, with sources):

- IPS (HL7/fhir-ips ``input/fsh``): SNOMED CT ``http://snomed.info/sct``, LOINC
  ``http://loinc.org``, ATC ``http://www.whocc.no/atc`` (additional bindings whoatc-uv-ips on
  AllergyIntolerance.code, vaccines-whoatc-uv-ips on Immunization.vaccineCode), ICD-10
  ``http://hl7.org/fhir/sid/icd-10``, and the absent/unknown codes
  ``http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips``
  (``input/resources/ConceptMap-absence-to-snomedct-uv-ips.xml``), each only on its element
  (``no-known-allergies`` on an allergy, ``no-problem-info`` on a condition...). IPS 2.0 dropped
  that code system for SNOMED CT situations (716186003, 1287211007...), which pass as SNOMED CT.
- France (ANS Terminologies de Santé IG and ANS document core IG): CIM-10
  ``https://smt.esante.gouv.fr/terminologie-cim-10`` (OID 2.16.840.1.113883.6.3), ATC
  ``https://smt.esante.gouv.fr/terminologie-atc`` (OID 2.16.840.1.113883.6.73), BDPM
  ``https://smt.esante.gouv.fr/terminologie-bdpm``, CIP/UCD
  ``https://smt.esante.gouv.fr/terminologie-cip_ucd``, and the OIDs CIS
  ``urn:oid:1.2.250.1.213.2.3.1``, CIP ``urn:oid:1.2.250.1.213.2.3.2``, UCD
  ``urn:oid:1.2.250.1.213.2.61``.

Cheap format checks catch typos before they reach a summary: a SNOMED CT concept id is 6 to
18 digits, its partition says "concept" and its last digit is a Verhoeff check digit; a LOINC
code is ``digits-digit`` whose last digit is the Luhn (mod 10) check digit of the rest (LOINC
User's Guide); ATC, ICD-10/CIM-10, CIS, CIP and UCD codes have their published shapes.

A MedicationStatement must name its medicine by ``medicationCodeableConcept``: a
``medicationReference`` to a Medication cannot be checked here and would not travel in the
summary. ATC and French medicine codes on an AllergyIntolerance mean a medication allergy, so
its ``category``, when given, includes ``medication``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_profiles.outcome import Issue

__all__ = ["ABSENT_UNKNOWN_SYSTEM", "ELEMENTS", "RULES", "SYSTEMS", "clinical_issues",
           "coded_element", "luhn_valid", "system_key", "verhoeff_valid"]

_DATA: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "clinical_codes.json").read_text(encoding="utf-8"))

ABSENT_UNKNOWN_SYSTEM = "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips"


@dataclass(frozen=True)
class CodeSystem:
    key: str
    name: str
    uris: tuple[str, ...]
    format: str  # "snomed", "loinc", "pattern" or "none"
    pattern: re.Pattern[str] | None = None
    rule: str | None = None
    shape: str | None = None


@dataclass(frozen=True)
class CodedElement:
    resource_type: str
    element: str
    systems: tuple[str, ...]
    absent_unknown: tuple[str, ...]
    medication_systems: tuple[str, ...] = ()


SYSTEMS: dict[str, CodeSystem] = {
    key: CodeSystem(key, s["name"], tuple(s["uris"]), s["format"],
                    re.compile(s["pattern"]) if "pattern" in s else None, s.get("rule"),
                    s.get("shape"))
    for key, s in _DATA["systems"].items()}
ELEMENTS: dict[str, CodedElement] = {
    kind: CodedElement(kind, e["element"], tuple(e["systems"]), tuple(e["absent_unknown"]),
                       tuple(e.get("medication_systems", ())))
    for kind, e in _DATA["elements"].items()}
_BY_URI: dict[str, str] = {uri: s.key for s in SYSTEMS.values() for uri in s.uris}
if _BY_URI.get(ABSENT_UNKNOWN_SYSTEM) != "absent_unknown":
    raise RuntimeError("data/clinical_codes.json disagrees with clinical.ABSENT_UNKNOWN_SYSTEM")

# Every rule clinical_issues may report, for documentation and tests.
RULES = ("clinical-code-required", "clinical-code-text-only", "clinical-coding-incomplete",
         "clinical-code-system", "clinical-absent-unknown", "clinical-snomed-format",
         "clinical-snomed-check", "clinical-loinc-format", "clinical-loinc-check",
         "clinical-atc-format", "clinical-icd10-format", "clinical-cis-format",
         "clinical-cip-format", "clinical-ucd-format", "clinical-allergy-medication",
         "clinical-medication-reference")

_SNOMED = re.compile(r"^\d{6,18}$")
_LOINC = re.compile(r"^\d{1,7}-\d$")

# Verhoeff tables (dihedral group D5): multiplication, permutation.
_D = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
      (2, 3, 4, 0, 1, 7, 8, 9, 5, 6), (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
      (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
      (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
      (8, 7, 6, 5, 9, 3, 2, 1, 0, 4), (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
_P = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
      (5, 8, 0, 3, 7, 9, 6, 1, 4, 2), (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
      (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
      (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8))


def verhoeff_valid(digits: str) -> bool:
    """True when the last digit is the Verhoeff check digit of the others (SNOMED CT ids)."""
    if not digits.isdigit():
        return False
    check = 0
    for i, digit in enumerate(reversed(digits)):
        check = _D[check][_P[i % 8][int(digit)]]
    return check == 0


def luhn_valid(digits: str) -> bool:
    """True when the last digit is the mod 10 (Luhn) check digit of the others (LOINC)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def system_key(system: Any) -> str | None:
    """The key in ``SYSTEMS`` of a coding's system URI (None: not one Carnet knows)."""
    return _BY_URI.get(system) if isinstance(system, str) else None


def coded_element(resource_type: str) -> CodedElement | None:
    return ELEMENTS.get(resource_type)


def _issue(rule: str, text: str, path: str, code: str = "code-invalid") -> Issue:
    return Issue(f"[{rule}] {text}", code, expression=[path])


def _format_issues(system: CodeSystem, code: str, path: str) -> list[Issue]:
    if system.format == "snomed":
        # Concept ids: 6-18 digits; partition (2nd-3rd digits from the right) 00 or 10.
        if not _SNOMED.match(code) or code[-2] != "0" or code[-3] not in "01":
            return [_issue("clinical-snomed-format", f"SNOMED CT code {code!r} is not a concept "
                           "id (6 to 18 digits, concept partition)", path)]
        if not verhoeff_valid(code):
            return [_issue("clinical-snomed-check", f"SNOMED CT code {code!r} fails its "
                           "Verhoeff check digit: is it mistyped?", path)]
    elif system.format == "loinc":
        if not _LOINC.match(code):
            return [_issue("clinical-loinc-format", f"LOINC code {code!r} is not of the form "
                           "digits-check digit (e.g. 2345-7)", path)]
        if not luhn_valid(code.replace("-", "")):
            return [_issue("clinical-loinc-check", f"LOINC code {code!r} fails its mod 10 "
                           "check digit: is it mistyped?", path)]
    elif system.format == "pattern" and system.pattern and not system.pattern.match(code):
        return [_issue(system.rule or "clinical-code-format", f"{system.name} code {code!r} "
                       f"does not have the expected shape: {system.shape}", path)]
    return []


def _categories(resource: dict[str, Any]) -> list[str]:
    category = resource.get("category")
    return [c for c in category if isinstance(c, str)] if isinstance(category, list) else []


def clinical_issues(resource: dict[str, Any]) -> list[Issue]:
    """What makes the coded element of a clinical resource unusable in a summary (422);
    resources of other types have nothing to check here."""
    kind = resource.get("resourceType")
    element = ELEMENTS.get(kind) if isinstance(kind, str) else None
    if element is None:
        return []
    base = f"{kind}.{element.element}"
    if kind == "MedicationStatement" and "medicationReference" in resource:
        return [_issue("clinical-medication-reference", "Carnet needs the medicine coded in "
                       "MedicationStatement.medicationCodeableConcept (ATC, SNOMED CT, CIS, CIP "
                       "or UCD); a medicationReference cannot be checked nor shown in a summary",
                       "MedicationStatement.medicationReference", "not-supported")]
    concept = resource.get(element.element)
    if not isinstance(concept, dict):
        return [_issue("clinical-code-required", f"{base} is required, as a coding with system "
                       "and code", base, "required")]
    codings = concept.get("coding")
    if not isinstance(codings, list) or not codings:
        if isinstance(concept.get("text"), str) and concept["text"].strip():
            return [_issue("clinical-code-text-only", f"{base} has text only: add a coding with "
                           f"system and code from {_names(element)}", base, "required")]
        return [_issue("clinical-code-required", f"{base} needs a coding with system and code",
                       base, "required")]
    issues: list[Issue] = []
    accepted = 0
    for i, coding in enumerate(codings):
        path = f"{base}.coding[{i}]"
        system = coding.get("system") if isinstance(coding, dict) else None
        code = coding.get("code") if isinstance(coding, dict) else None
        if not (isinstance(system, str) and system and isinstance(code, str) and code):
            issues.append(_issue("clinical-coding-incomplete", "each coding names both its "
                                 "system and its code", path, "required"))
            continue
        key = system_key(system)
        if key is None or key not in element.systems:
            continue  # a translation into another system: allowed beside an accepted coding
        accepted += 1
        if key == "absent_unknown":
            if code not in element.absent_unknown:
                allowed = ", ".join(element.absent_unknown) or "none"
                issues.append(_issue("clinical-absent-unknown", f"{code!r} is not an IPS "
                                     f"absent/unknown code for {base} (allowed: {allowed})",
                                     f"{path}.code"))
            continue
        issues += _format_issues(SYSTEMS[key], code, f"{path}.code")
        categories = _categories(resource)
        if key in element.medication_systems and categories and "medication" not in categories:
            issues.append(_issue("clinical-allergy-medication", f"a {SYSTEMS[key].name} code "
                                 "names a medicine: the allergy's category must include "
                                 "'medication'", f"{kind}.category", "invariant"))
    if accepted == 0:
        issues.append(_issue("clinical-code-system", f"{base} needs a coding from "
                             f"{_names(element)}", f"{base}.coding"))
    return issues


def _names(element: CodedElement) -> str:
    return ", ".join(f"{SYSTEMS[k].name} ({SYSTEMS[k].uris[0]})" for k in element.systems)
