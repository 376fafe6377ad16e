"""The FastAPI application."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI

from auth.bearer import Authenticator
from auth.idp.config import IdpConfig
from auth.idp.routes import router as idp_router
from auth.keys import KeyStore
from auth.tokens import JwksCache, TokenVerifier
from service.audit import AuditWriter
from service.deps import refuse_nul_in_url
from service.documents.gc import collect_periodically
from service.errors import install_error_handlers
from service.fhir.capability import SOFTWARE_VERSION
from service.fhir.routes import router as fhir_router
from service.notify.channels import build_dispatcher
from service.notify.dispatcher import Dispatcher
from service.notify.live import LiveEvents
from service.notify.routes import router as notify_router
from service.openapi import install as install_openapi
from service.ops.headers import install_edge
from service.ops.logs import configure_logging
from service.ops.observe import ObservedRequests
from service.ops.routes import router as ops_router
from service.portal.install import install_portal, running_portal
from service.settings import Settings
from storage import oauth
from storage.blobs import open_blob_store
from storage.db import Database


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    """Build the app; a ``database`` passed in (tests) is used as is and not disposed."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if database is not None:
            app.state.database = database
            async with (running_portal(app, settings, database), audit_writer(app, database),
                        dispatcher(app, settings, database),
                        live_events(app, settings, database)):
                yield
            return
        own = Database(settings.effective_database_url, pool_size=settings.db_pool_size)
        await own.migrate()
        app.state.database = own
        # The ~100,000 objects alive after start-up (models, SQL caches) never die;
        # freezing them spares every full collection a 55-100 ms walk over them.
        gc.collect()
        gc.freeze()
        sweeper = (asyncio.create_task(collect_periodically(
            own, app.state.blob_store, settings.blob_gc_grace, settings.blob_gc_interval))
            if settings.blob_gc_interval else None)
        try:
            async with (running_portal(app, settings, own), audit_writer(app, own),
                        dispatcher(app, settings, own), live_events(app, settings, own)):
                yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
            await own.dispose()
            await app.state.issuer_client.aclose()
            await app.state.blob_store.close()

    app = FastAPI(title="Carnet", version=SOFTWARE_VERSION, lifespan=lifespan,
                  description="Health-document exchange: FHIR R4, IHE MHD, INS, e-CPS.",
                  dependencies=[Depends(refuse_nul_in_url)])
    app.state.settings = settings
    if database is not None:
        app.state.database = database
    app.state.blob_store = open_blob_store(settings.blob_url, settings.data_dir)
    install_error_handlers(app)
    install_openapi(app)
    install_edge(app, settings)
    app.add_middleware(ObservedRequests)
    app.include_router(ops_router)
    app.include_router(fhir_router)
    app.include_router(notify_router)
    if settings.portal_enabled:
        install_portal(app, settings)
    keys = KeyStore(settings.effective_keys_dir)
    if settings.idp_enabled:
        app.state.idp_config = idp_config(settings, keys)
        app.include_router(idp_router)
    # The issuer's endpoints (JWKS for the API, token and revocation for the portal). The
    # embedded provider is reached through the app itself (no socket), so that a process
    # never waits on its own port.
    app.state.issuer_client = (httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
                               if settings.issuer_is_embedded
                               else httpx.AsyncClient(timeout=5.0))
    app.state.token_verifier = token_verifier(settings, app.state.issuer_client)
    app.state.authenticator = Authenticator(app.state.token_verifier,
                                            ttl=settings.token_cache_seconds,
                                            revoked=revocation_list(app))

    return app


@asynccontextmanager
async def dispatcher(app: FastAPI, settings: Settings,
                     database: Database) -> AsyncIterator[Dispatcher | None]:
    """The outbox dispatcher inside this process, unless it runs as its own process
    (``carnet dispatcher``, CARNET_DISPATCHER_ENABLED=false here)."""
    if not settings.dispatcher_enabled:
        app.state.dispatcher = None
        yield None
        return
    running, channels = build_dispatcher(settings, database, name="dispatcher-embedded")
    await running.start()
    app.state.dispatcher = running
    try:
        yield running
    finally:
        await running.stop()
        await channels.close()


@asynccontextmanager
async def live_events(app: FastAPI, settings: Settings,
                      database: Database) -> AsyncIterator[LiveEvents]:
    """One outbox poller for all the live streams this process serves (it reads the
    database only while a stream is open); stopping ends the open streams."""
    async with LiveEvents.running(database,
                                  poll_seconds=settings.dispatcher_poll_seconds) as hub:
        app.state.live_events = hub
        yield hub


@asynccontextmanager
async def audit_writer(app: FastAPI, database: Database) -> AsyncIterator[AuditWriter]:
    """Reads are audited through one group-commit writer per process; stopping flushes it."""
    writer = AuditWriter(database)
    await writer.start()
    app.state.audit_writer = writer
    try:
        yield writer
    finally:
        await writer.stop()


def idp_config(settings: Settings, keys: KeyStore) -> IdpConfig:
    return IdpConfig(issuer=settings.embedded_issuer, audience=settings.token_audience,
                     keys=keys, access_token_ttl=settings.access_token_ttl,
                     refresh_token_ttl=settings.refresh_token_ttl,
                     secure_cookies=settings.local_url.startswith("https://"),
                     token_rate_limit=settings.rate_limit_token,
                     login_rate_limit=settings.rate_limit_login)


def revocation_list(app: FastAPI) -> Callable[[str], Awaitable[bool]]:
    """Whether an access token's jti was revoked (a portal logout) at an issuer sharing
    this database: the embedded provider, or ``carnet idp`` in the same deployment."""

    async def revoked(jti: str) -> bool:
        database: Database = app.state.database
        async with database.read() as conn:
            return await oauth.access_token_revoked(conn, jti)

    return revoked


def token_verifier(settings: Settings, client: httpx.AsyncClient) -> TokenVerifier:
    """Tokens are checked against the issuer's JWKS fetched over HTTP, as for any issuer."""
    return TokenVerifier(issuer=settings.effective_issuer, audience=settings.token_audience,
                         keys=JwksCache(settings.effective_jwks_url, client),
                         leeway=settings.token_leeway)
