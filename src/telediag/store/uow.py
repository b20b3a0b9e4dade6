"""The unit of work: one transaction, with the repositories that work inside it.

``with db.uow() as uow: ...; uow.commit()`` - leaving without ``commit`` discards the
changes, so a use case that fails half-way leaves nothing behind. Ingest writes the
stored-object row and its outbox job in one such transaction, so either both exist or
neither does.
"""

from __future__ import annotations

from typing import Self

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from telediag.domain import Deadlines
from telediag.store.catalog import CatalogRepository
from telediag.store.database import WalCheckpointer, make_engine, migrate, sync_sqlite
from telediag.store.read_audit import ReadAudit
from telediag.store.errors import DatabaseUnavailable, RowConflict
from telediag.store.hotpath import IngestRows
from telediag.store.notify import Listener, alarm_event_listener
from telediag.store.review import AuditRepository, QueueRepository, ReportRepository, UserRepository
from telediag.store.repositories import (AlarmRepository, CaseRepository, DeliveryRepository, DeviceRepository,
                                         JobRepository, QuarantineRepository, ResultRepository, SiteRepository)


class UnitOfWork:
    """A transaction scope with its repositories (see module doc)."""

    sites: SiteRepository
    devices: DeviceRepository
    cases: CaseRepository
    jobs: JobRepository
    results: ResultRepository
    quarantine: QuarantineRepository
    alarms: AlarmRepository
    deliveries: DeliveryRepository
    users: UserRepository
    queue: QueueRepository
    reports: ReportRepository
    audit: AuditRepository
    catalog: CatalogRepository

    def __init__(self, session_factory: sessionmaker[Session], snapshot: bool = False,
                 deadlines: Deadlines = Deadlines()) -> None:
        self._factory = session_factory
        self._snapshot = snapshot
        self._deadlines = deadlines
        self.session: Session

    def __enter__(self) -> Self:
        self.session = s = self._factory()
        if self._snapshot and s.get_bind().dialect.name == "postgresql":
            # All reads of this unit see one snapshot, so a status page never pairs a job
            # the worker finished with a case it has not yet marked (PostgreSQL defaults to a
            # fresh snapshot per statement; SQLite has one writer and WAL snapshots anyway).
            s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        self.sites, self.devices, self.cases = SiteRepository(s), DeviceRepository(s), CaseRepository(s, self._deadlines)
        self.jobs, self.results, self.quarantine = JobRepository(s), ResultRepository(s), QuarantineRepository(s)
        self.alarms, self.deliveries = AlarmRepository(s, self._deadlines), DeliveryRepository(s)
        self.users, self.queue = UserRepository(s), QueueRepository(s, self._deadlines)
        self.reports, self.audit = ReportRepository(s), AuditRepository(s)
        self.catalog = CatalogRepository(s)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.session.close()  # rolls back anything uncommitted
        except SQLAlchemyError:
            pass  # the connection is gone; the pool discards it
        if isinstance(exc, IntegrityError):
            raise RowConflict(type(exc.orig).__name__ if exc.orig is not None else "IntegrityError") from exc
        if isinstance(exc, SQLAlchemyError):
            raise DatabaseUnavailable(type(exc).__name__) from exc

    def commit(self) -> None:
        self.session.commit()


class Database:
    """The engine, a factory of units of work, and the C-STORE hot path's repository."""

    def __init__(self, url: str, durable: bool = True, deadlines: Deadlines = Deadlines(),
                 journaled_ingest: bool = False) -> None:
        self.engine: Engine = make_engine(url, durable)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.deadlines = deadlines
        #: With ``journaled_ingest`` (SQLite only), the ingest rows are committed without waiting
        #: for the disk: the ingest journal holds them until its checkpoint calls :meth:`sync`.
        self._ingest_engine: Engine | None = None
        if journaled_ingest:
            if self.engine.dialect.name != "sqlite":
                raise ValueError("the ingest journal is for the embedded SQLite database")
            self._ingest_engine = make_engine(url, durable=False, background_checkpoints=True)
        self.ingest_rows = IngestRows(self._ingest_engine or self.engine, deadlines)
        #: Reads (searches, retrievals) are audited through this, in batches.
        self.read_audit = ReadAudit(self.uow)
        self._checkpointer: WalCheckpointer | None = None
        if durable and self.engine.dialect.name == "sqlite":
            self._checkpointer = WalCheckpointer(self.engine)
            self._checkpointer.start()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def refresh_statistics(self) -> None:
        """Have the database re-read its tables' statistics, as autovacuum (PostgreSQL) does a
        minute or so after a bulk load, so the planner uses the indexes a search needs."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")

    def uow(self, snapshot: bool = False) -> UnitOfWork:
        """A unit of work; ``snapshot=True`` makes all its reads consistent with each other."""
        return UnitOfWork(self._sessions, snapshot, self.deadlines)

    def alarm_event_listener(self) -> "Listener | None":
        """A LISTEN connection woken when alarm events commit, or None (SQLite: see ``notify``)."""
        return alarm_event_listener(self.engine)

    def migrate(self) -> None:
        migrate(self.engine)

    def sync(self) -> None:
        """Make the ingest rows committed without waiting for the disk durable (see
        ``journaled_ingest``); other commits were durable when they returned."""
        if self._ingest_engine is not None:
            sync_sqlite(self._ingest_engine)

    def dispose(self) -> None:
        self.read_audit.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer.join(5)
        self.engine.dispose()
        if self._ingest_engine is not None:
            self._ingest_engine.dispose()


__all__ = ["Database", "UnitOfWork"]
