"""The bearer token the benchmark sends: an app token signed with the server's own keys.

Every ``/fhir`` interaction except ``GET /fhir/metadata`` needs
``Authorization: Bearer <JWT>``. The benchmark mints a client-credentials token
(``system/*.cruds``) in its own process, exactly as ``tests/tokens.py`` does: with
the embedded identity provider's signing keys, which ``carnet serve`` keeps in
``<data dir>/keys`` (``KeyStore`` shares them safely between processes), for the
server's issuer ``http://127.0.0.1:<port>/idp``. The server verifies it like any
token: RS256 signature against the issuer's JWKS, issuer, audience, validity.

Access is consent-scoped: an app token sees patient data only with the patient's grant,
unless its client id is one of the server's operators (``CARNET_OPERATOR_CLIENTS``), which
see and write every record within their scopes (audited). ``core.server.start_carnet``
names ``CLIENT_ID`` as the server's only operator, so the loader works as before.

``mint_professional_token`` mints what a professional gets from Pro Santé Connect (the
embedded mock), as ``tests/tokens.py`` does: ``professional_claims`` of a
``storage.directory.Professional`` (idNat_PS ``8`` + RPPS), scope ``openid scope_all``.
The professional figures of ``run_documents.py`` run with it: consent, the access matrix and
the audit trail apply to every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auth.idp.config import IdpConfig
    from storage.directory import InsIdentity, Professional

CLIENT_ID = "carnet-bench"  # the operator app (CARNET_OPERATOR_CLIENTS)
PRO_CLIENT_ID = "bench-pro"  # the client a professional signs in through
PRO_SCOPE = "openid scope_all"
SCOPE = "system/*.cruds"
AUDIENCE = "carnet"  # the server's default CARNET_TOKEN_AUDIENCE (start_carnet unsets it)
# Long enough for a whole run (load plus every measured configuration); a token minted
# per server start, never stored anywhere but in memory and wrk's environment.
LIFETIME_SECONDS = 4 * 3600


def mint_app_token(base_url: str, keys_dir: Path) -> str:
    """A ``system/*.cruds`` app token for the server at ``base_url``, signed with its keys."""
    from auth.idp.claims import mint_access_token
    from auth.idp.config import IdpConfig
    from auth.keys import KeyStore

    config = IdpConfig(issuer=f"{base_url}/idp", audience=AUDIENCE, keys=KeyStore(keys_dir),
                       access_token_ttl=LIFETIME_SECONDS, refresh_token_ttl=LIFETIME_SECONDS)
    # mint_app_token's claims ({"sub": client_id}) with an explicit lifetime.
    return mint_access_token(config, {"sub": CLIENT_ID}, CLIENT_ID, SCOPE,
                             lifetime=LIFETIME_SECONDS).token


def _config(base_url: str, keys_dir: Path) -> IdpConfig:
    from auth.idp.config import IdpConfig
    from auth.keys import KeyStore

    return IdpConfig(issuer=f"{base_url}/idp", audience=AUDIENCE, keys=KeyStore(keys_dir),
                     access_token_ttl=LIFETIME_SECONDS, refresh_token_ttl=LIFETIME_SECONDS)


def doctor(k: int) -> Professional:
    """The k-th attending doctor of the benchmark's patients: a médecin (profession 10, a
    generalist), RPPS ``20000000000 + k``."""
    from storage.directory import Professional

    return Professional(f"{20_000_000_000 + k}", f"MEDECIN{k}", "Bench", "10", "C", None,
                        "Cabinet de benchmark")


def mint_professional_token(base_url: str, keys_dir: Path, k: int = 0) -> str:
    """Doctor ``k``'s access token (``openid scope_all``), signed with the server's keys."""
    return mint_token_for(base_url, keys_dir, doctor(k))


def mint_token_for(base_url: str, keys_dir: Path, professional: Professional) -> str:
    """Any professional's access token (``openid scope_all``), e.g. one of the directory's."""
    from auth.idp.claims import mint_access_token, professional_claims

    return mint_access_token(_config(base_url, keys_dir), professional_claims(professional),
                             PRO_CLIENT_ID, PRO_SCOPE, lifetime=LIFETIME_SECONDS).token


def mint_patient_token(base_url: str, keys_dir: Path, identity: InsIdentity,
                       client_id: str = "carnet-portal",
                       scope: str = "openid offline_access patient/*.cruds") -> str:
    """A patient's access token, as the issuer grants it after an ``ins:<NIR>`` login:
    ``patient_claims`` of the INSi identity (``storage.directory.InsIdentity``); by default
    what the portal's session holds (client ``carnet-portal``, its scope)."""
    from auth.idp.claims import mint_access_token, patient_claims

    return mint_access_token(_config(base_url, keys_dir), patient_claims(identity),
                             client_id, scope, lifetime=LIFETIME_SECONDS).token


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header for ``token`` (none for servers that need no token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
