"""« Historique des accès »: the record's AuditEvents as the patient reads them."""

from __future__ import annotations

from html import unescape

import httpx
import pytest

from service.portal import history
from tests.service.access.conftest import BLOCKED, DOCTOR, STRANGER, Record, as_professional
from tests.service.portal.conftest import PortalBrowser
from tests.service.portal.test_privacy import EMERGENCY, in_directory
from tests.tokens import Tokens


def table_of(page: str) -> str:
    """The part the live-update script swaps, unescaped."""
    return unescape(page.split('id="historique-acces"', 1)[1].split("</table>", 1)[0])


def rows_of(page: str) -> list[str]:
    return table_of(page).split("<tr")[2:]  # after the header row


async def test_a_professionals_read_shows_with_their_name_and_the_document(
        portal: PortalBrowser, record: Record, client: httpx.AsyncClient,
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    await in_directory(client, DOCTOR)
    doc_id = record.documents["consultation"]
    read = await anonymous.get(f"/fhir/DocumentReference/{doc_id}",
                               headers=as_professional(tokens, DOCTOR))
    assert read.status_code == 200
    page = (await portal.page("/historique")).text
    newest = rows_of(page)[0]
    assert "Claire MARTIN (Médecin)" in newest
    assert f'/portal/documents/{doc_id}">Document consultation</a>' in newest
    assert "Consultation" in newest and "Normal" in newest and "Autorisé" in newest
    assert '<th scope="col">Qui</th>' in page and 'aria-current="page"' in page


async def test_a_document_hidden_from_the_patient_is_named_but_not_linked(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    doc_id = record.documents["hidden"]  # not yet visible to her (INVISIBLE_PATIENT)
    read = await anonymous.get(f"/fhir/DocumentReference/{doc_id}",
                               headers=as_professional(tokens, DOCTOR))
    assert read.status_code == 200
    newest = rows_of((await portal.page("/historique")).text)[0]
    assert "Consultation" in newest and "Document" in newest
    assert "/portal/documents/" not in newest and "Document hidden" not in newest


async def test_an_emergency_access_shows_its_mode_and_reason(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    doc_id = record.documents["lab"]
    read = await anonymous.get(f"/fhir/DocumentReference/{doc_id}",
                               headers={**as_professional(tokens, STRANGER), **EMERGENCY})
    assert read.status_code == 200
    newest = rows_of((await portal.page("/historique")).text)[0]
    # Not in the directory: the RPPS names her.
    assert STRANGER.rpps in newest
    assert "Bris de glace" in newest and "« Patiente inconsciente »" in newest


async def test_a_refused_access_and_an_apps_access_show_as_such(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    refused = await anonymous.get(f"/fhir/DocumentReference/{record.documents['lab']}",
                                  headers=as_professional(tokens, BLOCKED))
    assert refused.status_code == 403
    rows = rows_of((await portal.page("/historique")).text)
    assert BLOCKED.rpps in rows[0] and "Refusé" in rows[0]
    # The record was built by the operator's app: its filings are in the trail.
    assert any("Application «" in row and "Dépôt" in row for row in rows)


async def test_the_patients_own_accesses_are_hidden_unless_asked_for(
        portal: PortalBrowser, record: Record) -> None:
    await portal.page("/documents")  # the portal reads the record as the patient
    hidden = (await portal.page("/historique")).text
    assert ">Vous" not in table_of(hidden)
    assert 'id="moi"' in hidden and '<label for="moi">' in hidden
    shown = (await portal.page("/historique?moi=oui")).text
    assert "Vous" in rows_of(shown)[0]  # the portal's last reads are hers
    assert any("Recherche" in row and "Document" in row and "Vous" in row
               for row in rows_of(shown))
    assert "checked" in shown.split('id="moi"', 1)[1].split(">", 1)[0]


async def test_paging_follows_the_trails_cursors(portal: PortalBrowser, record: Record,
                                                 anonymous: httpx.AsyncClient, tokens: Tokens,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "PAGE_SIZE", 2)
    for key in ("consultation", "lab", "imaging", "psychiatric"):
        read = await anonymous.get(f"/fhir/DocumentReference/{record.documents[key]}",
                                   headers=as_professional(tokens, DOCTOR))
        assert read.status_code == 200
    await portal.page("/documents")  # own entries among them: filtered out by the trail
    first = (await portal.page("/historique")).text
    first_ids = {key for key in ("consultation", "lab", "imaging", "psychiatric")
                 if record.documents[key] in first}
    assert first_ids and len(first_ids) < 4
    following = unescape(first.split('rel="next"', 1)[0].rsplit('href="', 1)[1].split('"', 1)[0])
    second = (await portal.http.get(following.removeprefix("http://carnet.test")))
    assert second.status_code == 200
    assert "Accès les plus récents" in second.text
    second_ids = {key for key in ("consultation", "lab", "imaging", "psychiatric")
                  if record.documents[key] in second.text}
    assert second_ids and not second_ids & first_ids
    assert ">Vous" not in table_of(second.text)


async def test_a_forged_cursor_gets_an_error_page(portal: PortalBrowser, record: Record) -> None:
    answer = await portal.http.get("/portal/historique?cursor=not-a-cursor")
    assert answer.status_code == 400
    assert "text/html" in answer.headers["content-type"]
    assert "cursor" in answer.text
