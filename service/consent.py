"""The projection of a patient's choices into the tables the access policy reads.

Whenever a Consent, a CareTeam or the Patient itself (its attending doctor,
``generalPractitioner``) is written, the record's projection is rebuilt from
every active Consent and CareTeam, in the same transaction: the next request
sees the change, and nothing caches it. The record's lock serialises two
concurrent changes to one record, so neither rebuild misses the other.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import app_actor, professional_actor
from fhir_profiles.consent import CLIENT_ID_SYSTEM, choice_of, professional_idnat
from service.errors import Unprocessable
from storage import resources as repo
from storage.access import RecordChoices, Relation, replace_record_choices
from storage.search.criteria import parse_query
from storage.search.query import encode_cursor, search_page
from storage.search.values import split_reference

PROJECTED_TYPES = frozenset({"Patient", "Consent", "CareTeam"})
_PAGE = 500


async def refresh_record(conn: AsyncConnection, patient_id: str,
                         new_patient: dict[str, Any] | None = None) -> None:
    """``new_patient``: the Patient just created, whose record has no choices yet."""
    if new_patient is not None:
        await replace_record_choices(conn, patient_id, RecordChoices(
            attending=await attending_doctor(conn, new_patient)), ())
        return
    await repo.lock_key(conn, f"record:{patient_id}")
    patient = await repo.current_content(conn, "Patient", patient_id)
    attending = None
    if patient is not None and patient.content is not None:
        attending = await attending_doctor(conn, orjson.loads(patient.content))
    closed = emergency_opposed = care_team_objection = False
    actors: set[tuple[str, Relation]] = set()
    for consent in await _active(conn, "Consent", patient_id):
        choice = choice_of(consent)
        if choice is None:
            continue
        if choice.code == "record":
            closed = True
        elif choice.code == "emergency":
            emergency_opposed = True
        elif choice.code == "care-team":
            care_team_objection = True
        elif choice.code == "professional":
            relation = Relation.BLOCKED if choice.deny else Relation.AUTHORISED
            for reference in choice.actors:
                idnat = await practitioner_idnat(conn, reference)
                if idnat is not None:
                    actors.add((professional_actor(idnat), relation))
        elif choice.code == "app":
            actors.update((app_actor(ref["identifier"]["value"]), Relation.APP)
                          for ref in choice.actors if _client_id(ref))
    for team in await _active(conn, "CareTeam", patient_id):
        for participant in team.get("participant") or []:
            member = participant.get("member") if isinstance(participant, dict) else None
            idnat = await practitioner_idnat(conn, member)
            if idnat is not None:
                actors.add((professional_actor(idnat), Relation.CARE_TEAM))
    # Deny wins: an authorisation does not survive a block of the same professional.
    blocked = {actor for actor, relation in actors if relation is Relation.BLOCKED}
    actors = {(a, r) for a, r in actors if not (r is Relation.AUTHORISED and a in blocked)}
    await replace_record_choices(conn, patient_id, RecordChoices(
        closed, emergency_opposed, care_team_objection, attending), actors)


def _client_id(reference: dict[str, Any]) -> bool:
    identifier = reference.get("identifier")
    return (isinstance(identifier, dict) and identifier.get("system") == CLIENT_ID_SYSTEM
            and isinstance(identifier.get("value"), str) and bool(identifier["value"]))


async def _active(conn: AsyncConnection, resource_type: str,
                  patient_id: str) -> list[dict[str, Any]]:
    """Every active one, page after page: a choice left out would be a choice ignored."""
    found: list[dict[str, Any]] = []
    pairs = [("patient", patient_id), ("status", "active"), ("_count", str(_PAGE))]
    while True:
        page = await search_page(conn, parse_query(resource_type, pairs, default_count=_PAGE,
                                                   max_count=_PAGE))
        found.extend(orjson.loads(m.content) for m in page.matches)
        if not page.has_more or not page.matches:
            return found
        cursor = encode_cursor(page.matches[-1].sort_values, False)
        pairs = [*pairs[:3], ("_cursor", cursor)]


async def attending_doctor(conn: AsyncConnection, patient: dict[str, Any]) -> str | None:
    """The actor key of the patient's declared attending doctor (``generalPractitioner``)."""
    for reference in patient.get("generalPractitioner") or []:
        idnat = await practitioner_idnat(conn, reference)
        if idnat is not None:
            return professional_actor(idnat)
    return None


async def practitioner_idnat(conn: AsyncConnection, reference: Any) -> str | None:
    """A professional's idNat_PS from a reference: by identifier, or to a stored Practitioner."""
    if not isinstance(reference, dict):
        return None
    if "identifier" in reference:
        return professional_idnat(reference["identifier"])
    practitioner = await _stored(conn, reference, "Practitioner")
    for identifier in (practitioner or {}).get("identifier") or []:
        idnat = professional_idnat(identifier)
        if idnat is not None:
            return idnat
    return None


async def check_consent_actors(conn: AsyncConnection, consent: dict[str, Any]) -> None:
    """422 for a professional the Consent names but Carnet cannot identify, and for a
    block of the attending doctor, which the policy would not apply (say so, not 201)."""
    choice = choice_of({**consent, "status": "active"})
    if choice is None or choice.code != "professional":
        return
    named = []
    for index, reference in enumerate(choice.actors):
        idnat = await practitioner_idnat(conn, reference)
        if idnat is None:
            raise Unprocessable(
                "[consent-actor] the professional must be named by RPPS or idNat_PS identifier "
                "or by a stored Practitioner that carries one",
                expression=f"Consent.provision.actor[{index}].reference")
        named.append(idnat)
    if not choice.deny or consent.get("status") != "active":
        return
    attending = await _attending_of(conn, consent)
    for index, idnat in enumerate(named):
        if attending is not None and professional_actor(idnat) == attending:
            raise Unprocessable(
                "[consent-attending-doctor] the attending doctor cannot be blocked: declare "
                "another attending doctor first (Patient.generalPractitioner)",
                expression=f"Consent.provision.actor[{index}].reference")


async def _attending_of(conn: AsyncConnection, consent: dict[str, Any]) -> str | None:
    patient = await _stored(conn, consent.get("patient"), "Patient")
    return await attending_doctor(conn, patient) if patient is not None else None


async def _stored(conn: AsyncConnection, reference: Any,
                  resource_type: str) -> dict[str, Any] | None:
    """The current content of the stored ``resource_type`` a literal reference points to."""
    target = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(target, str):
        return None
    target_type, target_id = split_reference(target)
    if target_type != resource_type:
        return None
    found = await repo.current_content(conn, resource_type, target_id)
    if found is None or found.content is None:
        return None
    content: dict[str, Any] = orjson.loads(found.content)
    return content
