"""Wiring: build the parts of telediag from ``Settings``, and register the event handlers.

Every entry point (``up``, ``api``, ``scp``, ``worker``, tests) assembles the same objects
here, so the embedded and the distributed mode differ only in settings; and this is the
one place that says which stage reacts to which domain event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import dramatiq

from telediag.analysis import AnalysisContext, run_analysis_job
from telediag.config import Settings
from telediag.domain import DeviceIdentity, ObjectStored
from telediag.ingest import IngestService, StorageSCP
from telediag.messagebus import MessageBus
from telediag.network import device_by_ae_title
from telediag.queue import (AnalysisProcesses, BrokerWatch, LeaseKeeper, OutboxPublisher, Sweeper,
                            declare_analysis_actor, make_broker)
from telediag.store import Database, ObjectStore, open_object_store

log = logging.getLogger(__name__)


@dataclass
class System:
    """The assembled parts; attributes are built on first use."""

    settings: Settings
    #: False in the analysis processes, which write derived data only (see ``store.make_engine``).
    durable_commits: bool = True
    _processes: AnalysisProcesses | None = field(default=None, init=False, repr=False)

    @cached_property
    def db(self) -> Database:
        db = Database(self.settings.effective_database_url, durable=self.durable_commits)
        db.migrate()
        return db

    @cached_property
    def store(self) -> ObjectStore:
        return open_object_store(self.settings.effective_object_store_url)

    @cached_property
    def bus(self) -> MessageBus:
        bus = MessageBus()
        bus.subscribe(ObjectStored, self._publish_job)
        return bus

    def _publish_job(self, event: ObjectStored) -> None:
        if event.job_id is not None:
            self.publisher.publish([event.job_id])

    @cached_property
    def broker(self) -> dramatiq.Broker:
        broker = make_broker(self.settings.broker_url)
        dramatiq.set_broker(broker)
        return broker

    @cached_property
    def analysis_actor(self) -> dramatiq.Actor:
        return declare_analysis_actor(self.broker, self._run_job, max_retries=self.settings.job_max_retries)

    @cached_property
    def publisher(self) -> OutboxPublisher:
        return OutboxPublisher(self.db, self.analysis_actor)

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(self.db, self.store, self.bus)

    @cached_property
    def analysis(self) -> AnalysisContext:
        leases = LeaseKeeper(self.db, self.settings.job_lease_s)
        return AnalysisContext(self.db, self.store, self.bus, lease_s=self.settings.job_lease_s, hold=leases.hold)

    def authorize(self, calling_ae_title: str) -> DeviceIdentity | None:
        """The registered device a DICOM association comes from (the SCP's ``authorize``)."""
        return device_by_ae_title(self.db, calling_ae_title)

    def storage_scp(self, host: str | None = None) -> StorageSCP:
        s = self.settings
        return StorageSCP(self.ingest, self.authorize, ae_title=s.ae_title, host=host or s.dicom_host,
                          port=s.dicom_port, max_object_bytes=s.max_dicom_bytes)

    # -- workers ---------------------------------------------------------------------------

    def run_job_here(self, job_id: int, final_attempt: bool) -> None:
        """Run one analysis job in this process (a worker thread, or an analysis process)."""
        run_analysis_job(self.analysis, job_id, final_attempt)

    def _run_job(self, job_id: int, final_attempt: bool) -> None:
        runner = self._processes.run if self._processes is not None else self.run_job_here
        runner(job_id, final_attempt)

    def worker(self, threads: int = 2) -> dramatiq.Worker:
        """A Dramatiq worker consuming the analysis queue, running jobs in this process."""
        self.analysis_actor  # declare before the worker starts consuming
        return dramatiq.Worker(self.broker, worker_threads=threads)

    def embedded_worker(self, processes: int | None = None) -> dramatiq.Worker:
        """The embedded mode's worker: broker threads that hand each job to an analysis
        process at a lower priority, so receiving never waits for analysis."""
        self._processes = AnalysisProcesses(self.settings, processes or self.settings.analysis_processes)
        return self.worker(threads=self._processes.processes)

    def sweeper(self, owns_all_jobs: bool = False, interval_s: float | None = None) -> Sweeper:
        s = self.settings
        return Sweeper(self.db, self.publisher, BrokerWatch(self.broker), interval_s=interval_s or s.sweep_interval_s,
                       stale_after_s=s.job_stale_after_s, pending_grace_s=s.job_pending_grace_s,
                       owns_all_jobs=owns_all_jobs)

    def close(self) -> None:
        if self._processes is not None:
            self._processes.close()
        if "broker" in self.__dict__:
            self.broker.close()
        if "db" in self.__dict__:
            self.db.dispose()
