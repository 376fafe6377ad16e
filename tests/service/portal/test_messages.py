"""« Messagerie »: the inbox, a message marked read when opened, the patient's answer, no-reply
messages, Carnet's notifications, and the demo's message from the attending doctor."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest

from service.demo import seed_demo
from service.settings import Settings
from storage.blobs import open_blob_store
from storage.db import Database
from tests.factories import FHIR_JSON, practitioner
from tests.forms import form_to, forms_of
from tests.service.access.conftest import DOCTOR, MISSING_ID, Record, as_professional
from tests.service.messaging.conftest import carnet_notification, message, sent
from tests.service.portal.conftest import PortalBrowser, log_in
from tests.tokens import PATIENT, Tokens

WRITTEN = "Vos résultats de biologie sont normaux.\nRendez-vous dans six mois."


@pytest.fixture
async def from_doctor(client: httpx.AsyncClient, anonymous: httpx.AsyncClient,
                      tokens: Tokens, record: Record) -> dict[str, Any]:
    """Dr Claire MARTIN (in the directory) writes to Marie, with her lab results attached."""
    listed = await client.post("/fhir/Practitioner", headers=FHIR_JSON, content=orjson.dumps(
        practitioner(DOCTOR.family_name, DOCTOR.rpps)))
    assert listed.status_code == 201, listed.text
    return await sent(anonymous, as_professional(tokens, DOCTOR), message(
        record.patient_id, WRITTEN, payload=[
            {"contentString": WRITTEN},
            {"contentReference": {"reference": f"DocumentReference/{record.documents['lab']}"}}]))


def badge(page: str) -> str | None:
    """The unread count in the menu's badge (None when it is hidden)."""
    found = re.search(r'<span class="badge" id="non-lus"[^>]*>([^<]*)</span>', page)
    assert found is not None, "the menu has no unread badge"
    return found.group(1) or None


async def as_doctor(anonymous: httpx.AsyncClient, tokens: Tokens, path: str,
                    **params: str) -> dict[str, Any]:
    response = await anonymous.get(path, params=params, headers=as_professional(tokens, DOCTOR))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_a_professionals_message_is_listed_unread_with_the_count_in_the_menu(
        portal: PortalBrowser, from_doctor: dict[str, Any]) -> None:
    page = (await portal.page("/messages")).text
    assert 'id="liste-messages"' in page and 'aria-current="page"' in page
    item = page.split(f'/messages/{from_doctor["id"]}"', 1)
    assert len(item) == 2, "the message is not listed"
    assert 'class="message non-lu"' in item[0][-200:]
    assert "non lu : </span>Vos résultats de biologie sont normaux." in item[1]
    assert "De Claire MARTIN" in item[1]  # named from the directory, by idNat_PS
    assert badge(page) == "1"
    assert "(1 non lu)" in page  # in the heading too


