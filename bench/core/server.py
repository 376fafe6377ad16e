"""Starting and stopping ``carnet serve`` and the floor app, and watching their workers.

Each server runs in its own process group so it can be stopped as a whole, and
its log is kept in ``bench/.work/`` to check readiness and count tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import BENCH, ROOT, WORK, BenchError, Config
from .bearer import CLIENT_ID, bearer, mint_app_token

CARNET_DATA = WORK / "carnet-data"
# Settings that would make the server expect tokens the benchmark cannot mint (another
# issuer, audience or key directory): the server gets the defaults instead.
_AUTH_ENV = ("CARNET_PUBLIC_URL", "CARNET_ISSUER_URL", "CARNET_JWKS_URL", "CARNET_IDP_ENABLED",
             "CARNET_TOKEN_AUDIENCE", "CARNET_KEYS_DIR")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: Any
    token: str | None = None  # bearer token every request carries (None: the floor app)
    # Processes that are part of the server (a `carnet dispatcher` beside `carnet serve`),
    # each in its own process group: their CPU is the server's, and they stop with it.
    companions: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def groups(self) -> tuple[int, ...]:
        """The process groups whose CPU is the server's."""
        return (self.proc.pid, *(c.pid for c in self.companions))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer ...`` for this server, or nothing."""
        return bearer(self.token)

    def log_tail(self, lines: int = 40) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGINT the process groups this script created (uvicorn and `carnet dispatcher`
        shut down gracefully)."""
        for proc in (self.proc, *self.companions):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
        for proc in (self.proc, *self.companions):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.log_file.close()


def start_process(name: str, cmd: list[str], env: dict[str, str], port: int) -> Server:
    log_path = WORK / f"{name}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by Server.stop
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: stopped as a whole
    return Server(name, proc, port, log_path, log_file)


def wait_ready(server: Server, path: str, workers: int, timeout: float = 60.0) -> None:
    """Wait for ``path`` to answer 200 and for every worker to log its startup."""
    import httpx

    deadline = time.monotonic() + timeout
    ok = False
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with code {server.proc.returncode}:\n"
                             f"{server.log_tail()}")
        if not ok:
            with contextlib.suppress(httpx.HTTPError):
                ok = httpx.get(server.url + path, timeout=2).status_code == 200
        if ok:
            started = server.log_path.read_text(errors="replace").count(
                "Application startup complete")
            if started >= workers:
                return
        time.sleep(0.2)
    raise BenchError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log_tail()}")


def carnet_command() -> list[str]:
    exe = Path(sys.executable).with_name("carnet")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("carnet")
    return [found] if found else [sys.executable, "-m", "service.cli"]


def carnet_env(config: Config, db_url: str, port: int,
               extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the benchmark's Carnet processes (``carnet serve`` and any
    ``carnet dispatcher`` beside it)."""
    # CARNET_HOST/PORT: what `carnet serve --host --port` sets, so an --app-factory app built
    # from Settings() has the same issuer (http://127.0.0.1:<port>/idp).
    env = {**os.environ, "CARNET_DATABASE_URL": db_url, "CARNET_LOG_LEVEL": "info",
           "CARNET_DATA_DIR": str(CARNET_DATA), "CARNET_HOST": "127.0.0.1",
           "CARNET_PORT": str(port),
           # The benchmark's app token is an operator's: it loads into every record without
           # the patients' grants (consent-scoped access), and is audited like any access.
           "CARNET_OPERATOR_CLIENTS": json.dumps([CLIENT_ID])}
    for name in ("CARNET_DB_POOL_SIZE", *_AUTH_ENV):
        env.pop(name, None)
    if config.pool_size is not None:
        env["CARNET_DB_POOL_SIZE"] = str(config.pool_size)
    env.update(extra_env or {})
    return env


def start_carnet(args: argparse.Namespace, config: Config, db_url: str,
                 extra_env: dict[str, str] | None = None) -> Server:
    """``carnet serve`` on a free port, ready and with the operator app's token checked.
    ``extra_env``: further settings for this run only (e.g. ``CARNET_SMTP_URL``), applied
    last so that they win over the environment and the defaults above."""
    port = free_port()
    env = carnet_env(config, db_url, port, extra_env)
    cmd = [*carnet_command(), "serve", "--workers", str(config.workers), "--host", "127.0.0.1",
           "--port", str(port)]
    if args.app_factory:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                          env.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-m", "uvicorn", args.app_factory, "--factory", "--app-dir",
               str(BENCH), "--workers", str(config.workers), "--host", "127.0.0.1", "--port",
               str(port), "--no-access-log", "--log-level", "info"]
    server = start_process("carnet", cmd, env, port)
    try:
        wait_ready(server, "/fhir/metadata", config.workers)
        server.token = mint_app_token(server.url, CARNET_DATA / "keys")
        check_token(server)
    except BaseException:
        server.stop()
        raise
    return server


def check_token(server: Server) -> None:
    """One authenticated request before anything else, so a refused token stops the run
    with the server's reason rather than as thousands of wrk errors."""
    import httpx

    try:
        r = httpx.get(server.url + "/fhir/Patient", params={"_count": "1"},
                      headers={**server.headers, "Accept": "application/fhir+json"}, timeout=30)
    except httpx.HTTPError as exc:
        raise BenchError(f"authenticated request to {server.name} failed: {exc!r}") from exc
    if r.status_code != 200:
        raise BenchError(f"{server.name} refused the benchmark's bearer token: GET "
                         f"/fhir/Patient?_count=1 answered {r.status_code} "
                         f"{r.headers.get('www-authenticate', '')} {r.text[:500]}")


def start_floor(workers: int) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "floor_app:app", "--app-dir", str(BENCH),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--no-access-log", "--log-level", "info"]
    server = start_process("floor", cmd, dict(os.environ), port)
    wait_ready(server, "/floor", workers)
    return server


def connection_spread(server: Server) -> list[int]:
    """Established client connections held by each worker of ``server``, largest first.

    uvicorn's workers share one listening socket and a worker accepts whatever
    connections arrive while it is free, so wrk's connections (opened together at
    the start of a run) can be spread unevenly; a skewed spread caps throughput.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port == server.port and fields[3] == "01":  # ESTABLISHED, server side
                    inodes.add(fields[9])
    counts = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == server.proc.pid:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[2]) != server.proc.pid or \
                    b"resource_tracker" in (entry / "cmdline").read_bytes():
                continue
            held = 0
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        held += 1
            counts.append(held)
    if not counts:  # a single worker serves in the main process
        counts = [len(inodes)]
    return sorted(counts, reverse=True)



def log_problems(server: Server) -> dict[str, int]:
    """Tracebacks in the server log, by exception; counted, never hidden.

    ``ClientDisconnect`` is expected a few times per wrk run: wrk closes its
    connections at the deadline while requests are in flight.
    """
    lines = server.log_path.read_text(errors="replace").splitlines()
    problems: dict[str, int] = {}
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line.startswith((" ", "\t", "Traceback",
                                                              "During handling", "The above")):
            name = line.split(":", 1)[0].strip()
            problems[name] = problems.get(name, 0) + 1
            in_traceback = False
    return problems

