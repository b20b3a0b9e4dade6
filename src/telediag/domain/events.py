"""Domain events: facts one stage announces and later stages react to.

Handlers are registered in one place (``telediag.bootstrap``). An event is handled in
the process that raised it, after the transaction that made it true has committed; the
ones that must reach other processes do so through the outbox and the broker (a job row
written in that same transaction), never through process memory.
"""

from __future__ import annotations

from dataclasses import dataclass


class Event:
    """Base of all domain events."""


@dataclass(frozen=True)
class ObjectStored(Event):
    """A received object is durable and recorded; ``job_id`` is its committed analysis job."""

    case_id: int
    object_id: int
    job_id: int | None


@dataclass(frozen=True)
class ObjectQuarantined(Event):
    """A different object arrived under a known instance UID and was kept aside."""

    quarantine_id: int
    device_id: int


@dataclass(frozen=True)
class AnalysisCompleted(Event):
    job_id: int
    object_id: int
    case_id: int


@dataclass(frozen=True)
class AnalysisFailed(Event):
    job_id: int
    object_id: int
    case_id: int
    dead: bool


@dataclass(frozen=True)
class AlarmEventsRecorded(Event):
    """Push events (an alarm raised, acknowledged, escalated; a signed report sent to its
    clinic, acknowledged) and their deliveries are committed: the deliveries can be sent and
    the streams woken."""

    event_ids: tuple[int, ...]
    delivery_ids: tuple[int, ...]