async def test_opening_a_message_marks_it_read_and_links_its_documents(
        portal: PortalBrowser, from_doctor: dict[str, Any], record: Record,
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    page = (await portal.page(f"/messages/{from_doctor['id']}")).text
    assert "Rendez-vous dans six mois." in page and "Claire MARTIN" in page
    assert f'/portal/documents/{record.documents["lab"]}">Document lab</a>' in page
    assert badge(page) is None  # read now: the menu's badge is gone
    stored = await as_doctor(anonymous, tokens, f"/fhir/Communication/{from_doctor['id']}")
    assert stored["status"] == "completed" and stored["received"]  # what the sender sees
    inbox = (await portal.page("/messages")).text
    assert "message non-lu" not in inbox and badge(inbox) is None
    label = re.search(r'<label for="texte">', page)
    assert label and 'id="texte"' in page  # the answer's field has its label


async def test_the_patients_answer_reaches_the_professional(
        portal: PortalBrowser, from_doctor: dict[str, Any], record: Record,
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    path = f"/messages/{from_doctor['id']}"
    fields = form_to((await portal.page(path)).text, "/reponse")
    answered = await portal.submit(f"{path}/reponse", {**fields, "texte": "Merci docteur !"})
    assert answered.status_code == 303
    assert answered.headers["location"].endswith(f"{path}?info=reponse")
    page = (await portal.page(f"{path}?info=reponse")).text
    assert "Votre réponse a été envoyée." in page and "Merci docteur !" in page
    found = await as_doctor(anonymous, tokens, "/fhir/Communication",
                            **{"in-response-to": f"Communication/{from_doctor['id']}"})
    answers = [entry["resource"] for entry in found["entry"]]
    assert [a["payload"] for a in answers] == [[{"contentString": "Merci docteur !"}]]
    assert answers[0]["sender"] == {"reference": f"Patient/{record.patient_id}"}
    assert answers[0]["recipient"] == [from_doctor["sender"]]


async def test_an_empty_answer_is_refused_and_nothing_is_sent(
        portal: PortalBrowser, from_doctor: dict[str, Any], anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    path = f"/messages/{from_doctor['id']}"
    refused = await portal.submit(f"{path}/reponse", {"texte": "  \n "})
    assert refused.status_code == 400
    assert "Votre réponse est vide" in refused.text and 'role="alert"' in refused.text
    assert form_to(refused.text, "/reponse")  # the form is still there, to try again
    found = await as_doctor(anonymous, tokens, "/fhir/Communication",
                            **{"in-response-to": f"Communication/{from_doctor['id']}"})
    assert found["total"] == 0


async def test_a_no_reply_message_has_no_form_and_a_forced_answer_is_refused(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    doctor = as_professional(tokens, DOCTOR)
    no_reply = await sent(anonymous, doctor, message(record.patient_id, "Rappel : vaccin."),
                          **{"X-MSS-MES": "FIN"})
    path = f"/messages/{no_reply['id']}"
    page = (await portal.page(path)).text
    assert "n'attend pas de réponse" in page
    assert not [action for action, _ in forms_of(page) if action.endswith("/reponse")]
    forced = await portal.submit(f"{path}/reponse", {"texte": "Et pourtant je réponds."})
    assert forced.status_code == 403
    assert "message-no-reply" in forced.text and "<h1>Accès refusé</h1>" in forced.text
    found = await as_doctor(anonymous, tokens, "/fhir/Communication",
                            **{"in-response-to": f"Communication/{no_reply['id']}"})
    assert found["total"] == 0


async def test_an_unknown_or_foreign_message_is_not_found(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    to_julie = await sent(anonymous, as_professional(tokens, DOCTOR),
                          message(record.other_patient_id, "Pour Julie LEROY."))
    for message_id in (MISSING_ID, to_julie["id"]):
        shown = await portal.http.get(f"/portal/messages/{message_id}")
        assert shown.status_code == 404 and "Introuvable" in shown.text
        answered = await portal.submit(f"/messages/{message_id}/reponse", {"texte": "Bonjour"})
        assert answered.status_code == 404
    assert "Pour Julie" not in (await portal.page("/messages")).text


async def test_an_answer_needs_the_sessions_csrf_token(
        portal: PortalBrowser, from_doctor: dict[str, Any]) -> None:
    forged = await portal.http.post(f"/portal/messages/{from_doctor['id']}/reponse",
                                     data={"texte": "Bonjour", "csrf": "forged"})
    assert forged.status_code == 403 and "Formulaire refusé" in forged.text


async def test_carnets_notifications_are_in_the_inbox_and_not_answered(
        portal: PortalBrowser, record: Record, database: Database) -> None:
    notification = await carnet_notification(database, record.patient_id)
    inbox = (await portal.page("/messages")).text
    assert "Notification de Carnet" in inbox and badge(inbox) == "1"
    page = (await portal.page(f"/messages/{notification}")).text
    assert "Un nouveau document est disponible." in page
    assert "n'attend pas de réponse" in page and "/reponse" not in page
    assert badge(page) is None


async def test_the_inbox_is_paged_newest_first(portal: PortalBrowser, record: Record,
                                               anonymous: httpx.AsyncClient,
                                               tokens: Tokens) -> None:
    doctor = as_professional(tokens, DOCTOR)
    for day in range(1, 13):
        await sent(anonymous, doctor, message(record.patient_id, f"Message numéro {day:02}",
                                              sent=f"2026-03-{day:02}T09:00:00Z"))
    first = (await portal.page("/messages")).text
    assert first.index("Message numéro 12") < first.index("Message numéro 03")
    assert "Message numéro 02" not in first and badge(first) == "12"
    following = re.search(r'href="[^"]*(/messages\?cursor=[^"]+)" rel="next"', first)
    assert following is not None
    second = (await portal.page(following.group(1).replace("&amp;", "&"))).text
    assert "Message numéro 02" in second and "Message numéro 01" in second
    assert "Message numéro 03" not in second


async def test_the_demo_has_a_message_from_the_attending_doctor(
        portal_http: httpx.AsyncClient, database: Database, settings: Settings) -> None:
    blobs = open_blob_store(settings.blob_url, settings.data_dir)
    seeded = await seed_demo(database, blobs)
    assert await seed_demo(database, blobs) == seeded  # seeding twice changes nothing
    assert len(seeded["messages"]) == 1
    landed = await log_in(portal_http, f"ins:{PATIENT.nir}")
    assert landed.status_code == 303, landed.text
    inbox = (await portal_http.get("/portal/messages")).text
    assert inbox.count('class="message non-lu"') == 1 and "De Claire MARTIN" in inbox
    assert "Vos résultats de biologie</a>" in inbox  # the topic the doctor gave
    message_id = seeded["messages"][0].removeprefix("Communication/")
    page = (await portal_http.get(f"/portal/messages/{message_id}")).text
    assert "rendez-vous dans 6 mois" in page
    assert re.search(r'<a href="[^"]+/portal/documents/[^"]+">Résultats de biologie</a>', page)
    fields = form_to(page, "/reponse")
    answered = await portal_http.post(f"/portal/messages/{message_id}/reponse",
                                      data={**fields, "texte": "Merci, à dans six mois."})
    assert answered.status_code == 303, answered.text  # the demo's sender can be answered

