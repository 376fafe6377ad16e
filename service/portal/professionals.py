"""Professionals as the patient reads them: a name and a profession, from the directory.

Consents, audit entries and messages name professionals by national identifier
(idNat_PS) or by reference; the portal shows who they are from the directory's
Practitioner resources, in one search per page, and their number when unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhir_profiles.access import PROFESSIONS
from fhir_profiles.consent import IDNAT_SYSTEM, professional_idnat
from service.portal.fhir import PortalFhir, display_name

# TRE_G15-ProfessionSante, as a Practitioner's qualification names it (URL or OID).
PROFESSION_SYSTEMS = frozenset({
    "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante",
    "urn:oid:1.2.250.1.71.1.2.7"})


@dataclass(frozen=True)
class ProfessionalView:
    """A professional as the patient reads them: name and profession, or their number."""

    idnat: str  # idNat_PS: "8" + RPPS
    name: str = ""
    profession: str = ""

    @property
    def number(self) -> str:
        """The RPPS when the idNat_PS holds one, else the idNat_PS itself."""
        return self.idnat[1:] if self.idnat.startswith("8") else self.idnat

    @property
    def label(self) -> str:
        if self.name:
            return f"{self.name} ({self.profession})" if self.profession else self.name
        return f"Professionnel de santé n° RPPS {self.number} (inconnu de l'annuaire)"


def _profession(practitioner: dict[str, Any]) -> str:
    for qualification in practitioner.get("qualification") or []:
        for coding in (qualification.get("code") or {}).get("coding") or []:
            if coding.get("system") in PROFESSION_SYSTEMS:
                return PROFESSIONS.get(coding.get("code", ""), str(coding.get("display") or ""))
    return ""


def _idnat_of_practitioner(practitioner: dict[str, Any]) -> str | None:
    return next((found for identifier in practitioner.get("identifier") or []
                 if (found := professional_idnat(identifier)) is not None), None)


def professional_view(practitioner: dict[str, Any]) -> ProfessionalView | None:
    """A directory entry, or None when it carries no RPPS / idNat_PS."""
    idnat = _idnat_of_practitioner(practitioner)
    if idnat is None:
        return None
    return ProfessionalView(idnat, display_name(practitioner), _profession(practitioner))


async def professionals_by_idnat(fhir: PortalFhir,
                                 idnats: Iterable[str]) -> dict[str, ProfessionalView]:
    """Each idNat_PS with its directory entry, in one search; unknown ones keep the number."""
    wanted = sorted(set(idnats))
    found = {idnat: ProfessionalView(idnat) for idnat in wanted}
    if not wanted:
        return found
    practitioners = await fhir.every("Practitioner", {
        "identifier": ",".join(f"{IDNAT_SYSTEM}|{idnat}" for idnat in wanted),
        "_count": str(len(wanted))})
    for practitioner in practitioners:
        view = professional_view(practitioner)
        if view is not None and view.idnat in found:
            found[view.idnat] = view
    return found


async def reference_idnat(fhir: PortalFhir, reference: Any) -> str | None:
    """The idNat_PS a Consent actor or a generalPractitioner names (identifier or
    ``Practitioner/<id>``)."""
    if not isinstance(reference, dict):
        return None
    if "identifier" in reference:
        return professional_idnat(reference["identifier"])
    target = str(reference.get("reference") or "")
    if target.startswith("PractitionerRole/"):
        role = await fhir.get(target)
        target = str((role.get("practitioner") or {}).get("reference") or "")
    if not target.startswith("Practitioner/"):
        return None
    return _idnat_of_practitioner(await fhir.get(target))
