"""Builders of PDSm-conformant ITI-65 (Provide Document Bundle) transactions.

Used by the demo data, the upload harness and the test suite.

Every Bundle passes ``fhir_profiles.pdsm`` with no issue and each of its resources passes
``fhir_profiles.structure.validate_structure`` (tests/fhir_profiles/test_pdsm.py checks both).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from fhir_profiles.pdsm import (
    CLASS_CODES,
    CONFIDENTIALITY_CODES,
    LIST_TYPES_SYSTEM,
    SUBMISSION_SET,
    VISIBILITY_CODES,
    sha1_base64,
)
from fhir_profiles.pdsm import FOLDER as FOLDER_CODE

LOINC = "http://loinc.org"
CLASS_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
VISIBILITY_SYSTEM = ("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                     "TRE-A07-StatutVisibiliteDocument")
SECTOR_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
SETTING_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice"
PROFESSION_SYSTEM = "urn:oid:1.2.250.1.71.1.2.7"  # TRE_G15-ProfessionSante
SPECIALTY_SYSTEM = ("https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/"
                    "TRE-R38-SpecialiteOrdinale")  # savoir-faire such as SM54
# Displays of the codes the samples use (TRE_G15, TRE_R02, TRE_A01); an unknown code goes
# without a display rather than with a wrong one.
PROFESSIONS = {"10": "Médecin", "21": "Pharmacien", "26": "Audioprothésiste",
               "28": "Opticien-lunetier", "40": "Chirurgien-dentiste", "50": "Sage-femme",
               "60": "Infirmier", "69": "Infirmier psychiatrique",
               "70": "Masseur-kinésithérapeute", "80": "Pédicure-podologue", "91": "Orthophoniste",
               "92": "Orthoptiste", "94": "Ergothérapeute", "95": "Diététicien",
               "96": "Psychomotricien", "98": "Manipulateur ERM"}
SECTORS = {"SA01": "Etablissement public de santé", "SA04": "Etablissement privé non PSPH",
           "SA05": "Centre de santé", "SA07": "Cabinet individuel", "SA08": "Cabinet de groupe",
           "SA25": "Laboratoire de biologie médicale", "SA33": "Pharmacie d'officine",
           "SA52": "Maison de santé ou Pôle de santé"}
SETTINGS = {"ETABLISSEMENT": "Etablissement de santé", "AMBULATOIRE": "Ambulatoire"}
IDNAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
RPPS = "https://rpps.esante.gouv.fr"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
URI = "urn:ietf:rfc:3986"
SOURCE_ID_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
DESIGNATION_TYPE_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
SOURCE_ID = "urn:oid:1.2.250.1.213.1.1.9.99"  # an invented sending system (demo, tests)
FINESS_NUMBER = "750100015"  # the custodian of the PDSm examples
CUSTODIAN_NAME = "Centre hospitalier de démonstration"
NON_PS_SYSTEM = ("https://mos.esante.gouv.fr/NOS/TRE_A00-ProducteurDocNonPS/FHIR/"
                 "TRE-A00-ProducteurDocNonPS")
# Authors whose documents take the TRE_A00 (non-professional) context codes.
_NON_PS_AUTHORS = ("Patient", "Device")
# Who keeps what a patient filed: Carnet itself, not a care facility (no FINESS).
CARNET_CUSTODIAN = {"resourceType": "Organization", "id": "custodian",
                    "name": "Carnet, mon espace santé"}


def _pdf() -> bytes:
    """A tiny but real one-page PDF (correct xref offsets), saying "Carnet"."""
    stream = b"BT /F1 18 Tf 72 720 Td (Carnet) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return out


PDF = _pdf()


def new_urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    return {"coding": [coding | ({"display": display} if display else {})]}


def _author(o: DocumentOptions) -> list[dict[str, Any]]:
    """Contained author: PractitionerRole #author (profession, savoir-faire) -> Practitioner
    #author-practitioner, plus the custodian Organization #custodian where the author works."""
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole", "id": "author",
        "practitioner": {"reference": "#author-practitioner"},
        "organization": {"reference": "#custodian"},
        "code": [_coding(PROFESSION_SYSTEM, o.author_profession,
                         PROFESSIONS.get(o.author_profession))]}
    if o.author_specialty:
        role["specialty"] = [_coding(SPECIALTY_SYSTEM, o.author_specialty)]
    return [
        role,
        {"resourceType": "Practitioner", "id": "author-practitioner",
         "identifier": [{"system": IDNAT_PS, "value": f"8{o.author_rpps}"},
                        {"system": RPPS, "value": o.author_rpps}],
         "name": [{"family": o.author_family, "given": [o.author_given]}]},
        {"resourceType": "Organization", "id": "custodian",
         "identifier": [{"system": FINESS, "value": o.custodian_finess}],
         "name": o.custodian_name},
    ]


