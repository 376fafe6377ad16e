"""The harness logs its users in at the provider and renews their tokens before expiry."""

from __future__ import annotations

import time

import httpx

from service.app import create_app
from service.demo import DEMO_APP_SECRET, seed_demo
from service.settings import Settings
from service.simulate.login import PROFESSIONAL_SCOPE, Client, LoginError, Provider
from storage.db import Database

DEMO = Client("demo-app", DEMO_APP_SECRET, "http://127.0.0.1:8765/callback")


async def test_a_token_is_renewed_near_expiry_and_keeps_its_claims(
        settings: Settings, database: Database) -> None:
    app = create_app(settings, database)
    await seed_demo(database, app.state.blob_store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=settings.local_url) as http:
        provider = Provider(http, settings.embedded_issuer, DEMO)
        assert "ps:10000000001" in await provider.subjects()
        token = await provider.log_in("ps:10000000001", PROFESSIONAL_SCOPE)
        assert token.claims["family_name"] == "MARTIN"
        assert await provider.fresh(token) is token and token.access  # far from expiry
        first = token.access
        token.expires_at = time.monotonic()  # about to expire: renewed
        renewed = await provider.fresh(token)
        assert renewed.access != first and renewed.expires_at > time.monotonic() + 60
        assert renewed.claims["family_name"] == "MARTIN"
        answer = await http.get("/fhir/Patient", headers=renewed.header())
        assert answer.status_code == 200
        try:
            await provider.log_in("ps:99999999999", PROFESSIONAL_SCOPE)
        except LoginError as exc:
            assert "no login as ps:99999999999" in str(exc)
        else:
            raise AssertionError("an identity the provider does not offer logged in")
