"""The database engine and its schema migrations.

The migrations live in ``storage/migrations`` in the source tree and are installed as the
package ``telediag.store.migrations`` (see ``pyproject.toml``), so they are found through
the package in an editable and in a regular install alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sqlalchemy import Engine, create_engine, event

from telediag.periodic import Periodic
from telediag.store.objects import fsync_path


def make_engine(url: str, durable: bool = True, background_checkpoints: bool | None = None) -> Engine:
    """Create an engine; SQLite gets WAL and full fsync so a commit means durable.

    ``durable=False`` is for writers of derived data only (the analysis processes: a result
    lost to a power cut leaves its job unfinished, and the job runs again): their commits do
    not wait for the disk (SQLite ``synchronous=NORMAL`` in WAL mode, PostgreSQL
    ``synchronous_commit=off``; neither can corrupt the database), so they hold SQLite's
    single write lock for a fraction of the time and never make a device's C-STORE wait
    for an fsync that is not its own. The embedded ingest's rows are written so too, their
    objects' journal keeping them until a checkpoint (see :mod:`telediag.store.journal`).

    ``background_checkpoints`` (default: ``durable``): SQLite copies its log into the database
    only in the process's :class:`WalCheckpointer`, never inside a commit.
    """
    if background_checkpoints is None:
        background_checkpoints = durable
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
            if background_checkpoints:
                # A commit that crosses the WAL size limit would copy the WAL into the database
                # and fsync it before it returns, inside some device's C-STORE; a receiving
                # process checkpoints in the background instead (``WalCheckpointer``).
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if not durable:
        @event.listens_for(engine, "connect")
        def _no_commit_wait(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            with dbapi_conn.cursor() as cur:
                cur.execute("SET synchronous_commit TO off")
            dbapi_conn.commit()

    return engine


class WalCheckpointer(Periodic):
    """Copies SQLite's write-ahead log into the database every ``interval_s`` (a PASSIVE
    checkpoint: it never blocks a writer), so the log stays small while no commit pays for it."""

    def __init__(self, engine: Engine, interval_s: float = 1.0) -> None:
        super().__init__("telediag-wal-checkpoint", interval_s)
        self.engine = engine

    def sweep(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def sync_sqlite(engine: Engine) -> None:
    """Make every commit so far durable, those made without waiting for the disk included:
    fsync SQLite's log (the committed pages not yet copied into the database) and the
    database file (those a checkpoint copied)."""
    path = engine.url.database
    if not path or path == ":memory:":
        return
    for name in (path + "-wal", path):
        try:
            fsync_path(name)
        except FileNotFoundError:  # no log: nothing is committed outside the database file
            continue


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; safe at every start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    with resources.as_file(resources.files("telediag.store.migrations")) as script_location:
        cfg.set_main_option("script_location", str(script_location))
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def create_database(admin_dsn: str, name: str) -> str:
    """Create an empty PostgreSQL database (for benchmarks that need one of their own);
    return its SQLAlchemy URL. ``admin_dsn`` is a libpq connection string of a role that
    may create databases."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        user, host, port = conn.info.user, conn.info.host, conn.info.port
    return f"postgresql+psycopg://{user}@{host}:{port}/{name}"


def drop_database(admin_dsn: str, url: str) -> None:
    """Drop a database made by :func:`create_database`, whoever is still connected."""
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[-1]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
