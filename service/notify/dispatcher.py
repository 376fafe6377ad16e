"""The outbox dispatcher: fans each event out to its channels, then delivers each at least once.

Two steps, each in short transactions so that several dispatchers (one per API
process, or ``carnet dispatcher`` processes) share the work without delivering
one event twice to the same channel:

1. *fan out*: events not yet fanned out are locked (``SKIP LOCKED``), their
   deliveries added (the patient's inbox and e-mail when the event faces the
   patient; each app Subscription allowed to see it), and marked fanned out;
2. *deliver*: due deliveries are leased (a claim with an end), sent outside any
   transaction, and each attempt recorded: done, retried with exponential
   backoff, or failed after the last allowed attempt. A dispatcher killed after
   its lease leaves the delivery to whoever finds the lease expired.

On PostgreSQL the dispatcher also LISTENs on ``carnet_outbox`` (``add_event``
notifies it at commit) so that a notification leaves within milliseconds, not at
the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from service.fhir.http import now_micros
from service.notify.errors import DeliveryFailed
from storage import outbox
from storage.db import Database
from storage.outbox import Channel, Delivery, Event, Status

log = logging.getLogger("carnet.dispatcher")

_MAX_BACKOFF_SECONDS = 3600.0


class Sender(Protocol):
    """One channel's delivery: returns, or raises ``DeliveryFailed``."""

    async def __call__(self, delivery: Delivery) -> None: ...


@dataclass(frozen=True)
class Policy:
    """How hard the dispatcher tries."""

    max_attempts: int = 8
    backoff_seconds: float = 2.0  # first retry delay, doubled after each failure
    lease_seconds: float = 60.0  # longer than any one send may take
    poll_seconds: float = 1.0
    batch: int = 200


def retry_at(policy: Policy, attempts_before: int, now: int) -> int | None:
    """When to try again after a failure, or None: give up (the last attempt failed)."""
    if attempts_before + 1 >= policy.max_attempts:
        return None
    delay = min(policy.backoff_seconds * (2 ** attempts_before), _MAX_BACKOFF_SECONDS)
    return now + int(delay * 1_000_000)


async def halt(task: asyncio.Task[None] | None, listener: Any) -> None:
    """Stop a background loop and close its LISTEN connection (either may be None)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if listener is not None:
        with contextlib.suppress(Exception):  # closing a dead connection is no failure
            await listener.close()


Targets = Callable[[AsyncConnection, Event], Awaitable[list[tuple[Channel, str]]]]


class Dispatcher:
    def __init__(self, database: Database, senders: dict[Channel, Sender], targets: Targets,
                 policy: Policy | None = None, *, name: str = "dispatcher") -> None:
        self._database = database
        self._senders = senders
        self._targets = targets
        self.policy = policy or Policy()
        self.name = name
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None

    # ------------------------------------------------------------------ one pass

    async def fan_out(self) -> int:
        """Turn waiting events into deliveries; how many events were fanned out."""
        async with self._database.write() as conn:
            waiting = await outbox.events_to_fan_out(conn, self.policy.batch)
            now = now_micros()
            for event in waiting:
                await outbox.fan_out(conn, event.pk, await self._targets(conn, event), now)
        return len(waiting)

    async def deliver_due(self) -> int:
        """Lease what is due, send it, record the attempts; how many were attempted.

        The attempts of one pass are recorded in one transaction (one commit, not one per
        delivery); a crash between the sends and that commit sends them again, which
        at-least-once delivery allows.
        """
        now = now_micros()
        async with self._database.write() as conn:
            leased = await outbox.lease_due(conn, now, int(self.policy.lease_seconds * 1e6),
                                            self.policy.batch)
        if not leased:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(d) for d in leased))
        now = now_micros()
        async with self._database.write() as conn:
            statuses = [await outbox.record_attempt(
                conn, delivery, now, error=error,
                retry_at=None if permanent or error is None
                else retry_at(self.policy, delivery.attempts, now))
                for delivery, error, permanent in outcomes]
        for (delivery, error, _), status in zip(outcomes, statuses, strict=True):
            log.debug("delivery %s (%s, event %s): %s", delivery.pk, delivery.channel,
                      delivery.event.pk, error or "done")
            if status is Status.FAILED:
                log.warning("delivery %s (%s, event %s) failed for good after %d attempt(s): "
                            "%s", delivery.pk, delivery.channel, delivery.event.pk,
                            delivery.attempts + 1, error)
        return len(leased)

    async def _attempt(self, delivery: Delivery) -> tuple[Delivery, str | None, bool]:
        """One send: (the delivery, its error or None, whether retrying is pointless)."""
        error: str | None = None
        permanent = False
        sender = self._senders.get(delivery.channel)
        try:
            if sender is None:
                raise DeliveryFailed(f"no {delivery.channel} channel is configured",
                                     permanent=True)
            # A channel's own timeout bounds a send; this bounds the attempt under the lease
            # whatever the channel does, so that no other dispatcher takes it meanwhile.
            async with asyncio.timeout(self.policy.lease_seconds * 0.8):
                await sender(delivery)
        except TimeoutError:
            error = "the attempt outlasted its lease"
        except DeliveryFailed as exc:
            error, permanent = exc.reason, exc.permanent
        except Exception as exc:  # a bug or an outage in one channel must not stop the rest
            log.exception("delivery %s (%s) raised", delivery.pk, delivery.channel)
            error = f"{type(exc).__name__}"
        return delivery, error, permanent

    async def run_once(self) -> int:
        """Fan out and deliver until nothing is due now; the number of attempts made."""
        attempted = 0
        while True:
            fanned = await self.fan_out()
            sent = await self.deliver_due()
            attempted += sent
            if not fanned and not sent:
                return attempted

    # ---------------------------------------------------------------- background

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        if self._task is None:
            await self._listen()
            self._task = asyncio.create_task(self._run(), name=f"carnet-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        listener, self._listener = self._listener, None
        await halt(task, listener)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away: try again at the next poll
                log.exception("dispatcher pass failed")
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.policy.poll_seconds)

    async def _listen(self) -> None:
        """PostgreSQL: wake on ``NOTIFY carnet_outbox`` (sent by each event's commit)."""
        if not self._database.is_postgresql:
            return
        try:
            self._listener = await self._database.listen(outbox.NOTIFY_CHANNEL, self.wake)
        except Exception:  # polling still delivers
            log.exception("LISTEN %s failed; polling every %.1f s", outbox.NOTIFY_CHANNEL,
                          self.policy.poll_seconds)
