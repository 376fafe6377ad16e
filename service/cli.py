"""The ``carnet`` command."""

from __future__ import annotations

import asyncio
import os
import sys

import click
import orjson
import uvicorn
from pydantic import ValidationError

from service.settings import Settings
from storage.db import Database


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


async def _prepare(settings: Settings, demo: bool) -> dict[str, object] | None:
    db = Database(settings.effective_database_url, pool_size=2)
    try:
        await db.migrate()
        if demo:
            from service.demo import seed_demo

            return await seed_demo(db, f"{settings.public_url or _local_url(settings)}/fhir")
        return None
    finally:
        await db.dispose()


def _local_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.port}"


@click.group(help="Carnet: health-document exchange over FHIR R4.")
def main() -> None:
    pass


@main.command(help="Run the HTTP service (FHIR API at /fhir).")
@click.option("--demo", is_flag=True, help="Seed demo data first (embedded SQLite by default).")
@click.option("--host", default=None, help="Listen address (CARNET_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (CARNET_PORT, default 8000).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
def serve(demo: bool, host: str | None, port: int | None, workers: int) -> None:
    if host:
        os.environ["CARNET_HOST"] = host
    if port:
        os.environ["CARNET_PORT"] = str(port)
    settings = _settings()
    asyncio.run(_prepare(settings, demo))
    click.echo(f"Carnet FHIR API on {_local_url(settings)}/fhir "
               f"(database: {settings.effective_database_url.split('://')[0]})", err=True)
    uvicorn.run("service.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=workers, log_level=settings.log_level, access_log=False)


@main.command(help="Create or upgrade the database schema.")
def migrate() -> None:
    asyncio.run(_prepare(_settings(), demo=False))
    click.echo("schema is up to date", err=True)


@main.command(help="Seed data.")
@click.option("--demo", is_flag=True, required=True, help="Seed the demo data set.")
@click.option("--json", "as_json", is_flag=True, help="Print what was seeded as JSON.")
def seed(demo: bool, as_json: bool) -> None:
    response = asyncio.run(_prepare(_settings(), demo=demo))
    if as_json:
        sys.stdout.write(orjson.dumps(response, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo("demo data seeded", err=True)


if __name__ == "__main__":
    main()
