"""Database engine, schema migration and the unit of work.

One ``UnitOfWork`` is one transaction: ingest writes the stored-object row and its
outbox job together, so either both exist or neither does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "storage" / "migrations"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL and full fsync so a commit means durable."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; safe at every start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class UnitOfWork:
    """A transaction scope: commit explicitly; leaving without commit discards the changes.

    Leaving closes the session without expiring what was loaded, so plain attributes of
    rows read inside stay usable afterwards (detached, read-only snapshots).
    """

    def __init__(self, session_factory: sessionmaker[Session], snapshot: bool = False) -> None:
        self._factory = session_factory
        self._snapshot = snapshot
        self.session: Session

    def __enter__(self) -> Self:
        self.session = self._factory()
        if self._snapshot and self.session.get_bind().dialect.name == "postgresql":
            # All reads of this unit see one snapshot, so a status page never pairs a job
            # the worker finished with a case it has not yet marked (PostgreSQL defaults to a
            # fresh snapshot per statement; SQLite has one writer and WAL snapshots anyway).
            self.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()  # rolls back anything uncommitted

    def commit(self) -> None:
        self.session.commit()


class Database:
    """The engine plus a factory of units of work."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def uow(self, snapshot: bool = False) -> UnitOfWork:
        """A unit of work; ``snapshot=True`` makes all its reads consistent with each other."""
        return UnitOfWork(self._sessions, snapshot)

    def migrate(self) -> None:
        migrate(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
