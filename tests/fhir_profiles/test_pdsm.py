"""PDSm metadata rules (``fhir_profiles.pdsm``) and the ITI-65 sample builder."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from fhir_profiles.outcome import Issue
from fhir_profiles.pdsm import (
    FOLDER,
    LIST_TYPES_SYSTEM,
    SUBMISSION_SET,
    class_code,
    document_reference_issues,
    folder_issues,
    list_kind,
    security_codes,
    sha1_base64,
    submission_set_issues,
    type_code,
)
from fhir_profiles.structure import validate_structure
from service.documents.samples import PDF, document_bundle, document_reference

PATIENT = "Patient/ins-253072A07300443"
VISIBILITY = ("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
              "TRE-A07-StatutVisibiliteDocument")
A00 = "https://mos.esante.gouv.fr/NOS/TRE_A00-ProducteurDocNonPS/FHIR/TRE-A00-ProducteurDocNonPS"
AUTHOR_ORG = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-authorOrg"
SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
DESIGNATION = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
Mutation = Callable[[dict[str, Any]], Any]


def found(issues: list[Issue]) -> list[tuple[str, str]]:
    """(path, code) of each issue, after checking the issue's shape."""
    for issue in issues:
        assert issue.severity == "error" and len(issue.expression) == 1, issue
        assert issue.diagnostics.startswith(issue.expression[0] + ":"), issue
    return [(issue.expression[0], issue.code) for issue in issues]


def canonical_doc(**options: Any) -> dict[str, Any]:
    return validate_structure(document_reference(PATIENT, **options))


def resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == resource_type]


def lists(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(list_kind(lst)): validate_structure(lst) for lst in resources(bundle, "List")}


def without(*path: str | int) -> Mutation:
    def mutate(resource: dict[str, Any]) -> None:
        node: Any = resource
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    return mutate


def setting(value: Any, *path: str | int) -> Mutation:
    def mutate(resource: dict[str, Any]) -> None:
        node: Any = resource
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return mutate


ATTACHMENT = ("content", 0, "attachment")

