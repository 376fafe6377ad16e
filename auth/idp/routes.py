"""HTTP endpoints of the mock Pro Santé Connect provider (OIDC discovery, JWKS, code flow).

Errors follow OAuth 2.0 (``{"error": ..., "error_description": ...}``), not
FHIR: these endpoints speak to OAuth clients. The router is mounted by the
Carnet service at ``/idp`` and by ``carnet idp`` on its own; both put an
``IdpConfig`` and a ``Database`` on ``app.state``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.bearer import Authenticator
from auth.idp import grants
from auth.idp.authorize import (
    PARAMETERS,
    RedirectError,
    UntrustedRequest,
    parse_request,
    scope_for_subject,
    with_query,
)
from auth.idp.claims import subject_claims
from auth.idp.config import CODE_LIFETIME_SECONDS, IdpConfig
from auth.idp.grants import OAuthError
from auth.idp.pages import error_page, login_page
from auth.principal import PSC_ALL
from auth.throttle import Throttle, client_address
from auth.tokens import InvalidToken, JwksCache, TokenVerifier, bearer_challenge
from storage import directory, oauth, ratelimits
from storage.db import Database
from storage.oauth import Grant
from storage.ratelimits import Slot

router = APIRouter(prefix="/idp", tags=["identity provider (mock Pro Santé Connect)"])
_CSRF_COOKIE = "idp_csrf"
_MAX_FORM_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _config(request: Request) -> IdpConfig:
    config: IdpConfig = request.app.state.idp_config
    return config


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise OAuthError("invalid_request", "request body too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "the form body cannot be parsed") from exc
    form = dict(pairs)
    if len(form) != len(pairs):
        raise OAuthError("invalid_request", "a parameter is repeated")
    if _holds_nul(pairs):
        raise OAuthError("invalid_request", "a parameter contains a NUL character")
    return form


def _holds_nul(pairs: list[tuple[str, str]]) -> bool:
    """No OAuth parameter holds a NUL, and PostgreSQL cannot bind one (a client_id did:
    500); the API refuses them app-wide, but ``carnet idp`` runs without the API."""
    return any("\x00" in name or "\x00" in value for name, value in pairs)


def _oauth_error(exc: OAuthError, retry_after: int | None = None) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="carnet-idp"'
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": exc.error, "error_description": exc.description},
                        status_code=exc.status, headers=headers)


async def _take_slot(request: Request, scope: str, limit: int, *key: str) -> Slot | None:
    """This request's slot under a rate limit (auth/throttle.py); None when it is off."""
    return await Throttle(scope, limit).take(_database(request), *key, client_address(request))


