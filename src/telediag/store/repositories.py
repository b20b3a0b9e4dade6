"""Repositories: the questions and changes the stages ask of the database, by name.

Each repository works inside one :class:`~telediag.store.uow.UnitOfWork` (its session)
and returns the domain's value objects, never ORM rows, so the rest of telediag neither
writes SQL nor holds a row that could lazily load more. The C-STORE hot path has its own
repository over precompiled statements (:mod:`telediag.store.hotpath`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from telediag.domain import (AlarmEventInfo, AlarmInfo, AlarmState, CaseKind, CaseStatus, DeliveryTask,
                             DeviceIdentity, DeviceInfo, JobKind, JobState, Notification, Priority, PushChannel,
                             QuarantineEntry, ReportState, SiteInfo, SiteLevel, Deadlines, utc_seconds)
from telediag.store.tables import (Alarm, AlarmEvent, AlarmEventSite, AnalysisResult, Case, Delivery,
                                   DeliveryAttempt, Device, Job, QuarantinedObject, Report, Site, StoredObject,
                                   as_utc, utcnow)

__all__ = ["SiteRepository", "DeviceRepository", "JobRepository", "ResultRepository", "CaseRepository",
           "QuarantineRepository", "AlarmRepository", "DeliveryRepository", "JobTask", "ObjectRef",
           "ALARM_EVENTS_CHANNEL"]


def _site(row: Site) -> SiteInfo:
    return SiteInfo(row.id, row.name, row.level, row.parent_id, row.active)


class SiteRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, name: str, level: SiteLevel, parent_id: int | None) -> int:
        row = Site(name=name, level=level, parent_id=parent_id)
        self._s.add(row)
        self._s.flush()
        return row.id

    def get(self, site_id: int) -> SiteInfo | None:
        row = self._s.get(Site, site_id)
        return None if row is None else _site(row)

    def name(self, site_id: int) -> str | None:
        return self._s.scalar(select(Site.name).where(Site.id == site_id))

    def by_name(self, name: str) -> SiteInfo | None:
        row = self._s.scalar(select(Site).where(Site.name == name))
        return None if row is None else _site(row)

    def list(self) -> list[SiteInfo]:
        return [_site(row) for row in self._s.scalars(select(Site).order_by(Site.id))]

    def set_active(self, site_id: int, active: bool) -> None:
        self._s.execute(update(Site).where(Site.id == site_id).values(active=active))

    def set_webhook(self, site_id: int, url: str | None, secret: str | None) -> None:
        self._s.execute(update(Site).where(Site.id == site_id).values(webhook_url=url, webhook_secret=secret))

    def chain(self, site_id: int) -> list[int]:
        """The site and the centers above it, the site first (township, county, prefecture)."""
        parents = {sid: parent for sid, parent in self._s.execute(select(Site.id, Site.parent_id))}
        out = [site_id]
        while parents.get(out[-1]) is not None and len(out) < len(parents):
            out.append(parents[out[-1]])
        return out

    def subtree(self, site_id: int) -> set[int]:
        """The site and every site below it (what a county or prefecture center oversees)."""
        children: dict[int | None, list[int]] = {}
        for sid, parent in self._s.execute(select(Site.id, Site.parent_id)):
            children.setdefault(parent, []).append(sid)
        out, todo = set(), [site_id]
        while todo:
            sid = todo.pop()
            if sid not in out:
                out.add(sid)
                todo.extend(children.get(sid, ()))
        return out


class DeviceRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, name: str, site_id: int, ae_title: str | None, api_key_sha256: str, rules: str = "resting") -> int:
        row = Device(name=name, site_id=site_id, ae_title=ae_title, api_key_sha256=api_key_sha256, rules=rules)
        self._s.add(row)
        self._s.flush()
        return row.id

    def exists(self, *, name: str | None = None, ae_title: str | None = None) -> bool:
        column, value = (Device.name, name) if name is not None else (Device.ae_title, ae_title)
        return self._s.scalar(select(Device.id).where(column == value)) is not None

    def identity(self, *, ae_title: str | None = None, api_key_sha256: str | None = None) -> DeviceIdentity | None:
        """The active device of an active site with this AE title or key hash, else None."""
        column, value = ((Device.ae_title, ae_title) if ae_title is not None
                         else (Device.api_key_sha256, api_key_sha256))
        row = self._s.execute(select(Device.id, Device.name, Device.site_id, Device.ae_title, Device.rules)
                              .join(Site, Site.id == Device.site_id)
                              .where(column == value, Device.active.is_(True), Site.active.is_(True))).first()
        return None if row is None else DeviceIdentity(row.id, row.name, row.site_id, row.ae_title, row.rules)

    def list(self, name: str | None = None) -> list[DeviceInfo]:
        """All devices, or the one with ``name``."""
        query = select(Device, Site.name).join(Site, Site.id == Device.site_id).order_by(Device.id)
        if name is not None:
            query = query.where(Device.name == name)
        return [DeviceInfo(d.id, d.name, d.site_id, site_name, d.ae_title, d.active, d.created_at, d.rules)
                for d, site_name in self._s.execute(query)]

    def by_name(self, name: str) -> DeviceInfo | None:
        return next(iter(self.list(name)), None)

    def set_active(self, device_id: int, active: bool) -> None:
        self._s.execute(update(Device).where(Device.id == device_id).values(active=active))

    def set_key(self, device_id: int, api_key_sha256: str) -> None:
        self._s.execute(update(Device).where(Device.id == device_id).values(api_key_sha256=api_key_sha256))

    def set_destination(self, device_id: int, host: str | None, port: int | None) -> None:
        self._s.execute(update(Device).where(Device.id == device_id).values(dicom_host=host, dicom_port=port))

    def destination(self, ae_title: str) -> tuple[DeviceIdentity, str, int] | None:
        """The C-MOVE destination with this AE title: the active device of an active site that has
        a DICOM address, with its host and port; else None."""
        row = self._s.execute(select(Device.id, Device.name, Device.site_id, Device.ae_title, Device.rules,
                                     Device.dicom_host, Device.dicom_port)
                              .join(Site, Site.id == Device.site_id)
                              .where(Device.ae_title == ae_title, Device.active.is_(True), Site.active.is_(True),
                                     Device.dicom_host.is_not(None), Device.dicom_port.is_not(None))).first()
        return None if row is None else (DeviceIdentity(row.id, row.name, row.site_id, row.ae_title, row.rules),
                                         row.dicom_host, row.dicom_port)


@dataclass(frozen=True)
class ObjectRef:
    """A stored object as the analysis needs it: where its bytes are and what they are."""

    id: int
    case_id: int
    key: str
    sha256: str
    media_type: str
    record_name: str | None


@dataclass(frozen=True)
class JobTask:
    """A job claimed for running: its object and, for a WFDB record, the record's other files."""

    job_id: int
    attempts: int
    object: ObjectRef
    siblings: tuple[ObjectRef, ...]
    #: The critical-value rule set to analyse with (the upload's, else the device's).
    rules: str = "resting"
    kind: JobKind = JobKind.ANALYZE_ECG


