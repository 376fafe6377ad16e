"""The authorization endpoint's rules: which requests are valid, what a login grants.

OAuth 2.1 rules for a health service: the code flow only, PKCE with S256
always, redirect URIs compared exactly with the registered ones. An error
found before the redirect URI is trusted is shown to the user, never
redirected (RFC 6749 4.1.2.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncConnection

from auth.idp.claims import PATIENT_PREFIX, PROFESSIONAL_PREFIX
from auth.principal import PSC_ALL
from auth.scopes import ScopeError, ScopeSet
from storage import oauth
from storage.oauth import OAuthClient

PARAMETERS = ("response_type", "client_id", "redirect_uri", "scope", "state",
              "code_challenge", "code_challenge_method", "nonce")
_PKCE_VALUE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


class UntrustedRequest(Exception):
    """The client or redirect URI cannot be trusted: show the error, do not redirect."""


@dataclass(frozen=True)
class RedirectError(Exception):
    """An error to send back to the (trusted) redirect URI."""

    redirect_uri: str
    error: str
    description: str
    state: str | None

    def location(self, issuer: str) -> str:
        query = {"error": self.error, "error_description": self.description, "iss": issuer}
        if self.state is not None:
            query["state"] = self.state
        return with_query(self.redirect_uri, query)


@dataclass(frozen=True)
class AuthorizationRequest:
    client: OAuthClient
    redirect_uri: str
    scope: ScopeSet
    state: str | None
    code_challenge: str
    nonce: str | None

    def hidden_fields(self) -> dict[str, str]:
        fields = {"response_type": "code", "client_id": self.client.client_id,
                  "redirect_uri": self.redirect_uri, "scope": str(self.scope),
                  "code_challenge": self.code_challenge, "code_challenge_method": "S256"}
        if self.state is not None:
            fields["state"] = self.state
        if self.nonce is not None:
            fields["nonce"] = self.nonce
        return fields


def with_query(uri: str, query: dict[str, str]) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{urlencode(query)}"


async def parse_request(conn: AsyncConnection, params: dict[str, str]) -> AuthorizationRequest:
    client_id = params.get("client_id", "")
    client = await oauth.client_by_id(conn, client_id) if client_id else None
    if client is None:
        raise UntrustedRequest("unknown client_id")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise UntrustedRequest("redirect_uri is not registered for this client")
    state = params.get("state")

    def fail(error: str, description: str) -> RedirectError:
        return RedirectError(redirect_uri, error, description, state)

    if "authorization_code" not in client.grant_types:
        raise fail("unauthorized_client", "this client may not use the authorization code flow")
    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    if params.get("code_challenge_method") != "S256":
        raise fail("invalid_request", "PKCE is required: code_challenge_method must be S256")
    challenge = params.get("code_challenge", "")
    if not _PKCE_VALUE.match(challenge):
        raise fail("invalid_request", "code_challenge is missing or malformed")
    try:
        requested = ScopeSet.parse(params.get("scope", ""))
    except ScopeError as exc:
        raise fail("invalid_scope", str(exc)) from exc
    granted = requested.narrowed_to(ScopeSet.parse(client.allowed_scopes))
    if not granted.resource_scopes and not granted.other:
        raise fail("invalid_scope", "none of the requested scopes is allowed for this client")
    return AuthorizationRequest(client, redirect_uri, granted, state, challenge,
                                params.get("nonce"))


def scope_for_subject(scope: ScopeSet, subject: str) -> ScopeSet:
    """A patient gets only ``patient/`` scopes, a professional only ``user/`` ones."""
    extra_allowed: tuple[str, ...] = ()
    if subject.startswith(PATIENT_PREFIX):
        context = "patient"
    elif subject.startswith(PROFESSIONAL_PREFIX):
        context, extra_allowed = "user", (PSC_ALL,)
    else:
        raise ValueError(f"unknown subject kind: {subject!r}")
    kept = [str(s) for s in scope.resource_scopes if s.context == context]
    kept += [o for o in scope.other if o != PSC_ALL or o in extra_allowed]
    return ScopeSet.parse(" ".join(kept))


def scope_for_app(requested: ScopeSet, allowed: ScopeSet) -> ScopeSet:
    """An app acting on its own gets the ``system/`` part of what it asked and may have."""
    granted = requested.narrowed_to(allowed)
    return ScopeSet.parse(" ".join(str(s) for s in granted.resource_scopes
                                   if s.context == "system"))
