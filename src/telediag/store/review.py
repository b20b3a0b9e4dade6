"""Repositories of the review stage: people and their sessions, the readers' queue and
claims, report versions, and the audit chain.

Every change that must be exclusive (a claim, an escalation, signing a draft) is one UPDATE
whose WHERE holds the whole condition, so of two concurrent callers exactly one sees its row
changed, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterator

from sqlalchemy import case as when, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from telediag.domain import (CaseKind, CaseRef, CaseStatus, Deadlines, DeviceIdentity, MediaType, Principal,
                             ReportImmutable, ReportState, ReportVersion, ReviewState, Role, SigningKey, UserInfo, audit_hash)
from telediag.store.repositories import ObjectRef, _ref, _siblings
from telediag.store.tables import (Alarm, AnalysisResult, AuditEntry, AuditHead, Case, CaseRoute, Device, Patient,
                                   Report, Site, StoredObject, User, UserSession, as_utc, utcnow)

__all__ = ["UserRepository", "QueueRepository", "ReportRepository", "AuditRepository", "Credentials", "CaseScope",
           "audit_content"]


@dataclass(frozen=True)
class Credentials:
    """What a login checks: kept inside the store and the use case that verifies it."""

    user_id: int
    username: str
    password_hash: str
    active: bool
    failed_logins: int
    locked_until: datetime | None


def _qualified(text: str) -> tuple[str, ...]:
    return tuple(q for q in text.split(",") if q)


class UserRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, username: str, display_name: str, password_hash: str, role: Role, site_id: int,
            qualified: tuple[str, ...], key: SigningKey | None) -> int:
        user = User(username=username, display_name=display_name, password_hash=password_hash, role=role.value,
                    site_id=site_id, qualified=",".join(qualified), active=True, failed_logins=0,
                    public_key=key.public_key if key else None, private_key_enc=key.sealed if key else None,
                    key_algorithm=key.algorithm if key else None)
        self._s.add(user)
        self._s.flush()
        return user.id

    def exists(self, username: str) -> bool:
        return self._s.scalar(select(User.id).where(User.username == username)) is not None

    def credentials(self, username: str) -> Credentials | None:
        u = self._s.scalar(select(User).where(User.username == username))
        return None if u is None else Credentials(u.id, u.username, u.password_hash, u.active, u.failed_logins,
                                                  as_utc(u.locked_until))

    def login_failed(self, user_id: int, max_failures: int, lockout_s: float, now: datetime) -> datetime | None:
        """Count a failure; the one that reaches ``max_failures`` locks the account (returned)."""
        user = self._s.get(User, user_id)
        user.failed_logins += 1
        if user.failed_logins >= max_failures:
            user.failed_logins = 0
            user.locked_until = now + timedelta(seconds=lockout_s)
        return as_utc(user.locked_until) if user.locked_until and as_utc(user.locked_until) > now else None

    def login_succeeded(self, user_id: int, password_hash: str | None = None) -> None:
        """Reset the failure count; store a re-hashed password when the hash parameters changed."""
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
        if password_hash is not None:
            values["password_hash"] = password_hash
        self._s.execute(update(User).where(User.id == user_id).values(**values))

    def set_password(self, username: str, password_hash: str) -> bool:
        return self._s.execute(update(User).where(User.username == username)
                               .values(password_hash=password_hash, failed_logins=0, locked_until=None)).rowcount == 1

    def set_active(self, username: str, active: bool) -> bool:
        changed = self._s.execute(update(User).where(User.username == username).values(active=active)).rowcount == 1
        if changed and not active:
            self._s.execute(UserSession.__table__.delete().where(
                UserSession.user_id == select(User.id).where(User.username == username).scalar_subquery()))
        return changed

    def info(self, username: str) -> UserInfo | None:
        rows = self.list(username=username)
        return rows[0] if rows else None

    def list(self, site_ids: set[int] | None = None, username: str | None = None) -> list[UserInfo]:
        q = select(User, Site.name).join(Site, Site.id == User.site_id).order_by(User.username)
        if site_ids is not None:
            q = q.where(User.site_id.in_(site_ids))
        if username is not None:
            q = q.where(User.username == username)
        return [UserInfo(u.id, u.username, u.display_name, Role(u.role), u.site_id, site_name, _qualified(u.qualified),
                         u.active, as_utc(u.created_at)) for u, site_name in self._s.execute(q)]

    def key(self, user_id: int) -> SigningKey | None:
        """A reader's signing key (the private half sealed), or None."""
        row = self._s.execute(select(User.key_algorithm, User.public_key, User.private_key_enc)
                              .where(User.id == user_id)).one()
        return SigningKey(*row) if row[2] else None

    def public_key(self, username: str) -> tuple[str, str] | None:
        """(algorithm, base64 public key), or None for someone without a signing key."""
        row = self._s.execute(select(User.key_algorithm, User.public_key).where(User.username == username)).first()
        return (row[0], row[1]) if row and row[1] else None

    # -- sessions ------------------------------------------------------------------------------
    def open_session(self, token_sha256: str, user_id: int, csrf_token: str, address: str | None,
                     expires_at: datetime) -> None:
        self._s.add(UserSession(token_sha256=token_sha256, user_id=user_id, csrf_token=csrf_token, address=address,
                                created_at=utcnow(), expires_at=expires_at))

    def end_session(self, token_sha256: str) -> None:
        self._s.execute(UserSession.__table__.delete().where(UserSession.token_sha256 == token_sha256))

    def principal(self, token_sha256: str, now: datetime) -> Principal | None:
        """The active user of an unexpired session, or None."""
        row = self._s.execute(
            select(User, Site, UserSession.csrf_token)
            .join(UserSession, UserSession.user_id == User.id).join(Site, Site.id == User.site_id)
            .where(UserSession.token_sha256 == token_sha256, UserSession.expires_at > now, User.active.is_(True))
        ).first()
        if row is None:
            return None
        user, site, csrf = row
        return Principal(kind="user", username=user.username, site_id=site.id, site_name=site.name,
                         site_level=site.level.value, role=Role(user.role), user_id=user.id,
                         display_name=user.display_name, qualified=_qualified(user.qualified), csrf_token=csrf)


