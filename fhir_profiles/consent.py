"""The patient's privacy choices as FHIR ``Consent`` resources: their shape, and what each says.

One Consent per choice, with ``scope`` patient-privacy, the LOINC "patient
consent" category (59284-0) and one Carnet choice code:

- ``record`` (deny, no actor): the record is closed;
- ``emergency`` (deny, no actor): emergency access is opposed;
- ``care-team`` (deny, no actor): the patient objects to access by their care team;
- ``professional`` (deny or permit, professionals by RPPS or idNat_PS): blocked or
  explicitly authorised;
- ``app`` (permit, apps by OAuth client id): the app may read the record.

A choice is in force while the Consent is ``active``; the patient withdraws it
by making it ``inactive`` (or deleting it). When choices conflict, deny wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhir_profiles.outcome import Issue

CHOICE_SYSTEM = "https://carnet.esante.example/fhir/CodeSystem/consent-choice"
CHOICES = ("record", "emergency", "care-team", "professional", "app")
PATIENT_PRIVACY = ("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")
PATIENT_CONSENT = ("http://loinc.org", "59284-0")
IDNAT_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
CLIENT_ID_SYSTEM = "urn:ietf:params:oauth:client-id"
# Consent.provision.actor.role is required by FHIR: the actor receives the record's data.
ACTOR_ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                          "code": "IRCP", "display": "information recipient"}]}
_WITH_ACTORS = {"professional": ("deny", "permit"), "app": ("permit",)}


@dataclass(frozen=True)
class Choice:
    code: str
    deny: bool
    actors: tuple[dict[str, Any], ...]  # the provision.actor[].reference of the Consent


def _codings(concept: Any) -> list[dict[str, Any]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [c for c in codings or [] if isinstance(c, dict)]


def _provision(consent: dict[str, Any]) -> dict[str, Any]:
    provision = consent.get("provision")
    return provision if isinstance(provision, dict) else {}


def choice_code(consent: dict[str, Any]) -> str | None:
    return next((c.get("code") for category in consent.get("category") or []
                 for c in _codings(category) if c.get("system") == CHOICE_SYSTEM), None)


def consent_issues(consent: dict[str, Any]) -> list[Issue]:
    """What makes a Consent unusable as one of the patient's choices."""
    issues: list[Issue] = []
    scope = {(c.get("system"), c.get("code")) for c in _codings(consent.get("scope"))}
    if PATIENT_PRIVACY not in scope:
        issues.append(Issue("Consent.scope must be patient-privacy "
                            f"({PATIENT_PRIVACY[0]})", "value", "error", ["Consent.scope"]))
    code = choice_code(consent)
    if code not in CHOICES:
        issues.append(Issue(f"Consent.category must hold one choice code of {CHOICE_SYSTEM}: "
                            f"{', '.join(CHOICES)}", "value", "error", ["Consent.category"]))
    if not isinstance((consent.get("patient") or {}).get("reference"), str):
        issues.append(Issue("Consent.patient must reference the patient (Patient/<id>)",
                            "required", "error", ["Consent.patient"]))
    provision = _provision(consent)
    kind = provision.get("type")
    actors = [a for a in provision.get("actor") or [] if isinstance(a, dict)]
    if code in _WITH_ACTORS:
        if kind not in _WITH_ACTORS[code]:
            issues.append(Issue(f"Consent.provision.type must be {' or '.join(_WITH_ACTORS[code])} "
                                f"for the {code!r} choice", "value", "error",
                                ["Consent.provision.type"]))
        if not actors:
            issues.append(Issue(f"the {code!r} choice names its actors in "
                                "Consent.provision.actor", "required", "error",
                                ["Consent.provision.actor"]))
    elif code in CHOICES:
        if kind != "deny":
            issues.append(Issue(f"the {code!r} choice is a deny provision", "value", "error",
                                ["Consent.provision.type"]))
        if actors:
            issues.append(Issue(f"the {code!r} choice names no actor", "value", "error",
                                ["Consent.provision.actor"]))
    for index, actor in enumerate(actors):
        if not isinstance(actor.get("reference"), dict):
            issues.append(Issue("each actor needs a reference", "required", "error",
                                [f"Consent.provision.actor[{index}].reference"]))
    return issues


def choice_of(consent: dict[str, Any]) -> Choice | None:
    """What an active, well-formed Consent says; None when it is not in force."""
    code = choice_code(consent)
    if consent.get("status") != "active" or code not in CHOICES:
        return None
    provision = _provision(consent)
    actors = tuple(a["reference"] for a in provision.get("actor") or []
                   if isinstance(a, dict) and isinstance(a.get("reference"), dict))
    return Choice(code, provision.get("type") == "deny", actors)


def professional_idnat(identifier: Any) -> str | None:
    """idNat_PS from an RPPS or idNat_PS identifier (``8`` + RPPS)."""
    if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
        return None
    value: str = identifier["value"]
    system = identifier.get("system")
    if system == RPPS_SYSTEM and len(value) == 11 and value.isdigit():
        return "8" + value
    if system == IDNAT_SYSTEM and value[:1] in ("0", "8") and value[1:].isdigit():
        return value
    return None


def patient_choice(patient_reference: str, choice: str, provision: str = "deny", *,
                   rpps: Iterable[str] = (), apps: Iterable[str] = (),
                   status: str = "active") -> dict[str, Any]:
    """A Consent recording one choice, in the shape ``consent_issues`` accepts."""
    actors = [{"role": ACTOR_ROLE,
               "reference": {"identifier": {"system": RPPS_SYSTEM, "value": number}}}
              for number in rpps]
    actors += [{"role": ACTOR_ROLE,
                "reference": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}}}
               for client_id in apps]
    body: dict[str, Any] = {"type": provision}
    if actors:
        body["actor"] = actors
    return {"resourceType": "Consent", "status": status,
            "scope": {"coding": [{"system": PATIENT_PRIVACY[0], "code": PATIENT_PRIVACY[1]}]},
            "category": [{"coding": [{"system": PATIENT_CONSENT[0], "code": PATIENT_CONSENT[1]}]},
                         {"coding": [{"system": CHOICE_SYSTEM, "code": choice}]}],
            "patient": {"reference": patient_reference}, "provision": body}
