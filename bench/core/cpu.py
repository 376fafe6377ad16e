"""Where the machine's CPU went during a measured run, read from ``/proc``.

The machine is small and shared: a figure is only meaningful next to how much
CPU the server, wrk, PostgreSQL and other processes used while it was taken.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_snapshot() -> tuple[float, dict[int, tuple[str, int, float, float]]]:
    """Busy CPU seconds of the machine; per process: name, process group, CPU seconds and
    seconds spent runnable but waiting for a CPU (``/proc/PID/schedstat``, main thread)."""
    busy = 0.0
    with contextlib.suppress(OSError):
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        busy = (sum(values[:8]) - values[3] - values[4]) / _TICK  # minus idle and iowait
    procs: dict[int, tuple[str, int, float, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = (entry / "stat").read_text()
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2:].split()
            waited = 0.0
            with contextlib.suppress(OSError, ValueError, IndexError):
                waited = int((entry / "schedstat").read_text().split()[1]) / 1e9
            procs[int(entry.name)] = (name, int(rest[2]), (int(rest[11]) + int(rest[12])) / _TICK,
                                      waited)
    return busy, procs


@dataclass
class CpuUse:
    """Where the machine's CPU went during one measured run (percent of one core)."""

    server: float
    wrk: float
    postgres: float
    other: float
    postgres_wait: float  # run-queue wait of PostgreSQL processes / their CPU time


def cpu_use(before: tuple[float, dict[int, tuple[str, int, float, float]]],
             after: tuple[float, dict[int, tuple[str, int, float, float]]],
             server_groups: tuple[int, ...], wrk_cpu: float, seconds: float) -> CpuUse:
    def delta(select: Any, wait: bool = False) -> float:
        total = 0.0
        for pid, (name, group, cpu, waited) in after[1].items():
            if select(name, group):
                old = before[1].get(pid, (name, group, 0.0, 0.0))
                total += (waited - old[3]) if wait else (cpu - old[2])
        return total

    def is_postgres(name: str, _group: int) -> bool:
        return name.startswith("postgres")

    server = delta(lambda _n, g: g in server_groups)
    postgres = delta(is_postgres)
    postgres_wait = delta(is_postgres, wait=True)
    other = max(0.0, after[0] - before[0] - server - wrk_cpu - postgres)
    return CpuUse(server=100 * server / seconds, wrk=100 * wrk_cpu / seconds,
                  postgres=100 * postgres / seconds, other=100 * other / seconds,
                  postgres_wait=postgres_wait / postgres if postgres > 0 else 0.0)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

