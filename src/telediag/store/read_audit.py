"""The audit entries of reads, appended in batches.

A search or a read (DICOMweb, C-FIND/C-GET/C-MOVE) changes nothing, so its audit entry need
not commit with it: appending each in its own transaction cost a commit (an fsync and the
audit chain's one head row) per request, 7-30 ms, which a viewer fetching a study's frames
pays hundreds of times. :class:`ReadAudit` collects them and appends each round's entries
in one transaction (every ``interval_s``, and at shutdown), each with the time of the read.
A crash can lose the last round's reads (a quarter of a second); actions that change
something are audited in their own transaction, as before.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from telediag.periodic import Periodic
from telediag.store.tables import utcnow

log = logging.getLogger(__name__)


class ReadAudit(Periodic):
    """Collects read entries (:meth:`record`) and appends them in batches (see module doc)."""

    def __init__(self, uow: Callable[[], Any], interval_s: float = 0.25) -> None:
        super().__init__("telediag-read-audit", interval_s)
        self._uow = uow
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, **entry: Any) -> None:
        """Queue one entry (the keywords of ``AuditRepository.append``), stamped now."""
        with self._lock:
            self._pending.append({**entry, "at": utcnow()})
            if not self.is_alive() and not self.stopped.is_set():
                self.start()

    def sweep(self) -> int:
        """Append what was recorded; on failure keep it for the next round."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            with self._uow() as uow:
                for entry in batch:
                    uow.audit.append(**entry)
                uow.commit()
        except Exception:
            with self._lock:
                self._pending[:0] = batch
            raise
        return len(batch)

    def close(self) -> None:
        """Stop the rounds and append what is left."""
        self.stop()
        if self.is_alive():
            self.join(5)
        try:
            self.sweep()
        except Exception as exc:
            log.error("%d read audit entries could not be appended at shutdown: %s", len(self._pending), exc)
