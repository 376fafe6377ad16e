"""The patient portal's sessions, kept in the database and not in process memory.

Any API process serves any session, and a restart logs nobody out. The
cookie carries a random session key; the table holds only its SHA-256 hash,
so that a copy of the table opens no session. The tokens the portal obtained
from the identity provider stay here, server-side, and never reach the browser.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Index, String, Text, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.oauth import secret_hash
from storage.tables import table_of


class PortalSessionRow(SQLModel, table=True):
    __tablename__ = "portal_session"
    __table_args__ = (Index("ix_portal_session_expiry", "expires_at"),)

    key_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    csrf: str = Field(sa_column=Column(String(64), nullable=False))
    # While the login is pending: the authorization request's state and PKCE verifier.
    login_state: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    code_verifier: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    # Once logged in: the patient's tokens, their record (none for an identity Carnet does
    # not hold yet) and their name for the page header.
    patient_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    display_name: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    access_token: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    access_expires_at: int | None = Field(default=None, sa_column=Column(BigInteger,
                                                                         nullable=True))
    refresh_token: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # A refresh in progress: other requests wait for it instead of spending the same token.
    refreshing_until: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))


SESSIONS = table_of(PortalSessionRow)


@dataclass(frozen=True)
class PortalSession:
    key_hash: str
    csrf: str
    login_state: str | None
    code_verifier: str | None
    patient_id: str | None
    display_name: str | None
    access_token: str | None
    access_expires_at: int | None
    refresh_token: str | None
    refreshing_until: int
    expires_at: int

    @property
    def logged_in(self) -> bool:
        return self.access_token is not None


def key_hash(key: str) -> str:
    return secret_hash(key)


async def start(conn: AsyncConnection, key: str, *, csrf: str, login_state: str,
                code_verifier: str, now: int, expires_at: int) -> None:
    await conn.execute(insert(SESSIONS).values(
        key_hash=key_hash(key), csrf=csrf, login_state=login_state, code_verifier=code_verifier,
        refreshing_until=0, created_at=now, expires_at=expires_at))


async def find(conn: AsyncConnection, key: str, now: int) -> PortalSession | None:
    row = (await conn.execute(select(SESSIONS).where(
        SESSIONS.c.key_hash == key_hash(key), SESSIONS.c.expires_at > now))).first()
    if row is None:
        return None
    m = row._mapping
    return PortalSession(m["key_hash"], m["csrf"], m["login_state"], m["code_verifier"],
                         m["patient_id"], m["display_name"], m["access_token"],
                         m["access_expires_at"], m["refresh_token"], m["refreshing_until"],
                         m["expires_at"])


async def log_in(conn: AsyncConnection, pending_key: str, new_key: str, *, csrf: str,
                 patient_id: str | None, display_name: str, access_token: str,
                 access_expires_at: int, refresh_token: str | None, expires_at: int) -> bool:
    """The pending login becomes a session under a new key (no session fixation); once only."""
    done = await conn.execute(update(SESSIONS).where(
        SESSIONS.c.key_hash == key_hash(pending_key), SESSIONS.c.login_state.is_not(None),
    ).values(key_hash=key_hash(new_key), csrf=csrf, login_state=None, code_verifier=None,
             patient_id=patient_id, display_name=display_name, access_token=access_token,
             access_expires_at=access_expires_at, refresh_token=refresh_token,
             expires_at=expires_at))
    return done.rowcount == 1


async def claim_refresh(conn: AsyncConnection, key_hash_value: str, *, holding: str,
                        now: int, until: int) -> bool:
    """One request at a time refreshes a session's tokens, and only the tokens it read
    (``holding``: its access token): a refresh token is spent once, or its family dies."""
    done = await conn.execute(update(SESSIONS).where(
        SESSIONS.c.key_hash == key_hash_value, SESSIONS.c.refreshing_until <= now,
        SESSIONS.c.access_token == holding,
    ).values(refreshing_until=until))
    return done.rowcount == 1


async def store_tokens(conn: AsyncConnection, key_hash_value: str, *, access_token: str,
                       access_expires_at: int, refresh_token: str | None) -> None:
    await conn.execute(update(SESSIONS).where(SESSIONS.c.key_hash == key_hash_value).values(
        access_token=access_token, access_expires_at=access_expires_at,
        refresh_token=refresh_token, refreshing_until=0))


async def release_refresh(conn: AsyncConnection, key_hash_value: str) -> None:
    await conn.execute(update(SESSIONS).where(SESSIONS.c.key_hash == key_hash_value)
                       .values(refreshing_until=0))


async def end(conn: AsyncConnection, key_hash_value: str) -> None:
    await conn.execute(delete(SESSIONS).where(SESSIONS.c.key_hash == key_hash_value))


async def purge_expired(conn: AsyncConnection, now: int) -> int:
    done = await conn.execute(delete(SESSIONS).where(SESSIONS.c.expires_at <= now))
    return int(done.rowcount or 0)
