"""The harness's users log in as real clients do: at the identity provider, code flow + PKCE.

Professionals get their e-CPS tokens, patients theirs, from the provider Carnet
trusts (``<url>/idp`` for the embedded one), through a registered client (the
demo's ``demo-app`` by default). Who may log in is what the provider's login
page offers: the mock directories (RPPS, INSi) of the deployment under test.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from auth import pkce

PROFESSIONAL_SCOPE = "openid offline_access scope_all"
PATIENT_SCOPE = "openid offline_access patient/*.rs"
REFRESH_MARGIN = 60.0  # seconds before expiry when a token is renewed


class LoginError(Exception):
    """The provider did not let the harness in; the message says where it stopped."""


class _LoginForms(HTMLParser):
    """Each form of the login page as its fields (one form per identity offered)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.forms.append({})
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1].setdefault(values["name"] or "", values.get("value") or "")


@dataclass(frozen=True)
class Client:
    """The registered OAuth client the harness logs in through."""

    client_id: str
    secret: str | None
    redirect_uri: str

    def auth(self) -> tuple[str, str] | None:
        return (self.client_id, self.secret) if self.secret is not None else None


@dataclass
class Token:
    """An access token that renews itself before it expires."""

    subject: str
    access: str
    refresh: str | None
    expires_at: float
    claims: dict[str, Any]

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


class Provider:
    """The identity provider at ``issuer``, spoken to as a browser and an app together."""

    def __init__(self, http: httpx.AsyncClient, issuer: str, client: Client) -> None:
        self._http = http
        self._issuer = issuer.rstrip("/")
        self._client = client

    def _authorize_params(self, scope: str, challenge: str) -> dict[str, str]:
        return {"response_type": "code", "client_id": self._client.client_id,
                "redirect_uri": self._client.redirect_uri, "scope": scope,
                "state": secrets.token_urlsafe(8), "code_challenge": challenge,
                "code_challenge_method": "S256"}

    async def subjects(self) -> list[str]:
        """Everyone the login page offers (``ps:<RPPS>``, ``ins:<NIR>``)."""
        _, challenge = pkce.new_pair()
        page = await self._http.get(f"{self._issuer}/authorize",
                                    params=self._authorize_params(PROFESSIONAL_SCOPE, challenge))
        if page.status_code != 200:
            raise LoginError(f"the provider's login page answered {page.status_code}: "
                             f"{page.text[:200]}")
        parser = _LoginForms()
        parser.feed(page.text)
        return [form["subject"] for form in parser.forms if form.get("subject")]

    async def log_in(self, subject: str, scope: str) -> Token:
        verifier, challenge = pkce.new_pair()
        params = self._authorize_params(scope, challenge)
        page = await self._http.get(f"{self._issuer}/authorize", params=params)
        parser = _LoginForms()
        parser.feed(page.text)
        form = next((f for f in parser.forms if f.get("subject") == subject), None)
        if form is None:
            raise LoginError(f"the provider offers no login as {subject}")
        # The page's CSRF cookie rides in the client's jar (per-request cookies are deprecated).
        chosen = await self._http.post(f"{self._issuer}/authorize", data=form)
        location = chosen.headers.get("location", "")
        code = parse_qs(urlsplit(location).query).get("code")
        if chosen.status_code != 303 or not code:
            raise LoginError(f"no authorization code for {subject}: {location or chosen.text}")
        answer = await self._token({"grant_type": "authorization_code", "code": code[0],
                                    "redirect_uri": self._client.redirect_uri,
                                    "code_verifier": verifier})
        return await self._token_of(subject, answer)

    async def fresh(self, token: Token) -> Token:
        """The same token, or a renewed one when it is about to expire."""
        if token.expires_at - time.monotonic() > REFRESH_MARGIN or token.refresh is None:
            return token
        answer = await self._token({"grant_type": "refresh_token",
                                    "refresh_token": token.refresh})
        # Same user, same claims: no second userinfo call.
        token.access = str(answer["access_token"])
        token.refresh = answer.get("refresh_token") or token.refresh
        token.expires_at = _expiry(answer)
        return token

    async def _token(self, form: dict[str, str]) -> dict[str, Any]:
        if self._client.secret is None:
            form = {**form, "client_id": self._client.client_id}
        auth = self._client.auth()
        answer = await self._http.post(f"{self._issuer}/token", data=form,
                                       auth=auth if auth else httpx.USE_CLIENT_DEFAULT)
        if answer.status_code != 200:
            raise LoginError(f"the token endpoint answered {answer.status_code}: "
                             f"{answer.text[:200]}")
        body: dict[str, Any] = answer.json()
        return body

    async def _token_of(self, subject: str, answer: dict[str, Any]) -> Token:
        access = str(answer["access_token"])
        info = await self._http.get(f"{self._issuer}/userinfo",
                                    headers={"Authorization": f"Bearer {access}"})
        claims: dict[str, Any] = info.json() if info.status_code == 200 else {}
        return Token(subject, access, answer.get("refresh_token"), _expiry(answer), claims)


def _expiry(answer: dict[str, Any]) -> float:
    return time.monotonic() + float(answer.get("expires_in") or 300)
