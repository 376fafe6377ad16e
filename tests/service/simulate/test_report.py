"""The harness's figures: percentiles, counts by status, and the pace of its tickets."""

from __future__ import annotations

import asyncio
import os
import socket
import time

from service.simulate.login import Client
from service.simulate.memory import listening_pids, peak_rss
from service.simulate.report import TRANSPORT_ERROR, Report, percentile
from service.simulate.runner import Plan, Tickets

CLIENT = Client("demo-app", "secret", "http://127.0.0.1:8765/callback")


def test_percentiles_are_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]
    assert percentile(ordered, 0.5) == 50.0
    assert percentile(ordered, 0.99) == 99.0
    assert percentile(ordered, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0


def test_every_request_counts_failed_ones_included() -> None:
    report = Report("http://carnet.test")
    for seconds in (0.010, 0.020, 0.030):
        report.record("iti65", "200", seconds, True, sent=1000)
    report.record("iti65", "422", 0.005, False, sent=0)
    report.record("iti65", TRANSPORT_ERROR, 1.0, False)
    report.record("iti67", "200", 0.002, True)
    summary = report.summary()
    filed = summary["operations"]["iti65"]
    assert (filed["requests"], filed["ok"], filed["errors"]) == (5, 3, 2)
    assert filed["statuses"] == {"200": 3, "422": 1, "transport": 1}
    assert filed["bytes_sent"] == 3000
    assert filed["latency_ms"]["max"] == 1000.0
    assert summary["errors"] == 2
    assert "iti68" not in summary["operations"]  # nothing asked, nothing shown
    text = report.text()
    assert "422: 1" in text and "transport: 1" in text


async def test_tickets_stop_at_the_count() -> None:
    tickets = Tickets(Plan("http://x", CLIENT, documents=3))
    taken = [await tickets.take() for _ in range(5)]
    assert taken == [True, True, True, False, False]


async def test_tickets_keep_the_rate_and_the_deadline() -> None:
    tickets = Tickets(Plan("http://x", CLIENT, duration=0.6, rate=10.0))
    started = time.monotonic()
    taken = 0
    while await tickets.take():
        taken += 1
    elapsed = time.monotonic() - started
    assert 5 <= taken <= 7  # 10 per second for 0.6 s
    assert elapsed < 1.0


async def test_concurrent_takers_share_one_count() -> None:
    tickets = Tickets(Plan("http://x", CLIENT, documents=50))

    async def take_all() -> int:
        count = 0
        while await tickets.take():
            count += 1
        return count

    assert sum(await asyncio.gather(*(take_all() for _ in range(8)))) == 50


def test_the_server_is_found_by_its_listening_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert os.getpid() in listening_pids(port)
        peak = peak_rss((), f"http://127.0.0.1:{port}")
        assert peak is not None and peak > 1 << 20
    assert peak_rss((), "https://carnet.example.fr") is None  # another machine: unknown