# -- the queue ---------------------------------------------------------------------------------
_RANK = when((Case.priority == "critical", 0), (Case.priority == "urgent", 1), else_=2)
#: The list's second look at sites and users (the center a case is routed to, the claim's
#: holder), made once: a new alias per request is a new statement for SQLAlchemy to compile.
_ROUTE_SITE, _HOLDER = aliased(Site), aliased(User)


@dataclass(frozen=True)
class CaseScope:
    """Which cases a caller may see: a site's own, a center's (routed there now or before), the
    cases of a set of sites, or all.

    ``sites`` is what a DICOM device querying or retrieving sees: its site and the sites below
    it (a county PACS its townships' studies), whatever route their cases took.
    """

    own_site: int | None = None
    center: int | None = None
    sites: frozenset[int] | None = None

    def clause(self):
        if self.own_site is not None:
            return Case.site_id == self.own_site
        if self.center is not None:
            return or_(Case.route_site_id == self.center,
                       Case.id.in_(select(CaseRoute.case_id).where(CaseRoute.site_id == self.center)))
        if self.sites is not None:
            return Case.site_id.in_(sorted(self.sites))
        return True


class QueueRepository:
    def __init__(self, session: Session, deadlines: Deadlines) -> None:
        self._s = session
        self._deadlines = deadlines

    def ref(self, case_id: int) -> CaseRef | None:
        row = self._s.execute(select(Case, Patient.patient_key).outerjoin(Patient, Patient.id == Case.patient_id)
                              .where(Case.id == case_id)).first()
        if row is None:
            return None
        c, patient_key = row
        earlier = tuple(self._s.scalars(select(CaseRoute.site_id).where(CaseRoute.case_id == case_id)))
        return CaseRef(c.id, c.site_id, c.kind.value, c.route_site_id, earlier, c.review_state, c.claimed_by,
                       as_utc(c.claim_until), c.patient_id, patient_key, c.priority)

    def items(self, scope: CaseScope, *, open_only: bool, routed_to: int | None = None, kinds: tuple[str, ...] = (),
              limit: int = 200, case_ids: tuple[int, ...] = (),
              settled_before: datetime | None = None) -> tuple[list[dict[str, Any]], int]:
        """Cases in reading order (severity, deadline, arrival) when ``open_only``, else newest
        first, and how many match in all; with ``settled_before``, only imaging studies none of
        whose objects arrived after it (a study still arriving is not ready to read)."""
        route_site, holder = _ROUTE_SITE, _HOLDER
        where = [scope.clause()]
        if settled_before is not None:
            arriving = exists().where(StoredObject.case_id == Case.id, StoredObject.received_at > settled_before)
            where.append(or_(Case.kind != CaseKind.IMAGING, ~arriving))
        if case_ids:
            where.append(Case.id.in_(case_ids))
        if open_only:
            where.append(Case.review_state == ReviewState.OPEN.value)
        if routed_to is not None:
            where.append(Case.route_site_id == routed_to)
        if kinds:
            where.append(Case.kind.in_(kinds))
        total = int(self._s.scalar(select(func.count()).select_from(Case).where(*where)))
        order = ([_RANK, Case.deadline_at, Case.received_at, Case.id] if open_only
                 else [Case.received_at.desc(), Case.id.desc()])
        # Plain columns, not ORM objects: building 200 entities cost most of a request.
        rows = self._s.execute(
            select(Case.id, Case.kind, Case.site_id, Site.name.label("site_name"), Case.priority, Case.received_at,
                   Case.deadline_at, Case.status, Case.review_state, Case.route_site_id,
                   route_site.name.label("route_name"), holder.username.label("holder"), Case.claim_until,
                   Patient.patient_key, Patient.name.label("patient_name"), Patient.sex, Patient.birth_date)
            .join(Site, Site.id == Case.site_id)
            .outerjoin(route_site, route_site.id == Case.route_site_id)
            .outerjoin(holder, holder.id == Case.claimed_by)
            .outerjoin(Patient, Patient.id == Case.patient_id)
            .where(*where).order_by(*order).limit(limit)).all()
        alarms: dict[int, list[dict[str, Any]]] = {}
        if rows:
            for a in self._s.execute(select(Alarm.case_id, Alarm.id, Alarm.type, Alarm.severity, Alarm.text,
                                            Alarm.text_zh, Alarm.state)
                                     .where(Alarm.case_id.in_([r.id for r in rows])).order_by(Alarm.id)):
                alarms.setdefault(a.case_id, []).append({"id": a.id, "type": a.type, "severity": a.severity,
                                                         "text": a.text, "text_zh": a.text_zh, "state": a.state})
        signed: dict[int, Any] = {}  # each reported case's latest signed version
        reported = [r.id for r in rows if r.review_state == ReviewState.REPORTED.value]
        if reported:
            for r in self._s.execute(select(Report.case_id, Report.version, Report.acknowledged_by,
                                            Report.acknowledged_at)
                                     .where(Report.case_id.in_(reported), Report.state == ReportState.SIGNED.value)
                                     .order_by(Report.version)):
                signed[r.case_id] = {"version": r.version, "acknowledged_by": r.acknowledged_by,
                                     "acknowledged_at": as_utc(r.acknowledged_at).isoformat()
                                     if r.acknowledged_at else None}
        now = utcnow()
        items = []
        for c in rows:
            claim_until = as_utc(c.claim_until)
            held = c.holder if claim_until is not None and claim_until > now else None
            items.append({
                "case_id": c.id, "kind": CaseKind(c.kind).value, "site_id": c.site_id, "site_name": c.site_name,
                "priority": c.priority, "received_at": as_utc(c.received_at).isoformat(),
                "deadline_at": as_utc(c.deadline_at).isoformat() if c.deadline_at else None,
                "status": CaseStatus(c.status).value, "review_state": c.review_state, "routed_to": c.route_site_id,
                "routed_to_name": c.route_name, "claimed_by": held,
                "claim_until": claim_until.isoformat() if held else None,
                "patient": None if c.patient_key is None else {"patient_key": c.patient_key, "name": c.patient_name,
                                                               "sex": c.sex, "birth_date": c.birth_date},
                "alarms": alarms.get(c.id, []),
                "report": signed.get(c.id),
            })
        return items, total

    def object_ref(self, case_id: int, object_id: int) -> tuple[ObjectRef, tuple[ObjectRef, ...]] | None:
        """One of the case's objects as the readers load it, with its record's other files."""
        obj = self._s.get(StoredObject, object_id)
        if obj is None or obj.case_id != case_id:
            return None
        return _ref(obj), _siblings(self._s, obj)

    def _first_ecg(self, case_id: int) -> StoredObject | None:
        """The case's ECG object that has an analysis (the one a report is about; an imaging
        case's images have results too, their descriptions)."""
        return self._s.scalar(select(StoredObject).join(AnalysisResult, AnalysisResult.object_id == StoredObject.id)
                              .join(Case, Case.id == StoredObject.case_id)
                              .where(StoredObject.case_id == case_id, Case.kind == CaseKind.ECG)
                              .order_by(StoredObject.id).limit(1))

    def first_analysis(self, case_id: int) -> dict[str, Any] | None:
        obj = self._first_ecg(case_id)
        return None if obj is None else self._s.scalar(select(AnalysisResult.result)
                                                       .where(AnalysisResult.object_id == obj.id))

    def report_document(self, case_id: int, version: int
                        ) -> tuple[dict[str, Any], tuple[ObjectRef, tuple[ObjectRef, ...]] | None]:
        """What the PDF of a signed version shows, and the ECG object to draw (if any)."""
        c, site, patient = self._s.execute(
            select(Case, Site, Patient).join(Site, Site.id == Case.site_id)
            .outerjoin(Patient, Patient.id == Case.patient_id).where(Case.id == case_id)).one()
        r = self._s.scalar(select(Report).where(Report.case_id == case_id, Report.version == version))
        signer = self._s.get(User, r.signed_by)
        center = self._s.scalar(select(Site.name).where(Site.id == signer.site_id))
        obj = self._first_ecg(case_id)
        document = {
            "site_name": site.name, "center_name": center, "case_id": case_id, "exam_kind": c.kind.value,
            "received_at": as_utc(c.received_at), "patient_key": patient.patient_key if patient else None,
            "patient_name": patient.name if patient else None, "patient_sex": patient.sex if patient else None,
            "patient_birth_date": patient.birth_date if patient else None, "statements": list(r.statements),
            "conclusion": r.conclusion, "measurements": dict(r.measurements or {}), "version": r.version,
            "replaces": r.replaces, "signed_by": signer.display_name, "signed_at": as_utc(r.signed_at),
            "sha256": r.sha256, "signature": r.signature, "algorithm": r.signature_algorithm}
        return {"report_id": r.id, "document": document}, (None if obj is None else (_ref(obj), _siblings(self._s, obj)))

    def previous(self, case_id: int, patient_id: int) -> list[dict[str, Any]]:
        """Earlier cases of the same patient (newest first)."""
        me = self._s.get(Case, case_id)
        rows = self._s.execute(select(Case.id, Case.received_at, Case.kind)
                               .where(Case.patient_id == patient_id, Case.id != case_id,
                                      Case.received_at <= me.received_at)
                               .order_by(Case.received_at.desc()).limit(20))
        return [{"case_id": i, "received_at": as_utc(t).isoformat(), "kind": k.value} for i, t, k in rows]

    def claim(self, case_id: int, user_id: int, center: int, lease_s: float, now: datetime) -> bool:
        """Take the case for ``user_id`` (held by nobody, by an expired claim, or already by
        them) and give up any other case they held. One UPDATE decides between rivals."""
        taken = self._s.execute(
            update(Case).where(Case.id == case_id, Case.route_site_id == center,
                               or_(Case.claimed_by.is_(None), Case.claimed_by == user_id, Case.claim_until < now))
            .values(claimed_by=user_id, claim_until=now + timedelta(seconds=lease_s))).rowcount == 1
        if taken:
            self._s.execute(update(Case).where(Case.claimed_by == user_id, Case.id != case_id)
                            .values(claimed_by=None, claim_until=None))
        return taken

    def holds(self, case_id: int, user_id: int, now: datetime) -> bool:
        return self._s.scalar(select(Case.id).where(Case.id == case_id, Case.claimed_by == user_id,
                                                    Case.claim_until > now)) is not None

    def renew(self, case_id: int, user_id: int, lease_s: float, now: datetime) -> None:
        self._s.execute(update(Case).where(Case.id == case_id, Case.claimed_by == user_id)
                        .values(claim_until=now + timedelta(seconds=lease_s)))

    def release(self, case_id: int, user_id: int | None = None) -> bool:
        """End the claim (``user_id``'s only, when given)."""
        q = update(Case).where(Case.id == case_id, Case.claimed_by.is_not(None))
        if user_id is not None:
            q = q.where(Case.claimed_by == user_id)
        return self._s.execute(q.values(claimed_by=None, claim_until=None)).rowcount == 1

    def mark_reported(self, case_id: int) -> None:
        self._s.execute(update(Case).where(Case.id == case_id)
                        .values(review_state=ReviewState.REPORTED.value, claimed_by=None, claim_until=None))

    def route_up(self, case_id: int, from_site: int, reason: str, now: datetime,
                 only_if_overdue: bool = False) -> int | None:
        """Move the case from ``from_site``'s queue to the center above it, which gets a fresh
        deadline for the case's priority; ``from_site`` keeps seeing it. Returns the new site,
        or None when there is no center above, or the case is no longer ``from_site``'s (or,
        with ``only_if_overdue``, is claimed or not yet due: another sweeper or a reader won)."""
        parent = self._s.scalar(select(Site.parent_id).where(Site.id == from_site))
        if parent is None:
            return None
        priority = self._s.scalar(select(Case.priority).where(Case.id == case_id))
        q = update(Case).where(Case.id == case_id, Case.route_site_id == from_site,
                               Case.review_state == ReviewState.OPEN.value)
        if only_if_overdue:
            q = q.where(Case.deadline_at < now, or_(Case.claimed_by.is_(None), Case.claim_until < now))
        moved = self._s.execute(q.values(
            route_site_id=parent, claimed_by=None, claim_until=None,
            deadline_at=now + timedelta(seconds=self._deadlines.seconds(priority or "routine")))).rowcount == 1
        if not moved:
            return None
        if self._s.get(CaseRoute, (case_id, from_site)) is None:
            self._s.add(CaseRoute(case_id=case_id, site_id=from_site, reason=reason, at=now))
        return parent

    def overdue(self, now: datetime, limit: int = 100) -> list[tuple[int, int]]:
        """(case, its center) of open cases past their deadline and unclaimed, whose center has one above."""
        rows = self._s.execute(
            select(Case.id, Case.route_site_id).join(Site, Site.id == Case.route_site_id)
            .where(Case.review_state == ReviewState.OPEN.value, Case.deadline_at < now, Site.parent_id.is_not(None),
                   or_(Case.claimed_by.is_(None), Case.claim_until < now))
            .order_by(Case.deadline_at).limit(limit))
        return [(int(i), int(s)) for i, s in rows]


