"""What a simulation measured: per operation, counts, statuses, throughput and latencies.

Every request is recorded, failed ones included: errors are counted by status (or
by transport failure) and shown, never dropped from the figures.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

OPERATIONS = {
    "iti65": "ITI-65 provide document bundle",
    "iti67": "ITI-67 find document references",
    "iti68": "ITI-68 retrieve document",
    "patient": "patient reads (portal-like)",
}
TRANSPORT_ERROR = "transport"  # no HTTP answer at all (refused, reset, timed out)


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class OperationStats:
    latencies: list[float] = field(default_factory=list)  # seconds, every request
    statuses: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    bytes_sent: int = 0
    examples: dict[str, str] = field(default_factory=dict)  # status -> first error's reason

    def record(self, status: str, seconds: float, ok: bool, sent: int = 0,
               reason: str | None = None) -> None:
        self.latencies.append(seconds)
        self.statuses[status] += 1
        self.ok += ok
        self.bytes_sent += sent
        if not ok and reason and status not in self.examples:
            self.examples[status] = reason[:300]

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        return self.count - self.ok


@dataclass
class Report:
    """The figures of one run; ``summary()`` is what ``--json`` prints."""

    url: str
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    operations: dict[str, OperationStats] = field(
        default_factory=lambda: {name: OperationStats() for name in OPERATIONS})
    server_peak_rss_bytes: int | None = None
    setup: dict[str, Any] = field(default_factory=dict)

    def record(self, operation: str, status: str, seconds: float, ok: bool,
               sent: int = 0, reason: str | None = None) -> None:
        self.operations[operation].record(status, seconds, ok, sent, reason)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def errors(self) -> int:
        return sum(stats.errors for stats in self.operations.values())

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed
        operations = {}
        for name, stats in self.operations.items():
            if not stats.count:
                continue
            ordered = sorted(stats.latencies)
            operations[name] = {
                "label": OPERATIONS[name], "requests": stats.count, "ok": stats.ok,
                "errors": stats.errors, "statuses": dict(sorted(stats.statuses.items())),
                "per_second": round(stats.count / elapsed, 2) if elapsed else 0.0,
                "ok_per_second": round(stats.ok / elapsed, 2) if elapsed else 0.0,
                "latency_ms": {key: round(1000 * percentile(ordered, q), 2)
                               for key, q in (("p50", .5), ("p95", .95), ("p99", .99))}
                | {"max": round(1000 * ordered[-1], 2)},
                "bytes_sent": stats.bytes_sent, "first_errors": dict(stats.examples),
            }
        return {"url": self.url, "elapsed_seconds": round(elapsed, 3),
                "operations": operations, "errors": self.errors,
                "server_peak_rss_bytes": self.server_peak_rss_bytes, "setup": self.setup}

    def progress_line(self) -> str:
        filed = self.operations["iti65"]
        elapsed = self.elapsed
        rate = filed.ok / elapsed if elapsed else 0.0
        others = sum(s.count for n, s in self.operations.items() if n != "iti65")
        return (f"{elapsed:6.1f} s  filed {filed.ok:,} ({rate:,.1f}/s)  other requests "
                f"{others:,}  errors {self.errors:,}")

    def text(self) -> str:
        summary = self.summary()
        plan = self.setup.get("plan") or {}
        seed = f" (seed {plan['seed']})" if "seed" in plan else ""
        lines = [f"Carnet simulation against {self.url}: {summary['elapsed_seconds']:.1f} s"
                 + seed,
                 "", f"{'operation':<34} {'requests':>9} {'ok':>9} {'errors':>7} {'req/s':>8} "
                 f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
        for figures in summary["operations"].values():
            latency = figures["latency_ms"]
            lines.append(f"{figures['label']:<34} {figures['requests']:>9,} {figures['ok']:>9,} "
                         f"{figures['errors']:>7,} {figures['per_second']:>8.1f} "
                         f"{latency['p50']:>8.1f} {latency['p95']:>8.1f} "
                         f"{latency['p99']:>8.1f} {latency['max']:>8.1f}")
        for name, figures in summary["operations"].items():
            failed = {k: v for k, v in figures["statuses"].items() if not k.startswith("2")}
            if failed:
                lines.append(f"  {name} errors by status: "
                             + ", ".join(f"{k}: {v:,}" for k, v in failed.items()))
                lines += [f"    first {status}: {reason}"
                          for status, reason in figures["first_errors"].items()]
        sent = self.operations["iti65"].bytes_sent
        if sent:
            lines.append(f"  document content sent: {sent / 1e6:,.1f} MB")
        peak = self.server_peak_rss_bytes
        lines.append("  server peak memory (RSS, all its processes): "
                     + (f"{peak / 2**20:,.0f} MiB" if peak else "not visible from here"))
        return "\n".join(lines)