def _security_label(code: str) -> dict[str, Any]:
    if code in VISIBILITY_CODES:
        return _coding(VISIBILITY_SYSTEM, code, VISIBILITY_CODES[code])
    return _coding(CONFIDENTIALITY_SYSTEM, code, CONFIDENTIALITY_CODES.get(code))


def _reference_type(reference: str) -> str | None:
    """``Patient`` for ``Patient/1`` or ``http://x/fhir/Patient/1``; None otherwise."""
    parts = reference.split("/_history")[0].split("/")
    return parts[-2] if len(parts) >= 2 else None


@dataclass(frozen=True)
class DocumentOptions:
    """What varies between sample documents; every field has a PDSm-valid default."""

    content: bytes = PDF
    content_type: str = "application/pdf"
    master_id: str | None = None
    type_code: str = "11488-4"
    type_system: str = LOINC  # or TRE_A05-TypeDocComplementaire (e.g. the patient's DOCPAT*)
    type_display: str | None = None
    class_code: str = "10"
    security: tuple[str, ...] = ("N",)
    title: str = "Compte rendu de consultation"
    date: str = "2026-11-20T10:00:00+01:00"
    period_start: str = "2026-11-20T09:30:00+01:00"
    author_rpps: str = "10000000001"
    author_given: str = "Jean"
    author_family: str = "Martin"
    author_profession: str = "10"  # TRE_G15
    author_specialty: str | None = None  # TRE_R38 savoir-faire (SM54, SM44, ...)
    # The author's organisation, the documents' custodian, and where the act took place.
    custodian_finess: str = FINESS_NUMBER
    custodian_name: str = CUSTODIAN_NAME
    facility_type: str = "SA01"  # TRE_R02-SecteurActivite
    practice_setting: str = "ETABLISSEMENT"  # TRE_A01-CadreExercice
    replaces: str | None = None  # "DocumentReference/<id>": relatesTo replaces
    # Literal author references (``Practitioner/<id>``) instead of the contained author;
    # all-Patient/Device authors take the TRE_A00 non-professional context codes.
    authors: list[str] | None = None


def _document(patient_ref: str, full_url: str, binary_url: str,
              options: DocumentOptions) -> dict[str, Any]:
    o = options
    contained = _author(o)
    if o.authors is not None:  # literal authors: only the custodian stays contained
        contained = [r for r in contained if r["id"] == "custodian"]
    if _non_professional(o.authors):
        contained = [CARNET_CUSTODIAN]
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "contained": contained,
        "masterIdentifier": {"system": URI, "value": o.master_id or new_urn()},
        "identifier": [{"use": "official", "system": URI, "value": full_url}],
        "status": "current",
        "type": _coding(o.type_system, o.type_code, o.type_display),
        "category": [_coding(CLASS_SYSTEM, o.class_code, CLASS_CODES.get(o.class_code))],
        "subject": {"reference": patient_ref},
        "date": o.date,
        "author": [{"reference": reference} for reference in o.authors]
        if o.authors is not None else [{"reference": "#author"}],
        "custodian": {"reference": "#custodian"},
        "securityLabel": [_security_label(code) for code in o.security],
        "content": [{"attachment": {
            "contentType": o.content_type, "language": "fr-FR", "url": binary_url,
            "size": len(o.content), "hash": sha1_base64(hashlib.sha1(o.content).digest()),
            "title": o.title, "creation": o.date}}],
        "context": {
            "period": {"start": o.period_start},
            "facilityType": _coding(SECTOR_SYSTEM, o.facility_type, SECTORS.get(o.facility_type)),
            "practiceSetting": _coding(SETTING_SYSTEM, o.practice_setting,
                                       SETTINGS.get(o.practice_setting)),
        },
    }
    if _non_professional(o.authors):
        # A document the patient (or a device) produced: PDSm's non-professional codes.
        doc["context"]["facilityType"] = _coding(NON_PS_SYSTEM, "PATIENT", "Patient")
        doc["context"]["practiceSetting"] = _coding(NON_PS_SYSTEM, "PATIENT", "Patient")
    if o.replaces:
        doc["relatesTo"] = [{"code": "replaces", "target": {"reference": o.replaces}}]
    return doc


