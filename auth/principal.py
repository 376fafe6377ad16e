"""Who is calling: the one ``Principal`` a verified token becomes.

A token identifies exactly one kind of caller. Pro Santé Connect tokens carry
``SubjectNameID`` (the professional's idNat_PS) and ``SubjectRefPro``; patient
tokens carry the patient's ``ins``; app tokens (client credentials) carry
neither and name the client in ``sub`` and ``client_id``. A token that looks
like two kinds, or none, is refused: guessing would hand out the wrong rights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from auth.scopes import ScopeError, ScopeSet
from auth.tokens import InvalidToken
from fhir_profiles.ins import INS_SLICES, nir_problem

# Pro Santé Connect grants "scope_all": everything the professional's rights allow,
# which the access policy then narrows.
PSC_ALL = "scope_all"
_PSC_EQUIVALENT = ScopeSet.parse("user/*.cruds")
_IDNAT = re.compile(r"8[0-9]{11}|0[0-9]{9}")


@dataclass(frozen=True)
class Exercice:
    profession_code: str
    category_code: str | None
    savoir_faire: str | None


@dataclass(frozen=True)
class PrincipalBase:
    subject: str
    scopes: ScopeSet
    token_id: str
    client_id: str | None


@dataclass(frozen=True)
class Professional(PrincipalBase):
    idnat: str
    exercices: tuple[Exercice, ...]

    @property
    def rpps(self) -> str | None:
        return self.idnat[1:] if self.idnat.startswith("8") else None

    @property
    def profession_codes(self) -> tuple[str, ...]:
        return tuple(e.profession_code for e in self.exercices)


@dataclass(frozen=True)
class Patient(PrincipalBase):
    ins_system: str
    ins: str


@dataclass(frozen=True)
class App(PrincipalBase):
    pass


Principal = Professional | Patient | App


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Turn verified claims into a Principal, or refuse the token (InvalidToken)."""
    try:
        scopes = ScopeSet.parse(str(claims.get("scope", "")))
    except ScopeError as exc:
        raise InvalidToken(f"the token's scope is not valid: {exc}") from exc
    subject, token_id = str(claims["sub"]), str(claims["jti"])
    client_id = _optional_text(claims.get("client_id") or claims.get("azp"))
    is_professional = "SubjectNameID" in claims
    is_patient = "ins" in claims
    if is_professional and is_patient:
        raise InvalidToken("the token identifies both a professional and a patient")
    if is_professional:
        if scopes.has(PSC_ALL):
            scopes = ScopeSet.parse(f"{scopes} {_PSC_EQUIVALENT}")
        return Professional(subject, scopes, token_id, client_id,
                            idnat=_idnat(claims["SubjectNameID"]),
                            exercices=_exercices(claims.get("SubjectRefPro")))
    if is_patient:
        system, nir = _ins(claims["ins"])
        return Patient(subject, scopes, token_id, client_id, ins_system=system, ins=nir)
    if client_id is None or client_id != subject:
        raise InvalidToken("the token identifies no professional, patient or app")
    return App(subject, scopes, token_id, client_id)


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _idnat(value: Any) -> str:
    if not isinstance(value, str) or not _IDNAT.fullmatch(value):
        raise InvalidToken("SubjectNameID is not a national professional identifier")
    return value


def _exercices(ref_pro: Any) -> tuple[Exercice, ...]:
    exercices = ref_pro.get("exercices") if isinstance(ref_pro, dict) else None
    if not isinstance(exercices, list) or not exercices:
        raise InvalidToken("SubjectRefPro.exercices is missing: the profession is unknown")
    found = []
    for exercice in exercices:
        code = exercice.get("codeProfession") if isinstance(exercice, dict) else None
        if not isinstance(code, str) or not code:
            raise InvalidToken("an exercice of SubjectRefPro has no codeProfession")
        found.append(Exercice(code, _optional_text(exercice.get("codeCategorieProfessionnelle")),
                              _optional_text(exercice.get("codeSavoirFaire"))))
    return tuple(found)


def _ins(value: Any) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise InvalidToken("the ins claim must be an object with system and value")
    system, nir = value.get("system"), value.get("value")
    if (not isinstance(system, str) or system not in INS_SLICES.values()
            or not isinstance(nir, str) or nir_problem(nir)):
        raise InvalidToken("the ins claim does not hold a valid INS")
    return system, nir