def _ref(row: StoredObject) -> ObjectRef:
    return ObjectRef(row.id, row.case_id, row.key, row.sha256, row.media_type, row.record_name)


def _siblings(session: Session, obj: StoredObject) -> tuple[ObjectRef, ...]:
    """The other files of a WFDB record (none for a single-file object)."""
    if not obj.record_name:
        return ()
    return tuple(_ref(r) for r in session.scalars(select(StoredObject).where(
        StoredObject.case_id == obj.case_id, StoredObject.record_name == obj.record_name)))


class JobRepository:
    """Jobs are the transactional outbox: these are the state changes of their life."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def claim_for_run(self, job_id: int, lease_s: float) -> JobTask | None:
        """Take the job for running with a lease, unless it is done, dead or held by a live worker.

        One UPDATE whose WHERE holds the whole claim condition: on PostgreSQL a concurrent
        claimer waits for the row lock and then re-checks that condition on the new row
        version, so exactly one of two workers gets a job delivered twice.
        """
        now = utcnow()
        claimed = self._s.execute(
            update(Job).where(Job.id == job_id, (Job.state.in_([JobState.PENDING, JobState.QUEUED]))
                              | ((Job.state == JobState.RUNNING) & (Job.lease_until < now)))
            .values(state=JobState.RUNNING, lease_until=now + timedelta(seconds=lease_s), attempts=Job.attempts + 1,
                    updated_at=now)
            .returning(Job.attempts)).first()
        if claimed is None:
            return None
        job = self._s.get(Job, job_id)
        obj = job.object
        siblings = _siblings(self._s, obj)
        rules = job.rules or self._s.scalar(select(Device.rules).join(Case, Case.device_id == Device.id)
                                            .where(Case.id == obj.case_id))
        return JobTask(job_id, claimed.attempts, _ref(obj), siblings, rules or "resting", JobKind(job.kind))

    def state(self, job_id: int) -> JobState | None:
        return self._s.scalar(select(Job.state).where(Job.id == job_id))

    def renew(self, job_ids: list[int], lease_s: float) -> None:
        """Extend the leases of jobs a live worker is still running."""
        self._s.execute(update(Job).where(Job.id.in_(job_ids), Job.state == JobState.RUNNING)
                        .values(lease_until=utcnow() + timedelta(seconds=lease_s)))

    def finish(self, job_id: int) -> None:
        self._s.execute(update(Job).where(Job.id == job_id).values(state=JobState.DONE, last_error=None,
                                                                    lease_until=None, updated_at=utcnow()))

    def fail(self, job_id: int, message: str, dead: bool) -> None:
        """Record a failed attempt; a dead job stays dead, a live one waits for its retry."""
        self._s.execute(update(Job).where(Job.id == job_id).values(
            state=JobState.DEAD if dead else JobState.QUEUED, last_error=message[:2000], lease_until=None,
            updated_at=utcnow()))

    def mark_queued(self, job_ids: list[int]) -> None:
        self._s.execute(update(Job).where(Job.id.in_(job_ids), Job.state == JobState.PENDING)
                        .values(state=JobState.QUEUED, updated_at=utcnow()))

    def claim_for_publish(self, pending_grace_s: float, stale_after_s: float, everything: bool = False) -> list[int]:
        """Mark ``queued`` (freshly) and return the jobs that need publishing: ``pending`` ones
        older than the grace (a crash after commit), ``queued`` ones untouched for
        ``stale_after_s`` (a broker that lost them) and ``running`` ones whose lease ran out
        (a dead worker). ``everything`` takes every unfinished job (an embedded process at
        start owns them all).

        The eligibility is in the UPDATE's own WHERE, so two sweepers never both claim a
        job: on PostgreSQL the second waits for the first one's row lock and then finds the
        row no longer eligible; SQLite has one writer at a time.
        """
        now = utcnow()
        if everything:
            eligible = Job.state.in_([JobState.PENDING, JobState.QUEUED, JobState.RUNNING])
        else:
            eligible = (((Job.state == JobState.PENDING) & (Job.created_at <= now - timedelta(seconds=pending_grace_s)))
                        | ((Job.state == JobState.QUEUED) & (Job.updated_at <= now - timedelta(seconds=stale_after_s)))
                        | ((Job.state == JobState.RUNNING) & (Job.lease_until < now)))
        rows = self._s.execute(update(Job).where(eligible)
                               .values(state=JobState.QUEUED, lease_until=None, updated_at=now).returning(Job.id))
        return sorted(r.id for r in rows)

    def claim_lost(self, published_before_s: float) -> list[int]:
        """The ``queued`` jobs published at least ``published_before_s`` ago, freshly stamped:
        for when the broker is known to have lost its messages. The age is in the UPDATE's
        WHERE, so of two sweepers that noticed the loss only one re-sends each job."""
        now = utcnow()
        rows = self._s.execute(update(Job).where(Job.state == JobState.QUEUED,
                                                 Job.updated_at <= now - timedelta(seconds=published_before_s))
                               .values(updated_at=now).returning(Job.id))
        return sorted(r.id for r in rows)

    def oldest_queued_age_s(self) -> float | None:
        """Seconds since the least recently published ``queued`` job was published, or None."""
        oldest = self._s.scalar(select(Job.updated_at).where(Job.state == JobState.QUEUED)
                                .order_by(Job.updated_at).limit(1))
        if oldest is None:
            return None
        if oldest.tzinfo is None:  # SQLite returns naive UTC datetimes
            oldest = oldest.replace(tzinfo=timezone.utc)
        return (utcnow() - oldest).total_seconds()

    def list(self, state: JobState | None = None, after_id: int = 0) -> list[dict[str, Any]]:
        query = select(Job, StoredObject.key).join(StoredObject, StoredObject.id == Job.object_id) \
            .where(Job.id > after_id).order_by(Job.id)
        if state is not None:
            query = query.where(Job.state == state)
        return [{"id": j.id, "state": j.state.value, "object_id": j.object_id, "object_key": key,
                 "attempts": j.attempts, "error": j.last_error} for j, key in self._s.execute(query)]

    def count_by_state(self) -> dict[str, int]:
        rows = self._s.execute(select(Job.state, func.count()).group_by(Job.state))
        return {JobState(state).value: int(n) for state, n in rows}

    def last_id(self) -> int:
        return self._s.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) or 0

    def unfinished_after(self, after_id: int) -> int:
        """How many jobs newer than ``after_id`` are not yet done or dead."""
        return int(self._s.scalar(select(func.count()).select_from(Job).where(
            Job.id > after_id, Job.state.in_([JobState.PENDING, JobState.QUEUED, JobState.RUNNING]))))


class ResultRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def save(self, object_id: int, result: dict[str, Any]) -> None:
        """Keep the analysis of an object, replacing an earlier run's (results are per object)."""
        row = self._s.scalar(select(AnalysisResult).where(AnalysisResult.object_id == object_id))
        if row is None:
            row = AnalysisResult(object_id=object_id)
            self._s.add(row)
        row.analyzer_version = str(result.get("analyzer_version", "unknown"))
        row.heart_rate_bpm = result.get("heart_rate_bpm")
        row.lead_count = len(result.get("leads", []))
        row.duration_s = float(result.get("duration_s", 0.0))
        row.fs = float(result.get("fs", 0.0))
        row.result = result
        row.created_at = utcnow()

    def for_object(self, object_id: int) -> dict[str, Any] | None:
        return self._s.scalar(select(AnalysisResult.result).where(AnalysisResult.object_id == object_id))


