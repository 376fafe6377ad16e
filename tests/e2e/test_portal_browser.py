"""The patient portal in a real browser (Debian's Chromium, driven by Playwright), against
``carnet serve --demo`` on a loopback port, while professionals use the FHIR API.

Marie CORSE logs in; documents and messages that professionals send reach her open
page live; what she decides (masking, blocking) binds the next professional request;
the professionals' accesses show in her history; she answers a message and adds a
document; the pages fit a phone. Screenshots land in test-artifacts/portal/.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from fhir_profiles.messaging import CATEGORY_SYSTEM, MESSAGE
from service.demo import INS_NIR_TEST, PATIENTS
from service.documents.samples import PDF, document_bundle
from tests.e2e.conftest import log_in, screenshot

pytestmark = pytest.mark.e2e
MARIE_NIR = PATIENTS[0][1]
DR_MARTIN, DR_BERNARD, PHARMACIST = "ps:10000000001", "ps:10000000002", "ps:10000000003"
FHIR = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}


class Professional:
    """A professional's FHIR client, logged in at the demo's identity provider."""

    def __init__(self, base: str, subject: str) -> None:
        token = log_in(base, subject, "openid scope_all")["access_token"]
        self.http = httpx.Client(base_url=f"{base}/fhir", timeout=15.0,
                                 headers={**FHIR, "Authorization": f"Bearer {token}"})

    def marie(self) -> str:
        found = self.http.get("/Patient", params={"identifier": f"{INS_NIR_TEST}|{MARIE_NIR}"})
        assert found.status_code == 200, found.text
        patient_id: str = found.json()["entry"][0]["resource"]["id"]
        return patient_id

    def write(self, patient_id: str, text: str) -> str:
        """A secure message to the patient; returns the Communication id."""
        sent = self.http.post("/Communication", content=orjson.dumps({
            "resourceType": "Communication", "status": "completed",
            "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": MESSAGE}]}],
            "recipient": [{"reference": f"Patient/{patient_id}"}],
            "payload": [{"contentString": text}]}))
        assert sent.status_code == 201, sent.text
        message_id: str = sent.json()["id"]
        return message_id

    def document_ids(self, patient_id: str) -> httpx.Response:
        """ITI-67: the current documents of the patient this professional may see."""
        return self.http.get("/DocumentReference", params={"patient": patient_id,
                                                           "status": "current"})

    def file(self, patient_id: str, title: str, text: str) -> str:
        """ITI-65: one text document; returns its DocumentReference id."""
        bundle = document_bundle(f"Patient/{patient_id}", content=text.encode(),
                                 content_type="text/plain", title=title,
                                 author_rpps="10000000001", author_given="Claire",
                                 author_family="MARTIN")
        filed = self.http.post("", content=orjson.dumps(bundle))
        assert filed.status_code == 200, filed.text
        return next(entry["response"]["location"].split("/")[1]
                    for entry in filed.json()["entry"]
                    if entry["response"]["location"].startswith("DocumentReference/"))


def ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {entry["resource"]["id"] for entry in response.json().get("entry") or []}


async def portal_login(page: Any, base: str) -> None:
    await page.goto(f"{base}/portal/")
    await screenshot(page, "accueil")
    await page.get_by_role("link", name="Se connecter").click()
    await page.get_by_role("button", name="Marie Ange CORSE").click()
    await page.wait_for_url(f"{base}/portal/documents")


async def test_a_patient_follows_and_controls_her_record_in_the_browser(
        live_server: str, browser_page: Any) -> None:
    page = browser_page
    doctor, colleague, pharmacist = (Professional(live_server, who)
                                     for who in (DR_MARTIN, DR_BERNARD, PHARMACIST))
    try:
        await patient_journey(page, live_server, doctor, colleague, pharmacist)
    finally:
        for professional in (doctor, colleague, pharmacist):
            professional.http.close()


async def patient_journey(page: Any, live_server: str, doctor: Professional,
                          colleague: Professional, pharmacist: Professional) -> None:
    from playwright.async_api import expect

    marie = doctor.marie()

    await portal_login(page, live_server)
    await expect(page.get_by_role("heading", name="Mes documents")).to_be_visible()
    await expect(page.get_by_role("link", name="Résultats de biologie")).to_be_visible()
    await screenshot(page, "documents")

    # A document filed through ITI-65 appears on the open page, without a reload.
    title = "Bilan de kinésithérapie du 26 novembre"
    document_id = doctor.file(marie, title, "Séances de rééducation : progrès nets.")
    await expect(page.get_by_role("link", name=title)).to_be_visible(timeout=20_000)
    await expect(page.locator("#direct")).to_contain_text("nouveau document")

    # Open it: the text shows inline in the viewer.
    await page.get_by_role("link", name=title).click()
    await expect(page.get_by_role("heading", name=title)).to_be_visible()
    await expect(page.frame_locator("iframe.apercu").locator("body")).to_contain_text(
        "progrès nets")
    await screenshot(page, "document")

    # Mask it: Dr Bernard (care team, not its author) no longer finds it through ITI-67.
    assert document_id in ids(colleague.document_ids(marie))
    await page.get_by_role("button", name="Masquer aux professionnels").click()
    await expect(page.get_by_text("Masqué aux professionnels").first).to_be_visible()
    assert document_id not in ids(colleague.document_ids(marie))
    assert document_id in ids(doctor.document_ids(marie))  # the attending doctor still does

    # Block the pharmacist she had authorised: her next ITI-67 search is refused.
    assert pharmacist.document_ids(marie).status_code == 200
    await page.get_by_role("link", name="Confidentialité").click()
    await page.get_by_label("Nom du professionnel").fill("PETIT")
    await page.get_by_role("button", name="Rechercher").click()
    await page.get_by_role("button", name="Bloquer Sophie PETIT").click()
    await expect(page.get_by_role("button", name="Débloquer Sophie PETIT")).to_be_visible()
    await screenshot(page, "confidentialite")
    assert pharmacist.document_ids(marie).status_code in (403, 404)

    # Her access history shows Dr Bernard's search (and the pharmacist's refused one).
    await page.get_by_role("link", name="Historique des accès").click()
    history = page.locator("#historique-acces")
    await expect(history).to_contain_text("Paul BERNARD")
    await expect(history).to_contain_text("Refusé")
    await screenshot(page, "historique")

    # A message arrives while the page is open; she reads it and answers.
    message_id = doctor.write(marie, "Votre bilan de kinésithérapie est rassurant.")
    await expect(page.locator("#direct")).to_contain_text("nouveau message", timeout=20_000)
    await expect(page.locator("#non-lus")).to_be_visible()
    await page.get_by_role("link", name="Messagerie").click()
    await screenshot(page, "messagerie")
    await page.get_by_role("link", name="Votre bilan de kinésithérapie est rassurant").click()
    await expect(page.locator("p.texte-message")).to_have_text(
        "Votre bilan de kinésithérapie est rassurant.")
    await page.get_by_label("Votre réponse à Claire MARTIN").fill("Merci docteur, à bientôt.")
    await page.get_by_role("button", name="Envoyer la réponse").click()
    await expect(page.get_by_text("Votre réponse a été envoyée.")).to_be_visible()
    await screenshot(page, "message")
    answers = doctor.http.get("/Communication", params={
        "in-response-to": f"Communication/{message_id}"})
    assert answers.status_code == 200, answers.text
    assert [e["resource"]["payload"][0]["contentString"] for e in answers.json()["entry"]] \
        == ["Merci docteur, à bientôt."]

    # She adds a document of her own.
    await page.get_by_role("link", name="Ajouter un document").click()
    await page.get_by_label("Fichier").set_input_files(files=[{
        "name": "ordonnance-lunettes.pdf", "mimeType": "application/pdf", "buffer": PDF}])
    await page.get_by_label("Titre du document").fill("Ordonnance de lunettes")
    await page.get_by_label("Type de document").select_option("DOCPAT02")
    await screenshot(page, "ajouter")
    await page.get_by_role("button", name="Ajouter le document").click()
    await expect(page.get_by_role("heading", name="Ordonnance de lunettes")).to_be_visible()
    await expect(page.get_by_text("Vous-même")).to_be_visible()

    # On a phone-sized screen nothing overflows sideways; the skip link comes first.
    await page.set_viewport_size({"width": 360, "height": 740})
    await page.get_by_role("link", name="Mes documents", exact=True).click()
    assert await page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth")
    await screenshot(page, "documents-telephone")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Aller au contenu"

    # Logging out ends the session: the pages send her back to the home page.
    await page.get_by_role("button", name="Se déconnecter").click()
    await expect(page.get_by_text("Vous êtes déconnecté·e.")).to_be_visible()
    await page.goto(f"{live_server}/portal/documents")
    await expect(page.get_by_role("link", name="Se connecter")).to_be_visible()
