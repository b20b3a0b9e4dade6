"""Repositories: the questions and changes the stages ask of the database, by name.

Each repository works inside one :class:`~telediag.store.uow.UnitOfWork` (its session)
and returns the domain's value objects, never ORM rows, so the rest of telediag neither
writes SQL nor holds a row that could lazily load more. The C-STORE hot path has its own
repository over precompiled statements (:mod:`telediag.store.hotpath`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from telediag.domain import (CaseKind, CaseStatus, DeviceIdentity, DeviceInfo, JobState, QuarantineEntry, SiteInfo,
                             SiteLevel)
from telediag.store.tables import (AnalysisResult, Case, Device, Job, QuarantinedObject, Site, StoredObject,
                                   utcnow)

__all__ = ["SiteRepository", "DeviceRepository", "JobRepository", "ResultRepository", "CaseRepository",
           "QuarantineRepository", "JobTask", "ObjectRef"]


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

    def by_name(self, name: str) -> SiteInfo | None:
        row = self._s.scalar(select(Site).where(Site.name == name))
        return None if row is None else _site(row)

    def list(self) -> list[SiteInfo]:
        return [_site(row) for row in self._s.scalars(select(Site).order_by(Site.id))]

    def set_active(self, site_id: int, active: bool) -> None:
        self._s.execute(update(Site).where(Site.id == site_id).values(active=active))


class DeviceRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, name: str, site_id: int, ae_title: str | None, api_key_sha256: str) -> int:
        row = Device(name=name, site_id=site_id, ae_title=ae_title, api_key_sha256=api_key_sha256)
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
        row = self._s.execute(select(Device.id, Device.name, Device.site_id, Device.ae_title)
                              .join(Site, Site.id == Device.site_id)
                              .where(column == value, Device.active.is_(True), Site.active.is_(True))).first()
        return None if row is None else DeviceIdentity(row.id, row.name, row.site_id, row.ae_title)

    def list(self) -> list[DeviceInfo]:
        rows = self._s.execute(select(Device, Site.name).join(Site, Site.id == Device.site_id).order_by(Device.id))
        return [DeviceInfo(d.id, d.name, d.site_id, site_name, d.ae_title, d.active, d.created_at)
                for d, site_name in rows]

    def by_name(self, name: str) -> DeviceInfo | None:
        return next((d for d in self.list() if d.name == name), None)

    def set_active(self, device_id: int, active: bool) -> None:
        self._s.execute(update(Device).where(Device.id == device_id).values(active=active))

    def set_key(self, device_id: int, api_key_sha256: str) -> None:
        self._s.execute(update(Device).where(Device.id == device_id).values(api_key_sha256=api_key_sha256))


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


def _ref(row: StoredObject) -> ObjectRef:
    return ObjectRef(row.id, row.case_id, row.key, row.sha256, row.media_type, row.record_name)


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
        siblings: tuple[ObjectRef, ...] = ()
        if obj.record_name:
            siblings = tuple(_ref(r) for r in self._s.scalars(select(StoredObject).where(
                StoredObject.case_id == obj.case_id, StoredObject.record_name == obj.record_name)))
        return JobTask(job_id, claimed.attempts, _ref(obj), siblings)

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
        return len(list(self._s.scalars(select(Job.id).where(
            Job.id > after_id, Job.state.in_([JobState.PENDING, JobState.QUEUED, JobState.RUNNING])))))


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
    def __init__(self, session: Session) -> None:
        self._s = session

    def object_count(self, device_id: int) -> int:
        """How many objects of this device's cases are recorded."""
        return int(self._s.scalar(select(func.count()).select_from(StoredObject).join(Case)
                                  .where(Case.device_id == device_id)))

    def set_status(self, case_id: int, status: CaseStatus) -> None:
        self._s.execute(update(Case).where(Case.id == case_id).values(status=status, updated_at=utcnow()))

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
                "status": case.status.value, "received_at": case.received_at.isoformat(), "objects": objects}


class QuarantineRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def list(self) -> list[QuarantineEntry]:
        return [QuarantineEntry(q.id, q.device_id, q.key, q.size, q.sha256, q.sop_instance_uid, q.reason,
                                q.received_at)
                for q in self._s.scalars(select(QuarantinedObject).order_by(QuarantinedObject.id))]


