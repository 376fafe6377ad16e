"""« Confidentialité »: the patient's choices (FHIR Consents) read, written and withdrawn.

Each choice is one Consent built by ``fhir_profiles.consent.patient_choice`` and
POSTed as the patient; withdrawing makes it ``inactive`` (its history is kept).
The API rebuilds the record's policy in the same transaction, so a change holds
from the professionals' next request. Who a professional is comes from the
directory (``service/portal/professionals.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from fhir_profiles.consent import (
    ACTOR_ROLE,
    CLIENT_ID_SYSTEM,
    IDNAT_SYSTEM,
    Choice,
    choice_of,
    patient_choice,
    professional_idnat,
)
from service.portal.errors import Refusal
from service.portal.fhir import PortalFhir
from service.portal.professionals import (
    ProfessionalView,
    professional_view,
    professionals_by_idnat,
    reference_idnat,
)
from service.portal.web import NOTICES, PortalDep

router = APIRouter()
NOTICES.update({
    "dossier-ferme": "Votre dossier est fermé : aucun professionnel de santé ne peut plus le "
                     "consulter ni l'alimenter.",
    "dossier-ouvert": "Votre dossier est de nouveau ouvert aux professionnels autorisés.",
    "urgence-opposee": "Vous vous opposez désormais à l'accès en urgence (bris de glace, "
                       "centre 15) à votre dossier.",
    "urgence-autorisee": "L'accès en urgence à votre dossier est de nouveau possible.",
    "pro-bloque": "Ce professionnel ne peut plus accéder à votre dossier.",
    "pro-debloque": "Ce professionnel n'est plus bloqué.",
})
SEARCH_RESULTS = 20
SEARCH_LENGTH = (2, 100)
@dataclass
class Choices:
    """What the patient's active Consents say, with the Consents that say it."""

    consents: list[tuple[dict[str, Any], Choice]]
    blocked: dict[str, list[dict[str, Any]]]  # idNat_PS -> the Consents that block them
    authorised: set[str]
    apps: list[str]

    def of(self, code: str) -> list[dict[str, Any]]:
        return [consent for consent, choice in self.consents if choice.code == code]


async def read_choices(fhir: PortalFhir, patient_id: str) -> Choices:
    active = await fhir.every("Consent", {"patient": patient_id, "status": "active"})
    consents = [(consent, choice) for consent in active
                if (choice := choice_of(consent)) is not None]
    blocked: dict[str, list[dict[str, Any]]] = {}
    authorised: set[str] = set()
    apps: list[str] = []
    for consent, choice in consents:
        if choice.code == "app":
            apps += [str(actor["identifier"].get("value")) for actor in choice.actors
                     if (actor.get("identifier") or {}).get("system") == CLIENT_ID_SYSTEM]
        if choice.code != "professional":
            continue
        for actor in choice.actors:
            idnat = await reference_idnat(fhir, actor)
            if idnat is None:
                continue
            if choice.deny:
                blocked.setdefault(idnat, []).append(consent)
            else:
                authorised.add(idnat)
    return Choices(consents, blocked, authorised, sorted(set(apps)))


async def attending_idnat(fhir: PortalFhir, patient_id: str) -> str | None:
    """The declared attending doctor, whom the policy never lets the patient block."""
    patient = await fhir.get(f"Patient/{patient_id}")
    for reference in patient.get("generalPractitioner") or []:
        idnat = await reference_idnat(fhir, reference)
        if idnat is not None:
            return idnat
    return None


def _yes_no(form: dict[str, str], field: str) -> bool:
    """A choice button's value; anything else did not come from the page (400)."""
    value = form.get(field)
    if value not in ("oui", "non"):
        raise Refusal(400, f"Le champ « {field} » doit valoir « oui » ou « non ».")
    return value == "oui"


def _idnat_field(form: dict[str, str]) -> str:
    value = form.get("professionnel", "").strip()
    idnat = professional_idnat({"system": IDNAT_SYSTEM, "value": value})
    if idnat is None:
        raise Refusal(400, "Le professionnel doit être désigné par son identifiant national "
                              "(idNat_PS : 8 suivi de son numéro RPPS).")
    return idnat


def _blocking_consent(patient_id: str, idnat: str) -> dict[str, Any]:
    """A deny for one professional, named by RPPS (or idNat_PS when it holds no RPPS)."""
    if idnat.startswith("8") and len(idnat) == 12:
        return patient_choice(f"Patient/{patient_id}", "professional", "deny", rpps=[idnat[1:]])
    consent = patient_choice(f"Patient/{patient_id}", "professional", "deny")
    consent["provision"]["actor"] = [{"role": ACTOR_ROLE, "reference": {
        "identifier": {"system": IDNAT_SYSTEM, "value": idnat}}}]
    return consent


async def _change(fhir: PortalFhir, consent: dict[str, Any], path: str, value: Any) -> None:
    """One element of a Consent as it was read: a change made meanwhile (another tab, an
    app) fails with 412 instead of being overwritten."""
    version = (consent.get("meta") or {}).get("versionId")
    await fhir.patch(f"Consent/{consent['id']}", [{"op": "replace", "path": path,
                                                   "value": value}],
                     if_match=f'W/"{version}"' if version else None)


async def _withdraw(fhir: PortalFhir, consent: dict[str, Any]) -> None:
    """The choice stops at once; the Consent's history keeps it."""
    await _change(fhir, consent, "/status", "inactive")


