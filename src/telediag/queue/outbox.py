"""The outbox publisher: committed jobs go to the broker, and their rows say so.

``publish`` only hands the ids to a background thread, so a device's C-STORE answer does
not wait on the broker: the job rows are already committed as ``pending``, and anything
this thread has not sent when the process dies is found by the sweeper.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Sequence

import dramatiq

from telediag.store import Database

log = logging.getLogger(__name__)


class OutboxPublisher:
    """Sends committed jobs to the broker and marks them ``queued`` (see module doc)."""

    def __init__(self, db: Database, actor: dramatiq.Actor, batch_size: int = 200,
                 mark_interval_s: float = 0.25) -> None:
        self.db = db
        self.actor = actor
        self.batch_size = batch_size
        self.mark_interval_s = mark_interval_s
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def publish(self, job_ids: Sequence[int]) -> None:
        with self._idle:
            self._in_flight += len(job_ids)
        for job_id in job_ids:
            self._queue.put(job_id)
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="telediag-outbox", daemon=True)
                self._thread.start()

    def send_now(self, job_ids: Sequence[int]) -> None:
        """Send jobs whose rows the caller already marked ``queued`` (the sweeper's claims)."""
        for job_id in job_ids:
            self.actor.send(job_id)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every handed-over job was sent and marked (or failed to be); for tests."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _run(self) -> None:
        # Each job goes to the broker at once (an alarm must not wait); marking rows
        # ``queued`` is batched over ``mark_interval_s`` so that it does not compete with
        # every ingest transaction for the database (SQLite has a single writer).
        unmarked: list[int] = []
        deadline = 0.0
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if unmarked else None
            try:
                job_id = self._queue.get(timeout=timeout)
            except queue.Empty:
                job_id = None
            if job_id is not None:
                try:
                    self.actor.send(job_id)
                    if not unmarked:
                        deadline = time.monotonic() + self.mark_interval_s
                    unmarked.append(job_id)
                except Exception as exc:  # broker down: the row stays pending for the sweeper
                    log.warning("could not publish job %s now (%s); the sweeper will", job_id, type(exc).__name__)
                    self._done(1)
            if unmarked and (job_id is None or len(unmarked) >= self.batch_size):
                try:
                    with self.db.uow() as uow:
                        uow.jobs.mark_queued(unmarked)
                        uow.commit()
                except Exception as exc:  # harmless: a pending job that was sent is at worst sent again
                    log.warning("could not mark %d job(s) queued (%s)", len(unmarked), type(exc).__name__)
                self._done(len(unmarked))
                unmarked = []

    def _done(self, n: int) -> None:
        with self._idle:
            self._in_flight -= n
            self._idle.notify_all()
