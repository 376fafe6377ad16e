"""Shared fixtures: the same suite runs on SQLite and on PostgreSQL.

``database`` is parametrised over both back-ends. PostgreSQL is found through
``CARNET_TEST_DATABASE_URL`` (``.ci/run`` creates a fresh database and sets
it); without it the tests use ``carnet_test`` on 127.0.0.1:5432, created if
missing. When no server answers the PostgreSQL cases are skipped with the
reason, unless ``CARNET_TEST_REQUIRE_POSTGRES=1`` (as in CI) makes that an error.
Each test starts from empty tables.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from service.app import create_app
from service.settings import Settings
from storage.db import Database
from tests import reliability
from tests.endpoints import SmtpServer, WebhookReceiver
from tests.tokens import OPERATOR_APP, Tokens, bearer

S3_REGION = "eu-west-3"  # not us-east-1, so bucket creation needs its LocationConstraint
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/carnet_test"
def tables() -> list[str]:
    """Every table the models declare (tests/storage/test_migrations.py checks that the
    migrations create exactly these); the app's import registered them all."""
    return [t.name for t in SQLModel.metadata.sorted_tables]


def postgres_url() -> str:
    """The run's PostgreSQL database; under pytest-xdist, one per worker beside it
    (``<name>_gw0``, ...), created here and dropped at the end of the worker's session."""
    url = make_url(os.environ.get("CARNET_TEST_DATABASE_URL", DEFAULT_POSTGRES_URL))
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        url = url.set(database=f"{url.database}_{worker}")
    return url.render_as_string(hide_password=False)


async def _drop_postgres_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_async_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def _ensure_postgres_database(url: str) -> str | None:
    """Create the test database if needed; return why PostgreSQL is unusable, or None."""
    parsed = make_url(url)
    admin = create_async_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = (await conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                         {"n": parsed.database})).first()
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    except (OSError, ConnectionError) as exc:
        return f"no PostgreSQL server answers at {parsed.host}:{parsed.port}: {exc}"
    except Exception as exc:  # asyncpg's own errors (auth, missing role...)
        return f"PostgreSQL at {parsed.host}:{parsed.port} is not usable: {exc}"
    finally:
        await admin.dispose()
    return None


async def clear(database: Database) -> None:
    """Empty every table, children first. DELETE, not TRUNCATE: on PostgreSQL a TRUNCATE of
    the 26 tables costs 0.2-0.6 s (it replaces each table's files), DELETE of the few rows a
    test wrote about 20 ms, and the suite clears before each of its ~1,500 PostgreSQL tests.
    Sequences go on counting: no test may rely on a generated key's value."""
    async with database.write() as conn:
        for table in reversed(tables()):
            await conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def session_database(request: pytest.FixtureRequest,
                           tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "carnet.db"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        url = postgres_url()
        problem = await _ensure_postgres_database(url)
        if problem:
            if os.environ.get("CARNET_TEST_REQUIRE_POSTGRES") == "1":
                pytest.fail(problem)
            pytest.skip(problem)
    database = Database(url, pool_size=10)
    await database.migrate()
    yield database
    await database.dispose()
    if request.param == "postgresql" and os.environ.get("PYTEST_XDIST_WORKER"):
        await _drop_postgres_database(url)


@pytest.fixture
async def database(session_database: Database) -> AsyncIterator[Database]:
    await clear(session_database)
    yield session_database


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One signing key for the whole run: generating RSA keys per test would cost seconds."""
    return tmp_path_factory.mktemp("keys")


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path) -> Settings:
    # The tests' webhook receivers listen on loopback, which apps may not name by default.
    return Settings(data_dir=tmp_path, keys_dir=keys_dir, default_page_size=20,
                    max_page_size=100, max_body_bytes=1024 * 1024,
                    operator_clients=[OPERATOR_APP],
                    webhook_allowed_networks=["127.0.0.0/8", "::1/128"])


@pytest.fixture
def tokens(settings: Settings) -> Tokens:
    return Tokens.for_settings(settings)


@pytest.fixture
async def anonymous(settings: Settings,
                    database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no token: what any caller on the network can do."""
    app = create_app(settings, database)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://carnet.test",
                                 headers={"Accept": "application/fhir+json"}) as http:
        yield http


@pytest.fixture
async def client(anonymous: httpx.AsyncClient, tokens: Tokens) -> httpx.AsyncClient:
    """A client holding an operator app's token with every ``system/`` scope: the FHIR core
    tests' caller, which the access policy lets open every record (and audits)."""
    anonymous.headers.update(bearer(tokens.app("system/*.cruds", OPERATOR_APP)))
    return anonymous


# -- S3 (moto's server): the blob store's second back-end ------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server in this process on a free loopback port; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_session() -> Any:
    """A boto3 session with dummy credentials, shared so that clients are quick to create."""
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                 region_name=S3_REGION)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, and nothing from the developer's own AWS configuration."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


# -- notification endpoints (tests/endpoints.py): real SMTP and HTTP servers on loopback --


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


# -- reliability figures (tests/reliability.py): summed over the workers ---------------

_worker_figures: list[dict[str, int]] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the xdist controller: keep what a worker counted."""
    _worker_figures.append(getattr(node, "workeroutput", {}).get("reliability", {}))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    counts = dict(reliability.figures.counts)
    if hasattr(session.config, "workeroutput"):  # a worker hands its figures over
        session.config.workeroutput["reliability"] = counts
        return
    counts = reliability.summed([counts, *_worker_figures])
    if not counts:
        return
    reliability.write_figures(counts, session.config.rootpath / reliability.FIGURES_FILE)
    if reliability.report_requested() and exitstatus == 0:
        reliability.rewrite_report(counts)
