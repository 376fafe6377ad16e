"""Typed dependencies shared by the routes.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in its
thread pool, two thread hops per request that starved PostgreSQL of CPU under
load (bench/FINDINGS.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.settings import Settings
from storage.db import Database


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
