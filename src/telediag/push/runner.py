"""Sending deliveries: claim, send over the channel, mark; retry with exponential backoff.

The distributed path is the broker: after the transaction that wrote an alarm event and its
deliveries commits, the bus handler sends a ``deliver_alarms`` message with the delivery ids
(:func:`declare_push_actor`), and whichever process consumes it sends them. A failed delivery
is due again after ``base * 2**(attempts - 1)`` seconds (at most ten minutes) and the actor sends
itself a message delayed by that much; after ``max_attempts`` the delivery is ``failed``.
Nothing here polls: what a crash or a lost message leaves behind is found by the push sweeper
(:mod:`telediag.push.sweeper`).

Each delivery is claimed exclusively with a lease (one UPDATE, like a job), so two messages for
one delivery, or a message and the sweeper, never both send it; it is marked ``sent`` in the
transaction after the channel confirmed (HTTP 2xx, MQTT PUBACK). A process that dies between
those two leaves a ``sending`` row whose lease lapses, and the push is repeated: receivers
deduplicate on ``event_id``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Mapping, Sequence

import dramatiq

from telediag.domain import DeliveryTask, PushChannel
from telediag.push.channels import Channel, PushFailed
from telediag.store import Database

log = logging.getLogger(__name__)

PUSH_QUEUE = "telediag_push"
#: How long a claimed delivery is held before another sender may take it (a dead sender).
LEASE_S = 60.0
MAX_BACKOFF_S = 600.0


class DeliveryRunner:
    """Sends deliveries by id over the configured channels (see module doc)."""

    def __init__(self, db: Database, channels: Mapping[PushChannel, Channel], *, retry_base_s: float = 2.0,
                 max_attempts: int = 12) -> None:
        self.db = db
        self.channels = dict(channels)
        self.retry_base_s = retry_base_s
        self.max_attempts = max_attempts

    def backoff_s(self, attempts: int) -> float:
        return min(MAX_BACKOFF_S, self.retry_base_s * 2 ** max(0, attempts - 1))

    def deliver(self, delivery_ids: Iterable[int]) -> dict[int, float]:
        """Send each delivery that is due and not held by another sender; return the ids that
        failed and will be due again, with the seconds until then."""
        retry: dict[int, float] = {}
        for delivery_id in delivery_ids:
            with self.db.uow() as uow:
                task = uow.deliveries.claim(delivery_id, LEASE_S)
                uow.commit()
            if task is not None:
                wait = self._send(task)
                if wait is not None:
                    retry[delivery_id] = wait
        return retry

    def _send(self, task: DeliveryTask) -> float | None:
        channel = self.channels.get(task.channel)
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            if channel is None:
                raise PushFailed(f"channel {task.channel.value} is not configured in this process")
            status = channel.send(task)
        except PushFailed as exc:
            error, status = str(exc), exc.status_code
        except Exception as exc:  # a network error of any kind is a failed attempt, logged and retried
            error = f"{type(exc).__name__}: {exc}"
        elapsed_ms = (time.perf_counter() - started) * 1000
        retry_in = None if error is None or task.attempts >= self.max_attempts else self.backoff_s(task.attempts)
        with self.db.uow() as uow:
            if error is None:
                uow.deliveries.sent(task.id, status, elapsed_ms)
            else:
                uow.deliveries.failed(task.id, error, status, elapsed_ms, retry_in)
            uow.commit()
        if error is not None:
            (log.warning if retry_in is not None else log.error)(
                "push %s of event %s to site %s failed (attempt %d: %s)%s", task.channel.value, task.event_id,
                task.site_id, task.attempts, error, f"; retry in {retry_in:.0f} s" if retry_in is not None
                else "; giving up")
        return retry_in

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def declare_push_actor(broker: dramatiq.Broker, runner: Callable[[], DeliveryRunner]) -> dramatiq.Actor:
    """Bind the ``deliver_alarms`` actor to ``broker``: it sends the deliveries it is given and
    schedules each failed one again, as a message delayed by its backoff. ``runner`` builds the
    runner on first use, so a process that only sends messages opens no MQTT connection."""

    def deliver_alarms(delivery_ids: Sequence[int]) -> None:
        for delivery_id, wait_s in runner().deliver(delivery_ids).items():
            actor.send_with_options(args=([delivery_id],), delay=int(wait_s * 1000))

    # Retries are the runner's (recorded per delivery); the broker's would repeat sent ones.
    actor = dramatiq.actor(deliver_alarms, broker=broker, actor_name="deliver_alarms", queue_name=PUSH_QUEUE,
                           max_retries=0)
    return actor
