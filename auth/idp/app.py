"""The identity provider as its own service (``carnet idp``), apart from the FHIR API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from auth.idp.config import IdpConfig
from auth.idp.routes import router
from storage.db import Database


def standalone_app(config: IdpConfig, database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(database_url, pool_size=5)
        await database.migrate()
        app.state.database = database
        try:
            yield
        finally:
            await database.dispose()

    app = FastAPI(title="Carnet mock Pro Santé Connect", lifespan=lifespan)
    app.state.idp_config = config
    app.include_router(router)

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app
