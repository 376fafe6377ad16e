"""What an operator sees of a real ``carnet serve --workers 2`` and ``carnet dispatcher``:
metrics summed over the workers, JSON access lines without the paths' ids or queries, and
processes that stop cleanly on SIGTERM (a container's stop)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import running_carnet

pytestmark = pytest.mark.e2e

INS = "253072A07300443"


def health_count(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = re.search(r'^carnet_http_requests_total\{method="GET",route="/health",'
                      r'status="200"\} (\S+)$', text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_two_workers_answer_for_each_other_and_log_no_identifiers(tmp_path: Path) -> None:
    env = {"CARNET_DATA_DIR": str(tmp_path), "CARNET_LOG_LEVEL": "info",
           "CARNET_LOG_FORMAT": "json"}
    log = tmp_path / "server.log"
    with running_carnet(["serve", "--workers", "2"], env, log, "/ready") as base:
        before = health_count(base)
        for _ in range(30):  # a new connection each time: both workers take some
            assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        seen = {health_count(base) for _ in range(6)}
        echoed = httpx.get(f"{base}/fhir/DocumentReference", timeout=10, params={
            "patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{INS}"},
            headers={"X-Request-ID": "integrator-42"})
        by_path = httpx.get(f"{base}/fhir/Patient/{INS}", timeout=10)
    assert seen == {before + 30}, "each worker must report the requests of both"
    assert echoed.status_code == 401 and echoed.headers["x-request-id"] == "integrator-42"
    assert by_path.status_code == 401
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines()
             if line.startswith(b"{")]
    access = [line for line in lines if line["logger"] == "carnet.access"]
    assert len(access) >= 30 + 6 + 2, f"{len(access)} access lines"
    assert {"route": "/fhir/{resource_type}", "status": 401,
            "request_id": "integrator-42"}.items() <= next(
        line for line in access if line.get("request_id") == "integrator-42").items()
    assert INS.encode() not in log.read_bytes()


def test_the_dispatcher_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dispatcher"],
        env={**os.environ, "CARNET_DATA_DIR": str(tmp_path), "CARNET_LOG_FORMAT": "json",
             "CARNET_DISPATCHER_POLL_SECONDS": "0.2"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # once its signal handlers are in place
            if line.startswith(b"outbox dispatcher running"):
                break
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
        rest = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert code == 0, rest.decode(errors="replace")
    assert b"Traceback" not in rest
