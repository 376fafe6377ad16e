"""« Mes documents »: the list (ITI-67), one document with its viewer (ITI-68), masking."""

from __future__ import annotations

import re
from datetime import date

from fastapi import APIRouter
from fastapi.responses import Response

from fhir_profiles.pdsm import CLASS_CODES, with_visibility
from service.portal.errors import Refusal
from service.portal.views import document_view, page_links
from service.portal.web import NOTICES, PortalDep

router = APIRouter()
NOTICES.update({
    "masque": "Le document est masqué aux professionnels de santé (sauf son auteur et votre "
              "médecin traitant).",
    "demasque": "Le document est de nouveau visible par les professionnels autorisés.",
})
PAGE_SIZE = 10
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9À-ÿ ._-]+")


def _day(value: str | None) -> str | None:
    """A filter date from the form (YYYY-MM-DD), or None when empty or not a date."""
    if not value:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        return None


@router.get("/documents", summary="the patient's documents")
async def documents(ctx: PortalDep, categorie: str | None = None, du: str | None = None,
                    au: str | None = None, cursor: str | None = None) -> Response:
    filters = {"categorie": categorie if categorie in CLASS_CODES else "",
               "du": _day(du) or "", "au": _day(au) or ""}
    if ctx.patient_id is None:
        return await ctx.page("documents.html", documents=[], filters=filters,
                              categories=CLASS_CODES, cursors={})
    params: list[tuple[str, str]] = [("patient", ctx.patient_id), ("status", "current"),
                                     ("_sort", "-date"), ("_count", str(PAGE_SIZE))]
    if filters["categorie"]:
        params.append(("category", filters["categorie"]))
    if filters["du"]:
        params.append(("date", f"ge{filters['du']}"))
    if filters["au"]:
        params.append(("date", f"le{filters['au']}"))
    if cursor:
        params.append(("_cursor", cursor))
    bundle = await ctx.fhir.get("DocumentReference", params)
    found = [document_view(entry["resource"]) for entry in bundle.get("entry") or []
             if entry.get("resource", {}).get("resourceType") == "DocumentReference"]
    return await ctx.page("documents.html", documents=found, filters=filters,
                          categories=CLASS_CODES, cursors=page_links(bundle),
                          total=bundle.get("total"))


@router.get("/documents/{document_id}", summary="one document and its viewer")
async def document(ctx: PortalDep, document_id: str) -> Response:
    doc = document_view(await ctx.fhir.get(f"DocumentReference/{document_id}"))
    return await ctx.page("document.html", document=doc)


@router.get("/documents/{document_id}/contenu", summary="the document's bytes (ITI-68)")
async def content(ctx: PortalDep, document_id: str, telecharger: bool = False) -> Response:
    doc = document_view(await ctx.fhir.get(f"DocumentReference/{document_id}"))
    if doc.binary is None:
        raise Refusal(404, "ce document n'a pas de contenu consultable ici")
    answer = await ctx.fhir.raw(doc.binary)
    inline = doc.inline and not telecharger
    media = doc.content_type.split(";")[0].strip() if inline else "application/octet-stream"
    if media == "text/plain":
        media = "text/plain; charset=utf-8"
    filename = _SAFE_FILENAME.sub("_", doc.title)[:80] or "document"
    disposition = "inline" if inline else "attachment"
    return Response(answer.content, media_type=media, headers={
        "Content-Disposition": f'{disposition}; filename="{filename}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        # Bytes from a professional's system: no script of theirs runs in our origin.
        "Content-Security-Policy": "default-src 'none'; object-src 'self'; "
                                   "style-src 'unsafe-inline'; frame-ancestors 'self'"})


@router.post("/documents/{document_id}/masquage", summary="mask or unmask from professionals")
async def masking(ctx: PortalDep, document_id: str) -> Response:
    form = await ctx.form()
    mask = form.get("masquer") == "oui"
    current = await ctx.fhir.get(f"DocumentReference/{document_id}")
    labels = with_visibility(current, "MASQUE_PS", mask)
    version = (current.get("meta") or {}).get("versionId")
    await ctx.fhir.patch(f"DocumentReference/{document_id}",
                         [{"op": "replace" if "securityLabel" in current else "add",
                           "path": "/securityLabel", "value": labels}],
                         if_match=f'W/"{version}"' if version else None)
    return ctx.redirect(f"/documents/{document_id}", "masque" if mask else "demasque")
