"""``/health`` (the process answers), ``/ready`` (it can serve), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.deps import BlobStoreDep, DatabaseDep, SettingsDep
from service.errors import Unauthorized
from service.fhir.http import now_micros
from service.ops.metrics import TEXT_FORMAT, exposition
from storage import outbox
from storage.db import Database, head_revision

router = APIRouter(tags=["operations"])
log = logging.getLogger("carnet.ready")

CHECK_SECONDS = 3.0  # a probe must answer before the orchestrator's own timeout
_HEAD = head_revision()


@router.get("/health", summary="liveness: the process answers")
async def health() -> Response:
    return _json({"status": "ok"}, 200)


@router.get("/ready", summary="readiness: database and blob store reachable, schema current",
            responses={503: {"description": "not ready; the failing checks are named"}})
async def ready(db: DatabaseDep, blobs: BlobStoreDep) -> Response:
    checks = dict(zip(("database", "migrations", "blob_store"), await asyncio.gather(
        _check("database", db.ping), _check("migrations", lambda: _schema_is_current(db)),
        _check("blob_store", blobs.ping)), strict=True))
    ok = all(result == "ok" for result in checks.values())
    return _json({"status": "ready" if ok else "unavailable", "checks": checks},
                 200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics (bearer CARNET_METRICS_TOKEN when set)",
            response_class=Response)
async def metrics(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("the metrics need 'Authorization: Bearer <CARNET_METRICS_TOKEN>'",
                               headers={"WWW-Authenticate": 'Bearer realm="carnet-metrics"'})
    async with db.read() as conn:
        backlog = await outbox.waiting_work(conn)
    return Response(exposition(backlog, now_micros()), media_type=TEXT_FORMAT,
                    headers={"Cache-Control": "no-store"})


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


async def _check(name: str, probe: Callable[[], Awaitable[Any]]) -> str:
    """"ok" or a short reason; the details (hosts, errors) go to the log, not the answer."""
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            reason = await probe()
    except TimeoutError:
        log.warning("readiness: %s did not answer within %.0f s", name, CHECK_SECONDS)
        return "timeout"
    except Exception as exc:
        log.warning("readiness: %s failed: %s: %.200s", name, type(exc).__name__, exc)
        return "unreachable"
    return reason if isinstance(reason, str) else "ok"


async def _schema_is_current(db: Database) -> str:
    current = await db.current_revision()
    return "ok" if current == _HEAD else f"schema at {current or 'nothing'}, expected {_HEAD}"
