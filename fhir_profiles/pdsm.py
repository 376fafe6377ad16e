"""PDSm (the French IHE MHD) metadata rules for DocumentReference and SubmissionSet/Folder Lists.

Runs on the canonical JSON that ``structure.validate_structure`` returns, so FHIR types are
already checked; this module checks what the profiles add, and reports every broken rule at once.
Facts (systems, codes, extension URLs) are data (``data/pdsm.json``) from the PDSm IG,
ansforge/IG-fhir-partage-de-documents-de-sante ``input/fsh/profiles/``:
PDSm_ComprehensiveDocumentReference, PDSm_SubmissionSetComprehensive, PDSm_FolderComprehensive.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_profiles.outcome import Issue

DATA_DIR = Path(__file__).parent / "data"
_FACTS: dict[str, Any] = json.loads((DATA_DIR / "pdsm.json").read_text(encoding="utf-8"))
_SYSTEMS: dict[str, list[str]] = _FACTS["systems"]
_EXT: dict[str, str] = _FACTS["extensions"]

SUBMISSION_SET = "submissionset"
FOLDER = "folder"
LIST_TYPES_SYSTEM = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
if _FACTS["list_types_system"] != LIST_TYPES_SYSTEM:  # pragma: no cover - data/code drift
    raise RuntimeError("data/pdsm.json list_types_system disagrees with pdsm.LIST_TYPES_SYSTEM")

CLASS_CODES: dict[str, str] = _FACTS["class_codes"]
CONFIDENTIALITY_CODES: dict[str, str] = _FACTS["confidentiality_codes"]
VISIBILITY_CODES: dict[str, str] = _FACTS["visibility_codes"]
SHA1_SIZE = 20

_TYPE_SYSTEMS = frozenset(s for name in _FACTS["type_systems"] for s in _SYSTEMS[name])
_CLASS_SYSTEMS = frozenset(_SYSTEMS["TRE_A03-ClasseDocument"])
_CONFIDENTIALITY_SYSTEMS = frozenset(_SYSTEMS["v3-Confidentiality"])
_VISIBILITY_SYSTEMS = frozenset(_SYSTEMS["TRE_A07-StatutVisibiliteDocument"])

_ID = r"[A-Za-z0-9\-.]{1,64}"
_TYPE = r"[A-Z][A-Za-z]+"
_RELATIVE = re.compile(rf"(?P<type>{_TYPE})/{_ID}(/_history/{_ID})?", re.ASCII)
_ABSOLUTE = re.compile(rf"https?://\S+/(?P<type>{_TYPE})/{_ID}(/_history/{_ID})?", re.ASCII)
_CONDITIONAL = re.compile(rf"(?P<type>{_TYPE})\?\S+=\S*", re.ASCII)
_UUID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}", re.ASCII)
# BCP 47 language tag, the usual subset: language, optional script, region and variants.
_BCP47 = re.compile(r"[a-zA-Z]{2,3}(-[a-zA-Z]{4})?(-([a-zA-Z]{2}|\d{3}))?"
                    r"(-([a-zA-Z0-9]{5,8}|\d[a-zA-Z0-9]{3}))*", re.ASCII)


@dataclass(frozen=True)
class _Target:
    """What a Reference.reference points at; ``type`` is None when only the bundle knows."""

    type: str | None
    problem: str | None = None


def _required(path: str, what: str) -> Issue:
    return Issue(f"{path}: {what}", code="required", expression=[path])


def _invalid_code(path: str, what: str) -> Issue:
    return Issue(f"{path}: {what}", code="code-invalid", expression=[path])


def _bad_value(path: str, what: str) -> Issue:
    return Issue(f"{path}: {what}", code="value", expression=[path])


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] \
        if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _codings(concept: Any) -> list[tuple[int, dict[str, Any]]]:
    return _dicts(concept.get("coding")) if isinstance(concept, dict) else []


def _extension(node: dict[str, Any], url: str) -> tuple[int, dict[str, Any]] | None:
    return next(((i, e) for i, e in _dicts(node.get("extension")) if e.get("url") == url), None)


def _systems(names: list[str]) -> frozenset[str]:
    return frozenset(system for name in names for system in _SYSTEMS[name])


def _contained_types(resource: dict[str, Any]) -> dict[str, str]:
    """Contained resource id -> resourceType, to resolve ``#id`` references."""
    return {r["id"]: r.get("resourceType", "") for _, r in _dicts(resource.get("contained"))
            if isinstance(r.get("id"), str)}