class CaseRepository:
    def __init__(self, session: Session, deadlines: Deadlines) -> None:
        self._s = session
        self._deadlines = deadlines

    def object_count(self, device_id: int) -> int:
        """How many objects of this device's cases are recorded."""
        return int(self._s.scalar(select(func.count()).select_from(StoredObject).join(Case)
                                  .where(Case.device_id == device_id)))

    def set_status(self, case_id: int, status: CaseStatus) -> None:
        self._s.execute(update(Case).where(Case.id == case_id).values(status=status, updated_at=utcnow()))

    def raise_priority(self, case_id: int, priority: Priority) -> None:
        """Set the case's priority unless it already has a higher one; its deadline shortens
        to what the new priority allows from its arrival (never lengthens)."""
        case = self._s.get(Case, case_id)
        if case is None or Priority(case.priority).rank >= priority.rank:
            return
        case.priority = priority.value
        due = as_utc(case.received_at) + timedelta(seconds=self._deadlines.seconds(priority.value))
        if case.deadline_at is None or due < as_utc(case.deadline_at):
            case.deadline_at = due

    def view(self, case_id: int) -> dict[str, Any] | None:
        """The case with each object's job and analysis, as the status API shows it."""
        case = self._s.get(Case, case_id)
        if case is None:
            return None
        objects = []
        rows = self._s.execute(select(StoredObject, Job, AnalysisResult)
                               .outerjoin(Job, Job.object_id == StoredObject.id)
                               .outerjoin(AnalysisResult, AnalysisResult.object_id == StoredObject.id)
                               .where(StoredObject.case_id == case.id).order_by(StoredObject.id))
        for obj, job, result in rows:
            objects.append({
                "object_id": obj.id, "key": obj.key, "size": obj.size, "sha256": obj.sha256,
                "media_type": obj.media_type, "sop_class_uid": obj.sop_class_uid, "modality": obj.modality,
                "job": None if job is None else {"id": job.id, "state": job.state.value, "attempts": job.attempts,
                                                 "error": job.last_error},
                "analysis": None if result is None else result.result,
            })
        return {"case_id": case.id, "site_id": case.site_id, "kind": CaseKind(case.kind).value,
                "status": case.status.value, "priority": case.priority, "received_at": case.received_at.isoformat(),
                "objects": objects}


class QuarantineRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def list(self) -> list[QuarantineEntry]:
        return [QuarantineEntry(q.id, q.device_id, q.key, q.size, q.sha256, q.sop_instance_uid, q.reason,
                                q.received_at)
                for q in self._s.scalars(select(QuarantinedObject).order_by(QuarantinedObject.id))]




#: The PostgreSQL NOTIFY channel that wakes the alarm streams of every API process.
ALARM_EVENTS_CHANNEL = "telediag_alarm_events"
#: Key of the transaction-level advisory lock that makes alarm event ids commit in order.
_EVENT_ORDER_LOCK = 0x7E1E_D1A6


def _alarm(row: Alarm) -> AlarmInfo:
    return AlarmInfo(row.id, row.case_id, row.object_id, row.site_id, row.type, row.severity, row.start_s, row.end_s,
                     row.text, row.text_zh, dict(row.evidence or {}), as_utc(row.raised_at), AlarmState(row.state),
                     row.acknowledged_by, as_utc(row.acknowledged_at), row.escalation_level)


def _event(row: AlarmEvent) -> AlarmEventInfo:
    return AlarmEventInfo(row.id, row.kind, row.alarm_id, tuple(row.site_ids), dict(row.payload), as_utc(row.created_at))


def alarm_payload(row: Alarm) -> dict[str, Any]:
    """What every channel carries about an alarm (the receivers deduplicate on ``alarm_id``)."""
    return {"alarm_id": row.id, "case_id": row.case_id, "object_id": row.object_id, "site_id": row.site_id,
            "type": row.type, "severity": row.severity, "start_s": row.start_s, "end_s": row.end_s,
            "text": row.text, "text_zh": row.text_zh, "raised_at": as_utc(row.raised_at).isoformat(),
            "state": row.state, "escalation_level": row.escalation_level}


