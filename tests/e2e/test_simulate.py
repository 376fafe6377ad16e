"""``carnet simulate`` against a running server: its report adds up with what was stored."""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson
import pytest

from service.demo import DOCUMENTS
from tests.e2e.conftest import app_token

pytestmark = pytest.mark.e2e


def stored_documents(base: str) -> int:
    """Every DocumentReference on the server, counted by an operator app."""
    token = app_token(base, "system/DocumentReference.rs")
    counted = httpx.get(f"{base}/fhir/DocumentReference", timeout=10.0,
                        params={"_summary": "count"},
                        headers={"Authorization": f"Bearer {token}"})
    assert counted.status_code == 200, counted.text
    total: int = counted.json()["total"]
    return total


def test_the_harness_reports_what_the_server_stored(integrator_server: str) -> None:
    before = stored_documents(integrator_server)
    assert before == len(DOCUMENTS)
    run = subprocess.run(
        [sys.executable, "-m", "service.cli", "simulate", "--url", integrator_server,
         "--documents", "24", "--concurrency", "4", "--searches", "1", "--reads", "1",
         "--patient-reads", "0.5", "--max-bytes", "200000", "--json", "--quiet"],
        capture_output=True, timeout=300)
    assert run.returncode in (0, 1), run.stderr.decode()
    report = orjson.loads(run.stdout)
    filed = report["operations"]["iti65"]
    assert filed["requests"] == 24
    assert filed["ok"] + filed["errors"] == 24
    assert sum(filed["statuses"].values()) == 24
    assert stored_documents(integrator_server) - before == filed["ok"]
    assert filed["ok"] > 0 and filed["bytes_sent"] > 0
    for name in ("iti67", "iti68"):
        assert report["operations"][name]["requests"] > 0, name
    assert report["errors"] == sum(op["errors"] for op in report["operations"].values())
    assert (run.returncode == 1) == (report["errors"] > 0)
    latency = filed["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["server_peak_rss_bytes"] > 10 * 2**20  # found by its listening port
    assert report["setup"]["professionals"] >= 1 and report["setup"]["patients"] >= 1


def test_the_harness_says_why_it_cannot_start() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "service.cli", "simulate", "--url", "http://127.0.0.1:9",
         "--documents", "1"], capture_output=True, timeout=60)
    assert run.returncode == 1
    assert b"cannot reach the identity provider" in run.stderr
    missing = subprocess.run([sys.executable, "-m", "service.cli", "simulate"],
                             capture_output=True, timeout=60)
    assert missing.returncode == 2
    assert b"give --documents, --duration, or both" in missing.stderr
