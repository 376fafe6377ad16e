"""« Historique des accès »: who opened the record, what they did, in which mode, with what
outcome, from the record's AuditEvents (newest first).

The portal itself reads as the patient, so every page it shows leaves entries of
the patient's own: they are hidden unless asked for, by the trail's own filter
(``agent-kind:not=patient``), and pages follow the trail's cursors.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from service.audit import ACCESS_MODE_SYSTEM
from service.portal.fhir import PortalFhir
from service.portal.professionals import ProfessionalView, professionals_by_idnat
from service.portal.views import document_view, page_links
from service.portal.web import PortalDep

router = APIRouter()
PAGE_SIZE = 20

_AGENT_KINDS = {"PROV": "professional", "PAT": "patient", "110150": "app"}
ACTIONS = {"read": "Consultation", "vread": "Consultation d'une version",
           "history-instance": "Consultation de l'historique",
           "history-type": "Recherche dans l'historique", "search-type": "Recherche",
           "create": "Dépôt", "update": "Modification", "patch": "Modification",
           "delete": "Suppression", "ins-lookup": "Recherche d'identité"}
MODES = {"normal": "Normal", "bris_de_glace": "Bris de glace", "centre_15": "Centre 15"}
RESOURCES = {"DocumentReference": "document", "Binary": "contenu d'un document",
             "Patient": "identité", "Consent": "choix de confidentialité",
             "Communication": "message", "CareTeam": "équipe de soins",
             "List": "lot de documents", "Composition": "synthèse",
             "AuditEvent": "historique des accès", "Observation": "résultat",
             "Condition": "problème de santé", "AllergyIntolerance": "allergie",
             "MedicationStatement": "traitement", "Immunization": "vaccination",
             "Bundle": "lot"}


@dataclass(frozen=True)
class Target:
    """One thing the access touched; ``document_id`` when the portal can show it."""

    label: str
    document_id: str | None = None


@dataclass
class AccessView:
    recorded: str
    agent_kind: str
    agent_id: str
    action: str
    searched: str | None
    targets: list[Target]
    mode: str
    reason: str
    allowed: bool
    denied: bool  # refused by the access policy (else failed for another reason)
    who: ProfessionalView | None = field(default=None)

    @property
    def emergency(self) -> bool:
        return self.mode != MODES["normal"]


def _coding_code(concept: dict[str, Any] | None) -> str:
    return next((str(c.get("code")) for c in (concept or {}).get("coding") or []), "")


def _searched_type(entity: dict[str, Any]) -> str | None:
    """The resource type a search's query (base64 ``Type?params``) asked for."""
    try:
        query = base64.b64decode(entity.get("query") or "").decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return query.split("?", 1)[0] or None


def access_view(event: dict[str, Any]) -> AccessView:
    agent = (event.get("agent") or [{}])[0]
    kind = _AGENT_KINDS.get(_coding_code(agent.get("type")), "app")
    identifier = (agent.get("who") or {}).get("identifier") or {}
    purpose: dict[str, Any] = next(iter(event.get("purposeOfEvent") or []), {})
    mode = next((str(c.get("code")) for c in purpose.get("coding") or []
                 if c.get("system") == ACCESS_MODE_SYSTEM), "normal")
    searched = None
    targets: list[Target] = []
    for entity in event.get("entity") or []:
        if "query" in entity:
            searched = _searched_type(entity)
            continue
        reference = str((entity.get("what") or {}).get("reference") or "")
        resource_type, _, resource_id = reference.partition("/")
        if (entity.get("role") or {}).get("code") == "1":
            continue  # the record itself: every entry names it
        targets.append(Target(RESOURCES.get(resource_type, resource_type),
                              resource_id if resource_type == "DocumentReference" else None))
    outcome = str(event.get("outcome") or "0")
    subtype = _coding_code({"coding": event.get("subtype") or []})
    return AccessView(
        recorded=str(event.get("recorded") or ""), agent_kind=kind,
        agent_id=str(identifier.get("value") or ""),
        action=ACTIONS.get(subtype, subtype or "Accès"),
        searched=RESOURCES.get(searched, searched) if searched else None, targets=targets,
        mode=MODES.get(mode, mode), reason=str(purpose.get("text") or ""),
        allowed=outcome == "0",
        denied=str(event.get("outcomeDesc") or "").startswith("access denied"))


async def _trail(fhir: PortalFhir, patient_id: str, cursor: str | None,
                 include_own: bool) -> tuple[list[AccessView], str | None]:
    """A page of the trail and the cursor of what follows."""
    params = {"patient": patient_id, "_count": str(PAGE_SIZE), "_total": "none"}
    if not include_own:
        params["agent-kind:not"] = "patient"
    if cursor:
        params["_cursor"] = cursor
    bundle = await fhir.get("AuditEvent", params)
    shown = [access_view(entry["resource"]) for entry in bundle.get("entry") or []
             if entry.get("resource", {}).get("resourceType") == "AuditEvent"]
    return shown, page_links(bundle).get("next")


async def _document_titles(fhir: PortalFhir, document_ids: set[str]) -> dict[str, str]:
    """The titles of the documents the patient may open, in one search; the others (not
    yet visible to them) stay unnamed and unlinked."""
    if not document_ids:
        return {}
    found = await fhir.every("DocumentReference", {"_id": ",".join(sorted(document_ids)),
                                                   "_count": str(len(document_ids))})
    return {doc["id"]: document_view(doc).title for doc in found
            if doc.get("resourceType") == "DocumentReference"}


def _titled(target: Target, titles: dict[str, str]) -> Target:
    if target.document_id is None:
        return target
    if target.document_id in titles:
        return Target(titles[target.document_id], target.document_id)
    return Target(target.label)


@router.get("/historique", summary="who accessed the patient's record")
async def history(ctx: PortalDep, cursor: str | None = None,
                  moi: str | None = None) -> Response:
    """``moi=oui``: the patient's own accesses too (the portal's among them)."""
    include_own = moi == "oui"
    if ctx.patient_id is None:
        return await ctx.page("history.html", accesses=[], include_own=include_own,
                              following=None, cursor=None)
    accesses, following = await _trail(ctx.fhir, ctx.patient_id, cursor, include_own)
    people = await professionals_by_idnat(
        ctx.fhir, {view.agent_id for view in accesses if view.agent_kind == "professional"})
    titles = await _document_titles(ctx.fhir, {target.document_id for view in accesses
                                               for target in view.targets
                                               if target.document_id})
    for view in accesses:
        view.who = people.get(view.agent_id)
        view.targets = [_titled(target, titles) for target in view.targets]
    return await ctx.page("history.html", accesses=accesses, include_own=include_own,
                          following=following, cursor=cursor)
