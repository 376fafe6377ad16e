"""The bearer token the benchmark sends: an app token signed with the server's own keys.

Every ``/fhir`` interaction except ``GET /fhir/metadata`` needs
``Authorization: Bearer <JWT>``. The benchmark mints a client-credentials token
(``system/*.cruds``) in its own process, exactly as ``tests/tokens.py`` does: with
the embedded identity provider's signing keys, which ``carnet serve`` keeps in
``<data dir>/keys`` (``KeyStore`` shares them safely between processes), for the
server's issuer ``http://127.0.0.1:<port>/idp``. The server verifies it like any
token: RS256 signature against the issuer's JWKS, issuer, audience, validity.
"""

from __future__ import annotations

from pathlib import Path

CLIENT_ID = "carnet-bench"
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


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header for ``token`` (none for servers that need no token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
