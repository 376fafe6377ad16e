"""Prometheus metrics: what each process counted, plus what the database says waits.

Counters and histograms live in the process; with ``carnet serve --workers N`` they
are shared through prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``,
set by the CLI), so that any worker answers for all. The outbox figures are read from
the database at each scrape, so every API process reports the same backlog, and a
dispatcher running as its own process is seen through what it leaves undone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from storage.outbox import Backlog

__all__ = ["REQUESTS", "REQUEST_SECONDS", "TEXT_FORMAT", "exposition"]

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
"""What ``generate_latest`` writes, and what every Prometheus version reads."""

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("carnet_http_requests", "HTTP requests answered, by route template and "
                   "status.", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "carnet_http_request_duration_seconds", "Time to answer an HTTP request (until the "
    "response starts for a stream).", ["method", "route"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


class _OutboxSnapshot(Collector):
    """The outbox backlog as read just now from the database."""

    def __init__(self, backlog: Backlog, now_micros: int) -> None:
        self._backlog = backlog
        self._now = now_micros

    def collect(self) -> Iterator[Metric]:
        backlog = self._backlog
        yield GaugeMetricFamily("carnet_outbox_events_waiting",
                                "Notification events not yet turned into deliveries.",
                                value=backlog.events_waiting)
        deliveries = GaugeMetricFamily("carnet_outbox_deliveries",
                                       "Deliveries still pending, and given up (failed).",
                                       labels=["status"])
        deliveries.add_metric(["pending"], backlog.deliveries_pending)
        deliveries.add_metric(["failed"], backlog.deliveries_failed)
        yield deliveries
        age = (0.0 if backlog.oldest_waiting_at is None
               else max(0.0, (self._now - backlog.oldest_waiting_at) / 1e6))
        yield GaugeMetricFamily("carnet_outbox_oldest_waiting_seconds",
                                "Age of the oldest event or delivery still waiting (0: none).",
                                value=age)


def exposition(backlog: Backlog, now_micros: int) -> bytes:
    """The text format: this process's (or all workers') metrics, then the backlog."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)  # type: ignore[no-untyped-call]
    else:
        counted = REGISTRY
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_OutboxSnapshot(backlog, now_micros))
    return generate_latest(counted) + generate_latest(snapshot)
