"""/health, /ready and /metrics as an orchestrator and a Prometheus server use them."""

from __future__ import annotations

import re
import shutil

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text

from service.app import create_app
from service.fhir.http import now_micros
from service.settings import Settings
from storage import outbox
from storage.db import Database, head_revision


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the text format, or None when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in exposition.splitlines():
        found = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if found and found[1] == name:
            given = ",".join(sorted((found[2] or "").split(","))) if found[2] else ""
            if given == wanted:
                return float(found[3])
    return None


async def test_health_answers_without_the_database(ops_http: httpx.AsyncClient) -> None:
    answer = await ops_http.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_ready_when_database_blobs_and_schema_are(ops_http: httpx.AsyncClient) -> None:
    answer = await ops_http.get("/ready")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ready", "checks": {
        "database": "ok", "migrations": "ok", "blob_store": "ok"}}
    assert answer.headers["cache-control"] == "no-store"


async def test_not_ready_while_the_schema_is_behind(ops_http: httpx.AsyncClient,
                                                   database: Database) -> None:
    head = head_revision()
    async with database.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
    try:
        answer = await ops_http.get("/ready")
    finally:
        async with database.write() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :head"),
                               {"head": head})
    assert answer.status_code == 503
    assert answer.json()["checks"] == {
        "database": "ok", "migrations": f"schema at 0006, expected {head}", "blob_store": "ok"}


async def test_not_ready_without_the_blob_store(ops_app: FastAPI,
                                               ops_http: httpx.AsyncClient) -> None:
    root = ops_app.state.blob_store.root
    shutil.rmtree(root, ignore_errors=True)
    root.write_bytes(b"a file where the blob directory should be")
    answer = await ops_http.get("/ready")
    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "checks": {
        "database": "ok", "migrations": "ok", "blob_store": "unreachable"}}


async def test_not_ready_without_the_database(ops_app: FastAPI, ops_http: httpx.AsyncClient,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused() -> None:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(ops_app.state.database, "ping", refused)
    answer = await ops_http.get("/ready")
    assert answer.status_code == 503
    assert answer.json()["checks"]["database"] == "unreachable"
    assert "refused" not in answer.text  # details go to the log, not to the network


async def test_metrics_count_requests_by_route_template(ops_http: httpx.AsyncClient) -> None:
    before = (await ops_http.get("/metrics")).text
    route = "/fhir/{resource_type}/{resource_id}"
    start = sample(before, "carnet_http_requests_total", method="GET", route=route,
                   status="401") or 0
    for patient in ("253072A07300443", "Patient-1"):
        assert (await ops_http.get(f"/fhir/Patient/{patient}")).status_code == 401
    answer = await ops_http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert sample(answer.text, "carnet_http_requests_total", method="GET", route=route,
                  status="401") == start + 2
    assert (sample(answer.text, "carnet_http_request_duration_seconds_count", method="GET",
                   route=route) or 0) >= 2
    assert "253072A07300443" not in answer.text  # the path's ids never become labels


async def test_unknown_paths_share_one_label(ops_http: httpx.AsyncClient) -> None:
    for path in ("/no/such/thing", "/another/unknown/path"):
        assert (await ops_http.get(path)).status_code == 404
    text_format = (await ops_http.get("/metrics")).text
    assert "/no/such/thing" not in text_format
    assert (sample(text_format, "carnet_http_requests_total", method="GET",
                   route="<unmatched>", status="404") or 0) >= 2


async def test_metrics_report_the_outbox_backlog_from_the_database(
        ops_http: httpx.AsyncClient, database: Database) -> None:
    an_hour_ago = now_micros() - 3600 * 1_000_000
    async with database.write() as conn:
        await outbox.add_events(conn, [("document-filed", "p1", {}),
                                       ("document-filed", "p2", {})], an_hour_ago)
        (failing,) = await outbox.add_events(conn, [("document-filed", "p3", {})], an_hour_ago)
        await outbox.fan_out(conn, failing, [(outbox.Channel.EMAIL, "p3")], an_hour_ago)
        (delivery,) = await outbox.lease_due(conn, an_hour_ago, 1, 10)
        await outbox.record_attempt(conn, delivery, an_hour_ago, error="refused",
                                    retry_at=None)
    text_format = (await ops_http.get("/metrics")).text
    assert sample(text_format, "carnet_outbox_events_waiting") == 2
    assert sample(text_format, "carnet_outbox_deliveries", status="failed") == 1
    assert sample(text_format, "carnet_outbox_deliveries", status="pending") == 0
    oldest = sample(text_format, "carnet_outbox_oldest_waiting_seconds")
    assert oldest is not None and 3600 <= oldest < 3700


async def test_metrics_token_when_configured(ops_settings: Settings,
                                            database: Database) -> None:
    app = create_app(ops_settings.model_copy(
        update={"metrics_token": SecretStr("scrape-me")}), database)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://carnet.test") as http):
        missing = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer scrape-you"})
        right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        health = await http.get("/health")
    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert "scrape-me" not in refused.text
    assert right.status_code == 200
    assert "carnet_http_requests_total" in right.text
    assert health.status_code == 200  # liveness stays open to the orchestrator
