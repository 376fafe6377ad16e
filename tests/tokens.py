"""Bearer tokens for tests, signed by the embedded provider's keys as it would sign them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auth.idp.claims import (
    mint_access_token,
    mint_app_token,
    patient_claims,
    professional_claims,
)
from auth.idp.config import IdpConfig
from auth.keys import KeyStore
from service.app import idp_config
from service.settings import Settings
from storage.directory import InsIdentity, Professional

# The test settings list this client as an operator (CARNET_OPERATOR_CLIENTS).
OPERATOR_APP = "ops-app"
DOCTOR = Professional("10000000001", "MARTIN", "Claire", "10", "C", "SM54", "CHU de Démo")
OTHER_DOCTOR = Professional("10000000002", "BERNARD", "Paul", "10", "C", "SM26", "CHU de Démo")
PHARMACIST = Professional("10000000003", "PETIT", "Sophie", "21", "C", None, "Pharmacie")
PATIENT = InsIdentity("urn:oid:1.2.250.1.213.1.4.10", "253072A07300443", "CORSE",
                      ("Marie", "Ange"), "female", "1953-07-21", "2A073")


@dataclass
class Tokens:
    config: IdpConfig

    @classmethod
    def for_settings(cls, settings: Settings) -> Tokens:
        return cls(idp_config(settings, KeyStore(settings.effective_keys_dir)))

    def app(self, scope: str = "system/*.cruds", client_id: str = OPERATOR_APP) -> str:
        """An app's client-credentials token; by default the operator's (no consent needed)."""
        return mint_app_token(self.config, client_id, scope).token

    def professional(self, scope: str = "openid scope_all",
                     who: Professional = DOCTOR) -> str:
        return mint_access_token(self.config, professional_claims(who), "test-app", scope).token

    def patient(self, scope: str = "openid patient/*.rs", who: InsIdentity = PATIENT) -> str:
        return mint_access_token(self.config, patient_claims(who), "test-app", scope).token

    def signed(self, claims: dict[str, Any]) -> str:
        """Any claims at all, signed with the current key (for attack tests)."""
        return self.config.keys.signing_key().sign(claims)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
