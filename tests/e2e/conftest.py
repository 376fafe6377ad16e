"""A real Carnet server: ``carnet serve`` under uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from storage.db import Database
from tests.forms import login_form, pkce


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    # One client for the whole wait: each httpx.get builds a TLS context (~0.2 s of CPU).
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"carnet serve exited with {process.returncode}")
            try:
                if http.get(url).status_code == 200:
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


REDIRECT_URI = "http://127.0.0.1:8765/callback"  # the demo app's


def log_in(base: str, subject: str, scope: str) -> dict[str, str]:
    """What a browser and an app do together; returns the token response."""
    verifier, challenge = pkce()
    with httpx.Client(base_url=base, timeout=10.0) as browser:
        page = browser.get("/idp/authorize", params={
            "response_type": "code", "client_id": "demo-app", "redirect_uri": REDIRECT_URI,
            "scope": scope, "state": "xyz", "code_challenge": challenge,
            "code_challenge_method": "S256", "nonce": "n-1"})
        assert page.status_code == 200, page.text
        form = login_form(page.text, subject)
        redirect = browser.post("/idp/authorize", data=form)
    assert redirect.status_code == 303
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert query["state"] == ["xyz"]
    token = httpx.post(f"{base}/idp/token", data={
        "grant_type": "authorization_code", "code": query["code"][0],
        "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
        auth=("demo-app", "demo-app-secret"), timeout=10.0)
    assert token.status_code == 200, token.text
    body: dict[str, str] = token.json()
    return body


# -- A real browser: Debian's Chromium driven by Playwright ---------------------------

CHROMIUM = Path(os.environ.get("CARNET_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"


def _chromium_installed() -> bool:
    return CHROMIUM.exists()


@pytest.fixture
async def browser_page(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh headless Chromium page (no cookies); on failure, a screenshot of it.

    The async API: the sync one runs an event loop of its own in the test's thread, which
    the suite's async fixtures cannot share. CI (CARNET_TEST_REQUIRE_BROWSER=1) must have
    Chromium; elsewhere its absence skips.
    """
    if not _chromium_installed():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CARNET_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        context = await browser.new_context(locale="fr-FR",
                                            viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            failed = getattr(request.node, "rep_call", None)
            if failed is not None and failed.failed:
                await screenshot(page, f"failed-{request.node.name}")
            await browser.close()


async def screenshot(page: Any, name: str) -> Path:
    """Saved under test-artifacts/portal/ (not committed): what each main page looked like."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