def _target(reference: str, contained: dict[str, str]) -> _Target:
    """Classify a reference: contained ``#id``, relative, absolute, conditional or urn:uuid."""
    if reference.startswith("#"):
        found = contained.get(reference[1:])
        return _Target(found, None if found else
                       f"{reference} names no contained resource (dangling reference)")
    if _UUID.fullmatch(reference):
        return _Target(None)  # a bundle entry, resolved when the transaction is processed
    for pattern in (_RELATIVE, _ABSOLUTE, _CONDITIONAL):
        match = pattern.fullmatch(reference)
        if match:
            return _Target(match["type"])
    return _Target(None, f"{reference!r} is not a reference FHIR can resolve (expected #id, "
                         "Type/id, an absolute URL, urn:uuid:<uuid> or Type?search)")


def _check_reference(resource: dict[str, Any], node: Any, path: str, allowed: list[str], *,
                     logical_ok: bool = False) -> tuple[list[Issue], str | None]:
    """Issues of one Reference whose target must be one of ``allowed``, and the target type."""
    if not isinstance(node, dict):
        return [_required(path, f"a reference to {' or '.join(allowed)} is required")], None
    reference = _text(node.get("reference"))
    if reference is None:
        if logical_ok and isinstance(node.get("identifier"), dict):  # a logical reference
            type_ = node.get("type") if isinstance(node.get("type"), str) else None
            return ([_bad_value(f"{path}.type", f"{type_} is not {' or '.join(allowed)}")]
                    if type_ and type_ not in allowed else []), type_
        return [_required(f"{path}.reference", f"a reference to {' or '.join(allowed)} is "
                          "required")], None
    target = _target(reference, _contained_types(resource))
    if target.problem:
        return [_bad_value(f"{path}.reference", target.problem)], None
    if target.type is not None and target.type not in allowed:
        return [_bad_value(f"{path}.reference", f"{reference} points at a {target.type}; "
                           f"expected {' or '.join(allowed)}")], None
    return [], target.type


def _patient_issues(resource: dict[str, Any], path: str) -> list[Issue]:
    node = resource.get(path.partition(".")[2])
    if node is None:
        return [_required(path, "a reference to the Patient is required")]
    return _check_reference(resource, node, path, ["Patient"])[0]


def _concept_issues(concept: Any, path: str, systems: frozenset[str], label: str,
                    codes: dict[str, str] | None = None) -> list[Issue]:
    """One CodeableConcept needs a coding from ``systems`` (and one of ``codes`` if given)."""
    if not isinstance(concept, dict):
        return [_required(path, f"a {label} code is required")]
    ours = [(i, c) for i, c in _codings(concept) if c.get("system") in systems]
    if not ours:
        found = sorted({str(c.get("system")) for _, c in _codings(concept)})
        return [_invalid_code(path, f"needs a coding from {label} ({' or '.join(sorted(systems))})"
                              f"; found systems {found}")]
    if codes is None:
        missing = all(_text(c.get("code")) is None for _, c in ours)
        return [_required(f"{path}.coding[{ours[0][0]}].code", f"a {label} code is required")] \
            if missing else []
    if any(c.get("code") in codes for _, c in ours):
        return []
    i, coding = ours[0]
    return [_invalid_code(f"{path}.coding[{i}].code", f"{coding.get('code')!r} is not a known "
                          f"{label} code ({', '.join(codes)})")]


def _category_issues(doc: dict[str, Any]) -> list[Issue]:
    categories = _dicts(doc.get("category"))
    if not categories:
        return [_required("DocumentReference.category", "a TRE_A03 class code is required")]
    with_system = [(i, c) for i, c in categories
                   if any(x.get("system") in _CLASS_SYSTEMS for _, x in _codings(c))]
    if not with_system:
        return [_invalid_code("DocumentReference.category", "needs a coding from TRE_A03-Classe"
                              f"Document ({' or '.join(sorted(_CLASS_SYSTEMS))})")]
    i, concept = with_system[0]
    return _concept_issues(concept, f"DocumentReference.category[{i}]", _CLASS_SYSTEMS,
                           "TRE_A03-ClasseDocument", CLASS_CODES)