DOCUMENT_CASES: dict[str, tuple[Mutation, str, str]] = {
    "no masterIdentifier": (without("masterIdentifier"), "DocumentReference.masterIdentifier",
                            "required"),
    "no masterIdentifier.system": (without("masterIdentifier", "system"),
                                   "DocumentReference.masterIdentifier.system", "required"),
    "no masterIdentifier.value": (without("masterIdentifier", "value"),
                                  "DocumentReference.masterIdentifier.value", "required"),
    "no identifier": (without("identifier"), "DocumentReference.identifier", "required"),
    "no status": (without("status"), "DocumentReference.status", "required"),
    "no type": (without("type"), "DocumentReference.type", "required"),
    "type from SNOMED": (setting("http://snomed.info/sct", "type", "coding", 0, "system"),
                         "DocumentReference.type", "code-invalid"),
    "no category": (without("category"), "DocumentReference.category", "required"),
    "category system": (setting("urn:oid:1.2.250.1.213.1.1.4.12", "category", 0, "coding", 0,
                                "system"), "DocumentReference.category", "code-invalid"),
    "category code 03": (setting("03", "category", 0, "coding", 0, "code"),
                         "DocumentReference.category[0].coding[0].code", "code-invalid"),
    "no subject": (without("subject"), "DocumentReference.subject", "required"),
    "subject not a Patient": (setting("Practitioner/1", "subject", "reference"),
                              "DocumentReference.subject.reference", "value"),
    "subject not a reference": (setting("253072A07300443", "subject", "reference"),
                                "DocumentReference.subject.reference", "value"),
    "no date": (without("date"), "DocumentReference.date", "required"),
    "no author": (without("author"), "DocumentReference.author", "required"),
    "dangling author": (setting("#nobody", "author", 0, "reference"),
                        "DocumentReference.author[0].reference", "value"),
    "author a Location": (setting("Location/1", "author", 0, "reference"),
                          "DocumentReference.author[0].reference", "value"),
    "author without reference": (setting({"display": "Dr Martin"}, "author", 0),
                                 "DocumentReference.author[0].reference", "required"),
    "no custodian": (without("custodian"), "DocumentReference.custodian", "required"),
    "custodian a Patient": (setting("Patient/1", "custodian", "reference"),
                            "DocumentReference.custodian.reference", "value"),
    "no period start": (without("context", "period", "start"),
                        "DocumentReference.context.period.start", "required"),
    "no facilityType": (without("context", "facilityType"),
                        "DocumentReference.context.facilityType", "required"),
    "facilityType A00 by a professional": (setting(A00, "context", "facilityType", "coding", 0,
                                                   "system"),
                                           "DocumentReference.context.facilityType",
                                           "code-invalid"),
    "no practiceSetting": (without("context", "practiceSetting"),
                           "DocumentReference.context.practiceSetting", "required"),
    "practiceSetting system": (setting("http://example.org/cs", "context", "practiceSetting",
                                       "coding", 0, "system"),
                               "DocumentReference.context.practiceSetting", "code-invalid"),
    "no securityLabel": (without("securityLabel"), "DocumentReference.securityLabel",
                         "required"),
    "unknown confidentiality code": (setting("U", "securityLabel", 0, "coding", 0, "code"),
                                     "DocumentReference.securityLabel[0].coding[0].code",
                                     "code-invalid"),
    "no content": (without("content"), "DocumentReference.content", "required"),
    "no attachment": (without("content", 0, "attachment"),
                      "DocumentReference.content[0].attachment", "required"),
    **{f"no {name}": (without(*ATTACHMENT, name), f"DocumentReference.content[0].attachment."
                      f"{name}", "required")
       for name in ("contentType", "url", "size", "hash", "title", "language")},
    "blank title": (setting(" ", *ATTACHMENT, "title"),
                    "DocumentReference.content[0].attachment.title", "required"),
    "hash not base64": (setting("not base64!", *ATTACHMENT, "hash"),
                        "DocumentReference.content[0].attachment.hash", "value"),
    "hash of MD5 size": (setting(base64.b64encode(hashlib.md5(PDF).digest()).decode(),
                                 *ATTACHMENT, "hash"),
                         "DocumentReference.content[0].attachment.hash", "value"),
    "hex SHA-1": (setting(hashlib.sha1(PDF).hexdigest(), *ATTACHMENT, "hash"),
                  "DocumentReference.content[0].attachment.hash", "value"),
    "negative size": (setting(-1, *ATTACHMENT, "size"),
                      "DocumentReference.content[0].attachment.size", "value"),
    "size as text": (setting("581", *ATTACHMENT, "size"),
                     "DocumentReference.content[0].attachment.size", "value"),
    "language french": (setting("french", *ATTACHMENT, "language"),
                        "DocumentReference.content[0].attachment.language", "value"),
    "language fr_FR": (setting("fr_FR", *ATTACHMENT, "language"),
                       "DocumentReference.content[0].attachment.language", "value"),
}


def test_conformant_document_reference_has_no_issue() -> None:
    doc = canonical_doc(security=("R", "MASQUE_PS", "INVISIBLE_PATIENT",
                                  "INVISIBLE_REPRESENTANTS_LEGAUX"))
    assert document_reference_issues(doc) == []


@pytest.mark.parametrize("case", DOCUMENT_CASES)
def test_each_broken_document_rule_gives_exactly_its_issue(case: str) -> None:
    mutate, path, code = DOCUMENT_CASES[case]
    doc = canonical_doc()
    mutate(doc)
    assert found(document_reference_issues(doc)) == [(path, code)]


@pytest.mark.parametrize("system", [
    "http://loinc.org", "urn:oid:2.16.840.1.113883.6.1", "urn:oid:1.2.250.1.213.1.1.4.12",
    "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/"
    "TRE-A05-TypeDocComplementaire"])
