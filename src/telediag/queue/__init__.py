"""The queue stage: committed jobs reach workers, and none is ever forgotten.

- :func:`make_broker` - Dramatiq over Redis or RabbitMQ (distributed) or in-process (embedded);
- :class:`OutboxPublisher` - sends the jobs ingest committed and marks them ``queued``;
- :class:`Sweeper` - publishes what a crash, a dead worker or a lossy broker left behind;
- :func:`declare_analysis_actor`, :class:`LeaseKeeper`, :class:`AnalysisProcesses` behind a
  :class:`ReceivingGate` - the worker side (see :mod:`telediag.queue.worker`).
"""

from telediag.queue.broker import ANALYSIS_QUEUE, BrokerWatch, make_broker
from telediag.queue.outbox import OutboxPublisher
from telediag.queue.sweeper import Sweeper
from telediag.queue.worker import AnalysisProcesses, LeaseKeeper, ReceivingGate, declare_analysis_actor

__all__ = ["ANALYSIS_QUEUE", "make_broker", "BrokerWatch", "OutboxPublisher", "Sweeper", "declare_analysis_actor",
           "LeaseKeeper", "AnalysisProcesses", "ReceivingGate"]