class AlarmRepository:
    """Alarms, the events told about them and the outbox rows (deliveries) that push those events;
    the same events and outbox carry a signed report to its clinic and the clinic's acknowledgement.

    An event and its deliveries are always written in the transaction that makes the event
    true (the analysis result, the acknowledgement, the escalation, the signature), so no event
    exists only in memory and none is pushed that did not happen. Event ids are the SSE ids, read
    by every API process in id order: on PostgreSQL each writer takes a transaction-level advisory lock
    just before its first event, so ids become visible in the order they were allocated and a
    reader that has seen id N will never later find a smaller one; SQLite has one writer anyway.
    """

    def __init__(self, session: Session, deadlines: Deadlines) -> None:
        self._s = session
        self._deadlines = deadlines
        self._ordered = False
        self._postgres = session.get_bind().dialect.name == "postgresql"

    # -- writing events ---------------------------------------------------------------------
    def _add_event(self, kind: str, payload: dict[str, Any], site_ids: list[int], deliver_to: list[int],
                   channels: tuple[PushChannel, ...], *, case_id: int, alarm_id: int | None = None
                   ) -> tuple[int, list[int]]:
        """Write an event for ``site_ids`` (its SSE audience) carrying ``payload`` (plus its kind
        and id), and one pending delivery per channel and site of ``deliver_to`` (a webhook only
        for a site that has one); returns the event id and the delivery ids."""
        if self._postgres and not self._ordered:
            self._s.execute(select(func.pg_advisory_xact_lock(_EVENT_ORDER_LOCK)))
            self._ordered = True
        event = AlarmEvent(kind=kind, alarm_id=alarm_id, case_id=case_id, site_ids=site_ids, payload={},
                           created_at=utcnow())
        self._s.add(event)
        self._s.flush()
        event.payload = {"kind": kind, "event_id": event.id, **payload}
        self._s.execute(insert(AlarmEventSite), [{"event_id": event.id, "site_id": sid} for sid in site_ids])
        webhooks = set(self._s.scalars(select(Site.id).where(Site.id.in_(deliver_to), Site.webhook_url.is_not(None))))
        rows = [{"event_id": event.id, "channel": channel.value, "site_id": sid, "state": "pending", "attempts": 0,
                 "next_attempt_at": event.created_at}
                for channel in channels for sid in deliver_to
                if channel is not PushChannel.WEBHOOK or sid in webhooks]
        delivery_ids = [r.id for r in self._s.execute(insert(Delivery).returning(Delivery.id), rows)] if rows else []
        if self._postgres:
            self._s.execute(select(func.pg_notify(ALARM_EVENTS_CHANNEL, str(event.id))))
        return event.id, delivery_ids

    def record(self, case_id: int, object_id: int, alarms: list[dict[str, Any]],
               channels: tuple[PushChannel, ...]) -> tuple[list[int], list[int]]:
        """Keep the alarms an analysis of an object raised, each with an ``alarm`` event for the
        clinic and the centers above it, and set the case's priority; returns the event and
        delivery ids. An object whose alarms are already recorded gets none again."""
        if not alarms or self._s.scalar(select(Alarm.id).where(Alarm.object_id == object_id).limit(1)) is not None:
            return [], []
        site_id = self._s.scalar(select(Case.site_id).where(Case.id == case_id))
        chain = SiteRepository(self._s).chain(site_id)
        now = utcnow()
        rows = [Alarm(case_id=case_id, object_id=object_id, site_id=site_id, type=a["type"], severity=a["severity"],
                      start_s=float(a.get("start_s") or 0.0), end_s=float(a.get("end_s") or 0.0), text=a["text"],
                      text_zh=a["text_zh"], evidence=a.get("evidence") or {}, raised_at=now,
                      state=AlarmState.OPEN.value, escalation_level=0) for a in alarms]
        self._s.add_all(rows)
        self._s.flush()
        events, deliveries = [], []
        for row in rows:
            event_id, ids = self._add_event("alarm", alarm_payload(row), chain, chain, channels, case_id=row.case_id,
                                            alarm_id=row.id)
            events.append(event_id)
            deliveries += ids
        top = max((Priority.of_severity(a["severity"]) for a in alarms), key=lambda p: p.rank)
        CaseRepository(self._s, self._deadlines).raise_priority(case_id, top)
        return events, deliveries

    def acknowledge(self, alarm_id: int, by: str, channels: tuple[PushChannel, ...]
                    ) -> tuple[AlarmInfo, list[int], list[int]]:
        """Record who acknowledged the alarm and when, with an ``ack`` event to everyone who was
        told of it; a second acknowledgement changes nothing and tells no one."""
        now = utcnow()
        done = self._s.execute(update(Alarm).where(Alarm.id == alarm_id, Alarm.state == AlarmState.OPEN.value)
                               .values(state=AlarmState.ACKNOWLEDGED.value, acknowledged_by=by, acknowledged_at=now)
                               .returning(Alarm.id).execution_options(synchronize_session=False)).first()
        row = self._s.get(Alarm, alarm_id, populate_existing=True)
        if done is None:
            return _alarm(row), [], []
        chain = SiteRepository(self._s).chain(row.site_id)
        event_id, deliveries = self._add_event("ack", {**alarm_payload(row), "acknowledged_by": by,
                                                       "acknowledged_at": now.isoformat()},
                                               chain, chain, channels, case_id=row.case_id, alarm_id=row.id)
        return _alarm(row), [event_id], deliveries

    def escalate_due(self, after_s: dict[int, float], channels: tuple[PushChannel, ...]
                     ) -> tuple[list[int], list[int]]:
        """Escalate open critical alarms nobody acknowledged: level k (1: the center above the
        clinic, 2: the one above that) once ``after_s[k]`` seconds passed since they were raised.
        Each escalation is an ``escalation`` event for every site of the alarm, pushed to the
        new level's site. The level is claimed by one UPDATE whose WHERE holds the condition, so
        of several processes checking at once only one escalates an alarm."""
        now = utcnow()
        events, deliveries = [], []
        for level in sorted(after_s):
            claimed = [r.id for r in self._s.execute(
                update(Alarm).where(Alarm.state == AlarmState.OPEN.value, Alarm.severity == "critical",
                                    Alarm.escalation_level == level - 1,
                                    Alarm.raised_at <= now - timedelta(seconds=after_s[level]))
                .values(escalation_level=level).returning(Alarm.id)
                .execution_options(synchronize_session=False))]
            for alarm_id in sorted(claimed):
                row = self._s.get(Alarm, alarm_id, populate_existing=True)
                chain = SiteRepository(self._s).chain(row.site_id)
                if level >= len(chain):
                    continue  # no center that high above this site
                event_id, ids = self._add_event("escalation", {**alarm_payload(row),
                                                               "escalated_to_site_id": chain[level]},
                                                chain, [chain[level]], channels, case_id=row.case_id,
                                                alarm_id=row.id)
                events.append(event_id)
                deliveries += ids
        return events, deliveries

    # -- signed reports ------------------------------------------------------------------------
    def record_report(self, case_id: int, report: dict[str, Any], channels: tuple[PushChannel, ...]
                      ) -> tuple[list[int], list[int]]:
        """A ``report`` event for the case's clinic carrying ``report`` (ids, version, digest,
        signer, the PDF's path: no patient data), pushed to the clinic alone; written in the
        transaction that signs the version. Returns the event and delivery ids."""
        site_id = self._s.scalar(select(Case.site_id).where(Case.id == case_id))
        event_id, deliveries = self._add_event("report", {**report, "case_id": case_id, "site_id": site_id},
                                               [site_id], [site_id], channels, case_id=case_id)
        return [event_id], deliveries

    def acknowledge_report(self, case_id: int, version: int, by: str, channels: tuple[PushChannel, ...]
                           ) -> tuple[str | None, datetime | None, list[int], list[int]]:
        """Record that ``by`` at the clinic acknowledged the signed ``version``, with a
        ``report_ack`` event to the clinic and the centers above it (as an alarm's ``ack``); a
        second acknowledgement changes nothing and tells no one. Returns who acknowledged and
        when (the first time), and the event and delivery ids."""
        now = utcnow().replace(microsecond=0)
        done = self._s.execute(update(Report).where(Report.case_id == case_id, Report.version == version,
                                                    Report.state == ReportState.SIGNED.value,
                                                    Report.acknowledged_at.is_(None))
                               .values(acknowledged_by=by, acknowledged_at=now)
                               .returning(Report.sha256).execution_options(synchronize_session=False)).first()
        ack_by, ack_at = self.report_acknowledgement(case_id, version)
        if done is None:
            return ack_by, ack_at, [], []
        site_id = self._s.scalar(select(Case.site_id).where(Case.id == case_id))
        chain = SiteRepository(self._s).chain(site_id)
        payload = {"case_id": case_id, "site_id": site_id, "version": version, "sha256": done.sha256,
                   "acknowledged_by": by, "acknowledged_at": utc_seconds(now)}
        event_id, deliveries = self._add_event("report_ack", payload, chain, chain, channels, case_id=case_id)
        return ack_by, ack_at, [event_id], deliveries

    def report_acknowledgement(self, case_id: int, version: int) -> tuple[str | None, datetime | None]:
        """Who acknowledged the case's report ``version`` and when; (None, None) if nobody yet."""
        row = self._s.execute(select(Report.acknowledged_by, Report.acknowledged_at)
                              .where(Report.case_id == case_id, Report.version == version)).first()
        return (None, None) if row is None else (row.acknowledged_by, as_utc(row.acknowledged_at))

    # -- reading ---------------------------------------------------------------------------
    def get(self, alarm_id: int) -> AlarmInfo | None:
        row = self._s.get(Alarm, alarm_id)
        return None if row is None else _alarm(row)

    def list(self, site_ids: set[int], state: AlarmState | None = None, limit: int = 500) -> list[AlarmInfo]:
        """Alarms of clinics among ``site_ids``, newest first."""
        query = select(Alarm).where(Alarm.site_id.in_(site_ids)).order_by(Alarm.id.desc()).limit(limit)
        if state is not None:
            query = query.where(Alarm.state == state.value)
        return [_alarm(r) for r in self._s.scalars(query)]

    def notifications(self, alarm_id: int) -> list[Notification]:
        """Who was notified of the alarm (and of its escalations), over which channel, when."""
        rows = self._s.execute(select(AlarmEvent.id, AlarmEvent.kind, Delivery.channel, Delivery.site_id,
                                      Delivery.sent_at)
                               .join(Delivery, Delivery.event_id == AlarmEvent.id)
                               .where(AlarmEvent.alarm_id == alarm_id, Delivery.state == "sent")
                               .order_by(Delivery.sent_at))
        return [Notification(r.id, r.kind, r.channel, r.site_id, as_utc(r.sent_at)) for r in rows]

    def events_after(self, after_id: int, site_id: int | None = None, limit: int = 1000) -> list[AlarmEventInfo]:
        """Events with an id above ``after_id`` (of one site's, or all), oldest first."""
        query = select(AlarmEvent).where(AlarmEvent.id > after_id).order_by(AlarmEvent.id).limit(limit)
        if site_id is not None:
            query = query.join(AlarmEventSite, AlarmEventSite.event_id == AlarmEvent.id) \
                .where(AlarmEventSite.site_id == site_id)
        return [_event(r) for r in self._s.scalars(query)]

    def last_event_id(self) -> int:
        return self._s.scalar(select(func.max(AlarmEvent.id))) or 0