def _identifier_issues(doc: dict[str, Any]) -> list[Issue]:
    master = doc.get("masterIdentifier")
    path = "DocumentReference.masterIdentifier"
    if not isinstance(master, dict):
        issues = [_required(path, "the document's unique id (XDS uniqueId) is required")]
    else:
        issues = [_required(f"{path}.{part}", f"the masterIdentifier's {part} is required")
                  for part in ("system", "value") if _text(master.get(part)) is None]
    if not _dicts(doc.get("identifier")):
        issues.append(_required("DocumentReference.identifier", "at least one identifier "
                                "(XDS entryUUID) is required"))
    return issues


def _author_issues(doc: dict[str, Any]) -> tuple[list[Issue], set[str | None]]:
    """Author rules, and the author types found (None for a urn:uuid in the bundle)."""
    authors = doc.get("author")
    if not isinstance(authors, list) or not authors:
        return [_required("DocumentReference.author", "at least one author is required")], set()
    issues, types = [], set()
    for i, author in enumerate(authors):
        found, type_ = _check_reference(doc, author, f"DocumentReference.author[{i}]",
                                        _FACTS["author_types"])
        issues += found
        if not found:
            types.add(type_)
    return issues, types


def _context_issues(doc: dict[str, Any], author_types: set[str | None]) -> list[Issue]:
    context = _dict(doc.get("context"))
    period = _dict(context.get("period"))
    issues = [] if _text(period.get("start")) else [
        _required("DocumentReference.context.period.start", "the start of the act is required")]
    # A urn:uuid author (None) could be anyone: both families of codes are then accepted.
    patient = bool(author_types & {*_FACTS["patient_author_types"], None})
    professional = not author_types or any(t != "Patient" for t in author_types)
    for element in ("facility_type", "practice_setting"):
        names = [name for who, name in _FACTS[element].items()
                 if (who == "patient" and patient) or (who == "professional" and professional)]
        key = "facilityType" if element == "facility_type" else "practiceSetting"
        issues += _concept_issues(context.get(key), f"DocumentReference.context.{key}",
                                  _systems(names), " or ".join(names))
    return issues


def _security_issues(doc: dict[str, Any]) -> list[Issue]:
    labels = doc.get("securityLabel")
    path = "DocumentReference.securityLabel"
    if not isinstance(labels, list) or not labels:
        return [_required(path, "exactly one confidentiality code (N, R or V) is required")]
    issues: list[Issue] = []
    confidentiality: list[str] = []
    confidentiality_seen = False
    for i, label in enumerate(labels):
        codings = _codings(label)
        if not codings:
            issues.append(_required(f"{path}[{i}].coding", "a security label needs a coding"))
        for j, coding in codings:
            where, system, code = f"{path}[{i}].coding[{j}]", coding.get("system"), \
                coding.get("code")
            if system in _CONFIDENTIALITY_SYSTEMS:
                allowed, confidentiality_seen = CONFIDENTIALITY_CODES, True
            elif system in _VISIBILITY_SYSTEMS:
                allowed = VISIBILITY_CODES
            else:
                issues.append(_invalid_code(f"{where}.system", f"{system!r} is neither HL7 "
                                            "v3-Confidentiality nor TRE_A07-StatutVisibilite"
                                            "Document"))
                continue
            if code not in allowed:
                issues.append(_invalid_code(f"{where}.code", f"{code!r} is not allowed from "
                                            f"{system} ({', '.join(allowed)})"))
            elif allowed is CONFIDENTIALITY_CODES:
                confidentiality.append(f"{code} at {where}")
    if len(confidentiality) > 1:
        issues.append(_bad_value(path, "exactly one confidentiality code is allowed, found "
                                 f"{len(confidentiality)}: {'; '.join(confidentiality)}"))
    elif not confidentiality_seen:
        issues.append(_required(path, "exactly one confidentiality code (N, R or V) is "
                                "required"))
    return issues


def _hash_problem(value: str) -> str | None:
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return f"{value!r} is not valid base64"
    if len(digest) != SHA1_SIZE:
        return f"a SHA-1 hash is {SHA1_SIZE} bytes, {value!r} decodes to {len(digest)}"
    return None


