"""The task-queue broker: Dramatiq over Redis or RabbitMQ, or in-process when embedded.

Dramatiq gives retries with exponential backoff and a dead-letter queue; telediag
additionally records each job's state in the database (see ``jobs``) so that a
failure is visible on the operator's side and not only in the broker.
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
