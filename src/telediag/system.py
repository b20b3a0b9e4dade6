"""Wiring: build the parts of telediag from ``Settings``.

Every entry point (``up``, ``api``, ``scp``, ``worker``, tests) assembles the same
objects here, so the embedded and the distributed mode differ only in settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import dramatiq

from telediag.broker import make_broker
from telediag.config import Settings
from telediag.db import Database
from telediag.ingest import IngestService
from telediag.jobs import JobContext, OutboxPublisher, Sweeper, declare_analysis_actor
from telediag.objectstore import ObjectStore, open_store

log = logging.getLogger(__name__)


def default_analyze(recording) -> dict:
    from telediag.ecg.analysis import analyze

    return analyze(recording)


@dataclass
class System:
    """The assembled parts; attributes are built on first use."""

    settings: Settings

    @cached_property
    def db(self) -> Database:
        db = Database(self.settings.effective_database_url)
        db.migrate()
        return db

    @cached_property
    def store(self) -> ObjectStore:
        return open_store(self.settings.effective_object_store_url)

    @cached_property
    def broker(self) -> dramatiq.Broker:
        broker = make_broker(self.settings.broker_url)
        dramatiq.set_broker(broker)
        return broker

    @cached_property
    def analysis_actor(self) -> dramatiq.Actor:
        return declare_analysis_actor(self.broker, lambda: JobContext(self.db, self.store, default_analyze),
                                      max_retries=self.settings.job_max_retries)

    @cached_property
    def publisher(self) -> OutboxPublisher:
        return OutboxPublisher(self.db, self.analysis_actor)

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(self.db, self.store, self.publisher)

    def sweeper(self, interval_s: float = 15.0) -> Sweeper:
        return Sweeper(self.publisher, interval_s=interval_s, stale_after_s=self.settings.job_stale_after_s)

    def worker(self, threads: int = 2) -> dramatiq.Worker:
        """A Dramatiq worker consuming the analysis queue inside this process."""
        self.analysis_actor  # declare before the worker starts consuming
        return dramatiq.Worker(self.broker, worker_threads=threads)

    def close(self) -> None:
        if "broker" in self.__dict__:
            self.broker.close()
        if "db" in self.__dict__:
            self.db.dispose()