class DeliveryRepository:
    """The push outbox: each delivery is claimed exclusively (with a lease, like a running job),
    sent, and marked; every attempt is logged."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def claim(self, delivery_id: int, lease_s: float) -> DeliveryTask | None:
        """Take a due delivery for sending, unless it is sent, failed, not yet due, or held by a
        live sender. One UPDATE with the whole condition (see ``JobRepository.claim_for_run``)."""
        now = utcnow()
        claimed = self._s.execute(
            update(Delivery).where(Delivery.id == delivery_id,
                                   ((Delivery.state == "pending") & (Delivery.next_attempt_at <= now))
                                   | ((Delivery.state == "sending") & (Delivery.lease_until < now)))
            .values(state="sending", lease_until=now + timedelta(seconds=lease_s), attempts=Delivery.attempts + 1)
            .returning(Delivery.attempts)).first()
        if claimed is None:
            return None
        row = self._s.execute(select(Delivery.event_id, Delivery.channel, Delivery.site_id, AlarmEvent.payload,
                                     Site.webhook_url, Site.webhook_secret)
                              .join(AlarmEvent, AlarmEvent.id == Delivery.event_id)
                              .join(Site, Site.id == Delivery.site_id).where(Delivery.id == delivery_id)).one()
        payload = {**row.payload, "to_site_id": row.site_id}
        return DeliveryTask(delivery_id, row.event_id, PushChannel(row.channel), row.site_id, claimed.attempts,
                            payload, row.webhook_url, row.webhook_secret)

    def _log(self, delivery_id: int, ok: bool, status_code: int | None, error: str | None,
             duration_ms: float) -> None:
        self._s.add(DeliveryAttempt(delivery_id=delivery_id, attempted_at=utcnow(), ok=ok, status_code=status_code,
                                    error=error, duration_ms=round(duration_ms, 2)))

    def sent(self, delivery_id: int, status_code: int | None, duration_ms: float) -> None:
        self._s.execute(update(Delivery).where(Delivery.id == delivery_id)
                        .values(state="sent", sent_at=utcnow(), lease_until=None, last_error=None))
        self._log(delivery_id, True, status_code, None, duration_ms)

    def failed(self, delivery_id: int, error: str, status_code: int | None, duration_ms: float,
               retry_in_s: float | None) -> None:
        """Log a failed attempt; due again in ``retry_in_s``, or ``failed`` for good when None."""
        values: dict[str, Any] = {"lease_until": None, "last_error": error[:2000]}
        if retry_in_s is None:
            values["state"] = "failed"
        else:
            values.update(state="pending", next_attempt_at=utcnow() + timedelta(seconds=retry_in_s))
        self._s.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))
        self._log(delivery_id, False, status_code, error[:2000], duration_ms)

    def claim_orphans(self, grace_s: float) -> list[int]:
        """Deliveries no sender is on: due for ``grace_s`` already (their message was lost with a
        crashed process or broker) or held under a lapsed lease (the sender died). They are
        stamped due now, so a concurrent sweeper does not take them too; returns their ids."""
        now = utcnow()
        rows = self._s.execute(
            update(Delivery).where(((Delivery.state == "pending")
                                    & (Delivery.next_attempt_at <= now - timedelta(seconds=grace_s)))
                                   | ((Delivery.state == "sending") & (Delivery.lease_until < now)))
            .values(state="pending", next_attempt_at=now, lease_until=None).returning(Delivery.id))
        return sorted(r.id for r in rows)

    def for_alarm(self, alarm_id: int) -> list[dict[str, Any]]:
        """Every delivery of the alarm's events with its attempt log (the delivery log)."""
        deliveries = self._s.execute(select(Delivery, AlarmEvent.kind)
                                     .join(AlarmEvent, AlarmEvent.id == Delivery.event_id)
                                     .where(AlarmEvent.alarm_id == alarm_id).order_by(Delivery.id)).all()
        ids = [d.id for d, _ in deliveries]
        attempts: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for a in self._s.scalars(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(ids))
                                 .order_by(DeliveryAttempt.id)):
            attempts[a.delivery_id].append({"at": as_utc(a.attempted_at).isoformat(), "ok": a.ok,
                                            "status_code": a.status_code, "error": a.error,
                                            "duration_ms": a.duration_ms})
        return [{"id": d.id, "event_id": d.event_id, "kind": kind, "channel": d.channel, "site_id": d.site_id,
                 "state": d.state, "attempts": attempts[d.id],
                 "sent_at": as_utc(d.sent_at).isoformat() if d.sent_at else None}
                for d, kind in deliveries]
