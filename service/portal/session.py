"""The portal's login: an OAuth client of the issuer, with its session in the database.

The portal is a backend-for-frontend: the browser holds only an opaque,
``HttpOnly`` session cookie; the patient's access and refresh tokens stay in
``storage.portal``. Login is the authorization code flow with PKCE (S256) at
the issuer Carnet trusts (the embedded mock Pro Santé Connect by default);
the code is redeemed server-side, and the pending session's key is replaced
by a new one at login so that a key planted before login opens nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from auth import pkce
from auth.bearer import Authenticator
from auth.principal import Patient
from auth.tokens import InvalidToken
from service.portal.fhir import PortalFhir, display_name
from service.settings import Settings
from storage import oauth, portal
from storage.db import Database
from storage.oauth import OAuthClient
from storage.portal import PortalSession

CLIENT_ID = "carnet-portal"
COOKIE = "carnet_portal"
SCOPE = "openid offline_access patient/*.cruds"
LOGIN_SECONDS = 600        # how long a started login may take
REFRESH_MARGIN = 60        # refresh the access token this long before it expires
REFRESH_CLAIM_SECONDS = 10  # another request waits at most this long for a refresh


class LoginFailed(Exception):
    """The login could not complete; the message is for the patient (French)."""


class IssuerUnavailable(Exception):
    """The issuer could not be reached or failed: nothing was decided."""


class NotLoggedIn(Exception):
    """No session, an expired one, or tokens the issuer no longer honours."""


def _micros() -> int:
    return time.time_ns() // 1000


def _seconds(micros: int) -> int:
    return micros // 1_000_000


def portal_client(settings: Settings) -> OAuthClient:
    """How the portal is registered at the embedded issuer (at start, idempotently)."""
    secret = settings.portal_client_secret
    return OAuthClient(
        client_id=CLIENT_ID, name="Carnet — espace patient",
        secret_hash=oauth.secret_hash(secret.get_secret_value()) if secret else None,
        redirect_uris=(redirect_uri(settings),), allowed_scopes=SCOPE,
        grant_types=("authorization_code", "refresh_token"))


async def register_client(db: Database, settings: Settings) -> None:
    async with db.write() as conn:
        await oauth.put_client(conn, portal_client(settings))


def redirect_uri(settings: Settings) -> str:
    return f"{settings.portal_url}/callback"


@dataclass(frozen=True)
class Login:
    """A started login: the cookie to set and where to send the browser."""

    key: str
    location: str
    max_age: int


@dataclass(frozen=True)
class Session:
    """A logged-in patient, with a usable access token."""

    key_hash: str
    csrf: str
    patient_id: str | None
    display_name: str
    access_token: str

    def csrf_matches(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf.encode(),
                                                   (given or "").encode())


class PortalAuth:
    """Login, logout and fresh tokens for the portal's pages."""

    def __init__(self, db: Database, settings: Settings, issuer: httpx.AsyncClient,
                 api: httpx.AsyncClient, authenticator: Authenticator) -> None:
        self._db = db
        self._authenticator = authenticator
        self._settings = settings
        self._issuer = issuer  # the issuer's endpoints (in-process when it is embedded)
        self._api = api        # Carnet's own FHIR API, in-process

    async def begin_login(self) -> Login:
        key, state = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        verifier, challenge = pkce.new_pair()
        now = _micros()
        async with self._db.write() as conn:
            await portal.purge_expired(conn, now)
            await portal.start(conn, key, csrf=secrets.token_urlsafe(24), login_state=state,
                               code_verifier=verifier, now=now,
                               expires_at=now + LOGIN_SECONDS * 1_000_000)
        query = {"response_type": "code", "client_id": CLIENT_ID,
                 "redirect_uri": redirect_uri(self._settings), "scope": SCOPE, "state": state,
                 "code_challenge": challenge, "code_challenge_method": "S256"}
        return Login(key, f"{self._settings.effective_issuer}/authorize?{urlencode(query)}",
                     LOGIN_SECONDS)

    async def finish_login(self, key: str | None, params: dict[str, str]) -> Login:
        """Redeem the code for the pending login ``key``; the returned key replaces it."""
        if "error" in params:
            raise LoginFailed(_ISSUER_ERRORS.get(params["error"],
                                                 "La connexion a été refusée."))
        async with self._db.read() as conn:
            pending = await portal.find(conn, key, _micros()) if key else None
        if (pending is None or pending.login_state is None
                or not hmac.compare_digest(pending.login_state.encode(),
                                           params.get("state", "").encode())):
            raise LoginFailed("Cette connexion a expiré ou n'a pas été demandée depuis ce "
                              "navigateur. Recommencez depuis la page d'accueil.")
        assert key is not None and pending.code_verifier is not None
        try:
            tokens = await self._token_request({
                "grant_type": "authorization_code", "code": params.get("code", ""),
                "redirect_uri": redirect_uri(self._settings),
                "code_verifier": pending.code_verifier})
        except IssuerUnavailable as exc:
            raise LoginFailed("Le fournisseur d'identité ne répond pas. Réessayez dans un "
                              "instant.") from exc
        if tokens is None:
            raise LoginFailed("Le fournisseur d'identité n'a pas confirmé la connexion.")
        if not await self._is_patient(tokens["access_token"]):
            await self._revoke(tokens.get("refresh_token"))
            raise LoginFailed(_ISSUER_ERRORS["invalid_scope"])
        patient_id, name = await self._whoami(tokens["access_token"])
        new_key, now = secrets.token_urlsafe(32), _micros()
        lifetime = self._settings.portal_session_seconds
        async with self._db.write() as conn:
            done = await portal.log_in(
                conn, key, new_key, csrf=secrets.token_urlsafe(24), patient_id=patient_id,
                display_name=name, access_token=tokens["access_token"],
                access_expires_at=_expiry(tokens, now), refresh_token=tokens.get("refresh_token"),
                expires_at=now + lifetime * 1_000_000)
        if not done:
            raise LoginFailed("Cette connexion a déjà été utilisée. Recommencez.")
        return Login(new_key, f"{self._settings.portal_url}/documents", lifetime)

    async def current(self, key: str | None) -> Session:
        """The session behind the cookie, its access token refreshed when about to expire."""
        for _ in range(REFRESH_CLAIM_SECONDS * 10):
            async with self._db.read() as conn:
                found = await portal.find(conn, key, _micros()) if key else None
            if found is None or not found.logged_in:
                raise NotLoggedIn
            now = _micros()
            assert found.access_expires_at is not None and found.access_token is not None
            if found.access_expires_at - now > REFRESH_MARGIN * 1_000_000:
                return _session(found, found.access_token)
            refreshed = await self._refresh(found, now)
            if refreshed is not None:
                return refreshed
            if found.access_expires_at > now:  # another request refreshes; this one still works
                return _session(found, found.access_token)
            await asyncio.sleep(0.1)
        raise NotLoggedIn

    async def _refresh(self, found: PortalSession, now: int) -> Session | None:
        """None when another request refreshes (or the issuer is unreachable for now)."""
        assert found.access_token is not None
        async with self._db.write() as conn:
            claimed = await portal.claim_refresh(
                conn, found.key_hash, holding=found.access_token, now=now,
                until=now + REFRESH_CLAIM_SECONDS * 1_000_000)
        if not claimed:
            return None
        try:
            tokens = (await self._token_request({"grant_type": "refresh_token",
                                                 "refresh_token": found.refresh_token})
                      if found.refresh_token else None)
        except IssuerUnavailable:
            async with self._db.write() as conn:
                await portal.release_refresh(conn, found.key_hash)
            return None
        if tokens is None:  # revoked, expired or replayed: the patient logs in again
            async with self._db.write() as conn:
                await portal.end(conn, found.key_hash)
            raise NotLoggedIn
        async with self._db.write() as conn:
            await portal.store_tokens(conn, found.key_hash, access_token=tokens["access_token"],
                                      access_expires_at=_expiry(tokens, _micros()),
                                      refresh_token=tokens.get("refresh_token")
                                      or found.refresh_token)
        return _session(found, tokens["access_token"])

    async def logout(self, key: str | None) -> None:
        """End the session here and revoke its tokens at the issuer: the refresh token, and
        the access token (refused by jti until its exp)."""
        async with self._db.write() as conn:
            found = await portal.find(conn, key, _micros()) if key else None
            if found is not None:
                await portal.end(conn, found.key_hash)
        if found is not None:
            await self._revoke(found.refresh_token)
            await self._revoke(found.access_token, "access_token")

    async def _revoke(self, token: str | None, hint: str = "refresh_token") -> None:
        """Best effort: the session is gone here whatever the issuer answers."""
        if token:
            with contextlib.suppress(IssuerUnavailable):
                await self._issuer_post("revoke", {"token": token, "token_type_hint": hint})

    async def _is_patient(self, access_token: str) -> bool:
        """The same verification as the API's: a professional's e-CPS has no place here."""
        try:
            return isinstance(await self._authenticator.principal(access_token), Patient)
        except InvalidToken:
            return False

    async def _token_request(self, form: dict[str, str | None]) -> dict[str, Any] | None:
        """The issuer's token endpoint; None when it refuses (the reason is not the patient's)."""
        answer = await self._issuer_post("token", form)
        if answer.status_code >= 500 or answer.status_code == 429:  # 429: for now, not a no
            raise IssuerUnavailable(f"the token endpoint answered {answer.status_code}")
        if answer.status_code != 200:
            return None
        body: dict[str, Any] = answer.json()
        return body if isinstance(body.get("access_token"), str) else None

    async def _issuer_post(self, endpoint: str, form: dict[str, str | None]) -> httpx.Response:
        data = {k: v for k, v in form.items() if v is not None}
        secret = self._settings.portal_client_secret
        if secret is None:
            data["client_id"] = CLIENT_ID
        auth = ((CLIENT_ID, secret.get_secret_value()) if secret is not None
                else httpx.USE_CLIENT_DEFAULT)
        try:
            return await self._issuer.post(f"{self._settings.issuer_backchannel}/{endpoint}",
                                           data=data, auth=auth)
        except httpx.HTTPError as exc:
            raise IssuerUnavailable(str(exc)) from exc

    async def _whoami(self, access_token: str) -> tuple[str | None, str]:
        """The patient's record in Carnet (their token finds only their own) and name."""
        bundle = await PortalFhir(self._api, access_token).get("Patient", {"_count": "1"})
        entries = bundle.get("entry") or []
        if not entries:
            return None, ""
        patient = entries[0]["resource"]
        return patient["id"], display_name(patient)


def _expiry(tokens: dict[str, Any], now: int) -> int:
    lifetime = tokens.get("expires_in")
    seconds = lifetime if isinstance(lifetime, int) and lifetime > 0 else REFRESH_MARGIN
    return now + seconds * 1_000_000


def _session(found: PortalSession, access_token: str) -> Session:
    return Session(found.key_hash, found.csrf, found.patient_id, found.display_name or "",
                   access_token)


_ISSUER_ERRORS = {
    "invalid_scope": "Cet espace est réservé aux patients : connectez-vous avec votre "
                     "identité de patient.",
    "access_denied": "La connexion a été annulée.",
}
