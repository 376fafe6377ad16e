"""« Ajouter un document »: the patient files one of their own documents (ITI-65).

The file goes to the API as any app's would: one transaction Bundle (SubmissionSet,
DocumentReference, Binary) built by ``service.documents.samples.document_bundle``, of class
90 (« Autres documents déposés par le patient ») with the patient as author, so the policy
and the PDSm validation decide as for anyone. The page only refuses early, with a
sentence a patient understands, what the API would refuse less kindly or should not
receive at all: an empty file, an unknown or disguised format, too many bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from service.documents.samples import document_bundle
from service.portal.errors import Refusal
from service.portal.web import NOTICES, PARIS, FormTooLarge, PortalContext, PortalDep
from service.settings import Settings

router = APIRouter()
NOTICES.update({"depose": "Votre document a été ajouté à votre espace santé."})
PATIENT_CLASS = "90"  # TRE_A03: Autres documents déposés par le patient
TYPE_SYSTEM = ("https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/"
               "TRE-A05-TypeDocComplementaire")
# TRE_A05 types of the documents a patient files (class 90); DOCPAT08 (the « Profil médical »)
# is written by Mon Espace Santé itself, not uploaded.
DOCUMENT_TYPES = {
    "DOCPAT03": "CR déposé par le patient",
    "DOCPAT05": "CR de biologie déposé par le patient",
    "DOCPAT04": "Imagerie déposée par le patient",
    "DOCPAT02": "Traitement ou document de soins déposé par le patient",
    "DOCPAT06": "CR de prévention déposé par le patient",
    "DOCPAT07": "Certificat déposé par le patient",
    "DOCPAT01": "Synthèse déposée par le patient",
    "DOCPAT09": "Document administratif déposé par le patient",
    "EXPPAT_1": "Volontés et droits du patient",
    "EXPPAT_3": "Directives anticipées",
    "EXPPAT_2": "Autre document du patient",
}
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the portal's own limit, below the API's
FORM_OVERHEAD = 64 * 1024  # the other fields and multipart boundaries around the file
BUNDLE_OVERHEAD = 32 * 1024  # the JSON around the base64 bytes in the ITI-65 Bundle
MAX_TITLE_CHARS = 200


@dataclass(frozen=True)
class Format:
    label: str
    extensions: str
    magic: tuple[bytes, ...]  # how the file starts; empty: checked as UTF-8 text instead


FORMATS = {
    "application/pdf": Format("PDF", ".pdf", (b"%PDF-",)),
    "image/jpeg": Format("JPEG", ".jpg,.jpeg", (b"\xff\xd8\xff",)),
    "image/png": Format("PNG", ".png", (b"\x89PNG\r\n\x1a\n",)),
    "text/plain": Format("texte", ".txt", ()),
}


def upload_limit(settings: Settings) -> int:
    """The largest file: the portal's limit, the API's for a Binary, and what fits in a
    JSON Bundle (base64 adds a third) under the API's body limit."""
    in_a_bundle = (settings.max_body_bytes - BUNDLE_OVERHEAD) * 3 // 4
    return max(0, min(MAX_UPLOAD_BYTES, settings.max_binary_bytes, in_a_bundle))


def size_fr(size: int) -> str:
    """'10 Mo', '750 Ko': how French interfaces say a size."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.3g} Mo".replace(".", ",")
    return f"{max(1, size // 1024)} Ko"


def media_type(declared: str | None, content: bytes) -> str:
    """The declared type, if it is one the portal takes and the bytes say the same."""
    media = (declared or "").split(";")[0].strip().lower()
    accepted = ", ".join(f.label for f in FORMATS.values())
    known = FORMATS.get(media)
    if known is None:
        raise Refusal(415, f"Ce format de fichier n'est pas accepté. Formats acceptés : "
                           f"{accepted}.")
    if not (content.startswith(known.magic) if known.magic else _is_text(content)):
        raise Refusal(415, f"Le contenu du fichier ne correspond pas à un fichier "
                           f"{known.label} : il est peut-être abîmé ou mal nommé. Formats "
                           f"acceptés : {accepted}.")
    return media


def _is_text(content: bytes) -> bool:
    """UTF-8 text without control characters (but tabs and line ends)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\r\n\f" for c in text)


@router.get("/ajouter", summary="the form to add a document")
async def upload_page(ctx: PortalDep) -> Response:
    return await _page(ctx)


@router.post("/ajouter", summary="file the patient's document (ITI-65)")
async def upload(ctx: PortalDep) -> Response:
    limit = upload_limit(ctx.settings)
    try:
        form, file = await ctx.upload_form(limit + FORM_OVERHEAD)
    except FormTooLarge:
        return await _page(ctx, 413, error=_too_large(limit))
    try:
        content = await file.read() if file is not None else b""
        filename = (file.filename or "") if file is not None else ""
        declared = file.content_type if file is not None else None
    finally:
        if file is not None:
            await file.close()
    values = {"titre": form.get("titre", "").strip(), "type": form.get("type", "")}
    try:
        bundle = _submission(ctx.own_record(), values, filename, declared, content, limit)
    except Refusal as refused:
        return await _page(ctx, refused.status, error=refused.message, values=values)
    filed = await ctx.fhir.post("", bundle)
    return ctx.redirect(f"/documents/{_document_id(bundle, filed)}", "depose")


def _submission(patient_id: str, values: dict[str, str], filename: str,
                declared: str | None, content: bytes, limit: int) -> dict[str, Any]:
    """The ITI-65 Bundle of the patient's file, or ``Refusal`` with the reason."""
    if not content:
        raise Refusal(400, "Le fichier est vide ou aucun fichier n'a été choisi : choisissez "
                           "le document à ajouter.")
    if len(content) > limit:
        raise Refusal(413, _too_large(limit))
    if values["type"] not in DOCUMENT_TYPES:
        raise Refusal(400, "Choisissez le type du document dans la liste.")
    title = values["titre"] or filename.rsplit(".", 1)[0].strip() or DOCUMENT_TYPES[
        values["type"]]
    if len(title) > MAX_TITLE_CHARS:
        raise Refusal(400, f"Le titre est trop long : {MAX_TITLE_CHARS} caractères au plus.")
    media = media_type(declared, content)
    now = datetime.now(PARIS).isoformat(timespec="seconds")
    return document_bundle(
        f"Patient/{patient_id}", class_code=PATIENT_CLASS, type_code=values["type"],
        type_system=TYPE_SYSTEM, type_display=DOCUMENT_TYPES[values["type"]],
        authors=[f"Patient/{patient_id}"], content=content, content_type=media, title=title,
        date=now, period_start=now)


def _document_id(bundle: dict[str, Any], filed: dict[str, Any]) -> str:
    """The new DocumentReference's id, from the transaction-response (entries in order)."""
    for sent, answer in zip(bundle["entry"], filed.get("entry") or [], strict=False):
        if sent["resource"]["resourceType"] == "DocumentReference":
            location = str((answer.get("response") or {}).get("location") or "")
            return location.split("/_history")[0].removeprefix("DocumentReference/")
    raise ValueError("the transaction-response names no DocumentReference")


def _too_large(limit: int) -> str:
    return f"Ce fichier est trop volumineux : {size_fr(limit)} au plus."


async def _page(ctx: PortalContext, status_code: int = 200, *, error: str | None = None,
                values: dict[str, str] | None = None) -> Response:
    return await ctx.page("upload.html", status_code=status_code, error=error,
                          values=values or {"titre": "", "type": ""}, types=DOCUMENT_TYPES,
                          formats=FORMATS, limit=size_fr(upload_limit(ctx.settings)))