@router.get("/.well-known/openid-configuration", summary="OIDC discovery")
async def discovery(request: Request) -> JSONResponse:
    config = _config(request)
    return JSONResponse({
        "issuer": config.issuer,
        "authorization_endpoint": config.endpoint("authorize"),
        "token_endpoint": config.endpoint("token"),
        "userinfo_endpoint": config.endpoint("userinfo"),
        "jwks_uri": config.endpoint("jwks"),
        "revocation_endpoint": config.endpoint("revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                  "none"],
        "acr_values_supported": ["eidas1"],
        "scopes_supported": ["openid", PSC_ALL, "offline_access", "patient/*.rs",
                             "user/*.cruds", "system/*.cruds"],
        "claims_supported": ["sub", "SubjectNameID", "SubjectRefPro", "ins", "family_name",
                             "given_name", "preferred_username", "acr"],
        "authorization_response_iss_parameter_supported": True,
    })


@router.get("/jwks", summary="the provider's public signing keys")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(_config(request).keys.jwks(), headers={"Cache-Control": "max-age=60"})


def _untrusted(exc: UntrustedRequest) -> HTMLResponse:
    return HTMLResponse(error_page(str(exc)), status_code=400)


@router.get("/authorize", summary="login page (authorization code flow with PKCE)")
async def authorize_page(request: Request) -> Response:
    config = _config(request)
    items = request.query_params.multi_items()
    params = dict(items)
    if len(params) != len(items):  # RFC 6749 3.1: which redirect_uri would be meant?
        return _untrusted(UntrustedRequest("a parameter is repeated"))
    if _holds_nul(items):
        return _untrusted(UntrustedRequest("a parameter contains a NUL character"))
    async with _database(request).read() as conn:
        try:
            auth_request = await parse_request(conn, params)
        except UntrustedRequest as exc:
            return _untrusted(exc)
        except RedirectError as exc:
            return RedirectResponse(exc.location(config.issuer), status_code=303)
        professionals = await directory.all_professionals(conn)
        patients = await directory.all_identities(conn)
    csrf = secrets.token_urlsafe(24)
    response = HTMLResponse(login_page(auth_request, csrf, professionals, patients),
                            headers={**_NO_STORE, "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'none'; "
                                     "style-src 'unsafe-inline'; form-action 'self'"})
    response.set_cookie(_CSRF_COOKIE, csrf, httponly=True, samesite="lax", path="/idp",
                        secure=config.secure_cookies, max_age=600)
    return response


@router.post("/authorize", summary="log in as the chosen identity")
async def authorize_login(request: Request) -> Response:
    config = _config(request)
    slot = await _take_slot(request, "login", config.login_rate_limit)
    if slot is not None and not slot.allowed:
        return HTMLResponse(error_page(f"too many refused logins from this address; try "
                                       f"again in {slot.retry_after} s"), status_code=429,
                            headers={**_NO_STORE, "Retry-After": str(slot.retry_after)})
    try:
        form = await _form(request)
    except OAuthError as exc:
        return HTMLResponse(error_page(exc.description), status_code=400)
    cookie = request.cookies.get(_CSRF_COOKIE, "")
    # Compared as bytes: compare_digest raises TypeError on non-ASCII str.
    if not cookie or not hmac.compare_digest(cookie.encode(), form.get("csrf", "").encode()):
        return HTMLResponse(error_page("the login form expired or did not come from this "
                                       "page; start again from the application"),
                            status_code=403)
    async with _database(request).write() as conn:
        try:
            auth_request = await parse_request(conn, {k: form[k] for k in PARAMETERS
                                                      if k in form})
        except UntrustedRequest as exc:
            return _untrusted(exc)
        except RedirectError as exc:
            return RedirectResponse(exc.location(config.issuer), status_code=303)
        subject = form.get("subject", "")
        if await subject_claims(conn, subject) is None:
            return HTMLResponse(error_page("unknown identity"), status_code=400)
        scope = scope_for_subject(auth_request.scope, subject)
        if not scope.resource_scopes and not scope.other:
            error = RedirectError(auth_request.redirect_uri, "invalid_scope",
                                  "none of the requested scopes applies to this identity",
                                  auth_request.state)
            return RedirectResponse(error.location(config.issuer), status_code=303)
        code = secrets.token_urlsafe(32)
        await oauth.store_code(conn, code, Grant(
            auth_request.client.client_id, subject, str(scope), auth_request.nonce,
            auth_request.redirect_uri, auth_request.code_challenge),
            grants.micros_from_now(CODE_LIFETIME_SECONDS))
        if slot is not None:  # a login that succeeds does not count
            await ratelimits.give_back(conn, slot.bucket, slot.window_start)
    query = {"code": code, "iss": config.issuer}
    if auth_request.state is not None:
        query["state"] = auth_request.state
    response = RedirectResponse(with_query(auth_request.redirect_uri, query), status_code=303)
    response.delete_cookie(_CSRF_COOKIE, path="/idp")
    return response


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    """client_secret_basic (RFC 6749 2.3.1: both parts form-encoded) or client_secret_post."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401)
        client_id, secret = unquote(client_id), unquote(secret)
        if "\x00" in client_id or "\x00" in secret:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401)
        if form.get("client_id") not in (None, client_id):
            raise OAuthError("invalid_request", "client_id differs from the credentials")
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")


@router.post("/token", summary="token endpoint")
async def token(request: Request) -> Response:
    try:
        form = await _form(request)
        client_id, secret = _client_credentials(request, form)
    except OAuthError as exc:
        return _oauth_error(exc)
    config = _config(request)
    # Only a failed client authentication counts: codes and refresh tokens are 256-bit
    # random values no rate makes guessable, while a client secret may be weak.
    slot = await _take_slot(request, "token", config.token_rate_limit, client_id or "")
    if slot is not None and not slot.allowed:
        return _oauth_error(OAuthError("slow_down", "too many failed client authentications "
                                       f"from this address; retry in {slot.retry_after} s",
                                       429), retry_after=slot.retry_after)
    failure: OAuthError | None = None
    async with _database(request).write() as conn:
        # An error still commits: a code or refresh token presented once stays spent,
        # and a replayed refresh token's family stays revoked.
        try:
            body = await _grant(conn, config, form, client_id, secret)
        except OAuthError as exc:
            failure = exc
        if slot is not None and (failure is None or failure.status != 401):
            await ratelimits.give_back(conn, slot.bucket, slot.window_start)
    if failure is not None:
        return _oauth_error(failure)
    return JSONResponse(body, headers=_NO_STORE)


async def _grant(conn: AsyncConnection, config: IdpConfig, form: dict[str, str],
                 client_id: str | None, secret: str | None) -> dict[str, Any]:
    client = await grants.authenticate_client(conn, client_id, secret)
    grant_type = form.get("grant_type", "")
    if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
    if grant_type not in client.grant_types:
        raise OAuthError("unauthorized_client", f"this client may not use {grant_type}")
    if grant_type == "authorization_code":
        return await grants.authorization_code(conn, config, client, form)
    if grant_type == "refresh_token":
        return await grants.refresh_token(conn, config, client, form)
    return grants.client_credentials(config, client, form)


@router.post("/revoke", summary="revoke a refresh token (RFC 7009)")
async def revoke(request: Request) -> Response:
    try:
        form = await _form(request)
        client_id, secret = _client_credentials(request, form)
        token = form.get("token", "")
        async with _database(request).write() as conn:
            client = await grants.authenticate_client(conn, client_id, secret)
            if token.count(".") == 2:  # a JWT: one of our access tokens, whatever the hint
                await _revoke_access_token(request, conn, token, client.client_id)
            else:
                await oauth.revoke_refresh_token(conn, token, client.client_id)
    except OAuthError as exc:
        return _oauth_error(exc)
    return Response(status_code=200, headers=_NO_STORE)


async def _revoke_access_token(request: Request, conn: AsyncConnection, token: str,
                               client_id: str) -> None:
    """RFC 7009 for an access token issued to this client: its jti is refused until its exp
    by every resource server reading this database. A token that is not ours, already
    expired or issued to another client is answered 200 all the same, and left alone."""
    try:
        claims = await _local_verifier(request).verify(token)
    except InvalidToken:
        return
    if claims.get("client_id") != client_id:
        return
    await oauth.revoke_access_token(conn, str(claims["jti"]), int(claims["exp"]),
                                    int(time.time()))
    resource_server: Authenticator | None = getattr(request.app.state, "authenticator", None)
    if resource_server is not None:  # the API in this process (the embedded provider)
        resource_server.forget(token)


def _local_verifier(request: Request) -> TokenVerifier:
    """The provider checks its own access tokens against its own key set, without a network hop."""
    state = request.app.state
    verifier: TokenVerifier | None = getattr(state, "idp_verifier", None)
    if verifier is None:
        config = _config(request)
        transport = httpx.MockTransport(lambda _: httpx.Response(200, json=config.keys.jwks()))
        verifier = TokenVerifier(issuer=config.issuer, audience=config.audience,
                                 keys=JwksCache(config.endpoint("jwks"),
                                                httpx.AsyncClient(transport=transport)))
        state.idp_verifier = verifier
    return verifier


@router.get("/userinfo", summary="userinfo")
@router.post("/userinfo", summary="userinfo", operation_id="userinfo_post")  # ids are unique
async def userinfo(request: Request) -> Response:
    scheme, _, token_text = request.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token_text:
            raise InvalidToken("a bearer access token is required")
        claims = await _local_verifier(request).verify(token_text.strip())
    except InvalidToken as exc:
        return _invalid_token(exc.reason)
    subject = (f"ps:{claims['SubjectNameID'][1:]}" if "SubjectNameID" in claims
               else f"ins:{claims['ins']['value']}" if "ins" in claims else None)
    async with _database(request).read() as conn:
        if await oauth.access_token_revoked(conn, str(claims["jti"])):
            return _invalid_token("the token was revoked")
        identity = await subject_claims(conn, subject) if subject is not None else None
    if subject is None:
        return JSONResponse({"sub": claims["sub"]}, headers=_NO_STORE)
    if identity is None:
        return _invalid_token("unknown user")
    return JSONResponse(identity, headers=_NO_STORE)


def _invalid_token(reason: str) -> JSONResponse:
    """RFC 6750 3: every 401 names the scheme and the error in WWW-Authenticate."""
    return JSONResponse({"error": "invalid_token", "error_description": reason},
                        status_code=401,
                        headers={"WWW-Authenticate": bearer_challenge(reason)})
