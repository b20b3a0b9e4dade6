"""Tables: the relational model of the network and of what it receives.

The schema itself is owned by the Alembic migrations in ``storage/migrations``; these
classes map onto it. They are private to the store package: repositories turn rows into
the domain's value objects, so nothing outside ``telediag.store`` holds an ORM row.
Timestamps are stored in UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from telediag.domain import CaseKind, CaseStatus, JobState, SiteLevel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; they are UTC."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


def _enum(cls: type, name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e], native_enum=False, length=20)


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    level: Mapped[SiteLevel] = mapped_column(_enum(SiteLevel, "site_level"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    #: A disabled site's devices can no longer deliver (its history stays).
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Where the site's alarms are POSTed, signed with ``webhook_secret`` (HMAC-SHA256).
    webhook_url: Mapped[str | None] = mapped_column(String(1000))
    webhook_secret: Mapped[str | None] = mapped_column(String(200))

    parent: Mapped["Site | None"] = relationship(remote_side=[id])


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    #: Calling AE title the device uses for DICOM associations (unique, upper case).
    ae_title: Mapped[str | None] = mapped_column(String(16), unique=True)
    #: sha256 of the device's HTTP API key; the key itself is shown once and never stored.
    api_key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    #: The critical-value rule set its recordings are analysed with (resting, holter, monitoring).
    rules: Mapped[str] = mapped_column(String(20), default="resting", server_default="resting")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Where the device listens for DICOM (a viewer or PACS): a C-MOVE to its AE title goes there.
    dicom_host: Mapped[str | None] = mapped_column(String(255))
    dicom_port: Mapped[int | None] = mapped_column(Integer)

    site: Mapped[Site] = relationship()


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("site_id", "patient_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    #: The identifier the township gave the patient (DICOM PatientID or WFDB record name).
    patient_key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    sex: Mapped[str | None] = mapped_column(String(1))
    birth_date: Mapped[str | None] = mapped_column(String(8))


class Case(Base):
    """One exam sent for remote diagnosis: a DICOM study or an uploaded WFDB record."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("site_id", "study_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    kind: Mapped[CaseKind] = mapped_column(_enum(CaseKind, "case_kind"))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[CaseStatus] = mapped_column(_enum(CaseStatus, "case_status"), default=CaseStatus.RECEIVED)
    #: critical / urgent / routine: the most severe alarm its analysis raised (the review queue's order).
    priority: Mapped[str] = mapped_column(String(20), default="routine", server_default="routine")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    #: The reading center whose queue holds the case (the township's county at first).
    route_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    #: To be claimed by then, or it moves up to the next center (set by priority).
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_state: Mapped[str] = mapped_column(String(20), default="open", server_default="open")
    #: The reader holding the case, until ``claim_until`` (a lease).
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    claim_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The study's catalog attributes (QIDO-RS, C-FIND), from its first object: dates as
    #: YYYYMMDD and times as HHMMSS[.FFFFFF], so that ranges compare as strings.
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_time: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    study_description: Mapped[str | None] = mapped_column(String(200))
    referring_physician_name: Mapped[str | None] = mapped_column(String(200))
    study_id: Mapped[str | None] = mapped_column(String(64))

    site: Mapped[Site] = relationship(foreign_keys=[site_id])
    objects: Mapped[list["StoredObject"]] = relationship(back_populates="case", order_by="StoredObject.id")


class _Bytes:
    """Where an object's bytes are kept and what they must hash to (checked on every read)."""

    key: Mapped[str] = mapped_column(String(512), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class StoredObject(_Bytes, Base):
    """A file held in the object store, exactly as the device sent it."""

    __tablename__ = "stored_objects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    media_type: Mapped[str] = mapped_column(String(80))
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    #: Unique across the network: a re-send of the same instance is recognised by it.
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    #: WFDB record name, for the files of an uploaded record.
    record_name: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: A DICOM instance's catalog attributes (its series' are repeated on each of its instances).
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String(200))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)

    case: Mapped[Case] = relationship(back_populates="objects")


class QuarantinedObject(_Bytes, Base):
    """A different object sent under an existing SOP Instance UID: kept aside, never overwriting."""

    __tablename__ = "quarantined_objects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """An analysis job; the row is the outbox entry and the job's visible state."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("object_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("stored_objects.id"))
    kind: Mapped[str] = mapped_column(String(32), default="analyze_ecg")
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), default=JobState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: While ``running``: the worker holds the job until then and renews it as it works.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The rule set the upload named; None: the device's (resolved when the job is claimed).
    rules: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    object: Mapped[StoredObject] = relationship()


