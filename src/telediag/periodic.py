"""A background round every few seconds: the sweepers of the push and review stages."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Periodic(threading.Thread):
    """A daemon thread that calls :meth:`sweep` every ``interval_s`` until :meth:`stop`; a
    failing round (a database or broker outage) is logged and tried again next time."""

    def __init__(self, name: str, interval_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def sweep(self) -> object:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.sweep()
            except Exception as exc:
                log.warning("%s round failed: %s: %s", self.name, type(exc).__name__, exc)

    def stop(self) -> None:
        self.stopped.set()
