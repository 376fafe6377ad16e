"""The IPS patient summary as a FHIR ``document`` Bundle: its sections, its making, its rules.

Facts relied on (HL7/fhir-ips ``input/fsh``, IPS STU 1.1):

- ``profiles/BundleUvIps.fsh``: ``identifier`` 1.., ``type`` = document, ``timestamp`` 1..,
  every ``entry.fullUrl`` 1..; the Composition is the first entry, with a Patient;
  ``invariants/bdl-ips-1.fsh``: no other Composition after the first.
- ``profiles/CompositionUvIps.fsh``: ``type`` = LOINC 60591-5, ``subject`` 1.. (the Patient);
  ``title`` "International Patient Summary" or an equivalent translation; sections
  medications (10160-0), allergies (48765-2), problems (11450-4) 1..1; immunizations
  (11369-6) and results (30954-2) 0..1; ``section.text`` 1.. on every section.
- ``invariants/ips-comp-1.fsh`` (required sections): ``entry.reference.exists() or
  emptyReason.exists()``. The IG page "Empty Sections & Missing Data" recommends
  ``emptyReason`` (list-empty-reason ``unavailable`` or ``notasked``) when there is no
  information, and says the former absent-unknown-uv-ips code system is no longer
  recommended. So a section with nothing to show gets ``emptyReason`` ``unavailable`` and a
  narrative saying so, never a made-up resource; the recommended sections are kept too (same
  shape for every summary, hiding nothing by their absence).
- ``instances/bundle-no-info-required-sections.fsh``: ``confidentiality`` #N (R4
  ``Composition.confidentiality`` is a ``code`` from v3 ConfidentialityClassification,
  ``http://terminology.hl7.org/CodeSystem/v3-Confidentiality``), section titles and LOINC
  displays; ``event`` PCPR (v3-ActClass) for the care provision documented.

French titles follow ansforge/interop-ig-fhir-document-patient-summary
(``input/fsh/FHIR/exemples/exempleIPS-FHIR.fsh``: "Problèmes (problèmes actifs et antécédents
médicaux)", "Allergies et hypersensibilités", "Traitements", "Vaccinations") and its
``FRCompositionDocumentIPS.fsh`` (title "SYNTHESE MEDICALE", section "Résultats").

References: every reference inside the Bundle resolves in it. The Patient and the summarised
resources are entries (``{base}/{type}/{id}``); references between them are rewritten to
those fullUrls. Any other reference (a ``medicationReference``, ``performer``, ``recorder``,
``encounter``, a resource the caller may not see...) is replaced by a display-only Reference
(its ``display``, ``type`` and ``identifier`` kept), because Carnet would otherwise have to
include resources outside the summary's scope. Generated resources (Composition, the Carnet
Device author) have ``urn:uuid:`` fullUrls: they exist nowhere else.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from html import escape as _html_escape
from typing import Any

__all__ = ["LOINC", "PATIENT_SUMMARY", "SECTIONS", "Section", "partial_sentence",
           "summary_bundle", "summary_structure_issues"]

LOINC = "http://loinc.org"
PATIENT_SUMMARY = "60591-5"
XHTML = "http://www.w3.org/1999/xhtml"
LIST_EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
ACT_CLASS = "http://terminology.hl7.org/CodeSystem/v3-ActClass"
RFC3986 = "urn:ietf:rfc:3986"
# Status codes that withdraw a record from any summary.
_ERRONEOUS = "entered-in-error"


@dataclass(frozen=True)
class Section:
    key: str
    loinc: str
    display: str  # LOINC display, as in the IPS examples
    resource_type: str
    required: bool
    title_fr: str
    title_en: str


SECTIONS: tuple[Section, ...] = (
    Section("problems", "11450-4", "Problem list - Reported", "Condition", True,
            "Problèmes (problèmes actifs et antécédents médicaux)", "Problem List"),
    Section("allergies", "48765-2", "Allergies and adverse reactions Document",
            "AllergyIntolerance", True, "Allergies et hypersensibilités",
            "Allergies and Intolerances"),
    Section("medications", "10160-0", "History of Medication use Narrative",
            "MedicationStatement", True, "Traitements", "Medication Summary"),
    Section("immunizations", "11369-6", "History of Immunization Narrative", "Immunization",
            False, "Vaccinations", "Immunizations"),
    Section("results", "30954-2", "Relevant diagnostic tests/laboratory data Narrative",
            "Observation", False, "Résultats", "Results"),
)
_BY_TYPE = {s.resource_type: s for s in SECTIONS}

_TEXT: dict[str, dict[str, str]] = {
    "fr": {"title": "Synthèse médicale du patient", "empty": "Aucune information disponible.",
           "empty_reason": "Aucune information disponible",
           "partial": "Selon les règles d'accès au dossier, certaines informations peuvent ne "
                      "pas figurer dans cette synthèse.",
           "not_included": "Non inclus dans la synthèse",
           "generated": "Synthèse générée par"},
    "en": {"title": "International Patient Summary", "empty": "No information available.",
           "empty_reason": "No information available",
           "partial": "According to the access rules of the record, some information may not "
                      "be shown in this summary.",
           "not_included": "Not included in the summary",
           "generated": "Summary generated by"},
}
_HEADERS: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "fr": {"Condition": ("Problème", "Statut", "Début", "Sévérité"),
           "AllergyIntolerance": ("Allergie ou intolérance", "Statut", "Début", "Criticité"),
           "MedicationStatement": ("Médicament", "Statut", "Période", "Posologie"),
           "Immunization": ("Vaccin", "Statut", "Date", "Lot"),
           "Observation": ("Examen", "Statut", "Date", "Résultat")},
    "en": {"Condition": ("Problem", "Status", "Onset", "Severity"),
           "AllergyIntolerance": ("Allergy or intolerance", "Status", "Onset", "Criticality"),
           "MedicationStatement": ("Medication", "Status", "Period", "Dosage"),
           "Immunization": ("Vaccine", "Status", "Date", "Lot"),
           "Observation": ("Test", "Status", "Date", "Result")},
}


def escape(text: str) -> str:
    """Text as XHTML element content (the narrative builds no attribute from data)."""
    return _html_escape(text, quote=False)


def _lang(language: str) -> str:
    return "fr" if language.lower().startswith("fr") else "en"


def partial_sentence(language: str = "fr-FR") -> str:
    """What a partial summary says in each section: that information may be missing, not what."""
    return _TEXT[_lang(language)]["partial"]


# --- narrative -------------------------------------------------------------------------------

def _concept(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    if isinstance(value.get("text"), str) and value["text"]:
        return str(value["text"])
    for coding in value.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    for coding in value.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code") is not None:
            return str(coding["code"])
    return ""


def _period(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    start, end = str(value.get("start") or ""), str(value.get("end") or "")
    return f"{start} \u2013 {end}" if end else start


def _first(resource: dict[str, Any], *names: str) -> str:
    """The first of ``names`` (dateTime, string or Period choices) present, as text."""
    for name in names:
        value = resource.get(name)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        if name.endswith("Period") and isinstance(value, dict):
            return _period(value)
    return ""


def _quantity(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    unit = value.get("unit") or value.get("code") or ""
    number = value.get("value")
    return f"{value.get('comparator', '')}{'' if number is None else number} {unit}".strip()


def _value(observation: dict[str, Any]) -> str:
    if "valueQuantity" in observation:
        return _quantity(observation["valueQuantity"])
    if "valueCodeableConcept" in observation:
        return _concept(observation["valueCodeableConcept"])
    if "valueRange" in observation and isinstance(observation["valueRange"], dict):
        low = _quantity(observation["valueRange"].get("low"))
        high = _quantity(observation["valueRange"].get("high"))
        return f"{low} \u2013 {high}"
    for name in ("valueString", "valueInteger", "valueBoolean", "valueDateTime", "valueTime"):
        if name in observation:
            return str(observation[name])
    if "valuePeriod" in observation:
        return _period(observation["valuePeriod"])
    return ""


def _row(resource: dict[str, Any]) -> tuple[str, str, str, str]:
    """The four cells (unescaped) of a resource's line in its section's table."""
    kind = resource.get("resourceType")
    if kind == "Condition":
        return (_concept(resource.get("code")), _concept(resource.get("clinicalStatus")),
                _first(resource, "onsetDateTime", "onsetPeriod", "onsetString",
                       "recordedDate"), _concept(resource.get("severity")))
    if kind == "AllergyIntolerance":
        return (_concept(resource.get("code")), _concept(resource.get("clinicalStatus")),
                _first(resource, "onsetDateTime", "onsetPeriod", "onsetString",
                       "recordedDate"), str(resource.get("criticality") or ""))
    if kind == "MedicationStatement":
        medication = _concept(resource.get("medicationCodeableConcept"))
        if not medication and isinstance(resource.get("medicationReference"), dict):
            medication = str(resource["medicationReference"].get("display") or "")
        dosage = next((str(d["text"]) for d in resource.get("dosage") or []
                       if isinstance(d, dict) and d.get("text")), "")
        return (medication, str(resource.get("status") or ""),
                _first(resource, "effectiveDateTime", "effectivePeriod", "dateAsserted"), dosage)
    if kind == "Immunization":
        return (_concept(resource.get("vaccineCode")), str(resource.get("status") or ""),
                _first(resource, "occurrenceDateTime", "occurrenceString"),
                str(resource.get("lotNumber") or ""))
    return (_concept(resource.get("code")), str(resource.get("status") or ""),
            _first(resource, "effectiveDateTime", "effectivePeriod", "effectiveInstant",
                   "issued"), _value(resource))


def _narrative(section: Section, resources: list[dict[str, Any]], lang: str,
               partial: bool) -> dict[str, str]:
    parts = [f'<div xmlns="{XHTML}">']
    if partial:
        parts.append(f"<p>{escape(_TEXT[lang]['partial'])}</p>")
    if resources:
        head = "".join(f"<th>{escape(h)}</th>" for h in _HEADERS[lang][section.resource_type])
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
        for resource in resources:
            cells = "".join(f"<td>{escape(cell)}</td>" for cell in _row(resource))
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table>")
    else:
        parts.append(f"<p>{escape(_TEXT[lang]['empty'])}</p>")
    parts.append("</div>")
    return {"status": "generated", "div": "".join(parts)}


# --- references ------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")


def _rewrite(node: Any, resolve: Callable[[str], str | None], not_included: str) -> Any:
    """A copy of ``node`` whose references point at Bundle entries or are display-only."""
    if isinstance(node, list):
        return [_rewrite(item, resolve, not_included) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _rewrite(value, resolve, not_included) for key, value in node.items()}
    reference = node.get("reference")
    if isinstance(reference, str) and not reference.startswith("#"):
        target = resolve(reference)
        if target is not None:
            out["reference"] = target
        else:
            out = {k: out[k] for k in ("type", "identifier", "display") if k in out}
            out.setdefault("display", not_included)
    return out


# --- the document ----------------------------------------------------------------------------

def _erroneous(resource: dict[str, Any]) -> bool:
    if resource.get("status") == _ERRONEOUS:
        return True
    verification = resource.get("verificationStatus")
    codes = [c.get("code") for c in (verification or {}).get("coding") or []
             if isinstance(c, dict)] if isinstance(verification, dict) else []
    return _ERRONEOUS in codes


def summary_bundle(*, patient: dict[str, Any], patient_url: str, resources: list[dict[str, Any]],
                   author: dict[str, Any] | None, author_display: str, now: str, bundle_id: str,
                   identifier_value: str, base: str, partial: bool,
                   language: str = "fr-FR") -> dict[str, Any]:
    """The IPS document Bundle: Composition, Patient, author, then the summarised resources.

    ``resources`` are the clinical resources the caller may see (other types, duplicates and
    entered-in-error records are left out); ``author`` is a resource (Practitioner,
    PractitionerRole, Organization, Device) to name as author, or None for Carnet itself, a
    Device named ``author_display``. ``partial`` says in every section that information may
    be missing according to the access rules.
    """
    lang = _lang(language)
    text = _TEXT[lang]
    base = base.rstrip("/")
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:uuid:{bundle_id}")
    patient_id = str(patient.get("id") or patient_url.rstrip("/").rsplit("/", 1)[-1])

    urls: dict[tuple[str, str], str] = {("Patient", patient_id): patient_url}
    chosen: list[tuple[str, dict[str, Any]]] = []  # (fullUrl, resource) of summarised records
    for index, resource in enumerate(resources):
        kind = resource.get("resourceType")
        if kind not in _BY_TYPE or _erroneous(resource):
            continue
        rid = resource.get("id")
        if isinstance(rid, str) and rid:
            if (kind, rid) in urls:
                continue
            url = f"{base}/{kind}/{rid}"
            urls[(kind, rid)] = url
        else:
            url = f"urn:uuid:{uuid.uuid5(namespace, f'resource-{index}')}"
        chosen.append((url, resource))

    if author is None:
        device_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"carnet-device:{author_display}"))
        author_resource: dict[str, Any] = {
            "resourceType": "Device", "id": device_id,
            "deviceName": [{"name": author_display, "type": "user-friendly-name"}]}
        author_url = f"urn:uuid:{device_id}"
    else:
        author_resource = author
        kind, aid = str(author.get("resourceType")), author.get("id")
        if isinstance(aid, str) and aid:
            author_url = f"{base}/{kind}/{aid}"
            urls.setdefault((kind, aid), author_url)
        else:
            author_url = f"urn:uuid:{uuid.uuid5(namespace, 'author')}"
    full_urls = {*urls.values(), author_url}

    def resolve(reference: str) -> str | None:
        if reference in full_urls:
            return reference
        relative = reference[len(base) + 1:] if reference.startswith(base + "/") else reference
        match = _RELATIVE.match(relative)
        return urls.get((match.group(1), match.group(2))) if match else None

    def prepare(resource: dict[str, Any]) -> dict[str, Any]:
        """A copy (``_rewrite`` rebuilds every dict and list) with resolvable references."""
        rewritten: dict[str, Any] = _rewrite(resource, resolve, text["not_included"])
        return rewritten

    sections: list[dict[str, Any]] = []
    for section in SECTIONS:
        members = [(url, r) for url, r in chosen if r.get("resourceType") == section.resource_type]
        entry: dict[str, Any] = {
            "title": section.title_fr if lang == "fr" else section.title_en,
            "code": {"coding": [{"system": LOINC, "code": section.loinc,
                                 "display": section.display}]},
            "text": _narrative(section, [r for _, r in members], lang, partial)}
        if members:
            entry["entry"] = [{"reference": url} for url, _ in members]
        else:
            entry["emptyReason"] = {"coding": [{"system": LIST_EMPTY_REASON,
                                                "code": "unavailable",
                                                "display": "Unavailable"}],
                                    "text": text["empty_reason"]}
        sections.append(entry)

    composition_id = str(uuid.uuid5(namespace, "composition"))
    title = text["title"]
    identifier = {"system": RFC3986, "value": f"urn:uuid:{identifier_value}"}
    composition = {
        "resourceType": "Composition", "id": composition_id, "language": language,
        "text": {"status": "generated",
                 "div": f'<div xmlns="{XHTML}"><p>{escape(title)}</p>'
                        f"<p>{escape(text['generated'])} {escape(author_display)}, "
                        f"{escape(now)}</p></div>"},
        "identifier": identifier, "status": "final",
        "type": {"coding": [{"system": LOINC, "code": PATIENT_SUMMARY,
                             "display": "Patient summary Document"}]},
        "subject": {"reference": patient_url}, "date": now,
        "author": [{"reference": author_url, "display": author_display}],
        "title": title, "confidentiality": "N",
        "event": [{"code": [{"coding": [{"system": ACT_CLASS, "code": "PCPR"}]}],
                   "period": {"end": now}}],
        "section": sections}
    entries = [{"fullUrl": f"urn:uuid:{composition_id}", "resource": composition},
               {"fullUrl": patient_url, "resource": prepare(patient)},
               {"fullUrl": author_url, "resource": prepare(author_resource)}]
    entries += [{"fullUrl": url, "resource": prepare(r)} for url, r in chosen]
    return {"resourceType": "Bundle", "id": bundle_id, "language": language,
            "identifier": identifier, "type": "document", "timestamp": now, "entry": entries}


# --- structure rules -------------------------------------------------------------------------

def _references(node: Any) -> list[str]:
    if isinstance(node, list):
        return [r for item in node for r in _references(item)]
    if not isinstance(node, dict):
        return []
    found = [r for value in node.values() for r in _references(value)]
    if isinstance(node.get("reference"), str):
        found.append(node["reference"])
    return found


def _restful_base(full_url: str) -> str | None:
    """``[base]`` of a RESTful fullUrl ``[base]/[type]/[id]`` (None for urn: and others)."""
    match = re.match(r"^(https?://.+)/[A-Za-z]+/[A-Za-z0-9\-.]{1,64}$", full_url)
    return match.group(1) if match else None


def _resolves(reference: str, entry_url: str, full_urls: set[str]) -> str | None:
    """The fullUrl a reference made in ``entry_url`` points at, per FHIR's Bundle rules."""
    if reference in full_urls:
        return reference
    match = _RELATIVE.match(reference)
    if not match:
        return None
    relative = f"{match.group(1)}/{match.group(2)}"
    base = _restful_base(entry_url)
    if base is not None:
        target = f"{base}/{relative}"
        return target if target in full_urls else None
    return next((u for u in full_urls if u.endswith("/" + relative)), None)


