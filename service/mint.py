"""Tokens for scripts and harnesses (``carnet token``), signed with the provider's own keys.

They are what the identity provider would issue after a login or a client-credentials
grant, checked against the same directory and client registrations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from auth.idp.authorize import scope_for_app, scope_for_subject
from auth.idp.claims import mint_access_token, mint_app_token, subject_claims
from auth.keys import KeyStore
from auth.scopes import ScopeError, ScopeSet
from service.app import idp_config
from service.settings import Settings
from storage import oauth
from storage.db import Database

T = TypeVar("T")


class CannotMint(ValueError):
    pass


def _scope(text: str) -> ScopeSet:
    try:
        return ScopeSet.parse(text)
    except ScopeError as exc:
        raise CannotMint(str(exc)) from exc


async def lookup(settings: Settings, find: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """One read against the configured database (migrated first), for a command."""
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        await db.migrate()
        async with db.read() as conn:
            return await find(conn)
    finally:
        await db.dispose()


async def user_token(settings: Settings, subject: str, scope: str) -> str:
    config = idp_config(settings, KeyStore(settings.effective_keys_dir))
    granted = scope_for_subject(_scope(scope), subject)
    identity = await lookup(settings, lambda conn: subject_claims(conn, subject))
    if identity is None:
        raise CannotMint(f"{subject} is not in the directory (seed it with carnet seed --demo)")
    return mint_access_token(config, identity, "carnet-cli", str(granted)).token


async def app_token(settings: Settings, client_id: str, scope: str) -> str:
    config = idp_config(settings, KeyStore(settings.effective_keys_dir))
    client = await lookup(settings, lambda conn: oauth.client_by_id(conn, client_id))
    if client is None:
        raise CannotMint(f"no registered app has client id {client_id!r}")
    system = scope_for_app(_scope(scope), ScopeSet.parse(client.allowed_scopes))
    if not system.resource_scopes:
        raise CannotMint(f"none of the scopes {scope!r} is allowed for {client_id}")
    return mint_app_token(config, client_id, str(system)).token
