"""The dispatcher's guarantees, on both databases, with channels that record what they get:
at least once per target, never twice at once, retries with backoff, failures kept."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from service.fhir.http import now_micros
from service.notify.dispatcher import Dispatcher, Policy, retry_at
from service.notify.errors import DeliveryFailed
from storage import outbox
from storage.db import Database
from storage.outbox import Channel, Delivery, Event, Status

FAST = Policy(max_attempts=3, backoff_seconds=0.05, lease_seconds=30, poll_seconds=0.05)


class Recorder:
    """A channel that succeeds (after ``fail_first`` temporary failures per delivery)."""

    def __init__(self, fail_first: int = 0, permanent: bool = False,
                 pause: float = 0.0) -> None:
        self.fail_first = fail_first
        self.permanent = permanent
        self.pause = pause
        self.calls: Counter[int] = Counter()
        self.delivered: list[int] = []
        self.entered = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.entered.set()
        self.calls[delivery.pk] += 1
        if self.pause:
            await asyncio.sleep(self.pause)
        if self.calls[delivery.pk] <= self.fail_first:
            raise DeliveryFailed("endpoint answered 503", permanent=self.permanent)
        self.delivered.append(delivery.pk)


async def to_inbox(_conn: object, event: Event) -> list[tuple[Channel, str]]:
    return [(Channel.INBOX, event.patient_id)]


async def add_events(database: Database, count: int) -> list[int]:
    async with database.write() as conn:
        return [await outbox.add_event(conn, "document", f"p{i}", {"document": f"d{i}",
                                                                    "patient_facing": True},
                                       now_micros()) for i in range(count)]


def dispatcher(database: Database, channel: Recorder, policy: Policy = FAST) -> Dispatcher:
    return Dispatcher(database, {Channel.INBOX: channel}, to_inbox, policy)


async def all_deliveries(database: Database) -> list[outbox.DeliveryView]:
    async with database.read() as conn:
        return await outbox.deliveries(conn, limit=1000)


async def test_each_event_reaches_each_target_once(database: Database) -> None:
    await add_events(database, 5)
    channel = Recorder()
    assert await dispatcher(database, channel).run_once() == 5
    assert sorted(channel.calls.values()) == [1] * 5
    assert {d.status for d in await all_deliveries(database)} == {"done"}
    assert await dispatcher(database, channel).run_once() == 0  # nothing left to do


class Crowd(Recorder):
    """A channel that notes how many sends are in flight at once."""

    def __init__(self) -> None:
        super().__init__(pause=0.02)
        self.in_flight = 0
        self.most = 0

    async def __call__(self, delivery: Delivery) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await super().__call__(delivery)
        finally:
            self.in_flight -= 1


async def test_a_pass_sends_its_deliveries_together(database: Database) -> None:
    """One slow endpoint (up to its timeout) must not make the others wait their turn; the
    inbox channel bounds its own database writes (test_notifications.py)."""
    await add_events(database, 30)
    channel = Crowd()
    assert await dispatcher(database, channel).run_once() == 30
    assert len(channel.delivered) == 30
    assert channel.most == 30


async def test_an_event_exists_only_if_its_cause_commits(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.write() as conn:
            await outbox.add_event(conn, "document", "p1", {"patient_facing": True},
                                   now_micros())
            raise RuntimeError("the filing failed after the event was written")
    async with database.read() as conn:
        assert await outbox.patient_events(conn, "p1") == []


async def test_fanning_out_again_adds_no_delivery(database: Database) -> None:
    [event] = await add_events(database, 1)
    async with database.write() as conn:
        for _ in range(2):
            await outbox.fan_out(conn, event, [(Channel.INBOX, "p0"), (Channel.EMAIL, "p0")],
                                 now_micros())
    assert len(await all_deliveries(database)) == 2


async def test_a_failing_channel_is_retried_with_backoff_until_it_works(
        database: Database) -> None:
    await add_events(database, 1)
    channel = Recorder(fail_first=2)
    running = dispatcher(database, channel)
    await running.run_once()
    [delivery] = await all_deliveries(database)
    assert (delivery.status, delivery.attempts, delivery.last_error) == \
        ("pending", 1, "endpoint answered 503")
    for _ in range(100):
        await asyncio.sleep(0.05)
        await running.run_once()
        if channel.delivered:
            break
    [delivery] = await all_deliveries(database)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("done", 3, None)
    async with database.read() as conn:
        attempts = await outbox.attempts_of(conn, delivery.pk)
    assert [ok for _, ok, _ in attempts] == [False, False, True]
    assert attempts[1][0] - attempts[0][0] >= 50_000  # waited the backoff (0.05 s)


async def test_the_last_failed_attempt_marks_the_delivery_failed(database: Database) -> None:
    await add_events(database, 1)
    channel = Recorder(fail_first=99)
    running = dispatcher(database, channel)
    for _ in range(100):
        await running.run_once()
        if (await all_deliveries(database))[0].status == "failed":
            break
        await asyncio.sleep(0.05)
    [delivery] = await all_deliveries(database)
    assert (delivery.status, delivery.attempts) == ("failed", FAST.max_attempts)
    async with database.read() as conn:
        assert [d.pk for d in await outbox.deliveries(conn, status=Status.FAILED)] == \
            [delivery.pk]
        assert (await outbox.backlog(conn))["deliveries_failed"] == 1


async def test_a_permanent_failure_is_not_retried(database: Database) -> None:
    await add_events(database, 1)
    channel = Recorder(fail_first=1, permanent=True)
    await dispatcher(database, channel).run_once()
    await asyncio.sleep(0.1)
    await dispatcher(database, channel).run_once()
    [delivery] = await all_deliveries(database)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert sum(channel.calls.values()) == 1


async def test_two_dispatchers_never_deliver_one_delivery_twice(database: Database) -> None:
    await add_events(database, 40)
    channel = Recorder(pause=0.005)  # long enough for the two to overlap
    first, second = dispatcher(database, channel), dispatcher(database, channel)
    await asyncio.gather(first.run_once(), second.run_once())
    assert len(channel.delivered) == 40
    assert max(channel.calls.values()) == 1
    assert {d.status for d in await all_deliveries(database)} == {"done"}


async def test_a_dispatcher_stopped_mid_flight_leaves_the_delivery_to_another(
        database: Database) -> None:
    await add_events(database, 1)
    stuck = Recorder(pause=3600)
    short_lease = Policy(max_attempts=3, backoff_seconds=0.05, lease_seconds=0.3)
    killed = asyncio.create_task(dispatcher(database, stuck, short_lease).run_once())
    await asyncio.wait_for(stuck.entered.wait(), 10)
    killed.cancel()  # what a SIGKILL leaves: a lease, no attempt recorded
    with pytest.raises(asyncio.CancelledError):
        await killed

    channel = Recorder()
    assert await dispatcher(database, channel).run_once() == 0  # still leased
    await asyncio.sleep(0.35)
    assert await dispatcher(database, channel).run_once() == 1
    [delivery] = await all_deliveries(database)
    assert (delivery.status, delivery.attempts) == ("done", 1)
    assert len(channel.delivered) == 1


def test_the_backoff_doubles_up_to_an_hour_and_stops_at_the_last_attempt() -> None:
    policy = Policy(max_attempts=30, backoff_seconds=2.0)
    assert [retry_at(policy, n, 0) for n in range(3)] == [2_000_000, 4_000_000, 8_000_000]
    assert retry_at(policy, 20, 0) == 3600 * 1_000_000
    assert retry_at(Policy(max_attempts=3), 2, 0) is None


async def test_an_attempt_never_outlasts_its_lease(database: Database) -> None:
    """A channel that hangs is cut off before another dispatcher may take the delivery."""
    await add_events(database, 1)
    hanging = Recorder(pause=3600)
    short_lease = Policy(max_attempts=3, backoff_seconds=0.05, lease_seconds=0.3)
    running = dispatcher(database, hanging, short_lease)
    assert await running.fan_out() == 1
    assert await asyncio.wait_for(running.deliver_due(), 5) == 1
    [delivery] = await all_deliveries(database)
    assert (delivery.status, delivery.attempts, delivery.last_error) == \
        ("pending", 1, "the attempt outlasted its lease")
