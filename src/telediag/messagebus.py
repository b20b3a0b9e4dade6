"""A small in-process message bus for domain events.

Stages stay unaware of each other: ingest announces ``ObjectStored`` and does not know
that the queue stage then publishes the job; the analysis use case announces
``AnalysisCompleted`` and does not know who listens. Handlers are registered in one place,
``telediag.bootstrap``. A handler's failure is logged and does not undo the committed
transaction the event reports; anything that must not be lost is written to the outbox
in that transaction instead of living only in a handler.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable, TypeVar

from telediag.domain import Event

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
Handler = Callable[[E], None]


class MessageBus:
    """Dispatches each event to the handlers subscribed to its type, in subscription order."""

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        self._handlers[event_type].append(handler)

    def handle(self, event: Event) -> None:
        for handler in self._handlers.get(type(event), ()):
            try:
                handler(event)
            except Exception:
                log.exception("handler %s failed for %s", getattr(handler, "__qualname__", handler),
                              type(event).__name__)


class RelayBus(MessageBus):
    """Keeps the events it is given instead of handling them, for another process's bus to
    handle (an embedded analysis process hands its events back to the receiving process)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)
