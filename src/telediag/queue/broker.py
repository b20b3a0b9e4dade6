"""The task-queue broker: Dramatiq over Redis or RabbitMQ, or in-process when embedded.

Dramatiq gives retries with exponential backoff and a dead-letter queue; telediag
additionally records each job's state in the database (the outbox) so that a failure is
visible on the operator's side and not only in the broker. :class:`BrokerWatch` lets the
sweeper notice a broker that lost its messages (a Redis restarted without persistence)
within seconds instead of waiting for the stale-job rule.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

ANALYSIS_QUEUE = "telediag_analysis"


def make_broker(url: str) -> dramatiq.Broker:
    """``stub://`` (embedded, in memory), ``redis://HOST:PORT/DB`` or ``amqp://USER:PASS@HOST:PORT/VHOST``."""
    if url.startswith("stub:"):
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
    elif url.startswith(("redis:", "rediss:")):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url)
    elif url.startswith(("amqp:", "amqps:")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    else:
        raise ValueError(f"unknown broker URL {url!r} (use stub://, redis://... or amqp://...)")
    broker.add_middleware(CurrentMessage())
    return broker


class BrokerWatch:
    """What the broker can tell about messages it may have lost.

    Redis keeps every message of a queue (waiting, delayed, or delivered and not yet
    acknowledged) in a hash until it is acknowledged, and reports a new ``run_id`` after a
    restart, so both a restart and an emptied queue can be seen. RabbitMQ keeps telediag's
    messages on disk (durable queues, persistent messages), and the in-process broker
    lives and dies with the jobs' owner, so for them nothing is reported and only the
    stale-job rule applies.
    """

    def __init__(self, broker: dramatiq.Broker, queue: str = ANALYSIS_QUEUE) -> None:
        self._client = getattr(broker, "client", None) if type(broker).__name__ == "RedisBroker" else None
        namespace = getattr(broker, "namespace", "dramatiq")
        self._hashes = (f"{namespace}:{queue}.msgs", f"{namespace}:{queue}.DQ.msgs")

    def epoch(self) -> str | None:
        """An identity of the broker's current life (changes when it restarts), or None."""
        if self._client is None:
            return None
        return str(self._client.info("server").get("run_id"))

    def held_messages(self) -> int | None:
        """How many messages the broker holds for the queue, or None when it cannot say."""
        if self._client is None:
            return None
        return sum(int(self._client.hlen(name)) for name in self._hashes)