# -- reports -------------------------------------------------------------------------------------
class ReportRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def _version(self, r: Report) -> ReportVersion:
        names = dict(self._s.execute(select(User.id, User.username).where(User.id.in_({r.author_id, r.signed_by}))).all())
        display = self._s.scalar(select(User.display_name).where(User.id == r.signed_by)) if r.signed_by else None
        return ReportVersion(r.id, r.case_id, r.version, ReportState(r.state), tuple(r.statements), r.conclusion,
                             dict(r.measurements or {}), names.get(r.author_id, ""), r.replaces, r.reason,
                             names.get(r.signed_by) if r.signed_by else None, display, as_utc(r.signed_at), r.sha256,
                             r.signature, r.signed_content, r.pdf_key, r.findings or "", r.signature_algorithm)

    def latest(self, case_id: int, signed_only: bool = False) -> ReportVersion | None:
        q = select(Report).where(Report.case_id == case_id)
        if signed_only:
            q = q.where(Report.state == ReportState.SIGNED.value)
        r = self._s.scalar(q.order_by(Report.version.desc()).limit(1))
        return None if r is None else self._version(r)

    def versions(self, case_id: int) -> list[ReportVersion]:
        return [self._version(r) for r in self._s.scalars(select(Report).where(Report.case_id == case_id)
                                                          .order_by(Report.version))]

    def get(self, case_id: int, version: int) -> ReportVersion | None:
        r = self._s.scalar(select(Report).where(Report.case_id == case_id, Report.version == version))
        return None if r is None else self._version(r)

    def save_draft(self, case_id: int, author_id: int, statements: list[str], findings: str, conclusion: str,
                   measurements: dict[str, Any]) -> ReportVersion:
        """Write the case's draft (the first version, or the unsigned latest one)."""
        r = self._s.scalar(select(Report).where(Report.case_id == case_id).order_by(Report.version.desc()).limit(1))
        if r is not None and r.state == ReportState.SIGNED.value:
            raise ReportImmutable(f"version {r.version} of case {case_id} is signed; amend it instead")
        if r is None:
            r = Report(case_id=case_id, version=1, state=ReportState.DRAFT.value)
            self._s.add(r)
        r.statements, r.conclusion, r.measurements, r.author_id = list(statements), conclusion, measurements, author_id
        r.findings = findings
        r.updated_at = utcnow()
        self._s.flush()
        return self._version(r)

    def add_amendment(self, case_id: int, author_id: int, replaces: int, statements: list[str], findings: str,
                      conclusion: str, measurements: dict[str, Any], reason: str) -> ReportVersion:
        """A new draft version after the signed ``replaces`` (signed in the same transaction)."""
        r = Report(case_id=case_id, version=replaces + 1, state=ReportState.DRAFT.value, statements=list(statements),
                   findings=findings, conclusion=conclusion, measurements=measurements, author_id=author_id,
                   replaces=replaces, reason=reason, updated_at=utcnow())
        self._s.add(r)
        self._s.flush()
        return self._version(r)

    def sign(self, report_id: int, signer_id: int, signed_at: datetime, sha256: str, algorithm: str, signature: str,
             signed_content: str) -> bool:
        """Seal a draft; False when it was signed meanwhile (one UPDATE decides)."""
        return self._s.execute(update(Report).where(Report.id == report_id, Report.state == ReportState.DRAFT.value)
                               .values(state=ReportState.SIGNED.value, signed_by=signer_id, signed_at=signed_at,
                                       sha256=sha256, signature_algorithm=algorithm, signature=signature,
                                       signed_content=signed_content,
                                       updated_at=utcnow())).rowcount == 1

    def set_pdf(self, report_id: int, key: str) -> None:
        self._s.execute(update(Report).where(Report.id == report_id).values(pdf_key=key))

    def study_origin(self, case_id: int) -> tuple[DeviceIdentity, ObjectRef] | None:
        """Where a signed report of the case goes back into DICOM: the device that sent the
        study (the report is filed as that device's, so it lands in the same case) and the
        case's first DICOM object (whose patient and study attributes it copies). None for a
        case that is no DICOM study (a WFDB record, a vendor ECG file)."""
        row = self._s.execute(select(Case.study_instance_uid, Device)
                              .join(Device, Device.id == Case.device_id).where(Case.id == case_id)).first()
        if row is None or not row[0]:
            return None
        first = self._s.scalar(select(StoredObject).where(StoredObject.case_id == case_id,
                                                          StoredObject.media_type == MediaType.DICOM)
                               .order_by(StoredObject.id).limit(1))
        if first is None:
            return None
        d = row[1]
        return DeviceIdentity(d.id, d.name, d.site_id, d.ae_title, d.rules), _ref(first)