def test_type_from_loinc_or_tre_a05(system: str) -> None:
    doc = canonical_doc()
    doc["type"]["coding"][0]["system"] = system
    assert document_reference_issues(doc) == []
    assert type_code(doc) == (system, "11488-4")


def test_type_needs_one_allowed_coding_among_several() -> None:
    doc = canonical_doc()
    doc["type"]["coding"].insert(0, {"system": "http://snomed.info/sct", "code": "371530004"})
    assert document_reference_issues(doc) == []
    assert type_code(doc) == ("http://loinc.org", "11488-4")


@pytest.mark.parametrize("code", ["10", "11", "31", "42", "43", "44", "45", "52", "60", "90",
                                  "95", "99"])
def test_every_known_class_code(code: str) -> None:
    doc = canonical_doc(class_code=code)
    doc["category"][0]["coding"][0]["system"] = "urn:oid:1.2.250.1.213.1.1.4.1"
    assert document_reference_issues(doc) == []
    assert class_code(doc) == code


@pytest.mark.parametrize("reference", [
    "Patient/abc-1", "https://carnet.example/fhir/Patient/abc-1",
    "https://carnet.example/fhir/Patient/abc-1/_history/2",
    "urn:uuid:0b3b8a9e-5f7e-4c8b-9a3e-2f1d6c7b8a90",
    "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|253072A07300443"])
def test_subject_reference_forms(reference: str) -> None:
    doc = canonical_doc()
    doc["subject"]["reference"] = reference
    assert document_reference_issues(doc) == []


def test_subject_as_malformed_urn_uuid_is_refused() -> None:
    doc = canonical_doc()
    doc["subject"]["reference"] = "urn:uuid:patient-1"  # as in a PDSm example: not a UUID
    assert found(document_reference_issues(doc)) == [("DocumentReference.subject.reference",
                                                      "value")]


@pytest.mark.parametrize("reference", ["Practitioner/1", "PractitionerRole/1", "Organization/1",
                                       "Device/1",
                                       "urn:uuid:0b3b8a9e-5f7e-4c8b-9a3e-2f1d6c7b8a90",
                                       "https://annuaire.example/fhir/Practitioner/8100"])
def test_author_literal_references(reference: str) -> None:
    doc = canonical_doc()
    doc["author"] = [{"reference": reference}]
    assert document_reference_issues(doc) == []


def test_patient_only_author_refuses_professional_codes() -> None:
    doc = canonical_doc()
    doc["author"] = [{"reference": "Patient/1"}]  # then TRE_A00 codes, not TRE_R02/TRE_A01
    assert found(document_reference_issues(doc)) == [
        ("DocumentReference.context.facilityType", "code-invalid"),
        ("DocumentReference.context.practiceSetting", "code-invalid")]


def test_author_contained_of_a_wrong_type() -> None:
    doc = canonical_doc()
    doc["contained"].append({"resourceType": "Location", "id": "room"})
    doc["author"].append({"reference": "#room"})
    assert found(document_reference_issues(doc)) == [("DocumentReference.author[1].reference",
                                                      "value")]


def test_without_contained_resources_author_and_custodian_dangle() -> None:
    doc = canonical_doc()
    del doc["contained"]
    issues = document_reference_issues(doc)
    assert found(issues) == [("DocumentReference.author[0].reference", "value"),
                             ("DocumentReference.custodian.reference", "value")]
    assert "#author names no contained resource" in issues[0].diagnostics


def test_custodian_by_identifier_only() -> None:
    doc = canonical_doc()
    doc["custodian"] = {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2",
                                       "value": "750100015"}}
    assert document_reference_issues(doc) == []


def test_patient_author_uses_tre_a00() -> None:
    doc = canonical_doc(class_code="90")
    doc["author"] = [{"reference": PATIENT}]
    for element in ("facilityType", "practiceSetting"):
        doc["context"][element] = {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.6",
                                               "code": "EXP_PATIENT"}]}
    assert document_reference_issues(doc) == []
    doc["context"]["practiceSetting"]["coding"][0]["system"] = \
        "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice"
    assert found(document_reference_issues(doc)) == [("DocumentReference.context.practiceSetting",
                                                      "code-invalid")]