def _non_professional(authors: list[str] | None) -> bool:
    """Whether every author is the patient or a device (PDSm's non-professional producers)."""
    return bool(authors) and all(_reference_type(a) in _NON_PS_AUTHORS for a in authors or [])


def _list(kind: str, patient_ref: str, date: str, items: list[str],
          options: DocumentOptions) -> dict[str, Any]:
    """A SubmissionSet or Folder List over ``items`` (fullUrls). The set's author (source)
    is whoever produced the documents: the patient (or device) who filed their own, else
    the contained practitioner of the options."""
    own = _non_professional(options.authors)
    designation = (_coding(NON_PS_SYSTEM, "PATIENT", "Patient") if own
                   else _coding(SECTOR_SYSTEM, options.facility_type,
                                SECTORS.get(options.facility_type)))
    lst: dict[str, Any] = {
        "resourceType": "List",
        "extension": [{"url": DESIGNATION_TYPE_URL, "valueCodeableConcept": designation}],
        "identifier": [{"use": "usual", "system": URI, "value": new_urn()}],
        "status": "current", "mode": "working",
        "title": "Lot de soumission" if kind == SUBMISSION_SET else "Classeur",
        "code": _coding(LIST_TYPES_SYSTEM, kind),
        "subject": {"reference": patient_ref}, "date": date,
        "entry": [{"item": {"reference": item}} for item in items],
    }
    if kind == SUBMISSION_SET:
        lst["extension"].append({"url": SOURCE_ID_URL,
                                 "valueIdentifier": {"system": URI, "value": SOURCE_ID}})
        if own and options.authors:
            patients = [a for a in options.authors if _reference_type(a) == "Patient"]
            lst["source"] = {"reference": (patients or options.authors)[0]}
        else:
            lst["contained"] = _author(options)
            lst["source"] = {"reference": "#author"}
    return lst


def document_reference(patient_ref: str, *, binary_url: str | None = None,
                       **options: Any) -> dict[str, Any]:
    """One PDSm DocumentReference, no Bundle (options: :class:`DocumentOptions`); its
    attachment points at ``binary_url`` (or a fresh urn:uuid) and its identifier is a fresh
    urn:uuid."""
    return _document(patient_ref, new_urn(), binary_url or new_urn(), DocumentOptions(**options))


def document_bundle(patient_ref: str, *, binary_url: str | None = None, folder: bool = False,
                    documents: int = 1, **options: Any) -> dict[str, Any]:
    """An ITI-65 transaction: a SubmissionSet, ``documents`` DocumentReferences (options:
    :class:`DocumentOptions`) with their Binaries (none when ``binary_url`` names a stored
    one) and optionally a Folder of them. The SubmissionSet's source is the patient (or device)
    when they are the documents' only authors, else the contained practitioner."""
    spec = DocumentOptions(**options)
    if documents < 1:
        raise ValueError("a submission set holds at least one document")
    if spec.master_id is not None and documents > 1:
        raise ValueError("master_id is a document's unique id: give it for one document only")
    doc_entries, binary_entries = [], []
    for _ in range(documents):
        doc_url = new_urn()
        target = binary_url or new_urn()
        if binary_url is None:
            binary_entries.append(_entry(target, "Binary", {
                "resourceType": "Binary", "contentType": spec.content_type,
                "data": base64.b64encode(spec.content).decode("ascii")}))
        doc_entries.append(_entry(doc_url, "DocumentReference",
                                  _document(patient_ref, doc_url, target, spec)))
    doc_urls = [entry["fullUrl"] for entry in doc_entries]
    folder_entries = [_entry(new_urn(), "List", _list(
        FOLDER_CODE, patient_ref, spec.date, doc_urls, spec))] if folder else []
    items = doc_urls + [entry["fullUrl"] for entry in folder_entries]
    submission = _entry(new_urn(), "List", _list(SUBMISSION_SET, patient_ref, spec.date, items,
                                                 spec))
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [submission, *folder_entries, *doc_entries, *binary_entries]}


def _entry(full_url: str, resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource_type}}
