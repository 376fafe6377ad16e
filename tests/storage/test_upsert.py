"""put_row: the same key written by processes starting together gives one row, no error."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from storage.db import Database
from storage.oauth import CLIENTS, OAuthClient, put_client


def client(name: str) -> OAuthClient:
    return OAuthClient(client_id="carnet-portal", name=name, secret_hash=None,
                       redirect_uris=(f"https://{name}.example/portal/callback",),
                       allowed_scopes="openid", grant_types=("authorization_code",))


async def test_concurrent_first_writes_of_one_key_both_succeed(database: Database) -> None:
    both_open = asyncio.Barrier(2)

    async def register(name: str) -> None:
        async with database.write() as conn:
            if database.is_postgresql:  # SQLite serialises writers: the second waits at BEGIN
                await asyncio.wait_for(both_open.wait(), 5)  # both transactions in flight
            await put_client(conn, client(name))

    await asyncio.gather(register("a"), register("b"))
    async with database.read() as conn:
        names = (await conn.execute(select(CLIENTS.c.name)
                                    .where(CLIENTS.c.client_id == "carnet-portal"))).scalars()
        assert sorted(names) in (["a"], ["b"])


async def test_a_second_write_refreshes_the_row(database: Database) -> None:
    for name in ("first", "second"):
        async with database.write() as conn:
            await put_client(conn, client(name))
    async with database.read() as conn:
        rows = (await conn.execute(select(CLIENTS.c.name, CLIENTS.c.redirect_uris)
                                   .where(CLIENTS.c.client_id == "carnet-portal"))).all()
    assert [tuple(r) for r in rows] == [
        ("second", '["https://second.example/portal/callback"]')]
