"""An app without the dispatcher, so that what the outbox holds stays put while measured."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from storage.db import Database


@pytest.fixture
def ops_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"dispatcher_enabled": False})


@pytest.fixture
async def ops_app(ops_settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    app = create_app(ops_settings, database)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def ops_http(ops_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ops_app),
                                 base_url="http://carnet.test") as http:
        yield http