def test_two_confidentiality_codes_are_refused() -> None:
    doc = canonical_doc(security=("N", "R"))
    issues = document_reference_issues(doc)
    assert found(issues) == [("DocumentReference.securityLabel", "value")]
    assert "found 2" in issues[0].diagnostics


def test_visibility_without_confidentiality_is_refused() -> None:
    doc = canonical_doc(security=("MASQUE_PS",))
    assert found(document_reference_issues(doc)) == [("DocumentReference.securityLabel",
                                                      "required")]


def test_unknown_visibility_code_is_refused() -> None:
    doc = canonical_doc(security=("N", "MASQUE_PS"))
    doc["securityLabel"][1]["coding"][0]["code"] = "MASQUE_PT"  # in TRE_A07, not in the JDV
    assert found(document_reference_issues(doc)) == [
        ("DocumentReference.securityLabel[1].coding[0].code", "code-invalid")]


def test_security_label_from_another_system_is_refused() -> None:
    doc = canonical_doc(security=("N", "MASQUE_PS"))
    doc["securityLabel"][1]["coding"][0]["system"] = "http://example.org/visibility"
    assert found(document_reference_issues(doc)) == [
        ("DocumentReference.securityLabel[1].coding[0].system", "code-invalid")]


@pytest.mark.parametrize("system", [
    "urn:oid:1.2.250.1.213.1.1.4.13",
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatusVisibiliteDocument/FHIR/"
    "TRE-A07-StatusVisibiliteDocument"])
def test_visibility_system_aliases(system: str) -> None:
    doc = canonical_doc(security=("V", "INVISIBLE_PATIENT"))
    doc["securityLabel"][1]["coding"][0]["system"] = system
    doc["securityLabel"][0]["coding"][0]["system"] = "urn:oid:2.16.840.1.113883.5.25"
    assert document_reference_issues(doc) == []
    assert security_codes(doc) == {"V", "INVISIBLE_PATIENT"}


def test_all_problems_are_reported_at_once() -> None:
    doc = canonical_doc()
    del doc["status"], doc["type"], doc["custodian"]
    doc["content"][0]["attachment"]["hash"] = "AAAA"
    doc["content"][0]["attachment"]["language"] = "francais"
    doc["securityLabel"] = [doc["securityLabel"][0], copy.deepcopy(doc["securityLabel"][0])]
    doc["author"][0]["reference"] = "#ghost"
    assert sorted(found(document_reference_issues(doc))) == sorted([
        ("DocumentReference.status", "required"), ("DocumentReference.type", "required"),
        ("DocumentReference.custodian", "required"),
        ("DocumentReference.content[0].attachment.hash", "value"),
        ("DocumentReference.content[0].attachment.language", "value"),
        ("DocumentReference.securityLabel", "value"),
        ("DocumentReference.author[0].reference", "value"),
    ])


def test_missing_context_reports_its_three_required_parts() -> None:
    doc = canonical_doc()
    del doc["context"]
    assert found(document_reference_issues(doc)) == [
        ("DocumentReference.context.period.start", "required"),
        ("DocumentReference.context.facilityType", "required"),
        ("DocumentReference.context.practiceSetting", "required")]


def test_every_content_is_checked() -> None:
    doc = canonical_doc()
    doc["content"].append(copy.deepcopy(doc["content"][0]))
    del doc["content"][1]["attachment"]["title"]
    assert found(document_reference_issues(doc)) == [
        ("DocumentReference.content[1].attachment.title", "required")]


# ---------------------------------------------------------------- SubmissionSet and Folder