class AnalysisResult(Base):
    """What the DSP worker found in one stored ECG object (one row per object: re-runs replace it)."""

    __tablename__ = "analysis_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("stored_objects.id"), unique=True)
    analyzer_version: Mapped[str] = mapped_column(String(32))
    heart_rate_bpm: Mapped[float | None]
    lead_count: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float]
    fs: Mapped[float]
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alarm(Base):
    """A critical value (or urgent finding) an analysis raised; written with the result it comes from."""

    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_site_state", "site_id", "state"),
                      Index("ix_alarms_escalation", "state", "severity", "escalation_level"),
                      Index("ix_alarms_case_id", "case_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    object_id: Mapped[int] = mapped_column(ForeignKey("stored_objects.id"), index=True)
    #: The clinic's site (the case's).
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    type: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(20))
    start_s: Mapped[float] = mapped_column(Double)
    end_s: Mapped[float] = mapped_column(Double)
    text: Mapped[str] = mapped_column(Text)
    text_zh: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    state: Mapped[str] = mapped_column(String(20), default="open")
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: 0 when raised; k once escalated to the k-th site above the clinic.
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)


class AlarmEvent(Base):
    """Something to tell a site: about an alarm (raised, acknowledged, escalated) or a signed
    report (``report``, ``report_ack``); the id is the SSE event id."""

    __tablename__ = "alarm_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    #: The alarm of an alarm event; None for a report's.
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id"))
    #: The case the event is about (set on every event written since revision 0005).
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    site_ids: Mapped[list[int]] = mapped_column(JSON)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AlarmEventSite(Base):
    """The sites an event concerns, one row each, so "events of site S after id N" is an index scan."""

    __tablename__ = "alarm_event_sites"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("alarm_events.id"), primary_key=True)


class Delivery(Base):
    """The outbox row of one push: an event, over one channel, to one site."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("event_id", "channel", "site_id"),
                      Index("ix_deliveries_state_next", "state", "next_attempt_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("alarm_events.id"))
    channel: Mapped[str] = mapped_column(String(20))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    #: pending -> sending (claimed, with a lease) -> sent, or failed after the last attempt.
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttempt(Base):
    """One try of a delivery: the delivery log (status code and error as the receiver answered)."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Double)


class User(Base):
    """A person: clinic staff, a reader, an administrator. Readers hold a signing key (Ed25519,
    or SM2 where national cryptography is required) whose private half is kept encrypted
    under the server's secret."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    #: Comma-separated case kinds a reader may read ("ecg,imaging").
    qualified: Mapped[str] = mapped_column(String(40), default="")
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    key_algorithm: Mapped[str | None] = mapped_column(String(20))
    public_key: Mapped[str | None] = mapped_column(String(100))
    private_key_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserSession(Base):
    """A login: the bearer token or page cookie, kept only as its SHA-256."""

    __tablename__ = "user_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CaseRoute(Base):
    """A center a case was routed to before its present one: it keeps seeing the case."""

    __tablename__ = "case_routes"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True, index=True)
    reason: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Report(Base):
    """One version of a case's report: a draft, or signed and then never changed again."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("case_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default="draft")
    statements: Mapped[list[str]] = mapped_column(JSON)
    #: An imaging report's free-text findings; its ``conclusion`` is the impression. Empty for ECG.
    findings: Mapped[str] = mapped_column(Text, default="", server_default="")
    conclusion: Mapped[str] = mapped_column(Text, default="")
    measurements: Mapped[dict[str, Any]] = mapped_column(JSON)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    replaces: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sha256: Mapped[str | None] = mapped_column(String(64))
    #: The signer's key algorithm at signing (``ed25519``, ``sm2``).
    signature_algorithm: Mapped[str | None] = mapped_column(String(20))
    signature: Mapped[str | None] = mapped_column(String(200))
    #: The signed content exactly as signed (canonical JSON), so it can be verified later.
    signed_content: Mapped[str | None] = mapped_column(Text)
    pdf_key: Mapped[str | None] = mapped_column(String(512))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    #: Who at the clinic acknowledged receiving this signed version (``device:NAME`` for a device), and when.
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """Append-only: each entry's hash covers its content and the previous entry's hash."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(30))
    case_id: Mapped[int | None] = mapped_column(Integer, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    address: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The one row that serialises appends: its update takes the lock (a row lock on
    PostgreSQL, the write lock on SQLite) before the last hash is read."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))
