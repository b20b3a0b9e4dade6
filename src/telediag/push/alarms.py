"""The alarm use cases: list, show (with who was notified), acknowledge, read the event stream.

A caller sees the alarms of its own site and of every site below it (a county center its
townships, the prefecture all), and nothing else: another site's alarm looks the same as no
alarm. Acknowledging records who and when, and tells everyone who was told of the alarm.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from telediag.domain import (AlarmEventInfo, AlarmEventsRecorded, AlarmInfo, AlarmNotFound, AlarmState, PushChannel,
                             UnknownSite)
from telediag.messagebus import MessageBus
from telediag.store import Database


def alarm_json(alarm: AlarmInfo) -> dict[str, Any]:
    out = asdict(alarm)
    out["state"] = alarm.state.value
    out["raised_at"] = alarm.raised_at.isoformat()
    out["acknowledged_at"] = alarm.acknowledged_at.isoformat() if alarm.acknowledged_at else None
    return out


def _scope(uow, site_id: int) -> set[int]:
    return uow.sites.subtree(site_id)


def list_alarms(db: Database, caller_site_id: int, site: str | int | None = None,
                state: AlarmState | None = None) -> list[AlarmInfo]:
    """Alarms of the caller's sites, or of one of them (``site``: its id or name), newest first."""
    with db.uow() as uow:
        scope = _scope(uow, caller_site_id)
        if site is not None:
            wanted = uow.sites.by_name(str(site))
            site_id = wanted.id if wanted is not None else (int(site) if str(site).isdigit() else None)
            if site_id is None or site_id not in scope:
                raise UnknownSite(f"no site {site!r} among the caller's")
            scope = {site_id}
        return uow.alarms.list(scope, state)


def alarm_detail(db: Database, caller_site_id: int, alarm_id: int) -> dict[str, Any]:
    """The alarm with who was notified and when, and every delivery with its attempts."""
    with db.uow(snapshot=True) as uow:
        alarm = uow.alarms.get(alarm_id)
        if alarm is None or alarm.site_id not in _scope(uow, caller_site_id):
            raise AlarmNotFound(f"no alarm {alarm_id} for this site")
        notified = [{**asdict(n), "sent_at": n.sent_at.isoformat()} for n in uow.alarms.notifications(alarm_id)]
        deliveries = uow.deliveries.for_alarm(alarm_id)
    return {**alarm_json(alarm), "notified": notified, "deliveries": deliveries}


def acknowledge_alarm(db: Database, bus: MessageBus, channels: tuple[PushChannel, ...], caller_site_id: int,
                      alarm_id: int, by: str) -> AlarmInfo:
    """Record that ``by`` (``device:NAME``, later a user) acknowledged the alarm; the first
    acknowledgement is an ``ack`` event pushed to everyone who was told of the alarm."""
    with db.uow() as uow:
        alarm = uow.alarms.get(alarm_id)
        if alarm is None or alarm.site_id not in _scope(uow, caller_site_id):
            raise AlarmNotFound(f"no alarm {alarm_id} for this site")
        alarm, events, deliveries = uow.alarms.acknowledge(alarm_id, by, channels)
        uow.commit()
    if events:
        bus.handle(AlarmEventsRecorded(tuple(events), tuple(deliveries)))
    return alarm


def events_since(db: Database, site_id: int, after_id: int, limit: int = 1000) -> list[AlarmEventInfo]:
    """The site's events after ``after_id`` (an SSE client's Last-Event-ID), oldest first."""
    with db.uow() as uow:
        return uow.alarms.events_after(after_id, site_id, limit)


def last_event_id(db: Database) -> int:
    with db.uow() as uow:
        return uow.alarms.last_event_id()
