"""The push sweeper: no alarm or report push is forgotten, and no critical alarm goes unanswered
quietly (unacknowledged reports are not escalated: the clinic's report list shows them).

Each round (every ``interval_s``) it

- claims the deliveries no sender is on - due for longer than a grace (their ``deliver_alarms``
  message died with a process or a broker) or held under a lapsed lease (the sender died) -
  and sends their ids to the broker again, as ``queue.Sweeper`` does for jobs;
- escalates the open critical alarms nobody acknowledged in time (``escalate_after_s``: level
  1, the center above the clinic; level 2, the one above that), each escalation an event that
  is recorded and pushed like the alarm itself.

Both are claims by one UPDATE each (see the repositories), so any number of API processes may
run a push sweeper and each delivery is re-sent, each alarm escalated, once.
"""

from __future__ import annotations

import logging
from typing import Callable

from telediag.domain import AlarmEventsRecorded, PushChannel
from telediag.periodic import Periodic
from telediag.store import Database

log = logging.getLogger(__name__)


class PushSweeper(Periodic):
    """Runs :meth:`sweep` every ``interval_s`` seconds (see module doc)."""

    def __init__(self, db: Database, send: Callable[[list[int]], None], announce: Callable[[AlarmEventsRecorded], None],
                 *, channels: tuple[PushChannel, ...], escalate_after_s: dict[int, float], interval_s: float = 1.0,
                 pending_grace_s: float = 5.0) -> None:
        super().__init__("telediag-push-sweeper", interval_s)
        self.db = db
        self.send = send
        self.announce = announce
        self.channels = channels
        self.escalate_after_s = escalate_after_s
        self.pending_grace_s = pending_grace_s

    def sweep(self) -> tuple[int, int]:
        """One round; returns (deliveries re-sent, escalation events raised)."""
        with self.db.uow() as uow:
            orphans = uow.deliveries.claim_orphans(self.pending_grace_s)
            uow.commit()
        if orphans:
            log.warning("push sweeper re-sends %d delivery(ies) no sender was on", len(orphans))
            self.send(orphans)
        with self.db.uow() as uow:
            events, deliveries = uow.alarms.escalate_due(self.escalate_after_s, self.channels)
            uow.commit()
        if events:
            log.warning("escalated %d unacknowledged critical alarm event(s)", len(events))
            self.announce(AlarmEventsRecorded(tuple(events), tuple(deliveries)))
        return len(orphans), len(events)
