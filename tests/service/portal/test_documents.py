"""« Mes documents »: the list, one document, its bytes, and masking from professionals."""

from __future__ import annotations

import httpx

from tests.forms import form_to
from tests.service.access.conftest import AUTHORISED, DOCUMENTS, Record, as_professional
from tests.service.portal.conftest import PortalBrowser
from tests.tokens import Tokens


async def test_the_list_shows_what_the_patient_may_see_newest_first(
        portal: PortalBrowser, record: Record) -> None:
    page = (await portal.page("/documents")).text
    shown = {key for key, doc_id in record.documents.items() if doc_id in page}
    # Every document of hers but the one hidden from her; nothing of the other patient's.
    assert shown == set(DOCUMENTS) - {"hidden"}
    assert "Masqué aux professionnels" in page  # the badge of the document she masked
    assert 'aria-current="page"' in page


async def test_a_document_opens_with_its_viewer_and_download(
        portal: PortalBrowser, record: Record) -> None:
    doc_id = record.documents["consultation"]
    page = (await portal.page(f"/documents/{doc_id}")).text
    assert "Document consultation" in page and "Claire MARTIN" in page
    content = await portal.http.get(f"/portal/documents/{doc_id}/contenu")
    assert content.status_code == 200
    assert content.content.startswith(b"%PDF")
    assert content.headers["content-disposition"].startswith("inline")
    download = await portal.http.get(f"/portal/documents/{doc_id}/contenu?telecharger=true")
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["content-type"] == "application/octet-stream"


async def test_a_hidden_or_foreign_document_is_not_found(portal: PortalBrowser,
                                                         record: Record) -> None:
    for key in ("hidden", "other"):
        answer = await portal.http.get(f"/portal/documents/{record.documents[key]}")
        assert answer.status_code == 404
        assert "Introuvable" in answer.text


async def test_masking_takes_effect_at_once_for_professionals(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    doc_id = record.documents["lab"]
    colleague = as_professional(tokens, AUTHORISED)  # authorised, not the author
    assert (await anonymous.get(f"/fhir/DocumentReference/{doc_id}",
                                headers=colleague)).status_code == 200
    page = (await portal.page(f"/documents/{doc_id}")).text
    masked = await portal.submit(f"/documents/{doc_id}/masquage",
                                 form_to(page, "/masquage"))
    assert masked.status_code == 303
    assert (await anonymous.get(f"/fhir/DocumentReference/{doc_id}",
                                headers=colleague)).status_code == 404
    page = (await portal.page(f"/documents/{doc_id}")).text
    assert "Ne plus masquer" in page
    await portal.submit(f"/documents/{doc_id}/masquage", form_to(page, "/masquage"))
    assert (await anonymous.get(f"/fhir/DocumentReference/{doc_id}",
                                headers=colleague)).status_code == 200


async def test_a_form_without_the_sessions_csrf_token_is_refused(
        portal: PortalBrowser, record: Record) -> None:
    doc_id = record.documents["lab"]
    forged = await portal.http.post(f"/portal/documents/{doc_id}/masquage",
                                    data={"masquer": "oui", "csrf": "forged"})
    assert forged.status_code == 403
    foreign = await portal.http.post(f"/portal/documents/{doc_id}/masquage",
                                     data={"masquer": "oui", "csrf": portal.csrf},
                                     headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403


async def test_an_oversized_form_is_refused_before_it_is_read_whole(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    doc_id = record.documents["lab"]
    padded = await portal.submit(f"/documents/{doc_id}/masquage",
                                 {"masquer": "oui", "pad": "x" * 70_000})
    assert padded.status_code == 403
    colleague = as_professional(tokens, AUTHORISED)  # the document was not masked
    assert (await anonymous.get(f"/fhir/DocumentReference/{doc_id}",
                                headers=colleague)).status_code == 200
    multipart = await portal.http.post(f"/portal/documents/{doc_id}/masquage",
                                       data={"csrf": portal.csrf, "masquer": "oui"},
                                       files={"x": ("x.txt", b"x")})
    assert multipart.status_code == 303  # a small multipart form is read as well


async def test_pages_need_a_login(portal_http: httpx.AsyncClient) -> None:
    answer = await portal_http.get("/portal/documents")
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/portal/")
    assert (await portal_http.get("/portal/evenements")).status_code == 401