SUBMISSION_CASES: dict[str, tuple[Mutation, str, str]] = {
    "no code": (without("code"), "List.code", "required"),
    "folder code": (setting(FOLDER, "code", "coding", 0, "code"), "List.code", "code-invalid"),
    "no identifier": (without("identifier"), "List.identifier", "required"),
    "no status": (without("status"), "List.status", "required"),
    "status retired": (setting("retired", "status"), "List.status", "code-invalid"),
    "no mode": (without("mode"), "List.mode", "required"),
    "mode snapshot": (setting("snapshot", "mode"), "List.mode", "code-invalid"),
    "no date": (without("date"), "List.date", "required"),
    "no subject": (without("subject"), "List.subject", "required"),
    "subject a Practitioner": (setting("Practitioner/1", "subject", "reference"),
                               "List.subject.reference", "value"),
    "no source": (without("source"), "List.source", "required"),
    "dangling source": (setting("#ghost", "source", "reference"), "List.source.reference",
                        "value"),
    "source an Organization": (setting("Organization/1", "source", "reference"),
                               "List.source.reference", "value"),
    "no entry": (without("entry"), "List.entry", "required"),
    "entry a Patient": (setting("Patient/1", "entry", 0, "item", "reference"),
                        "List.entry[0].item.reference", "value"),
    "entry without item": (without("entry", 0, "item"), "List.entry[0].item", "required"),
    "no sourceId": (lambda lst: lst.update(extension=[
        e for e in lst["extension"] if e["url"] != SOURCE_ID]), "List.extension", "required"),
    "no designationType": (lambda lst: lst.update(extension=[
        e for e in lst["extension"] if e["url"] != DESIGNATION]), "List.extension", "required"),
    "sourceId without value": (lambda lst: next(
        e for e in lst["extension"] if e["url"] == SOURCE_ID).update(
        valueIdentifier={"system": "urn:ietf:rfc:3986"}), "List.extension[1].valueIdentifier",
        "required"),
}

FOLDER_CASES: dict[str, tuple[Mutation, str, str]] = {
    "submissionset code": (setting(SUBMISSION_SET, "code", "coding", 0, "code"), "List.code",
                           "code-invalid"),
    "no identifier": (without("identifier"), "List.identifier", "required"),
    "status retired": (setting("retired", "status"), "List.status", "code-invalid"),
    "mode changes": (setting("changes", "mode"), "List.mode", "code-invalid"),
    "no subject": (without("subject"), "List.subject", "required"),
    "no date": (without("date"), "List.date", "required"),
    "no entry": (without("entry"), "List.entry", "required"),
    "entry a Folder": (setting("List/other-folder", "entry", 0, "item", "reference"),
                       "List.entry[0].item.reference", "value"),
    "no designationType": (without("extension"), "List.extension", "required"),
}


def test_conformant_lists_have_no_issue() -> None:
    found_lists = lists(document_bundle(PATIENT, folder=True, documents=2))
    assert set(found_lists) == {SUBMISSION_SET, FOLDER}
    assert submission_set_issues(found_lists[SUBMISSION_SET]) == []
    assert folder_issues(found_lists[FOLDER]) == []


@pytest.mark.parametrize("case", SUBMISSION_CASES)
def test_each_broken_submission_set_rule_gives_exactly_its_issue(case: str) -> None:
    mutate, path, code = SUBMISSION_CASES[case]
    lst = lists(document_bundle(PATIENT))[SUBMISSION_SET]
    mutate(lst)
    assert found(submission_set_issues(lst)) == [(path, code)]


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_each_broken_folder_rule_gives_exactly_its_issue(case: str) -> None:
    mutate, path, code = FOLDER_CASES[case]
    lst = lists(document_bundle(PATIENT, folder=True))[FOLDER]
    mutate(lst)
    assert found(folder_issues(lst)) == [(path, code)]


def test_source_may_be_only_the_author_org_extension() -> None:
    lst = lists(document_bundle(PATIENT))[SUBMISSION_SET]
    lst["source"] = {"extension": [{"url": AUTHOR_ORG,
                                    "valueReference": {"reference": "#custodian"}}]}
    assert submission_set_issues(lst) == []
    lst["source"] = {"display": "nobody"}
    assert found(submission_set_issues(lst)) == [("List.source.reference", "required")]


