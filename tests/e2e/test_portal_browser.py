"""The patient portal in a real browser (Debian's Chromium, driven by Playwright), against
``carnet serve --demo`` on a loopback port, while professionals use the FHIR API.

Marie CORSE logs in; documents and messages that professionals send reach her open
page live; what she decides (masking, blocking) binds the next professional request;
the professionals' accesses show in her history. Screenshots land in
test-artifacts/portal/.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from service.demo import INS_NIR_TEST, PATIENTS
from service.documents.samples import document_bundle
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
    from playwright.async_api import expect

    page = browser_page
    doctor, colleague = Professional(live_server, DR_MARTIN), Professional(live_server,
                                                                           DR_BERNARD)
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