def _attachment_issues(attachment: Any, path: str) -> list[Issue]:
    if not isinstance(attachment, dict):
        return [_required(path, "the attachment is required")]
    issues = [_required(f"{path}.{name}", f"the attachment's {name} is required")
              for name in ("contentType", "url", "size", "hash", "title", "language")
              if attachment.get(name) is None or (isinstance(attachment.get(name), str)
                                                   and not attachment[name].strip())]
    size, digest, language = attachment.get("size"), attachment.get("hash"), \
        attachment.get("language")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        issues.append(_bad_value(f"{path}.size", f"the size must be a byte count, not {size!r}"))
    if isinstance(digest, str) and digest.strip() and (problem := _hash_problem(digest)):
        issues.append(_bad_value(f"{path}.hash", f"base64 of the document's SHA-1 expected: "
                                 f"{problem}"))
    if isinstance(language, str) and language.strip() and not _BCP47.fullmatch(language):
        issues.append(_bad_value(f"{path}.language", f"{language!r} is not a BCP 47 language "
                                 "tag such as fr-FR"))
    return issues


def _content_issues(doc: dict[str, Any]) -> list[Issue]:
    contents = doc.get("content")
    if not isinstance(contents, list) or not contents:
        return [_required("DocumentReference.content", "at least one content is required")]
    return [issue for i, content in enumerate(contents)
            for issue in _attachment_issues(content.get("attachment") if isinstance(
                content, dict) else None, f"DocumentReference.content[{i}].attachment")]


def document_reference_issues(doc: dict[str, Any]) -> list[Issue]:
    """Every PDSm Comprehensive DocumentReference rule ``doc`` breaks ([] when conformant)."""
    author_issues, author_types = _author_issues(doc)
    issues = _identifier_issues(doc)
    issues += [_required(f"DocumentReference.{name}", f"the document's {name} is required")
               for name in ("status", "date") if _text(doc.get(name)) is None]
    issues += _concept_issues(doc.get("type"), "DocumentReference.type", _TYPE_SYSTEMS,
                              "LOINC or TRE_A05-TypeDocComplementaire")
    issues += _category_issues(doc)
    issues += _patient_issues(doc, "DocumentReference.subject")
    issues += author_issues
    custodian = doc.get("custodian")
    issues += [_required("DocumentReference.custodian", "the custodian Organization is "
                         "required")] if custodian is None else _check_reference(
        doc, custodian, "DocumentReference.custodian", _FACTS["custodian_types"],
        logical_ok=True)[0]
    issues += _context_issues(doc, author_types)
    issues += _security_issues(doc)
    issues += _content_issues(doc)
    return issues


def list_kind(resource: dict[str, Any]) -> str | None:
    """``submissionset`` or ``folder`` from List.code (MHDlistTypes), else None."""
    if resource.get("resourceType") != "List":
        return None
    for _, coding in _codings(resource.get("code")):
        if coding.get("system") == LIST_TYPES_SYSTEM and coding.get("code") in (SUBMISSION_SET,
                                                                                 FOLDER):
            return str(coding["code"])
    return None


def _list_common_issues(lst: dict[str, Any], kind: str) -> list[Issue]:
    """What SubmissionSet and Folder share: code, identifier, status, mode, subject, entries."""
    issues: list[Issue] = []
    if lst.get("code") is None:
        issues.append(_required("List.code", f"{LIST_TYPES_SYSTEM}#{kind} is required"))
    elif list_kind(lst) != kind:
        issues.append(_invalid_code("List.code", f"must be {LIST_TYPES_SYSTEM}#{kind}"))
    if not _dicts(lst.get("identifier")):
        issues.append(_required("List.identifier", "at least one identifier is required"))
    for name, expected in (("status", "current"), ("mode", "working")):
        if lst.get(name) is None:
            issues.append(_required(f"List.{name}", f"must be {expected}"))
        elif lst[name] != expected:
            issues.append(_invalid_code(f"List.{name}", f"must be {expected}, not "
                                        f"{lst[name]!r}"))
    if _text(lst.get("date")) is None:
        issues.append(_required("List.date", "the date is required"))
    issues += _patient_issues(lst, "List.subject")
    issues += _designation_issues(lst)
    allowed = _FACTS["submission_set_item_types" if kind == SUBMISSION_SET
                     else "folder_item_types"]
    entries = lst.get("entry")
    if not isinstance(entries, list) or not entries:
        return [*issues, _required("List.entry", "at least one entry is required")]
    for i, entry in enumerate(entries):
        item = entry.get("item") if isinstance(entry, dict) else None
        issues += _check_reference(lst, item, f"List.entry[{i}].item", allowed)[0]
    return issues


