"""Typed dependencies shared by the routes.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in its
thread pool, two thread hops per request that starved PostgreSQL of CPU under
load (bench/FINDINGS.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from auth.bearer import Authenticator
from auth.principal import Principal
from auth.tokens import InvalidToken, bearer_challenge
from service.access import Access, emergency_request
from service.errors import BadRequest, Unauthorized
from service.settings import Settings
from storage.blobs import BlobStore
from storage.db import Database


async def refuse_nul_in_url(request: Request) -> None:
    """400 for a NUL character in the URL's path or query (``%00``), on every route: no id,
    parameter or page of Carnet holds one, and PostgreSQL cannot even bind it as text (an id
    such as ``Patient/a%00`` reached it and answered 500)."""
    if "\x00" in request.scope["path"]:
        raise BadRequest("the URL's path contains a NUL character (%00)")
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise BadRequest(f"parameter {name!r} contains a NUL character",
                             expression=name.partition(":")[0])


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_blob_store(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blob_store
    return blobs


async def get_principal(request: Request) -> Principal:
    """The caller behind ``Authorization: Bearer``; 401 for anything that is not a good token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        if not scheme:
            raise InvalidToken("no bearer token: send Authorization: Bearer <access token>")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("the Authorization header must be 'Bearer <access token>'")
        authenticator: Authenticator = request.app.state.authenticator
        return await authenticator.principal(token.strip())
    except InvalidToken as exc:
        challenge = {"WWW-Authenticate": bearer_challenge(exc.reason, "carnet")}
        raise Unauthorized(f"invalid token: {exc.reason}", headers=challenge) from exc


async def get_access(request: Request,
                     principal: Annotated[Principal, Depends(get_principal)]) -> Access:
    """The caller, their declared access mode, and where their audit records go."""
    settings: Settings = request.app.state.settings
    return Access(principal, request.app.state.database,
                  getattr(request.app.state, "audit_writer", None),
                  emergency=emergency_request(request),
                  emergency_seconds=settings.emergency_access_seconds,
                  operators=settings.operator_clients)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AccessDep = Annotated[Access, Depends(get_access)]
