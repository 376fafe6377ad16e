"""The identity provider's state: registered clients, authorization codes, refresh tokens,
and the access tokens revoked before their ``exp`` (by ``jti``).

Kept in the database, not in process memory, so that any API process (or a
separate ``carnet idp``) can redeem a code another one issued. Codes and
refresh tokens are stored as SHA-256 hashes: a copy of the table does not
yield usable credentials. Redeeming is a conditional UPDATE, so that two
concurrent redemptions of one code cannot both succeed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    String,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.tables import table_of
from storage.upsert import conflict_insert, put_row


class OAuthClientRow(SQLModel, table=True):
    __tablename__ = "oauth_client"

    client_id: str = Field(sa_column=Column(String(64), primary_key=True))
    name: str = Field(sa_column=Column(String(256), nullable=False))
    secret_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    redirect_uris: str = Field(sa_column=Column(Text, nullable=False))  # JSON array
    allowed_scopes: str = Field(sa_column=Column(Text, nullable=False))
    grant_types: str = Field(sa_column=Column(Text, nullable=False))  # space-separated


class OAuthCodeRow(SQLModel, table=True):
    __tablename__ = "oauth_code"

    code_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))
    code_challenge: str = Field(sa_column=Column(String(128), nullable=False))
    subject: str = Field(sa_column=Column(String(128), nullable=False))
    scope: str = Field(sa_column=Column(Text, nullable=False))
    nonce: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    used: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))


class RefreshTokenRow(SQLModel, table=True):
    __tablename__ = "oauth_refresh_token"
    __table_args__ = (Index("ix_refresh_family", "family"),)

    token_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    family: str = Field(sa_column=Column(String(64), nullable=False))
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    subject: str = Field(sa_column=Column(String(128), nullable=False))
    scope: str = Field(sa_column=Column(Text, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    used: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    revoked: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))


CLIENTS = table_of(OAuthClientRow)
CODES = table_of(OAuthCodeRow)
REFRESH_TOKENS = table_of(RefreshTokenRow)


def secret_hash(secret: str) -> str:
    """SHA-256 is enough here: codes, tokens and client secrets are random, not passwords."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    name: str
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    allowed_scopes: str
    grant_types: tuple[str, ...]

    @property
    def confidential(self) -> bool:
        return self.secret_hash is not None


@dataclass(frozen=True)
class Grant:
    """What a code or refresh token was issued for."""

    client_id: str
    subject: str
    scope: str
    nonce: str | None = None
    redirect_uri: str | None = None
    code_challenge: str | None = None
    family: str | None = None


async def put_client(conn: AsyncConnection, client: OAuthClient) -> None:
    values = {"name": client.name, "secret_hash": client.secret_hash,
              "redirect_uris": orjson.dumps(list(client.redirect_uris)).decode(),
              "allowed_scopes": client.allowed_scopes,
              "grant_types": " ".join(client.grant_types)}
    await put_row(conn, CLIENTS, {"client_id": client.client_id}, values)


async def client_by_id(conn: AsyncConnection, client_id: str) -> OAuthClient | None:
    row = (await conn.execute(select(CLIENTS).where(CLIENTS.c.client_id == client_id))).first()
    if row is None:
        return None
    m = row._mapping
    return OAuthClient(m["client_id"], m["name"], m["secret_hash"],
                       tuple(orjson.loads(m["redirect_uris"])), m["allowed_scopes"],
                       tuple(m["grant_types"].split()))


async def store_code(conn: AsyncConnection, code: str, grant: Grant, expires_at: int) -> None:
    await conn.execute(insert(CODES).values(
        code_hash=secret_hash(code), client_id=grant.client_id, subject=grant.subject,
        scope=grant.scope, nonce=grant.nonce, redirect_uri=grant.redirect_uri or "",
        code_challenge=grant.code_challenge or "", expires_at=expires_at, used=False))


