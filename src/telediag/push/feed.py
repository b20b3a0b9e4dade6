"""The alarm stream of one API process: new ``alarm_events`` rows, fanned out to its SSE clients.

Fan-out across processes goes through the database, never process memory: each API process
has one thread that reads the events committed since the last it saw (one query per wake-up,
whatever the number of clients) and hands each to the clients of the sites it concerns.
What wakes the thread:

- PostgreSQL: LISTEN on the channel the alarm repository NOTIFYs in the transaction that writes
  events, delivered at commit - no delay and no polling; a read every ``fallback_s`` as well
  covers a notification lost with a dropped LISTEN connection (which is then reopened);
- SQLite (the embedded mode, one process): :meth:`wake`, called by the bus handler of the
  process that committed the events, and the same ``fallback_s`` read.

Event ids commit in order (see ``AlarmRepository``), so "id above the last seen" loses nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass

from telediag.domain import AlarmEventInfo
from telediag.store import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Client:
    site_id: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[AlarmEventInfo]


class AlarmFeed:
    """See module doc; started on its first subscriber."""

    def __init__(self, db: Database, fallback_s: float = 1.0) -> None:
        self.db = db
        self.fallback_s = fallback_s
        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._woken = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_id = 0

    def subscribe(self, site_id: int, loop: asyncio.AbstractEventLoop,
                  queue: asyncio.Queue[AlarmEventInfo]) -> int:
        """Hand the events of ``site_id`` to ``queue`` (on ``loop``) from now on; returns a token."""
        with self._lock:
            if self._thread is None:
                with self.db.uow() as uow:
                    self._last_id = uow.alarms.last_event_id()
                self._thread = threading.Thread(target=self._run, name="telediag-alarm-feed", daemon=True)
                self._thread.start()
            token = next(self._ids)
            self._clients[token] = _Client(site_id, loop, queue)
        return token

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._clients.pop(token, None)

    def wake(self) -> None:
        """New events were committed by this process (its bus handler calls this)."""
        self._woken.set()

    def stop(self) -> None:
        self._stopped.set()
        self._woken.set()

    def _run(self) -> None:
        listener = None
        while not self._stopped.is_set():
            try:
                if listener is None:
                    listener = self.db.alarm_event_listener()
                if listener is not None:
                    listener.wait(self.fallback_s)
                else:
                    self._woken.wait(self.fallback_s)
                self._woken.clear()
                self._dispatch()
            except Exception as exc:  # the database went away: read again after a pause, listen anew
                if not self._stopped.is_set():  # after stop, a dropped connection is the shutdown's
                    log.warning("alarm feed: %s: %s", type(exc).__name__, exc)
                if listener is not None:
                    try:
                        listener.close()
                    except Exception:  # already broken
                        pass
                    listener = None
                self._stopped.wait(self.fallback_s)
        if listener is not None:
            listener.close()

    def _dispatch(self) -> None:
        while True:
            with self.db.uow() as uow:
                events = uow.alarms.events_after(self._last_id)
            if not events:
                return
            with self._lock:
                clients = list(self._clients.values())
            for event in events:
                for client in clients:
                    if client.site_id in event.site_ids:
                        try:
                            client.loop.call_soon_threadsafe(client.queue.put_nowait, event)
                        except RuntimeError:  # its event loop closed: the server is shutting down
                            pass
            self._last_id = events[-1].id
