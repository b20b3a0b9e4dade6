"""The sweeper: no committed job is forgotten, whatever crashed.

Each round it claims and publishes

- ``pending`` jobs older than a short grace (the process that committed them died before
  publishing; at start, with no grace, since every pending job is then an orphan);
- ``running`` jobs whose lease ran out (the worker died; workers renew their leases while
  they work, so this is within about a lease of the death);
- ``queued`` jobs untouched for ``stale_after_s`` (a broker that lost them without saying);
- and, when the broker says it lost its messages (:class:`BrokerWatch`: a restarted Redis,
  or a queue emptied while the database still has queued jobs), every ``queued`` job at once.

Claims are exclusive (see ``JobRepository.claim_for_publish``), so any number of processes
may run a sweeper and a job is still published once per round. In the embedded mode the one
process owns every job, and its first round takes them all.
"""

from __future__ import annotations

import logging
import threading

from telediag.queue.broker import BrokerWatch
from telediag.queue.outbox import OutboxPublisher
from telediag.store import Database

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    """Runs :meth:`sweep` at start and then every ``interval_s`` seconds (see module doc)."""

    def __init__(self, db: Database, publisher: OutboxPublisher, watch: BrokerWatch | None = None, *,
                 interval_s: float = 5.0, stale_after_s: float = 600.0, pending_grace_s: float = 5.0,
                 owns_all_jobs: bool = False) -> None:
        super().__init__(name="telediag-sweeper", daemon=True)
        self.db, self.publisher, self.watch = db, publisher, watch
        self.interval_s, self.stale_after_s, self.pending_grace_s = interval_s, stale_after_s, pending_grace_s
        self.owns_all_jobs = owns_all_jobs
        self.stopped = threading.Event()
        self._epoch: str | None = None

    def sweep(self, *, first: bool = False) -> int:
        """One round; returns how many jobs it published."""
        with self.db.uow() as uow:
            ids = uow.jobs.claim_for_publish(pending_grace_s=0.0 if first else self.pending_grace_s,
                                             stale_after_s=self.stale_after_s,
                                             everything=first and self.owns_all_jobs)
            uow.commit()
        self.publisher.send_now(ids)
        lost = self._broker_lost_messages()
        if lost:
            with self.db.uow() as uow:
                lost_ids = uow.jobs.claim_lost(published_before_s=self.interval_s)
                uow.commit()
            self.publisher.send_now(lost_ids)
            if lost_ids:
                log.warning("broker lost its messages (%s); re-published %d queued job(s)", lost, len(lost_ids))
            ids += lost_ids
        if ids:
            log.info("sweeper published %d unfinished job(s)", len(ids))
        return len(ids)

    def _broker_lost_messages(self) -> str | None:
        """Why the broker is known to have lost messages, or None."""
        if self.watch is None:
            return None
        epoch = self.watch.epoch()
        previous, self._epoch = self._epoch, epoch
        if previous is not None and epoch != previous:
            return "it restarted"
        if self.watch.held_messages() == 0:
            with self.db.uow() as uow:
                age = uow.jobs.oldest_queued_age_s()
            if age is not None and age >= self.interval_s:
                return "its queue is empty while jobs wait"
        return None

    def run(self) -> None:
        first = True
        while not self.stopped.is_set():
            try:
                self.sweep(first=first)
                first = False
            except Exception as exc:  # a database or broker outage: try again next round
                log.warning("sweep failed: %s", type(exc).__name__)
            self.stopped.wait(self.interval_s)

    def stop(self) -> None:
        self.stopped.set()
