"""Running wrk against a server and turning its output into a ``Measure``.

wrk's Lua scripts (``bench/wrk/``) print one ``BENCH_JSON`` line; every error
counter is kept so a figure with errors is never reported as a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import WORK, WRK_DIR, BenchError, Config
from .cpu import CpuUse, children_cpu, cpu_snapshot, cpu_use
from .server import Server, connection_spread, start_floor

TOKEN_ENV = "CARNET_BENCH_TOKEN"  # read by bench/wrk/lib.lua's authorize()


@dataclass
class Measure:
    name: str
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    warmup_errors: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    cpu: CpuUse | None = None
    spread: list[int] = field(default_factory=list)  # wrk connections held by each worker

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + sum(self.warmup_errors.values())

    def p(self, key: str) -> float:
        return self.latency_us[key] / 1000.0

    def error_text(self) -> str:
        parts = [f"{k} {v}" for k, v in self.errors.items() if v]
        parts += [f"warm-up {k} {v}" for k, v in self.warmup_errors.items() if v]
        return ", ".join(parts) if parts else "0"


def check_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not on PATH. Install it first, e.g. on Debian/Ubuntu:\n"
                         "    sudo apt-get install -y wrk\n"
                         "(see bench/README.md). This script installs nothing itself.")
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0].strip() if text else wrk


def run_wrk(args: argparse.Namespace, name: str, server: Server, script: str,
            script_args: list[str], duration: int, connections: int,
            token: str | None = None) -> tuple[dict[str, Any], str, CpuUse, list[int]]:
    threads = min(args.threads, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
           "--timeout", "10s", "--latency", "-s", str(WRK_DIR / script), server.url, "--",
           *script_args]
    before, children_before = cpu_snapshot(), children_cpu()
    started = time.monotonic()
    # The bearer token reaches the Lua scripts through the environment (bench/wrk/lib.lua),
    # not as `-H`, so it is in neither the process list nor the saved wrk outputs.
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    token = token or server.token
    if token:
        env[TOKEN_ENV] = token
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    spread: list[int] = []
    try:
        text, _ = proc.communicate(timeout=min(1.5, duration / 2))
    except subprocess.TimeoutExpired:
        spread = connection_spread(server)
        text, _ = proc.communicate()
    after, wrk_cpu = cpu_snapshot(), children_cpu() - children_before  # wrk is reaped
    use = cpu_use(before, after, server.groups, wrk_cpu, time.monotonic() - started)
    (WORK / f"wrk-{name}.txt").write_text(shlex.join(cmd) + "\n\n" + text)
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}):\n{shlex.join(cmd)}\n{text}")
    return json.loads(line[len("BENCH_JSON "):]), text, use, spread


def measure(args: argparse.Namespace, server: Server, name: str, script: str,
            script_args: list[str], path_hint: str, connections: int | None = None,
            warmup_script_args: list[str] | None = None, token: str | None = None) -> Measure:
    """A warm-up run then the measured run; ``warmup_script_args`` (default: the measured
    run's) lets a script that must never repeat a request (unique bodies) take other input
    in the warm-up. ``token`` (default: the server's, the operator app's) is the bearer
    token wrk sends, e.g. a professional's."""
    connections = connections or args.connections
    warm: dict[str, Any] = {"errors": {}}
    if args.warmup > 0:
        warm, _, _, _ = run_wrk(args, f"{name}-warmup", server, script,
                                warmup_script_args or script_args, args.warmup, connections,
                                token)
    profiler = start_profiler(args, server, name)
    data, text, cpu, spread = run_wrk(args, name, server, script, script_args,
                                      args.duration, connections, token)
    stop_profiler(profiler)
    m = Measure(name, data["requests"], data["duration_us"] / 1e6, data["errors"],
                data["latency_us"], warmup_errors=warm["errors"], cpu=cpu, spread=spread)
    m.extra["warmup_requests"] = int(warm.get("requests", 0))
    print(f"  {name:<12} {m.rate:>9,.0f} req/s  p50 {m.p('p50'):6.2f} ms  "
          f"p99 {m.p('p99'):6.2f} ms  errors {m.error_text()}   ({path_hint})\n"
          f"          CPU (% of one core): server {cpu.server:.0f}, wrk {cpu.wrk:.0f}, "
          f"postgres {cpu.postgres:.0f}, other processes {cpu.other:.0f}; postgres waited "
          f"{cpu.postgres_wait:.1f} s for a CPU per s of CPU; connections per worker "
          f"{'/'.join(map(str, m.spread)) or '?'}", flush=True)
    if m.error_count:
        print("    wrk reported errors; its output:\n" + text, flush=True)
    if server.proc.poll() is not None:
        raise BenchError(f"{server.name} died during {name}:\n{server.log_tail()}")
    return m


def start_profiler(args: argparse.Namespace, server: Server,
                   name: str) -> subprocess.Popen[bytes] | None:
    if not args.profile:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    out = WORK / f"profile-{server.name}-{name}.txt"
    return subprocess.Popen([spy, "record", "--pid", str(server.proc.pid), "--subprocesses",
                             "--nonblocking", "--rate", "250", "--duration",
                             str(args.duration), "--format", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()


@dataclass
class ConfigResult:
    config: Config
    floor: Measure | None = None
    measures: dict[str, Measure] = field(default_factory=dict)
    server_log_errors: dict[str, int] = field(default_factory=dict)



def write_floor_paths() -> Path:
    path = WORK / "floor_paths.txt"
    path.write_text("/floor\n")
    return path


def measure_http_floor(args: argparse.Namespace, workers: int) -> Measure:
    """The HTTP floor: bench/floor_app.py's fixed bytes under uvicorn with ``workers``."""
    print(f"HTTP floor: bench/floor_app.py under uvicorn --workers {workers}", flush=True)
    floor = start_floor(workers)
    try:
        return measure(args, floor, "floor", "get_cycle.lua",
                       [str(write_floor_paths()), str(args.threads)], "GET /floor, fixed bytes")
    finally:
        floor.stop()
