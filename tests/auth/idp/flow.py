"""A small OAuth client for the mock provider, driven over HTTP as a real application would.

It reads the login page's forms, posts the chosen one back with the CSRF cookie
the page set, follows the redirect to the callback and redeems the code.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from jose import jwt

from tests.forms import forms_of, login_form, pkce

ISSUER = "http://127.0.0.1:8000/idp"
AUDIENCE = "carnet"
CLIENT_ID = "demo-app"
CLIENT_SECRET = "demo-app-secret"
REDIRECT_URI = "http://127.0.0.1:8765/callback"
DOCTOR = "ps:10000000001"
PATIENT = "ins:253072A07300443"
DEMO_AUTH = (CLIENT_ID, CLIENT_SECRET)


def login_forms(html: str) -> list[dict[str, str]]:
    return [fields for _, fields in forms_of(html)]



def query_of(location: str) -> dict[str, str]:
    """The callback's query parameters (each must appear once)."""
    parsed = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), location
    return {k: v[0] for k, v in parsed.items()}


def authorize_params(scope: str, challenge: str, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
        "scope": scope, "state": secrets.token_urlsafe(8), "code_challenge": challenge,
        "code_challenge_method": "S256", **overrides}
    return {k: v for k, v in params.items() if v is not None}


@dataclass
class Login:
    """What came back to the callback, and what the client must keep to redeem it."""

    code: str
    state: str | None
    iss: str | None
    verifier: str
    redirect_uri: str
    client_id: str


async def log_in(http: httpx.AsyncClient, subject: str, scope: str = "openid scope_all",
                 **overrides: str | None) -> Login:
    """GET the login page, POST the subject's form, return the callback's parameters."""
    verifier, challenge = pkce()
    params = authorize_params(scope, challenge, **overrides)
    page = await http.get("/idp/authorize", params=params)
    assert page.status_code == 200, page.text
    form = login_form(page.text, subject)
    posted = await http.post("/idp/authorize", data=form)
    assert posted.status_code == 303, posted.text
    location = posted.headers["location"]
    assert location.startswith(params["redirect_uri"] + "?"), location
    callback = query_of(location)
    assert "error" not in callback, callback
    return Login(callback["code"], callback.get("state"), callback.get("iss"), verifier,
                 params["redirect_uri"], params["client_id"])


async def redeem(http: httpx.AsyncClient, login: Login,
                 auth: tuple[str, str] | None = DEMO_AUTH, **overrides: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": login.code,
            "redirect_uri": login.redirect_uri, "code_verifier": login.verifier, **overrides}
    if auth is None:
        data.setdefault("client_id", login.client_id)
    return await token_request(http, data, auth)


async def token_request(http: httpx.AsyncClient, data: dict[str, str],
                        auth: tuple[str, str] | None = DEMO_AUTH) -> httpx.Response:
    if auth is None:
        return await http.post("/idp/token", data=data)
    return await http.post("/idp/token", data=data, auth=auth)


async def tokens_for(http: httpx.AsyncClient, subject: str, scope: str = "openid scope_all",
                     **overrides: str | None) -> dict[str, Any]:
    """The token response of a complete code flow as ``subject``."""
    response = await redeem(http, await log_in(http, subject, scope, **overrides))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(http: httpx.AsyncClient, refresh_token: str,
                  auth: tuple[str, str] | None = DEMO_AUTH, **extra: str) -> httpx.Response:
    return await token_request(http, {"grant_type": "refresh_token",
                                      "refresh_token": refresh_token, **extra}, auth)


async def verified(http: httpx.AsyncClient, token: str, audience: str = AUDIENCE) -> dict[str, Any]:
    """The token's claims, checked against the key the provider publishes at /idp/jwks."""
    keys = (await http.get("/idp/jwks")).json()["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    [key] = [k for k in keys if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=["RS256"], audience=audience,
                                        issuer=ISSUER, options={"verify_at_hash": False})
    return claims


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error: str = response.json()["error"]
    return error
