"""A real Carnet server: ``carnet serve`` under uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage.db import Database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"carnet serve exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"carnet serve did not answer {url} within {timeout} s")


@contextlib.contextmanager
def running_carnet(args: list[str], env: dict[str, str], log_path: Path,
                   ready_path: str, started: list[int] | None = None) -> Iterator[str]:
    """Run ``python -m service.cli <args>`` on a free port; yield its base URL.

    ``started`` receives the server's process id (to read its memory use).
    """
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args, "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "CARNET_LOG_LEVEL": "warning", **env}, stdout=log,
        stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    if started is not None:
        started.append(process.pid)
    try:
        wait_until_up(f"{base}{ready_path}", process)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def live_server(database: Database, tmp_path: Path) -> Iterator[str]:
    """Base URL of a running server with the demo data, sharing the test database."""
    env = {"CARNET_DATABASE_URL": database.url, "CARNET_DATA_DIR": str(tmp_path)}
    with running_carnet(["serve", "--demo"], env, tmp_path / "server.log",
                        "/fhir/metadata") as base:
        yield base


@pytest.fixture
def integrator_server(database: Database, tmp_path: Path) -> Iterator[str]:
    """As ``live_server``, with the demo app trusted as an operator (CARNET_OPERATOR_CLIENTS):
    a hospital system that creates patients and reads back what it wrote."""
    env = {"CARNET_DATABASE_URL": database.url, "CARNET_DATA_DIR": str(tmp_path),
           "CARNET_OPERATOR_CLIENTS": '["demo-app"]'}
    with running_carnet(["serve", "--demo"], env, tmp_path / "server.log",
                        "/fhir/metadata") as base:
        yield base


def app_token(base: str, scope: str, issuer: str | None = None) -> str:
    """What a hospital system does first: client credentials at the provider's token endpoint."""
    response = httpx.post(f"{issuer or base + '/idp'}/token",
                          data={"grant_type": "client_credentials", "scope": scope},
                          auth=("demo-app", "demo-app-secret"), timeout=10.0)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token
