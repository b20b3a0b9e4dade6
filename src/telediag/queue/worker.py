"""Workers: the Dramatiq actor that runs analysis jobs, the leases they hold, and the
embedded mode's analysis processes.

Distributed mode: ``telediag worker`` consumes the analysis queue from the broker with
worker threads, on any machine (Dramatiq's own consumer, never a polling loop of ours).

Embedded mode: the in-process broker's worker threads hand each job to a pool of child
processes started at a lower OS priority, so decoding and analysing ECGs never takes the
GIL or a core from the DICOM SCP and the HTTP API that receive data in the parent; and a
job waits for a pause in receiving (:class:`ReceivingGate`), so a burst is received first.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Iterator

import dramatiq
from dramatiq.middleware import CurrentMessage

from telediag.queue.broker import ANALYSIS_QUEUE
from telediag.store import Database

log = logging.getLogger(__name__)

#: Runs one job: (job id, whether this is the broker's last attempt).
JobRunner = Callable[[int, bool], None]
#: Runs one job in an analysis process and returns the domain events it raised, for the parent.
RelayingJobRunner = Callable[[int, bool], list]


def declare_analysis_actor(broker: dramatiq.Broker, run: JobRunner, max_retries: int = 3,
                           min_backoff_ms: int = 1000, max_backoff_ms: int = 60_000) -> dramatiq.Actor:
    """Bind the ``analyze_ecg`` actor to ``broker``; each message runs ``run(job_id, final_attempt)``."""

    def analyze_ecg(job_id: int) -> None:
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message is not None else max_retries
        run(job_id, retries >= max_retries)

    return dramatiq.actor(analyze_ecg, broker=broker, actor_name="analyze_ecg", queue_name=ANALYSIS_QUEUE,
                          max_retries=max_retries, min_backoff=min_backoff_ms, max_backoff=max_backoff_ms)


class LeaseKeeper:
    """Renews the leases of the jobs this process is running, every third of a lease, so a
    live worker keeps its jobs however long they take and a dead one loses them within a
    lease (the sweeper then publishes them again)."""

    def __init__(self, db: Database, lease_s: float) -> None:
        self.db = db
        self.lease_s = lease_s
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, job_id: int) -> Iterator[None]:
        with self._lock:
            self._held.add(job_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="telediag-leases", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(job_id)

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.lease_s / 3):
            with self._lock:
                held = sorted(self._held)
            if not held:
                continue
            try:
                with self.db.uow() as uow:
                    uow.jobs.renew(held, self.lease_s)
                    uow.commit()
            except Exception as exc:  # the database is away: the lease may lapse and the job run again
                log.warning("could not renew %d job lease(s): %s", len(held), type(exc).__name__)


# -- embedded analysis processes ----------------------------------------------------------------
_child_runner: RelayingJobRunner | None = None


def _exit_with_parent(parent_pid: int) -> None:
    """End this analysis process once its parent is gone (a ``kill -9`` of ``telediag up``
    leaves no orphan analysing on: the jobs are republished when ``up`` starts again)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def _lower_priority(niceness: int) -> None:
    """Run only on CPU time that receiving leaves over: Linux's idle scheduling class where
    there is one, else a higher nice value."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.nice(niceness)
    except OSError:  # not permitted here: the process still works, at normal priority
        log.warning("could not lower the analysis process priority")


def _child_start(settings, niceness: int) -> None:
    """Initializer of an analysis process: lower priority, then its own system parts. Ctrl-C
    reaches the whole process group; the parent's shutdown ends this process in order."""
    global _child_runner
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="telediag-parent-watch",
                     daemon=True).start()
    _lower_priority(niceness)
    from telediag.bootstrap import System

    system = System(settings, durable_commits=False)
    _child_runner = system.run_job_relaying
    import telediag.ecg.analysis  # noqa: F401 - numpy, scipy and the DSP now, at this priority, not in a job


def _child_run(job_id: int, final_attempt: bool) -> list:
    assert _child_runner is not None, "analysis process not initialised"
    return _child_runner(job_id, final_attempt)


class ReceivingGate:
    """Holds analysis back while data is being received, for at most ``max_wait_s``.

    On a small machine even an idle-priority analysis process slows receiving (a shared
    core's caches, the database's one writer), and a cart sending its backlog gets its
    next success later for every ECG analysed in between. Receiving marks the gate; a job
    starts after ``quiet_s`` without a received object, or after ``max_wait_s`` whatever
    happens, so a burst delays its alarms by at most that.
    """

    def __init__(self, quiet_s: float, max_wait_s: float) -> None:
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self._last_received = -float("inf")

    def received(self, _event: object = None) -> None:
        """Something arrived just now (a message-bus handler: it takes the event)."""
        self._last_received = time.monotonic()

    def wait(self) -> None:
        """Return once receiving has paused for ``quiet_s``, or after ``max_wait_s``."""
        give_up = time.monotonic() + self.max_wait_s
        while True:
            now = time.monotonic()
            until = min(self._last_received + self.quiet_s, give_up)
            if now >= until:
                return
            time.sleep(until - now)


class AnalysisProcesses:
    """A pool of analysis processes for the embedded mode (see module doc).

    ``run`` blocks the calling broker thread until the child finished the job and re-raises
    its failure there, so Dramatiq's retries and dead-lettering work as for in-thread jobs;
    it returns the domain events the job raised, for the parent's message bus (the parent
    holds the broker and the alarm streams that react to them).
    """

    def __init__(self, settings, processes: int, gate: ReceivingGate, niceness: int = 10) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with live threads
        self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_child_start,
                                         initargs=(settings, niceness))
        # Start the processes now, not when the first burst arrives (see ``wait_ready``).
        self._started = [self._pool.submit(int) for _ in range(processes)]
        self.processes = processes
        self.gate = gate

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until the warm-up tasks ran, each in a process that had imported the analysis
        (a few seconds of CPU): the embedded mode opens its SCP after this, so a cart's first
        objects do not share the machine with those imports. Gives up after ``timeout_s``."""
        wait(self._started, timeout=timeout_s)

    def run(self, job_id: int, final_attempt: bool) -> list:
        self.gate.wait()
        return self._pool.submit(_child_run, job_id, final_attempt).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