async def redeem_code(conn: AsyncConnection, code: str, now: int) -> Grant | None:
    """The code's grant if it exists, is unexpired and was not redeemed before; once only."""
    key = secret_hash(code)
    claimed = await conn.execute(update(CODES).where(
        CODES.c.code_hash == key, CODES.c.used.is_(False), CODES.c.expires_at > now,
    ).values(used=True))
    if claimed.rowcount != 1:
        return None
    m = (await conn.execute(select(CODES).where(CODES.c.code_hash == key))).one()._mapping
    return Grant(m["client_id"], m["subject"], m["scope"], m["nonce"], m["redirect_uri"],
                 m["code_challenge"])


async def store_refresh_token(conn: AsyncConnection, token: str, grant: Grant,
                              expires_at: int) -> None:
    assert grant.family is not None
    await conn.execute(insert(REFRESH_TOKENS).values(
        token_hash=secret_hash(token), family=grant.family, client_id=grant.client_id,
        subject=grant.subject, scope=grant.scope, expires_at=expires_at,
        used=False, revoked=False))


async def redeem_refresh_token(conn: AsyncConnection, token: str,
                               now: int) -> tuple[Grant | None, bool]:
    """(grant, replayed): a refresh token works once; a replay revokes its whole family."""
    key = secret_hash(token)
    claimed = await conn.execute(update(REFRESH_TOKENS).where(
        REFRESH_TOKENS.c.token_hash == key, REFRESH_TOKENS.c.used.is_(False),
        REFRESH_TOKENS.c.revoked.is_(False), REFRESH_TOKENS.c.expires_at > now,
    ).values(used=True))
    row = (await conn.execute(select(REFRESH_TOKENS)
                              .where(REFRESH_TOKENS.c.token_hash == key))).first()
    if row is None:
        return None, False
    m = row._mapping
    if claimed.rowcount != 1:
        replayed = bool(m["used"]) and not m["revoked"]
        if replayed:
            await revoke_family(conn, m["family"])
        return None, replayed
    return Grant(m["client_id"], m["subject"], m["scope"], family=m["family"]), False


async def revoke_refresh_token(conn: AsyncConnection, token: str, client_id: str) -> None:
    """RFC 7009: revoking one token revokes the family it belongs to; unknown tokens are fine."""
    row = (await conn.execute(select(REFRESH_TOKENS.c.family).where(
        REFRESH_TOKENS.c.token_hash == secret_hash(token),
        REFRESH_TOKENS.c.client_id == client_id))).first()
    if row is not None:
        await revoke_family(conn, row[0])


class RevokedAccessTokenRow(SQLModel, table=True):
    """An access token revoked before it expires (a logout): the resource server refuses its
    ``jti`` until ``expires_at`` (epoch seconds), after which the row is pruned."""

    __tablename__ = "revoked_access_token"

    jti: str = Field(sa_column=Column(String(64), primary_key=True))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))


REVOKED_ACCESS_TOKENS = table_of(RevokedAccessTokenRow)


async def revoke_access_token(conn: AsyncConnection, jti: str, expires_at: int,
                              now: int) -> None:
    """Refuse ``jti`` from now on; rows of tokens expired anyway are pruned on the way."""
    await conn.execute(delete(REVOKED_ACCESS_TOKENS)
                       .where(REVOKED_ACCESS_TOKENS.c.expires_at < now))
    await conn.execute(conflict_insert(conn, REVOKED_ACCESS_TOKENS)
                       .values(jti=jti, expires_at=expires_at).on_conflict_do_nothing())


async def access_token_revoked(conn: AsyncConnection, jti: str) -> bool:
    return (await conn.execute(select(REVOKED_ACCESS_TOKENS.c.jti)
                               .where(REVOKED_ACCESS_TOKENS.c.jti == jti))).first() is not None


async def revoke_family(conn: AsyncConnection, family: str) -> None:
    await conn.execute(update(REFRESH_TOKENS).where(REFRESH_TOKENS.c.family == family)
                       .values(revoked=True))
