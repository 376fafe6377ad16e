"""« Confidentialité »: the patient's choices shown, changed, and obeyed at the next request."""

from __future__ import annotations

from html import unescape

import httpx
import orjson
import pytest

from fhir_profiles.consent import patient_choice
from service.portal import privacy
from service.portal.fhir import PortalFhir
from storage.db import Database
from storage.directory import Professional
from tests.factories import ins_patient_resource
from tests.forms import form_to, forms_of
from tests.service.access.conftest import (
    AUTHORISED,
    BLOCKED,
    DOCTOR,
    STRANGER,
    Record,
    as_professional,
)
from tests.service.portal.conftest import PortalBrowser, log_in
from tests.tokens import Tokens

TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
EMERGENCY = {"X-Access-Mode": "bris_de_glace", "X-Access-Reason": "Patiente inconsciente"}


async def in_directory(client: httpx.AsyncClient, *people: Professional) -> None:
    """The directory's Practitioners, as the demo seeds them (idNat_PS, TRE_G15 profession)."""
    for who in people:
        created = await client.post("/fhir/Practitioner", content=orjson.dumps({
            "resourceType": "Practitioner", "active": True,
            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": who.idnat}],
            "name": [{"family": who.family_name, "given": [who.given_name]}],
            "qualification": [{"code": {"coding": [{"system": TRE_G15,
                                                    "code": who.profession_code}]}}]}),
            headers={"Content-Type": "application/fhir+json"})
        assert created.status_code == 201, created.text


async def reads(anonymous: httpx.AsyncClient, tokens: Tokens, who: Professional,
                document_id: str, **headers: str) -> int:
    """The status of ``who``'s FHIR read of one of the record's documents."""
    answer = await anonymous.get(f"/fhir/DocumentReference/{document_id}",
                                 headers={**as_professional(tokens, who), **headers})
    return answer.status_code


async def test_the_page_shows_the_current_choices(portal: PortalBrowser,
                                                  client: httpx.AsyncClient) -> None:
    await in_directory(client, DOCTOR, AUTHORISED)
    page = (await portal.page("/confidentialite")).text
    assert "Votre dossier est ouvert" in page and "Fermer mon dossier" in page
    assert "L'accès en urgence est autorisé" in page
    assert "Claire MARTIN (Médecin)" in page  # the attending doctor, named by the directory
    blocked = page.split('id="professionnels-bloques"', 1)[1].split("</ul>", 1)[0]
    assert BLOCKED.rpps in blocked  # Dr Roux is not in the directory: his RPPS stands in
    assert "Débloquer" in blocked
    authorised = page.split('id="professionnels-autorises"', 1)[1].split("</ul>", 1)[0]
    assert "Paul BERNARD (Médecin)" in authorised
    assert 'aria-current="page"' in page.split('/confidentialite"', 1)[1][:30]
    assert '<label for="recherche">' in page