def _codes(concept: Any) -> set[tuple[Any, Any]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return {(c.get("system"), c.get("code")) for c in codings or [] if isinstance(c, dict)}


def summary_structure_issues(bundle: dict[str, Any]) -> list[str]:
    """The IPS structure rules a summary Bundle breaks, as ``[rule-id] text`` (empty: none)."""
    issues: list[str] = []

    def fail(rule: str, message: str) -> None:
        issues.append(f"[{rule}] {message}")

    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "document":
        fail("ips-bundle-type", "the summary is a Bundle of type document")
    identifier = bundle.get("identifier")
    if not (isinstance(identifier, dict) and identifier.get("system")
            and identifier.get("value")):
        fail("ips-bundle-identifier", "Bundle.identifier (system and value) is required")
    if not bundle.get("timestamp"):
        fail("ips-bundle-timestamp", "Bundle.timestamp is required")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    by_url: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        url = entry.get("fullUrl")
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            fail("ips-entry-resource", f"entry[{i}] has no resource")
        if not isinstance(url, str) or not re.match(r"^(https?://|urn:uuid:|urn:oid:)", url):
            fail("ips-fullurl", f"entry[{i}] needs an absolute fullUrl")
            continue
        if url in by_url:
            fail("ips-fullurl-unique", f"fullUrl {url} appears more than once")
        by_url[url] = resource if isinstance(resource, dict) else {}
    first = entries[0].get("resource") if entries else None
    if not isinstance(first, dict) or first.get("resourceType") != "Composition":
        fail("ips-composition-first", "the Composition is the Bundle's first entry")
        composition: dict[str, Any] = next(
            (e["resource"] for e in entries if isinstance(e.get("resource"), dict)
             and e["resource"].get("resourceType") == "Composition"), {})
    else:
        composition = first
    if sum(1 for e in entries if isinstance(e.get("resource"), dict)
           and e["resource"].get("resourceType") == "Composition") > 1:
        fail("ips-one-composition", "a summary holds one Composition only (bdl-ips-1)")
    full_urls = set(by_url)

    if composition:
        if (LOINC, PATIENT_SUMMARY) not in _codes(composition.get("type")):
            fail("ips-composition-type", f"Composition.type is LOINC {PATIENT_SUMMARY}")
        for name in ("status", "date", "author", "title", "confidentiality"):
            if not composition.get(name):
                fail("ips-composition-element", f"Composition.{name} is required")
        composition_url = next((u for u, r in by_url.items() if r is composition), "")
        subject = (composition.get("subject") or {}).get("reference")
        target = _resolves(subject, composition_url, full_urls) if isinstance(subject, str) \
            else None
        if target is None or by_url[target].get("resourceType") != "Patient":
            fail("ips-composition-subject", "Composition.subject references the Patient entry")
        sections = [s for s in composition.get("section") or [] if isinstance(s, dict)]
        present = {code for s in sections for code in _codes(s.get("code"))}
        for section in SECTIONS:
            if section.required and (LOINC, section.loinc) not in present:
                fail("ips-section-required", f"the {section.title_en} section (LOINC "
                     f"{section.loinc}) is required")
        for i, section_json in enumerate(sections):
            narrative = section_json.get("text")
            narrative = narrative if isinstance(narrative, dict) else {}
            div = narrative.get("div")
            if not (isinstance(div, str) and div.startswith("<div") and XHTML in div
                    and narrative.get("status")):
                fail("ips-section-narrative", f"section[{i}] needs an XHTML narrative")
            if not section_json.get("title"):
                fail("ips-section-title", f"section[{i}] needs a title")
            known = next((s for s in SECTIONS if (LOINC, s.loinc) in
                          _codes(section_json.get("code"))), None)
            if (known and known.required and not section_json.get("entry")
                    and not section_json.get("emptyReason")):
                fail("ips-section-empty", f"the required section[{i}] has entries or an "
                     "emptyReason (ips-comp-1)")
            for j, item in enumerate(section_json.get("entry") or []):
                reference = item.get("reference") if isinstance(item, dict) else None
                found = _resolves(reference, composition_url, full_urls) \
                    if isinstance(reference, str) else None
                if known and found and by_url[found].get("resourceType") not in (
                        known.resource_type, "DocumentReference"):
                    fail("ips-section-entry", f"section[{i}].entry[{j}] is not a "
                         f"{known.resource_type}")

    for url, resource in by_url.items():
        for reference in _references(resource):
            if reference.startswith("#"):
                continue
            if _resolves(reference, url, full_urls) is None:
                fail("ips-reference", f"{reference} (in {url}) does not resolve in the Bundle")
    return issues
