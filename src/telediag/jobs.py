"""Analysis jobs: outbox publishing, the worker's handler, and the sweeper.

A job row is written in the ingest transaction (state ``pending``). After commit it
is sent to the broker and marked ``queued``. A worker runs it, stores the result
and marks it ``done``; a job that keeps failing ends ``dead`` with its last error.
Running a job twice is harmless: a ``done`` job is skipped and results are keyed by
object, which is what makes re-publishing by the sweeper safe.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Sequence

import dramatiq
from dramatiq.middleware import CurrentMessage
from sqlalchemy import select, update

from telediag.broker import ANALYSIS_QUEUE
from telediag.db import Database
from telediag.ingest import WFDB_HEADER_MEDIA_TYPE
from telediag.models import AnalysisResult, Case, CaseStatus, Job, JobState, StoredObject, utcnow
from telediag.objectstore import ObjectStore

log = logging.getLogger(__name__)

def _permanent_errors() -> tuple[type[BaseException], ...]:
    """Analysis failures that retrying cannot fix (the stored object itself is unreadable)."""
    from telediag.ecg.recording import WaveformError

    return (WaveformError,)


@dataclass
class JobContext:
    """What a worker needs: the database, the object store, and the analysis function."""

    db: Database
    store: ObjectStore
    analyze: Callable[[Any], dict[str, Any]]


def load_recording(store: ObjectStore, obj: StoredObject, siblings: Sequence[StoredObject]):
    """Turn a stored ECG object (a DICOM waveform, or a WFDB header with its files) into a Recording."""
    from telediag.ecg.io import read_dicom_waveform, read_wfdb_files

    if obj.media_type == WFDB_HEADER_MEDIA_TYPE:
        files = {item.key.rsplit("/", 1)[-1]: store.get(item.key, item.sha256) for item in siblings}
        return read_wfdb_files(files, obj.record_name or "")
    return read_dicom_waveform(store.get(obj.key, obj.sha256))


def run_job(ctx: JobContext, job_id: int, final_attempt: bool) -> None:
    """Run one analysis job to its end state, or raise so the broker retries it later."""
    with ctx.db.uow() as uow:
        job = uow.session.get(Job, job_id)
        if job is None:
            log.warning("job %s does not exist; dropped", job_id)
            return
        if job.state in (JobState.DONE, JobState.DEAD):
            log.info("job %s already %s; skipped", job_id, job.state.value)
            return
        obj = job.object
        siblings = list(uow.session.scalars(select(StoredObject).where(
            StoredObject.case_id == obj.case_id, StoredObject.record_name == obj.record_name))) \
            if obj.record_name else []
    try:
        result = ctx.analyze(load_recording(ctx.store, obj, siblings))
    except Exception as exc:
        permanent = isinstance(exc, _permanent_errors())
        _record_failure(ctx.db, job_id, obj.case_id, exc, dead=permanent or final_attempt)
        if permanent:
            return
        raise
    with ctx.db.uow() as uow:
        s = uow.session
        row = s.scalar(select(AnalysisResult).where(AnalysisResult.object_id == obj.id))
        if row is None:
            row = AnalysisResult(object_id=obj.id)
            s.add(row)
        row.analyzer_version = str(result.get("analyzer_version", "unknown"))
        row.heart_rate_bpm = result.get("heart_rate_bpm")
        row.lead_count = len(result.get("leads", []))
        row.duration_s = float(result.get("duration_s", 0.0))
        row.fs = float(result.get("fs", 0.0))
        row.result = result
        row.created_at = utcnow()
        job = s.get(Job, job_id)
        job.state = JobState.DONE
        job.attempts += 1
        job.last_error = None
        s.get(Case, obj.case_id).status = CaseStatus.ANALYSED
        uow.commit()
    log.info("job %s done (object %s)", job_id, obj.id)


def _record_failure(db: Database, job_id: int, case_id: int, exc: BaseException, dead: bool) -> None:
    message = f"{type(exc).__name__}: {exc}"[:2000]
    with db.uow() as uow:
        job = uow.session.get(Job, job_id)
        job.attempts += 1
        job.last_error = message
        if dead:
            job.state = JobState.DEAD
            uow.session.get(Case, case_id).status = CaseStatus.ANALYSIS_FAILED
        uow.commit()
    (log.error if dead else log.warning)("job %s failed (%s)%s", job_id, type(exc).__name__,
                                         "; dead-lettered" if dead else "; will retry")


def declare_analysis_actor(broker: dramatiq.Broker, ctx_factory: Callable[[], JobContext],
                           max_retries: int = 3, min_backoff_ms: int = 1000,
                           max_backoff_ms: int = 60_000) -> dramatiq.Actor:
    """Bind the analysis actor to ``broker``; the context is built lazily in the worker process."""
    lock = threading.Lock()
    holder: list[JobContext] = []

    def context() -> JobContext:
        with lock:
            if not holder:
                holder.append(ctx_factory())
            return holder[0]

    def analyze_ecg(job_id: int) -> None:
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message is not None else max_retries
        run_job(context(), job_id, final_attempt=retries >= max_retries)

    return dramatiq.actor(analyze_ecg, broker=broker, actor_name="analyze_ecg", queue_name=ANALYSIS_QUEUE,
                          max_retries=max_retries, min_backoff=min_backoff_ms, max_backoff=max_backoff_ms)


class OutboxPublisher:
    """Sends committed jobs to the broker and marks them ``queued``.

    ``publish`` only hands the ids to a background thread, so a device's C-STORE answer
    does not wait on the broker: the job rows are already committed as ``pending``, and
    anything this thread has not sent when the process dies is found by the sweeper.
    """

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
                    self._mark_queued(unmarked)
                except Exception as exc:  # harmless: a pending job that was sent is at worst sent again
                    log.warning("could not mark %d job(s) queued (%s)", len(unmarked), type(exc).__name__)
                self._done(len(unmarked))
                unmarked = []

    def _done(self, n: int) -> None:
        with self._idle:
            self._in_flight -= n
            self._idle.notify_all()

    def _mark_queued(self, job_ids: list[int]) -> None:
        with self.db.uow() as uow:
            uow.session.execute(update(Job).where(Job.id.in_(job_ids), Job.state == JobState.PENDING)
                                .values(state=JobState.QUEUED, updated_at=utcnow()))
            uow.commit()

    def sweep(self, pending_grace_s: float = 5.0, stale_after_s: float = 600.0) -> int:
        """Publish jobs left ``pending`` (a crash after commit) and re-publish ``queued`` jobs
        unfinished for ``stale_after_s`` (a broker that lost them). Returns how many."""
        now = utcnow()
        with self.db.uow() as uow:
            ids = list(uow.session.scalars(select(Job.id).where(
                ((Job.state == JobState.PENDING) & (Job.created_at <= now - timedelta(seconds=pending_grace_s)))
                | ((Job.state == JobState.QUEUED) & (Job.updated_at <= now - timedelta(seconds=stale_after_s))))))
        sent = 0
        for job_id in ids:
            with self.db.uow() as uow:
                # Claim first so two sweepers do not both send; a crash after the claim is caught
                # later by the stale-queued rule.
                claimed = uow.session.execute(
                    update(Job).where(Job.id == job_id, Job.state.in_([JobState.PENDING, JobState.QUEUED]))
                    .values(state=JobState.QUEUED, updated_at=utcnow())).rowcount
                uow.commit()
            if claimed:
                self.actor.send(job_id)
                sent += 1
        if sent:
            log.info("sweeper published %d unfinished job(s)", sent)
        return sent


class Sweeper(threading.Thread):
    """Runs ``OutboxPublisher.sweep`` at start and then every ``interval_s`` seconds."""

    def __init__(self, publisher: OutboxPublisher, interval_s: float = 15.0, stale_after_s: float = 600.0,
                 pending_grace_s: float = 5.0) -> None:
        super().__init__(name="telediag-sweeper", daemon=True)
        self.publisher = publisher
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s
        self.pending_grace_s = pending_grace_s
        self.stopped = threading.Event()

    def run(self) -> None:
        grace = 0.0  # at start every pending job is an orphan of a previous process
        while not self.stopped.is_set():
            try:
                self.publisher.sweep(pending_grace_s=grace, stale_after_s=self.stale_after_s)
            except Exception as exc:  # a database or broker outage: try again next round
                log.warning("sweep failed: %s", type(exc).__name__)
            grace = self.pending_grace_s
            self.stopped.wait(self.interval_s)

    def stop(self) -> None:
        self.stopped.set()