def test_submission_set_reports_everything_at_once() -> None:
    lst = lists(document_bundle(PATIENT))[SUBMISSION_SET]
    del lst["extension"], lst["subject"], lst["source"]
    lst["mode"] = "snapshot"
    assert found(submission_set_issues(lst)) == [
        ("List.mode", "code-invalid"), ("List.subject", "required"),
        ("List.extension", "required"), ("List.extension", "required"),
        ("List.source", "required")]


@pytest.mark.parametrize(("code", "system", "expected"), [
    (SUBMISSION_SET, LIST_TYPES_SYSTEM, SUBMISSION_SET), (FOLDER, LIST_TYPES_SYSTEM, FOLDER),
    (FOLDER, "http://ihe.net/fhir/CodeSystem/MHDlistTypes", None),
    ("other", LIST_TYPES_SYSTEM, None)])
def test_list_kind(code: str, system: str, expected: str | None) -> None:
    lst = {"resourceType": "List", "code": {"coding": [{"system": system, "code": code}]}}
    assert list_kind(lst) == expected
    assert list_kind({"resourceType": "List"}) is None
    assert list_kind({**lst, "resourceType": "Bundle"}) is None


# ------------------------------------------------------------------------ helpers


def test_sha1_base64() -> None:
    assert sha1_base64(hashlib.sha1(b"").digest()) == "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
    with pytest.raises(ValueError, match="20 bytes"):
        sha1_base64(hashlib.md5(b"").digest())


def test_code_helpers_on_an_empty_document() -> None:
    empty = {"resourceType": "DocumentReference"}
    assert (security_codes(empty), class_code(empty), type_code(empty)) == (set(), None, None)
    doc = canonical_doc(type_code="18842-5", class_code="11", security=("V", "MASQUE_PS"))
    assert (security_codes(doc), class_code(doc), type_code(doc)) == (
        {"V", "MASQUE_PS"}, "11", ("http://loinc.org", "18842-5"))


# ------------------------------------------------------- service.documents.samples


