"""Wiring: build the parts of telediag from ``Settings``, and register the event handlers.

Every entry point (``up``, ``api``, ``scp``, ``worker``, tests) assembles the same objects
here, so the embedded and the distributed mode differ only in settings; and this is the
one place that says which stage reacts to which domain event.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import cached_property

import dramatiq

from telediag.analysis import AnalysisContext, run_analysis_job
from telediag.config import Settings
from telediag.domain import AlarmEventsRecorded, DeviceIdentity, Event, ObjectStored, PushChannel
from telediag.ingest import IngestService, QueryService, StorageSCP
from telediag.messagebus import MessageBus, RelayBus
from telediag.network import KeyVault, device_by_ae_title
from telediag.push import (PUSH_QUEUE, AlarmFeed, Channel, DeliveryRunner, MqttChannel, PushSweeper, WebhookChannel,
                           declare_push_actor)
from telediag.queue import (ANALYSIS_QUEUE, AnalysisProcesses, BrokerWatch, LeaseKeeper, OutboxPublisher,
                            ReceivingGate, Sweeper, declare_analysis_actor, make_broker)
from telediag.review import ReviewService, ReviewSweeper
from telediag.store import Database, IngestJournal, ObjectStore, open_object_store

log = logging.getLogger(__name__)


@dataclass
class System:
    """The assembled parts; attributes are built on first use."""

    settings: Settings
    #: False in the analysis processes, which write derived data only (see ``store.make_engine``).
    durable_commits: bool = True
    _processes: AnalysisProcesses | None = field(default=None, init=False, repr=False)
    _runner: DeliveryRunner | None = field(default=None, init=False, repr=False)
    _runner_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def _journaled(self) -> bool:
        return self.durable_commits and self.settings.journaled_ingest

    @cached_property
    def db(self) -> Database:
        db = Database(self.settings.effective_database_url, durable=self.durable_commits,
                      deadlines=self.settings.deadlines, journaled_ingest=self._journaled)
        db.migrate()
        return db

    @cached_property
    def store(self) -> ObjectStore:
        return open_object_store(self.settings.effective_object_store_url)

    @cached_property
    def receiving_gate(self) -> ReceivingGate:
        """Marked by every stored object, before its job is published (the embedded
        analysis processes wait on it)."""
        return ReceivingGate(self.settings.analysis_quiet_s, self.settings.analysis_defer_max_s)

    @cached_property
    def bus(self) -> MessageBus:
        bus = MessageBus()
        bus.subscribe(ObjectStored, self.receiving_gate.received)
        bus.subscribe(ObjectStored, self._publish_job)
        bus.subscribe(AlarmEventsRecorded, self._publish_deliveries)
        return bus

    def _publish_job(self, event: ObjectStored) -> None:
        if event.job_id is not None:
            self.publisher.publish([event.job_id])

    def _publish_deliveries(self, event: AlarmEventsRecorded) -> None:
        """After the commit that wrote alarm events: their deliveries go to the broker (the push
        sweeper sends them should this process die first), and this process's streams wake."""
        if event.delivery_ids:
            self.push_actor.send(list(event.delivery_ids))
        if "alarm_feed" in self.__dict__:
            self.alarm_feed.wake()

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
    def journal(self) -> IngestJournal | None:
        """The embedded mode's ingest journal (see ``Settings.journaled_ingest``)."""
        if not self._journaled:
            return None

        def sync() -> None:
            self.store.sync()
            self.db.sync()

        return IngestJournal(self.settings.data_dir / "journal", sync, self.settings.journal_checkpoint_s)

    @cached_property
    def ingest(self) -> IngestService:
        """The ingest use case; it first records what a crashed process's journal still holds."""
        ingest = IngestService(self.db, self.store, self.bus, self.journal)
        ingest.recover()
        return ingest

    @cached_property
    def analysis(self) -> AnalysisContext:
        leases = LeaseKeeper(self.db, self.settings.job_lease_s)
        return AnalysisContext(self.db, self.store, self.bus, lease_s=self.settings.job_lease_s, hold=leases.hold,
                               channels=self.push_channels)

    # -- push ------------------------------------------------------------------------------

    @cached_property
    def push_channels(self) -> tuple[PushChannel, ...]:
        """The channels an alarm event gets deliveries for: MQTT when configured; webhooks for
        the sites that have one (the repository checks); SSE reads the events themselves."""
        return ((PushChannel.MQTT,) if self.settings.mqtt_url else ()) + (PushChannel.WEBHOOK,)

    @cached_property
    def push_broker(self) -> dramatiq.Broker:
        """Its own connection to the same broker: pushes have a worker of their own, and
        Dramatiq gives each broker object one worker."""
        return make_broker(self.settings.broker_url)

    @cached_property
    def push_actor(self) -> dramatiq.Actor:
        return declare_push_actor(self.push_broker, self.delivery_runner)

    def delivery_runner(self) -> DeliveryRunner:
        """The process's runner, built on first use (one MQTT connection per process)."""
        with self._runner_lock:
            if self._runner is None:
                s = self.settings
                channels: dict[PushChannel, Channel] = {PushChannel.WEBHOOK: WebhookChannel()}
                if s.mqtt_url:
                    channels[PushChannel.MQTT] = MqttChannel(s.mqtt_url)
                self._runner = DeliveryRunner(self.db, channels, retry_base_s=s.push_retry_base_s,
                                              max_attempts=s.push_max_attempts)
            return self._runner

    def push_worker(self, threads: int = 2) -> dramatiq.Worker:
        """A Dramatiq worker for the push queue only, so a push never waits behind an analysis.
        Its idle poll of a Redis broker is capped at 100 ms (Dramatiq's default is 1 s), which is
        what an alarm may wait there; RabbitMQ and the in-process broker push to it anyway."""
        self.push_actor
        return dramatiq.Worker(self.push_broker, queues={PUSH_QUEUE}, worker_threads=threads, worker_timeout=100)

    @cached_property
    def alarm_feed(self) -> AlarmFeed:
        return AlarmFeed(self.db)

    def push_sweeper(self) -> PushSweeper:
        s = self.settings

        def send(ids: list[int]) -> None:
            for start in range(0, len(ids), 100):
                self.push_actor.send(ids[start:start + 100])

        return PushSweeper(self.db, send, self.bus.handle, channels=self.push_channels,
                           escalate_after_s={1: s.escalate_county_s, 2: s.escalate_prefecture_s},
                           interval_s=s.push_sweep_interval_s, pending_grace_s=s.push_pending_grace_s)

    @cached_property
    def vault(self) -> KeyVault:
        """The readers' signing keys, sealed under the server's secret (see ``Settings.secret_key``)."""
        return KeyVault(self.settings.secret(), self.settings.signature_algorithm)

    @cached_property
    def review(self) -> ReviewService:
        """The review stage; a signed report is pushed to its clinic over the alarm channels and
        filed back into its study through the ingest use case."""
        return ReviewService(self.db, self.store, self.vault, claim_lease_s=self.settings.claim_lease_s,
                             study_quiet_s=self.settings.study_quiet_s,
                             bus=self.bus, channels=self.push_channels, archive=self.ingest.ingest_dicom)

    def review_sweeper(self, defer_while_receiving: bool = False) -> ReviewSweeper:
        """The review sweeper; embedded, its rounds wait behind a burst of received objects as
        analysis does (``ReceivingGate``), for at most ``analysis_defer_max_s``."""
        pause = self.receiving_gate.wait if defer_while_receiving else None
        return ReviewSweeper(self.review, self.settings.review_sweep_interval_s, pause)

    def authorize(self, calling_ae_title: str) -> DeviceIdentity | None:
        """The registered device a DICOM association comes from (the SCP's ``authorize``)."""
        return device_by_ae_title(self.db, calling_ae_title)

    def storage_scp(self, host: str | None = None) -> StorageSCP:
        """The DICOM SCP: C-STORE into ingest, and C-FIND/GET/MOVE over the catalog on the same AE."""
        s = self.settings
        return StorageSCP(self.ingest, self.authorize, ae_title=s.ae_title, host=host or s.dicom_host,
                          port=s.dicom_port, max_object_bytes=s.max_dicom_bytes,
                          queries=QueryService(self.db, self.store))

    # -- workers ---------------------------------------------------------------------------

    def run_job_here(self, job_id: int, final_attempt: bool) -> None:
        """Run one analysis job in this process (a worker thread)."""
        run_analysis_job(self.analysis, job_id, final_attempt)

    def run_job_relaying(self, job_id: int, final_attempt: bool) -> list[Event]:
        """Run one job in an embedded analysis process and return the events it raised: they
        are the receiving process's to handle (it has the broker worker and the streams)."""
        relay = RelayBus()
        run_analysis_job(replace(self.analysis, bus=relay), job_id, final_attempt)
        return relay.events

    def _run_job(self, job_id: int, final_attempt: bool) -> None:
        if self._processes is None:
            self.run_job_here(job_id, final_attempt)
            return
        for event in self._processes.run(job_id, final_attempt):
            self.bus.handle(event)

    def worker(self, threads: int = 2) -> dramatiq.Worker:
        """A Dramatiq worker consuming the analysis queue, running jobs in this process."""
        self.analysis_actor  # declare before the worker starts consuming
        return dramatiq.Worker(self.broker, worker_threads=threads, queues={ANALYSIS_QUEUE})

    def embedded_worker(self, processes: int | None = None) -> dramatiq.Worker:
        """The embedded mode's worker: broker threads that hand each job to an analysis
        process at a lower priority, so receiving never waits for analysis."""
        self._processes = AnalysisProcesses(self.settings, processes or self.settings.analysis_processes,
                                            self.receiving_gate)
        return self.worker(threads=self._processes.processes)

    def sweeper(self, owns_all_jobs: bool = False, interval_s: float | None = None) -> Sweeper:
        s = self.settings
        return Sweeper(self.db, self.publisher, BrokerWatch(self.broker), interval_s=interval_s or s.sweep_interval_s,
                       stale_after_s=s.job_stale_after_s, pending_grace_s=s.job_pending_grace_s,
                       owns_all_jobs=owns_all_jobs)

    def start_embedded(self, stack: ExitStack, processes: int | None = None, host: str | None = None) -> StorageSCP:
        """Start what ``telediag up`` runs besides HTTP - analysis processes, the push worker, the
        job, push and review sweepers, the DICOM SCP - each stopped by ``stack`` in reverse order.
        This process owns every job, so the sweeper republishes the unfinished ones at once. The
        SCP listens last, once the analysis processes are ready."""
        self.db  # migrate before anything listens
        parts = [self.embedded_worker(processes), self.push_worker(), self.sweeper(owns_all_jobs=True),
                 self.push_sweeper(), self.review_sweeper(defer_while_receiving=True)]
        for part in parts:
            part.start()
            stack.callback(part.stop)
        self._processes.wait_ready()
        scp = self.storage_scp(host)
        scp.start()
        stack.callback(scp.stop)
        return scp

    def close(self) -> None:
        if "alarm_feed" in self.__dict__:
            self.alarm_feed.stop()
        if self._runner is not None:
            self._runner.close()
        if self._processes is not None:
            self._processes.close()
        if self.__dict__.get("journal") is not None:
            self.journal.close()
        for broker in ("broker", "push_broker"):
            if broker in self.__dict__:
                self.__dict__[broker].close()
        if "db" in self.__dict__:
            self.db.dispose()