async def _search(fhir: PortalFhir,
                  recherche: str | None) -> tuple[list[ProfessionalView], str | None]:
    """The directory's professionals matching the name, or the reason the search is refused."""
    wanted = (recherche or "").strip()
    if not wanted:
        return [], None
    if not SEARCH_LENGTH[0] <= len(wanted) <= SEARCH_LENGTH[1]:
        return [], (f"Saisissez entre {SEARCH_LENGTH[0]} et {SEARCH_LENGTH[1]} caractères du "
                    "nom du professionnel.")
    bundle = await fhir.get("Practitioner", {"name": wanted, "_count": str(SEARCH_RESULTS)})
    views = [professional_view(entry["resource"]) for entry in bundle.get("entry") or []
             if entry.get("resource", {}).get("resourceType") == "Practitioner"]
    return [view for view in views if view is not None], None


@router.get("/confidentialite", summary="the patient's privacy choices")
async def privacy(ctx: PortalDep, recherche: str | None = None) -> Response:
    if ctx.patient_id is None:
        return await ctx.page("privacy.html", record=False, recherche=recherche or "")
    choices = await read_choices(ctx.fhir, ctx.patient_id)
    attending = await attending_idnat(ctx.fhir, ctx.patient_id)
    results, search_error = await _search(ctx.fhir, recherche)
    people = await professionals_by_idnat(
        ctx.fhir, [*choices.blocked, *choices.authorised, *([attending] if attending else [])])
    by_name = sorted(people.values(), key=lambda view: (view.name == "", view.name, view.idnat))
    return await ctx.page(
        "privacy.html", status_code=400 if search_error else 200, record=True,
        closed=bool(choices.of("record")), emergency_opposed=bool(choices.of("emergency")),
        care_team_objection=bool(choices.of("care-team")),
        attending=people.get(attending) if attending else None,
        blocked=[view for view in by_name if view.idnat in choices.blocked],
        authorised=[view for view in by_name if view.idnat in choices.authorised],
        blocked_ids=set(choices.blocked), apps=choices.apps,
        recherche=(recherche or "").strip(), results=results, search_error=search_error)


@router.post("/confidentialite/dossier", summary="close or reopen the record")
async def record_choice(ctx: PortalDep) -> Response:
    form = await ctx.form()
    close = _yes_no(form, "fermer")
    await _set_deny(ctx.fhir, ctx.own_record(), "record", close)
    return ctx.redirect("/confidentialite", "dossier-ferme" if close else "dossier-ouvert")


@router.post("/confidentialite/urgence", summary="oppose or allow emergency access")
async def emergency_choice(ctx: PortalDep) -> Response:
    form = await ctx.form()
    oppose = _yes_no(form, "opposer")
    await _set_deny(ctx.fhir, ctx.own_record(), "emergency", oppose)
    return ctx.redirect("/confidentialite", "urgence-opposee" if oppose else "urgence-autorisee")


async def _set_deny(fhir: PortalFhir, patient_id: str, code: str, deny: bool) -> None:
    """One active deny Consent for ``code`` when ``deny``, none otherwise (idempotent)."""
    choices = await read_choices(fhir, patient_id)
    existing = choices.of(code)
    if deny and not existing:
        await fhir.post("Consent", patient_choice(f"Patient/{patient_id}", code, "deny"))
    if not deny:
        for consent in existing:
            await _withdraw(fhir, consent)


@router.post("/confidentialite/bloquer", summary="block a professional")
async def block(ctx: PortalDep) -> Response:
    idnat = _idnat_field(await ctx.form())
    patient_id = ctx.own_record()
    known = await professionals_by_idnat(ctx.fhir, [idnat])
    if not known[idnat].name:
        raise Refusal(404, "Ce professionnel de santé est introuvable dans l'annuaire : "
                              "recherchez-le par son nom.")
    if await attending_idnat(ctx.fhir, patient_id) == idnat:
        # The policy ignores such a block (the attending doctor keeps access): say so.
        raise Refusal(400, f"{known[idnat].label} est votre médecin traitant : il ou elle "
                              "garde l'accès à votre dossier et ne peut pas être bloqué·e. "
                              "Changez d'abord de médecin traitant, ou fermez votre dossier.")
    choices = await read_choices(ctx.fhir, patient_id)
    if idnat not in choices.blocked:
        await ctx.fhir.post("Consent", _blocking_consent(patient_id, idnat))
    return ctx.redirect("/confidentialite", "pro-bloque")


@router.post("/confidentialite/debloquer", summary="unblock a professional")
async def unblock(ctx: PortalDep) -> Response:
    idnat = _idnat_field(await ctx.form())
    patient_id = ctx.own_record()
    choices = await read_choices(ctx.fhir, patient_id)
    if idnat not in choices.blocked:
        raise Refusal(404, "Ce professionnel de santé n'est pas bloqué.")
    for consent in choices.blocked[idnat]:
        kept = [actor for actor in consent["provision"].get("actor") or []
                if await reference_idnat(ctx.fhir, actor.get("reference")) != idnat]
        if kept:  # a Consent that blocks others too keeps blocking them
            await _change(ctx.fhir, consent, "/provision/actor", kept)
        else:
            await _withdraw(ctx.fhir, consent)
    return ctx.redirect("/confidentialite", "pro-debloque")
