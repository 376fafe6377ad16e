"""FHIR resources as the portal shows them: plain values for the templates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fhir_profiles.pdsm import CLASS_CODES, class_code, security_codes
from service.portal.fhir import display_name

INLINE_TYPES = ("application/pdf", "text/plain")  # shown in the page; others are downloaded


@dataclass(frozen=True)
class DocumentView:
    id: str
    version: str
    title: str
    type: str
    category: str
    author: str
    organisation: str
    date: str
    masked: bool
    content_type: str
    size: int | None
    binary: str | None

    @property
    def inline(self) -> bool:
        return self.content_type.split(";")[0].strip() in INLINE_TYPES


def _contained(resource: dict[str, Any], reference: str | None) -> dict[str, Any] | None:
    if not reference or not reference.startswith("#"):
        return None
    return next((c for c in resource.get("contained") or [] if c.get("id") == reference[1:]),
                None)


def _display(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    if concept.get("text"):
        return str(concept["text"])
    return next((str(c["display"]) for c in concept.get("coding") or [] if c.get("display")), "")


def _author(doc: dict[str, Any]) -> tuple[str, str]:
    """(person, organisation) of the first author, following contained references."""
    for author in doc.get("author") or []:
        reference = author.get("reference", "")
        found = _contained(doc, reference)
        if found is None:
            if reference.startswith("Patient/"):
                return "Vous-même", ""
            return str(author.get("display") or ""), ""
        organisation = _contained(doc, (found.get("organization") or {}).get("reference"))
        person = _contained(doc, (found.get("practitioner") or {}).get("reference")) or found
        return display_name(person), str((organisation or {}).get("name") or "")
    return "", ""


def document_view(doc: dict[str, Any]) -> DocumentView:
    attachment = ((doc.get("content") or [{}])[0]).get("attachment") or {}
    category = CLASS_CODES.get(class_code(doc) or "", "")
    person, organisation = _author(doc)
    custodian = (_contained(doc, (doc.get("custodian") or {}).get("reference"))
                 or doc.get("custodian") or {})
    type_label = _display(doc.get("type")) or category
    url = attachment.get("url") or ""
    return DocumentView(
        id=doc["id"], version=(doc.get("meta") or {}).get("versionId", ""),
        title=str(attachment.get("title") or doc.get("description") or type_label
                  or "Document"),
        type=type_label, category=category, author=person,
        organisation=organisation or str(custodian.get("name") or custodian.get("display")
                                         or ""),
        date=str(doc.get("date") or attachment.get("creation") or ""),
        masked="MASQUE_PS" in security_codes(doc),
        content_type=str(attachment.get("contentType") or "application/octet-stream"),
        size=attachment.get("size"),
        binary=url.split("/fhir/", 1)[-1] if "Binary/" in url else None)


def page_links(bundle: dict[str, Any]) -> dict[str, str]:
    """The search's ``previous``/``next`` cursors, for the portal's own paging links."""
    cursors = {}
    for link in bundle.get("link") or []:
        found = parse_qs(urlsplit(link.get("url", "")).query).get("_cursor")
        if link.get("relation") in ("previous", "next") and found:
            cursors[link["relation"]] = found[0]
    return cursors
