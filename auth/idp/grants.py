"""The token endpoint's grants: authorization code (PKCE), refresh token, client credentials.

Each function returns the JSON body of a successful token response or raises
``OAuthError`` carrying the RFC 6749 error code. Refresh tokens rotate on every
use; presenting a used one again revokes its whole family (OAuth 2.1 advice
for stolen refresh tokens).
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from auth.idp.authorize import scope_for_app, scope_for_subject
from auth.idp.claims import (
    mint_access_token,
    mint_app_token,
    mint_id_token,
    patient_record_id,
    subject_claims,
)
from auth.idp.config import IdpConfig
from auth.pkce import s256_challenge
from auth.scopes import ScopeError, ScopeSet
from storage import oauth
from storage.oauth import Grant, OAuthClient


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def micros_from_now(seconds_from_now: int = 0) -> int:
    """Expiry instants as the storage keeps them: epoch microseconds."""
    return (int(time.time()) + seconds_from_now) * 1_000_000


async def authenticate_client(conn: AsyncConnection, client_id: str | None,
                              secret: str | None) -> OAuthClient:
    """A confidential client proves its secret; a public one only names itself (PKCE guards it)."""
    client = await oauth.client_by_id(conn, client_id) if client_id else None
    if client is None:
        raise OAuthError("invalid_client", "unknown client", 401)
    if client.confidential:
        given = oauth.secret_hash(secret or "")
        assert client.secret_hash is not None
        if not hmac.compare_digest(given, client.secret_hash):
            raise OAuthError("invalid_client", "client authentication failed", 401)
    elif secret:
        raise OAuthError("invalid_client", "this public client has no secret", 401)
    return client


def _pkce_matches(verifier: str, challenge: str) -> bool:
    return 43 <= len(verifier) <= 128 and hmac.compare_digest(s256_challenge(verifier),
                                                              challenge)


async def _user_tokens(conn: AsyncConnection, config: IdpConfig, client: OAuthClient,
                       grant: Grant, family: str | None) -> dict[str, Any]:
    identity = await subject_claims(conn, grant.subject)
    if identity is None:
        raise OAuthError("invalid_grant", "the user is no longer in the directory")
    access = mint_access_token(config, identity, client.client_id, grant.scope)
    body: dict[str, Any] = {"access_token": access.token, "token_type": "Bearer",
                            "expires_in": access.expires_in, "scope": grant.scope}
    record = await patient_record_id(conn, identity)
    if record is not None:
        body["patient"] = record
    if "refresh_token" in client.grant_types:
        refresh = secrets.token_urlsafe(32)
        await oauth.store_refresh_token(
            conn, refresh, Grant(client.client_id, grant.subject, grant.scope,
                                 family=family or secrets.token_hex(16)),
            micros_from_now(config.refresh_token_ttl))
        body["refresh_token"] = refresh
    if ScopeSet.parse(grant.scope).has("openid") and grant.redirect_uri is not None:
        body["id_token"] = mint_id_token(config, identity, client.client_id, grant.nonce)
    return body


async def authorization_code(conn: AsyncConnection, config: IdpConfig, client: OAuthClient,
                             form: dict[str, str]) -> dict[str, Any]:
    grant = await oauth.redeem_code(conn, form.get("code", ""), micros_from_now())
    if grant is None or grant.client_id != client.client_id:
        raise OAuthError("invalid_grant", "the code is unknown, expired or already used")
    if form.get("redirect_uri") != grant.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
    if not _pkce_matches(form.get("code_verifier", ""), grant.code_challenge or ""):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    return await _user_tokens(conn, config, client, grant, None)


async def refresh_token(conn: AsyncConnection, config: IdpConfig, client: OAuthClient,
                        form: dict[str, str]) -> dict[str, Any]:
    try:  # before redeeming: a malformed request must not spend the token
        requested = ScopeSet.parse(form["scope"]) if form.get("scope") else None
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from exc
    grant, replayed = await oauth.redeem_refresh_token(conn, form.get("refresh_token", ""),
                                                       micros_from_now())
    if replayed:
        raise OAuthError("invalid_grant", "refresh token reused: every token of this login "
                         "is revoked")
    if grant is None or grant.client_id != client.client_id:
        raise OAuthError("invalid_grant", "the refresh token is unknown, expired or revoked")
    if requested is not None:
        narrower = scope_for_subject(requested.narrowed_to(ScopeSet.parse(grant.scope)),
                                     grant.subject)
        if not narrower.resource_scopes and not narrower.other:
            raise OAuthError("invalid_scope", "none of the requested scopes was granted")
        grant = Grant(grant.client_id, grant.subject, str(narrower), family=grant.family)
    return await _user_tokens(conn, config, client, grant, grant.family)


def client_credentials(config: IdpConfig, client: OAuthClient,
                       form: dict[str, str]) -> dict[str, Any]:
    if not client.confidential:
        raise OAuthError("unauthorized_client", "client credentials need a confidential client")
    try:
        requested = ScopeSet.parse(form.get("scope") or client.allowed_scopes)
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from exc
    system_only = scope_for_app(requested, ScopeSet.parse(client.allowed_scopes))
    if not system_only.resource_scopes:
        raise OAuthError("invalid_scope", "no system/ scope requested is allowed for this client")
    access = mint_app_token(config, client.client_id, str(system_only))
    return {"access_token": access.token, "token_type": "Bearer",
            "expires_in": access.expires_in, "scope": str(system_only)}
