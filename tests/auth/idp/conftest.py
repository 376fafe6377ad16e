"""The mock provider's tests start from the demo directories and the demo-app registration."""

from __future__ import annotations

import pytest

from service.demo import seed_directories
from storage.db import Database
from storage.oauth import OAuthClient, put_client, secret_hash


@pytest.fixture(autouse=True)
async def directories(database: Database) -> None:
    await seed_directories(database)


PUBLIC_CLIENT = OAuthClient(
    client_id="public-app", name="Public app", secret_hash=None,
    redirect_uris=("http://127.0.0.1:9000/cb",),
    allowed_scopes="openid offline_access scope_all patient/*.rs user/*.rs system/*.rs",
    # client_credentials is registered on purpose: a public client must still be refused it.
    grant_types=("authorization_code", "refresh_token", "client_credentials"))
OTHER_CLIENT = OAuthClient(
    client_id="other-app", name="Other app", secret_hash=secret_hash("other-app-secret"),
    redirect_uris=("http://127.0.0.1:8765/callback",),
    allowed_scopes="openid offline_access scope_all patient/*.rs user/*.cruds system/*.rs",
    grant_types=("authorization_code", "refresh_token", "client_credentials"))
OTHER_AUTH = ("other-app", "other-app-secret")


@pytest.fixture
async def public_client(database: Database) -> OAuthClient:
    async with database.write() as conn:
        await put_client(conn, PUBLIC_CLIENT)
    return PUBLIC_CLIENT


@pytest.fixture
async def other_client(database: Database) -> OAuthClient:
    async with database.write() as conn:
        await put_client(conn, OTHER_CLIENT)
    return OTHER_CLIENT
