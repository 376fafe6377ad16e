"""« Ajouter un document »: the patient files their own document (ITI-65, class 90, their
own name as author); empty files, other or disguised formats, oversized files and forged
forms are refused with a page that says why, and nothing is stored."""

from __future__ import annotations

from html import unescape
from typing import Any

import httpx
import pytest

from fhir_profiles.pdsm import (
    SUBMISSION_SET,
    class_code,
    document_reference_issues,
    list_kind,
    submission_set_issues,
)
from fhir_profiles.structure import validate_structure
from service.documents.samples import PDF, document_bundle
from service.portal.upload import TYPE_SYSTEM, upload_limit
from service.settings import Settings
from tests.forms import form_to
from tests.service.access.conftest import Record
from tests.service.portal.conftest import PortalBrowser

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
HTML = b"<!doctype html><script>alert(document.cookie)</script>"
EXE = b"MZ\x90\x00" + b"\x00" * 60


async def upload(portal: PortalBrowser, content: bytes, content_type: str, *,
                 filename: str = "analyse.pdf", csrf: str | None = None,
                 **fields: str) -> httpx.Response:
    """Post the page's form with one file, as a browser does (multipart)."""
    data = {"csrf": portal.csrf if csrf is None else csrf, "titre": "", "type": "DOCPAT05",
            **fields}
    return await portal.http.post("/portal/ajouter", data=data,
                                  files={"fichier": (filename, content, content_type)})


async def stored_documents(client: httpx.AsyncClient, record: Record) -> int:
    found = await client.get("/fhir/DocumentReference",
                             params={"patient": record.patient_id, "_summary": "count"})
    assert found.status_code == 200, found.text
    total: int = found.json()["total"]
    return total