# -- audit -----------------------------------------------------------------------------------------
def audit_content(e: AuditEntry) -> dict[str, Any]:
    """The hashed part of an entry: everything but the hashes themselves."""
    return {"id": e.id, "at": as_utc(e.at).isoformat(), "user_id": e.user_id, "username": e.username,
            "role": e.role, "action": e.action, "case_id": e.case_id, "detail": e.detail, "address": e.address}


class AuditRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def append(self, *, username: str, role: str, action: str, user_id: int | None = None,
               case_id: int | None = None, detail: dict[str, Any] | None = None, address: str | None = None,
               at: datetime | None = None) -> int:
        """Add an entry linked to the last one. Bumping the head row first takes the lock
        (row lock on PostgreSQL, the write lock on SQLite) so appends queue one behind another."""
        self._s.execute(update(AuditHead).where(AuditHead.id == 1).values(last_id=AuditHead.last_id + 1))
        entry_id, prev = self._s.execute(select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == 1)).one()
        entry = AuditEntry(id=entry_id, at=at or utcnow(), user_id=user_id, username=username, role=role, action=action,
                           case_id=case_id, detail=detail or {}, address=address, prev_hash=prev, hash="")
        entry.hash = audit_hash(prev, audit_content(entry))
        self._s.add(entry)
        self._s.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=entry.hash))
        return entry_id

    def entries(self, case_id: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if case_id is not None:
            q = q.where(AuditEntry.case_id == case_id)
        return [{**audit_content(e), "prev_hash": e.prev_hash, "hash": e.hash} for e in self._s.scalars(q)]

    def chain(self, batch: int = 5000) -> Iterator[tuple[dict[str, Any], str, str]]:
        """Every entry in order: (hashed content, stored prev_hash, stored hash)."""
        after = 0
        while True:
            rows = list(self._s.scalars(select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id)
                                        .limit(batch)))
            if not rows:
                return
            for e in rows:
                yield audit_content(e), e.prev_hash, e.hash
            after = rows[-1].id

    def head(self) -> tuple[int, str]:
        return tuple(self._s.execute(select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == 1)).one())
