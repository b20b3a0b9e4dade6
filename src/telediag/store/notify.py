"""Wake-ups for the alarm streams: PostgreSQL LISTEN on the channel the alarm repository NOTIFYs.

Every API process streams alarm events to its SSE clients from the ``alarm_events`` table,
never from process memory, so a client connected to any process sees every event. To learn
*when* to read, a process LISTENs: PostgreSQL delivers the NOTIFY at the commit of the
transaction that wrote the events, so the wake-up never comes before the rows are visible.
SQLite has no such thing, and needs none: it is the embedded mode, one process, whose own
message bus wakes its stream.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from telediag.store.repositories import ALARM_EVENTS_CHANNEL


class Listener(Protocol):
    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives (True) or ``timeout`` seconds pass (False)."""

    def close(self) -> None: ...


class PostgresListener:
    """A dedicated autocommit connection LISTENing on the alarm events channel."""

    def __init__(self, engine: Engine) -> None:
        import psycopg

        url = engine.url.set(drivername="postgresql")
        self._conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5)
        self._conn.execute(f"LISTEN {ALARM_EVENTS_CHANNEL}")

    def wait(self, timeout: float) -> bool:
        notified = False
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            notified = True
        return notified

    def close(self) -> None:
        self._conn.close()


def alarm_event_listener(engine: Engine) -> Listener | None:
    """A listener for the engine's database, or None where the database cannot notify (SQLite)."""
    return PostgresListener(engine) if engine.dialect.name == "postgresql" else None