async def test_closing_the_record_shuts_out_even_the_attending_doctor_at_once(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    doc_id = record.documents["consultation"]
    assert await reads(anonymous, tokens, DOCTOR, doc_id) == 200
    page = (await portal.page("/confidentialite")).text
    closed = await portal.submit("/confidentialite/dossier",
                                 form_to(page, "/confidentialite/dossier"))
    assert closed.status_code == 303 and closed.headers["location"].endswith("info=dossier-ferme")
    assert await reads(anonymous, tokens, DOCTOR, doc_id) == 403
    page = (await portal.page("/confidentialite?info=dossier-ferme")).text
    assert "Votre dossier est fermé" in page and "Rouvrir mon dossier" in page
    # Closing twice leaves one choice: reopening once is enough.
    await portal.submit("/confidentialite/dossier", {"fermer": "oui"})
    reopened = await portal.submit("/confidentialite/dossier",
                                   form_to(page, "/confidentialite/dossier"))
    assert reopened.headers["location"].endswith("info=dossier-ouvert")
    assert await reads(anonymous, tokens, DOCTOR, doc_id) == 200


async def test_opposing_emergency_access_refuses_the_next_emergency_request(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        tokens: Tokens) -> None:
    doc_id = record.documents["consultation"]
    assert await reads(anonymous, tokens, STRANGER, doc_id, **EMERGENCY) == 200
    page = (await portal.page("/confidentialite")).text
    opposed = await portal.submit("/confidentialite/urgence",
                                  form_to(page, "/confidentialite/urgence"))
    assert opposed.headers["location"].endswith("info=urgence-opposee")
    assert await reads(anonymous, tokens, STRANGER, doc_id, **EMERGENCY) == 403
    # The emergency access already opened no longer holds either.
    assert await reads(anonymous, tokens, STRANGER, doc_id) == 403
    page = (await portal.page("/confidentialite")).text
    assert "Vous vous opposez à l'accès en urgence" in page
    allowed = await portal.submit("/confidentialite/urgence",
                                  form_to(page, "/confidentialite/urgence"))
    assert allowed.headers["location"].endswith("info=urgence-autorisee")
    assert await reads(anonymous, tokens, STRANGER, doc_id, **EMERGENCY) == 200


async def test_a_professional_found_in_the_directory_is_blocked_then_unblocked(
        portal: PortalBrowser, record: Record, client: httpx.AsyncClient,
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    await in_directory(client, AUTHORISED, STRANGER)
    doc_id = record.documents["consultation"]
    assert await reads(anonymous, tokens, AUTHORISED, doc_id) == 200
    found = (await portal.page("/confidentialite?recherche=bern")).text
    assert "Paul BERNARD" in found and "LEFEVRE" not in found
    blocked = await portal.submit("/confidentialite/bloquer",
                                  form_to(found, "/confidentialite/bloquer"))
    assert blocked.status_code == 303, blocked.text
    assert blocked.headers["location"].endswith("info=pro-bloque")
    assert await reads(anonymous, tokens, AUTHORISED, doc_id) in (403, 404)
    page = (await portal.page("/confidentialite?recherche=bern")).text
    listed = page.split('id="professionnels-bloques"', 1)[1].split("</ul>", 1)[0]
    assert "Paul BERNARD (Médecin)" in listed
    assert "bloqué : le blocage l'emporte" in page  # he is still authorised: deny wins
    assert "Déjà bloqué" in page.split('id="resultats-recherche"', 1)[1]
    unblock = next(fields for action, fields in forms_of(page)
                   if action.endswith("/debloquer") and fields["professionnel"] == AUTHORISED.idnat)
    unblocked = await portal.submit("/confidentialite/debloquer", unblock)
    assert unblocked.headers["location"].endswith("info=pro-debloque")
    assert await reads(anonymous, tokens, AUTHORISED, doc_id) == 200


async def test_a_professional_blocked_by_a_shared_consent_is_unblocked_alone(
        portal: PortalBrowser, record: Record, as_patient: dict[str, str],
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    """An app may block several professionals in one Consent: the others stay blocked."""
    shared = patient_choice(f"Patient/{record.patient_id}", "professional", "deny",
                            rpps=[AUTHORISED.rpps, STRANGER.rpps])
    written = await anonymous.post("/fhir/Consent", content=orjson.dumps(shared), headers={
        **as_patient, "Content-Type": "application/fhir+json"})
    assert written.status_code == 201, written.text
    doc_id = record.documents["consultation"]
    assert await reads(anonymous, tokens, AUTHORISED, doc_id) == 403
    answer = await portal.submit("/confidentialite/debloquer",
                                 {"professionnel": AUTHORISED.idnat})
    assert answer.status_code == 303
    assert await reads(anonymous, tokens, AUTHORISED, doc_id) == 200
    page = (await portal.page("/confidentialite")).text
    listed = page.split('id="professionnels-bloques"', 1)[1].split("</ul>", 1)[0]
    assert STRANGER.rpps in listed and AUTHORISED.rpps not in listed


async def test_the_attending_doctor_cannot_be_blocked(
        portal: PortalBrowser, record: Record, client: httpx.AsyncClient,
        anonymous: httpx.AsyncClient, tokens: Tokens) -> None:
    await in_directory(client, DOCTOR)
    found = (await portal.page("/confidentialite?recherche=martin")).text
    assert "ne peut pas être bloqué" in found
    assert not any(action.endswith("/bloquer") for action, _ in forms_of(found))
    refused = await portal.submit("/confidentialite/bloquer", {"professionnel": DOCTOR.idnat})
    assert refused.status_code == 400
    assert "est votre médecin traitant" in refused.text
    page = (await portal.page("/confidentialite")).text
    assert DOCTOR.rpps not in page.split('id="titre-bloques"', 1)[1].split("</section>", 1)[0]
    assert await reads(anonymous, tokens, DOCTOR, record.documents["consultation"]) == 200


async def test_unknown_or_malformed_values_get_a_clear_page(
        portal: PortalBrowser, record: Record) -> None:
    for path, fields, status, says in [
        ("/confidentialite/dossier", {"fermer": "peut-être"}, 400, "« oui » ou « non »"),
        ("/confidentialite/dossier", {}, 400, "« oui » ou « non »"),
        ("/confidentialite/urgence", {"opposer": "1"}, 400, "« oui » ou « non »"),
        ("/confidentialite/bloquer", {"professionnel": "Dr House"}, 400, "idNat_PS"),
        ("/confidentialite/bloquer", {"professionnel": "899999999999"}, 404,
         "introuvable dans l'annuaire"),
        ("/confidentialite/debloquer", {"professionnel": STRANGER.idnat}, 404,
         "n'est pas bloqué"),
    ]:
        answer = await portal.submit(path, fields)
        assert answer.status_code == status, (path, fields, answer.text[:300])
        assert says in unescape(answer.text), (path, fields)
        assert "text/html" in answer.headers["content-type"]
    page = (await portal.page("/confidentialite")).text
    assert "Votre dossier est ouvert" in page  # nothing changed


async def test_a_search_too_short_or_with_no_match_says_so(portal: PortalBrowser,
                                                          record: Record) -> None:
    short = await portal.http.get("/portal/confidentialite?recherche=a")
    assert short.status_code == 400
    assert "Saisissez entre 2 et 100 caractères" in short.text
    assert 'aria-invalid="true"' in short.text
    none = (await portal.page("/confidentialite?recherche=zzzz")).text
    assert "Aucun professionnel de l'annuaire ne correspond" in unescape(none)


async def test_choices_need_the_sessions_csrf_token(portal: PortalBrowser, record: Record,
                                                   anonymous: httpx.AsyncClient,
                                                   tokens: Tokens) -> None:
    for path, fields in [("/confidentialite/dossier", {"fermer": "oui"}),
                         ("/confidentialite/urgence", {"opposer": "oui"}),
                         ("/confidentialite/bloquer", {"professionnel": AUTHORISED.idnat}),
                         ("/confidentialite/debloquer", {"professionnel": BLOCKED.idnat})]:
        forged = await portal.http.post(f"/portal{path}", data={**fields, "csrf": "forged"})
        assert forged.status_code == 403, path
    assert await reads(anonymous, tokens, DOCTOR, record.documents["consultation"]) == 200


async def test_a_choice_changed_meanwhile_is_not_overwritten(
        portal: PortalBrowser, record: Record, anonymous: httpx.AsyncClient,
        as_patient: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another tab or an app changes the Consent between the portal's read and its write."""
    read = privacy.read_choices

    async def changed_elsewhere(fhir: PortalFhir, patient_id: str) -> privacy.Choices:
        choices = await read(fhir, patient_id)
        for consent in choices.blocked.get(BLOCKED.idnat, []):
            changed = await anonymous.patch(
                f"/fhir/Consent/{consent['id']}", headers={
                    **as_patient, "Content-Type": "application/json-patch+json"},
                content=orjson.dumps([{"op": "add", "path": "/dateTime",
                                       "value": "2026-01-15T10:00:00+01:00"}]))
            assert changed.status_code == 200, changed.text
        return choices

    monkeypatch.setattr(privacy, "read_choices", changed_elsewhere)
    answer = await portal.submit("/confidentialite/debloquer", {"professionnel": BLOCKED.idnat})
    assert answer.status_code == 412
    assert "Modifié entre-temps" in answer.text
    monkeypatch.undo()
    page = (await portal.page("/confidentialite")).text
    assert BLOCKED.rpps in page.split('id="professionnels-bloques"', 1)[1].split("</ul>", 1)[0]


async def test_a_patient_without_a_record_is_told_so(portal_http: httpx.AsyncClient,
                                                     database: Database) -> None:
    identity = await ins_patient_resource(database, "NOUVEAU", "Léa", gender="female",
                                          birth_date="1990-02-02")
    nir = identity["identifier"][0]["value"]
    landed = await log_in(portal_http, f"ins:{nir}")
    assert landed.status_code == 303, landed.text
    for path in ("/portal/confidentialite", "/portal/historique"):
        page = await portal_http.get(path)
        assert page.status_code == 200
        assert "Aucun dossier n'est encore ouvert" in unescape(page.text)
    csrf = form_to(page.text, "/deconnexion")["csrf"]
    refused = await portal_http.post("/portal/confidentialite/dossier",
                                     data={"csrf": csrf, "fermer": "oui"})
    assert refused.status_code == 404
    assert "Aucun dossier n'est encore ouvert" in unescape(refused.text)
