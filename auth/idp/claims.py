"""The claims the identity provider puts in its tokens, and the minting of them.

Professional tokens follow Pro Santé Connect's userinfo claims
(``SubjectNameID`` = idNat_PS, ``SubjectRefPro.exercices[]``), so that the
resource server reads them exactly as it would read real e-CPS tokens.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from auth.idp.config import IdpConfig
from storage import directory
from storage.directory import InsIdentity, Professional
from storage.search.criteria import parse_query
from storage.search.query import search_page

PROFESSIONAL_PREFIX = "ps:"
PATIENT_PREFIX = "ins:"


def professional_subject(rpps: str) -> str:
    return PROFESSIONAL_PREFIX + rpps


def patient_subject(nir: str) -> str:
    return PATIENT_PREFIX + nir


def professional_claims(professional: Professional) -> dict[str, Any]:
    exercice: dict[str, Any] = {"codeProfession": professional.profession_code,
                                "codeCategorieProfessionnelle": professional.category_code}
    if professional.savoir_faire:
        exercice["codeSavoirFaire"] = professional.savoir_faire
    if professional.organisation:
        exercice["activities"] = [{"raisonSocialeSite": professional.organisation}]
    return {"sub": professional.idnat, "SubjectNameID": professional.idnat,
            "preferred_username": professional.idnat, "family_name": professional.family_name,
            "given_name": professional.given_name, "acr": "eidas1",
            "SubjectRefPro": {"exercices": [exercice]}}


def patient_claims(identity: InsIdentity) -> dict[str, Any]:
    return {"sub": identity.nir, "ins": {"system": identity.system, "value": identity.nir},
            "family_name": identity.birth_family_name, "given_name": identity.given_names[0]}


async def subject_claims(conn: AsyncConnection, subject: str) -> dict[str, Any] | None:
    """The identity claims of ``ps:<RPPS>`` or ``ins:<NIR>``; None if the directory lost it."""
    if subject.startswith(PROFESSIONAL_PREFIX):
        professional = await directory.professional_by_rpps(
            conn, subject.removeprefix(PROFESSIONAL_PREFIX))
        return professional_claims(professional) if professional else None
    if subject.startswith(PATIENT_PREFIX):
        identity = await directory.identity_by_nir(conn, subject.removeprefix(PATIENT_PREFIX))
        return patient_claims(identity) if identity else None
    return None


async def patient_record_id(conn: AsyncConnection, claims: dict[str, Any]) -> str | None:
    """The Patient resource of a patient's INS: SMART's ``patient`` launch context."""
    ins = claims.get("ins")
    if not isinstance(ins, dict):
        return None
    query = parse_query("Patient", [("identifier", f"{ins['system']}|{ins['value']}")],
                        default_count=2, max_count=2)
    page = await search_page(conn, query)
    return page.matches[0].resource_id if len(page.matches) == 1 else None


@dataclass(frozen=True)
class Minted:
    token: str
    expires_in: int


def mint_access_token(config: IdpConfig, identity: dict[str, Any], client_id: str,
                      scope: str, lifetime: int | None = None) -> Minted:
    now = int(time.time())
    lifetime = lifetime or config.access_token_ttl
    claims = {**identity, "iss": config.issuer, "aud": config.audience, "iat": now,
              "nbf": now, "exp": now + lifetime, "jti": str(uuid.uuid4()),
              "client_id": client_id, "scope": scope}
    return Minted(config.keys.signing_key().sign(claims), lifetime)


def mint_app_token(config: IdpConfig, client_id: str, scope: str) -> Minted:
    """A client-credentials token: the app acts on its own (``system/`` scopes)."""
    return mint_access_token(config, {"sub": client_id}, client_id, scope)


def mint_id_token(config: IdpConfig, identity: dict[str, Any], client_id: str,
                  nonce: str | None) -> str:
    now = int(time.time())
    claims = {"iss": config.issuer, "sub": identity["sub"], "aud": client_id, "iat": now,
              "exp": now + config.access_token_ttl, "jti": str(uuid.uuid4()),
              "acr": "eidas1", "auth_time": now}
    if nonce:
        claims["nonce"] = nonce
    return config.keys.signing_key().sign(claims)