async def stored(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    found = await client.get(f"/fhir/{path}", params=params)
    assert found.status_code == 200, found.text
    resource: dict[str, Any] = found.json()
    return resource


async def test_the_form_has_a_label_for_each_field(portal: PortalBrowser) -> None:
    page = (await portal.page("/ajouter")).text
    assert 'enctype="multipart/form-data"' in page and 'aria-current="page"' in page
    fields = form_to(page, "/ajouter")
    assert {"csrf", "fichier", "titre", "type"} <= set(fields)
    for name in ("fichier", "titre", "type"):
        assert f'<label for="{name}">' in page and f'id="{name}"' in page
    assert "DOCPAT05" in page and "<button type=\"submit\">Ajouter le document</button>" in page


async def test_a_pdf_is_filed_as_the_patients_own_document(
        portal: PortalBrowser, record: Record, client: httpx.AsyncClient) -> None:
    before = await stored_documents(client, record)
    filed = await upload(portal, PDF, "application/pdf", titre="Prise de sang de mars")
    assert filed.status_code == 303, filed.text
    location = filed.headers["location"]
    assert "/portal/documents/" in location and location.endswith("?info=depose")
    document_id = location.split("/portal/documents/")[1].split("?")[0]
    page = (await portal.page(location.split("/portal")[1])).text
    assert "Votre document a été ajouté" in page and "Prise de sang de mars" in page
    assert "Vous-même" in page and "CR de biologie déposé par le patient" in page
    assert "Carnet, mon espace santé" in page  # kept by Carnet, not by a care facility
    listed = (await portal.page("/documents")).text
    assert document_id in listed and "Prise de sang de mars" in listed
    content = await portal.http.get(f"/portal/documents/{document_id}/contenu")
    assert content.content == PDF
    doc = await stored(client, f"DocumentReference/{document_id}")
    assert await stored_documents(client, record) == before + 1
    assert class_code(doc) == "90"
    assert doc["author"] == [{"reference": f"Patient/{record.patient_id}"}]
    assert doc["type"]["coding"][0]["system"] == TYPE_SYSTEM
    assert doc["type"]["coding"][0]["code"] == "DOCPAT05"
    lists = await stored(client, "List", patient=record.patient_id)
    submission = next(e["resource"] for e in lists["entry"]
                      if list_kind(e["resource"]) == SUBMISSION_SET
                      and any(document_id in item["item"]["reference"]
                              for item in e["resource"]["entry"]))
    assert submission["source"] == {"reference": f"Patient/{record.patient_id}"}


@pytest.mark.parametrize(("content", "content_type", "filename"), [
    (b"Tension du matin : 12/8.\nPoids : 64 kg.\n", "text/plain", "suivi.txt"),
    (PNG, "image/png", "ordonnance.png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg", "radio.jpg"),
])
async def test_text_and_images_are_accepted(portal: PortalBrowser, record: Record,
                                            client: httpx.AsyncClient, content: bytes,
                                            content_type: str, filename: str) -> None:
    filed = await upload(portal, content, content_type, filename=filename, type="DOCPAT09")
    assert filed.status_code == 303, filed.text
    document_id = filed.headers["location"].split("/portal/documents/")[1].split("?")[0]
    doc = await stored(client, f"DocumentReference/{document_id}")
    attachment = doc["content"][0]["attachment"]
    assert attachment["contentType"] == content_type and attachment["size"] == len(content)
    assert attachment["title"] == filename.rsplit(".", 1)[0]  # no title given: the file's


@pytest.mark.parametrize(("content", "content_type", "fields", "status", "said"), [
    (b"", "application/pdf", {}, 400, "Le fichier est vide"),
    (EXE, "application/x-msdownload", {}, 415, "Ce format de fichier n'est pas accepté"),
    (HTML, "text/html", {}, 415, "Ce format de fichier n'est pas accepté"),
    (HTML.replace(b"<!", b"\x00<!"), "text/plain", {}, 415, "ne correspond pas"),
    (HTML, "application/pdf", {}, 415, "ne correspond pas à un fichier PDF"),
    (EXE, "image/png", {}, 415, "ne correspond pas à un fichier PNG"),
    (PDF, "application/pdf", {"type": "11488-4"}, 400, "Choisissez le type du document"),
    (PDF, "application/pdf", {"titre": "x" * 201}, 400, "Le titre est trop long"),
])
async def test_what_is_refused_is_said_and_nothing_is_stored(
        portal: PortalBrowser, record: Record, client: httpx.AsyncClient, content: bytes,
        content_type: str, fields: dict[str, str], status: int, said: str) -> None:
    before = await stored_documents(client, record)
    refused = await upload(portal, content, content_type, **fields)
    assert refused.status_code == status, refused.text
    assert said in unescape(refused.text) and 'role="alert"' in refused.text
    assert form_to(refused.text, "/ajouter")  # the form again, to try another file
    assert await stored_documents(client, record) == before


async def test_a_file_over_the_limit_is_refused(portal: PortalBrowser, record: Record,
                                                client: httpx.AsyncClient,
                                                settings: Settings) -> None:
    before = await stored_documents(client, record)
    limit = upload_limit(settings)
    just_over = PDF + b"\n" * (limit + 1 - len(PDF))  # the body fits, the file does not
    way_over = PDF + b"\n" * (3 * limit)  # refused before the body is read whole
    for content in (just_over, way_over):
        refused = await upload(portal, content, "application/pdf")
        assert refused.status_code == 413, refused.text
        assert "trop volumineux" in refused.text
    assert await stored_documents(client, record) == before


@pytest.mark.parametrize("forgery", ["no token", "another token", "another site"])
async def test_a_forged_upload_is_refused(portal: PortalBrowser, record: Record,
                                          client: httpx.AsyncClient, forgery: str) -> None:
    before = await stored_documents(client, record)
    if forgery == "another site":
        refused = await portal.http.post(
            "/portal/ajouter", data={"csrf": portal.csrf, "type": "DOCPAT05"},
            files={"fichier": ("a.pdf", PDF, "application/pdf")},
            headers={"Origin": "https://evil.example"})
    else:
        refused = await upload(portal, PDF, "application/pdf",
                               csrf="" if forgery == "no token" else "forged")
    assert refused.status_code == 403 and "Formulaire refusé" in refused.text
    assert await stored_documents(client, record) == before


def test_the_patients_submission_set_names_the_patient_as_its_source() -> None:
    patient = "Patient/p-1"
    bundle = document_bundle(patient, class_code="90", type_code="DOCPAT01",
                             type_system=TYPE_SYSTEM, authors=[patient])
    resources = [validate_structure(entry["resource"]) for entry in bundle["entry"]]
    submission = next(r for r in resources if list_kind(r) == SUBMISSION_SET)
    assert submission["source"] == {"reference": patient} and "contained" not in submission
    assert submission_set_issues(submission) == []
    doc = next(r for r in resources if r["resourceType"] == "DocumentReference")
    assert document_reference_issues(doc) == []
    professional = next(e["resource"] for e in document_bundle(patient)["entry"]
                        if list_kind(e["resource"]) == SUBMISSION_SET)
    assert professional["source"] == {"reference": "#author"}  # unchanged for the others
