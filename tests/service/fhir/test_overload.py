"""An overloaded server refuses cleanly: 503 with Retry-After, nothing half-done."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx

from service.app import create_app
from service.settings import Settings
from storage.db import Database
from storage.errors import DatabaseBusy
from tests.factories import FHIR_JSON, patient
from tests.service.fhir.test_errors import assert_outcome, stored_count
from tests.tokens import OPERATOR_APP, Tokens, bearer


async def test_a_write_that_finds_no_free_connection_is_503_and_stores_nothing(
        database: Database, settings: Settings, tokens: Tokens) -> None:
    busy = Database(database.url, pool_size=1, pool_timeout=0.1)
    app = create_app(settings, busy)
    headers = {"Accept": "application/fhir+json",
               **bearer(tokens.app("system/*.cruds", OPERATOR_APP))}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://carnet.test", headers=headers) as http:
            async with AsyncExitStack() as held:
                try:
                    for _ in range(10):  # take every write connection of the pool
                        await held.enter_async_context(busy.write())
                except DatabaseBusy:
                    pass
                response = await http.post("/fhir/Patient", json=patient(),
                                           headers=FHIR_JSON)
            body = assert_outcome(response, 503)
            assert body["issue"][0]["code"] == "transient"
            assert response.headers["retry-after"] == "5"
            assert await stored_count(http) == 0
    finally:
        await busy.dispose()