def test_pdf_is_a_real_pdf() -> None:
    assert PDF.startswith(b"%PDF-1.4\n") and PDF.rstrip().endswith(b"%%EOF")
    startxref = int(PDF.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert PDF[startxref:].startswith(b"xref\n0 6\n")
    offsets = re.findall(rb"(\d{10}) 00000 n ", PDF[startxref:])
    assert len(offsets) == 5
    for number, offset in enumerate(offsets, start=1):
        assert PDF[int(offset):].startswith(b"%d 0 obj" % number)
    assert b"/Count 1" in PDF


@pytest.mark.parametrize("options", [
    {}, {"documents": 3}, {"folder": True}, {"folder": True, "documents": 2},
    {"binary_url": "Binary/stored-1"}, {"replaces": "DocumentReference/old-1"},
    {"security": ("R", "MASQUE_PS", "INVISIBLE_PATIENT")},
    {"content": b"hello", "content_type": "text/plain", "type_code": "11502-2",
     "class_code": "31", "master_id": "urn:oid:1.2.250.1.213.1.4.8.99.1"},
])
def test_every_bundle_is_valid_and_conformant(options: dict[str, Any]) -> None:
    bundle = document_bundle(PATIENT, **options)
    validate_structure(bundle)
    for entry in bundle["entry"]:
        resource = validate_structure(entry["resource"])
        assert entry["request"] == {"method": "POST", "url": resource["resourceType"]}
        assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", entry["fullUrl"])
        if resource["resourceType"] == "DocumentReference":
            assert document_reference_issues(resource) == []
        elif resource["resourceType"] == "Binary":
            assert base64.b64decode(resource["data"]) == options.get("content", PDF)
        elif list_kind(resource) == SUBMISSION_SET:
            assert submission_set_issues(resource) == []
        else:
            assert list_kind(resource) == FOLDER and folder_issues(resource) == []


def test_bundle_shape_and_attachment_facts() -> None:
    content = b"%PDF-1.4 not really"
    bundle = document_bundle(PATIENT, content=content, documents=2, folder=True)
    assert bundle["type"] == "transaction"
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert types == ["List", "List", "DocumentReference", "DocumentReference", "Binary", "Binary"]
    urls = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    docs = resources(bundle, "DocumentReference")
    submission = next(lst for lst in resources(bundle, "List") if list_kind(lst) == SUBMISSION_SET)
    folder = next(lst for lst in resources(bundle, "List") if list_kind(lst) == FOLDER)
    doc_urls = [e["fullUrl"] for e in bundle["entry"] if e["resource"] in docs]
    folder_url = next(url for url, r in urls.items() if r is folder)
    assert [e["item"]["reference"] for e in submission["entry"]] == [*doc_urls, folder_url]
    assert [e["item"]["reference"] for e in folder["entry"]] == doc_urls
    for doc in docs:
        attachment = doc["content"][0]["attachment"]
        binary = urls[attachment["url"]]
        assert binary["resourceType"] == "Binary" and binary["contentType"] == "application/pdf"
        assert base64.b64decode(binary["data"]) == content
        assert attachment["size"] == len(content)
        assert attachment["hash"] == base64.b64encode(hashlib.sha1(content).digest()).decode()
        assert doc["subject"] == {"reference": PATIENT}
    assert docs[0]["masterIdentifier"]["value"] != docs[1]["masterIdentifier"]["value"]


def test_bundle_options_reach_the_document() -> None:
    bundle = document_bundle(PATIENT, binary_url="Binary/stored-1", replaces="DocumentReference/7",
                             master_id="urn:oid:1.2.3.4", author_rpps="10000000042",
                             author_given="Alice", author_family="Durand", title="Synthèse",
                             date="2026-12-01T08:00:00+01:00",
                             period_start="2026-11-30T08:00:00+01:00")
    assert resources(bundle, "Binary") == []
    doc = resources(bundle, "DocumentReference")[0]
    assert doc["content"][0]["attachment"]["url"] == "Binary/stored-1"
    assert doc["content"][0]["attachment"]["title"] == "Synthèse"
    assert doc["relatesTo"] == [{"code": "replaces",
                                 "target": {"reference": "DocumentReference/7"}}]
    assert doc["masterIdentifier"] == {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4"}
    assert (doc["date"], doc["context"]["period"]["start"]) == (
        "2026-12-01T08:00:00+01:00", "2026-11-30T08:00:00+01:00")
    contained = {r["id"]: r for r in doc["contained"]}
    assert contained["author"]["practitioner"] == {"reference": "#author-practitioner"}
    practitioner = contained["author-practitioner"]
    assert practitioner["name"] == [{"family": "Durand", "given": ["Alice"]}]
    assert practitioner["identifier"] == [
        {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810000000042"},
        {"system": "https://rpps.esante.gouv.fr", "value": "10000000042"}]
    assert contained["custodian"]["identifier"][0]["system"] == "urn:oid:1.2.250.1.71.4.2.2"


def test_document_reference_builder_alone() -> None:
    doc = document_reference(PATIENT, binary_url="Binary/b1", security=("N", "MASQUE_PS"))
    assert doc["resourceType"] == "DocumentReference"
    assert doc["content"][0]["attachment"]["url"] == "Binary/b1"
    assert document_reference_issues(validate_structure(doc)) == []
    assert security_codes(doc) == {"N", "MASQUE_PS"}


def test_builder_refuses_contradictory_options() -> None:
    with pytest.raises(ValueError):
        document_bundle(PATIENT, documents=0)
    with pytest.raises(ValueError):
        document_bundle(PATIENT, documents=2, master_id="urn:oid:1.2.3")