def _designation_issues(lst: dict[str, Any]) -> list[Issue]:
    found = _extension(lst, _EXT["designation_type"])
    if found is None:
        return [_required("List.extension", f"the {_EXT['designation_type']} extension is "
                          "required")]
    if not _codings(found[1].get("valueCodeableConcept")):
        return [_required(f"List.extension[{found[0]}].valueCodeableConcept",
                          "the designationType needs a coded value")]
    return []


def _source_issues(lst: dict[str, Any]) -> list[Issue]:
    """Author of the set: source, or only the ihe-authorOrg extension on it (kept simple)."""
    source = lst.get("source")
    if not isinstance(source, dict):
        return [_required("List.source", "the submission set's author is required")]
    if _text(source.get("reference")) is None and _extension(source, _EXT["author_org"]):
        return []
    return _check_reference(lst, source, "List.source", _FACTS["submission_set_source_types"])[0]


def submission_set_issues(lst: dict[str, Any]) -> list[Issue]:
    """Every PDSm SubmissionSet Comprehensive rule ``lst`` breaks ([] when conformant)."""
    issues = _list_common_issues(lst, SUBMISSION_SET)
    found = _extension(lst, _EXT["source_id"])
    if found is None:
        issues.append(_required("List.extension", f"the {_EXT['source_id']} extension is "
                                "required"))
    else:
        value = found[1].get("valueIdentifier")
        if not isinstance(value, dict) or _text(value.get("value")) is None:
            issues.append(_required(f"List.extension[{found[0]}].valueIdentifier",
                                    "the sourceId needs an identifier value"))
    return issues + _source_issues(lst)


def folder_issues(lst: dict[str, Any]) -> list[Issue]:
    """Every PDSm Folder Comprehensive rule ``lst`` breaks ([] when conformant)."""
    return _list_common_issues(lst, FOLDER)


def sha1_base64(digest: bytes) -> str:
    """A raw SHA-1 digest in the form FHIR's Attachment.hash carries (base64)."""
    if len(digest) != SHA1_SIZE:
        raise ValueError(f"a SHA-1 digest is {SHA1_SIZE} bytes, not {len(digest)}")
    return base64.b64encode(digest).decode("ascii")


def security_codes(doc: dict[str, Any]) -> set[str]:
    """Every securityLabel code (N, R, V, MASQUE_PS, ...), whatever its system."""
    return {c["code"] for _, label in _dicts(doc.get("securityLabel"))
            for _, c in _codings(label) if isinstance(c.get("code"), str)}


def with_visibility(doc: dict[str, Any], code: str, present: bool) -> list[dict[str, Any]]:
    """The document's securityLabel with the visibility label ``code`` added or removed."""
    kept = [label for label in doc.get("securityLabel") or []
            if code not in {c.get("code") for c in label.get("coding") or []}]
    if present:
        kept.append({"coding": [{"system": _SYSTEMS["TRE_A07-StatutVisibiliteDocument"][0],
                                 "code": code, "display": VISIBILITY_CODES[code]}]})
    return kept


def class_code(doc: dict[str, Any]) -> str | None:
    """The TRE_A03 class code of the document (e.g. "10"), if any."""
    return next((c["code"] for _, category in _dicts(doc.get("category"))
                 for _, c in _codings(category)
                 if c.get("system") in _CLASS_SYSTEMS and isinstance(c.get("code"), str)), None)


def type_code(doc: dict[str, Any]) -> tuple[str, str] | None:
    """(system, code) of DocumentReference.type: an allowed system first, else the first coding."""
    codings = [(c["system"], c["code"]) for _, c in _codings(doc.get("type"))
               if isinstance(c.get("system"), str) and isinstance(c.get("code"), str)]
    return next((sc for sc in codings if sc[0] in _TYPE_SYSTEMS), codings[0] if codings else None)
