"""States and value objects of the network and of received exams."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal


class SiteLevel(str, enum.Enum):
    """Tier of a site in the "grassroots exam, superior diagnosis" hierarchy."""

    PREFECTURE, COUNTY, TOWNSHIP = "prefecture", "county", "township"

    @property
    def parent_level(self) -> "SiteLevel | None":
        """The level a site of this level hangs under (townships under a county, counties
        under the prefecture); None for the prefecture center."""
        return {SiteLevel.COUNTY: SiteLevel.PREFECTURE, SiteLevel.TOWNSHIP: SiteLevel.COUNTY}.get(self)


class CaseKind(str, enum.Enum):
    ECG, IMAGING = "ecg", "imaging"


class CaseStatus(str, enum.Enum):
    """Where a case stands; analysis states are derived from its jobs."""

    RECEIVED, ANALYSED, ANALYSIS_FAILED = "received", "analysed", "analysis_failed"


class JobState(str, enum.Enum):
    """Life of an analysis job (the transactional outbox row).

    ``pending`` is written in the same transaction as the stored object, so a crash before
    the broker hears of it leaves a row that the sweeper publishes. ``running`` carries a
    lease that the worker renews while it works; a lease that runs out means the worker
    died, and the sweeper publishes the job again.
    """

    PENDING, QUEUED, RUNNING, DONE, DEAD = "pending", "queued", "running", "done", "dead"


class JobKind(str, enum.Enum):
    """What a job does with its object: analyse an ECG, or describe an image and render its
    preview and thumbnail (so a reader's first look at a study is a read, not a decode)."""

    ANALYZE_ECG, RENDER_PREVIEW = "analyze_ecg", "render_preview"


class NetworkError(ValueError):
    """A site or device request that contradicts the network's shape."""


class UnknownSite(NetworkError):
    """A request named a site the network does not have."""


class SiteNotPermitted(NetworkError):
    """A device named a site it is not registered for."""


@dataclass(frozen=True)
class DeviceIdentity:
    """An authenticated sender: which device, and for which site it may deliver."""

    device_id: int
    name: str
    site_id: int
    ae_title: str | None
    #: The critical-value rule set its recordings are analysed with.
    rules: str = "resting"


@dataclass(frozen=True)
class SiteInfo:
    id: int
    name: str
    level: SiteLevel
    parent_id: int | None
    active: bool


@dataclass(frozen=True)
class DeviceInfo:
    id: int
    name: str
    site_id: int
    site_name: str
    ae_title: str | None
    active: bool
    created_at: datetime
    rules: str = "resting"


@dataclass(frozen=True)
class IngestOutcome:
    """What became of one received object (or WFDB record)."""

    case_id: int
    object_id: int | None
    status: Literal["stored", "duplicate", "quarantined"]
    job_id: int | None = None


@dataclass(frozen=True)
class QuarantineEntry:
    """A different object received under a known instance UID, kept aside for an administrator."""

    id: int
    device_id: int
    key: str
    size: int
    sha256: str
    sop_instance_uid: str | None
    reason: str
    received_at: datetime


class MediaType:
    """Media types objects are stored under; they say which reader decodes an object."""

    DICOM = "application/dicom"
    WFDB_HEADER = "application/x-wfdb-header"
    WFDB_SIGNAL = "application/x-wfdb-signal"
    WFDB_ANNOTATION = "application/x-wfdb-annotation"
    #: single-file ECG formats by the reader's format name -> (media type, key extension)
    ECG_FILES: dict[str, tuple[str, str]] = {
        "scp-ecg": ("application/x-scp-ecg", "scp"),
        "hl7-aecg": ("application/x-hl7-aecg+xml", "xml"),
        "ge-muse": ("application/x-ge-muse+xml", "xml"),
        "philips-xml": ("application/x-philips-ecg+xml", "xml"),
    }


#: Built-in critical-value rule sets a device or an upload may name (``telediag.ecg.rules.BUILTIN``).
RULE_SETS: tuple[str, ...] = ("resting", "holter", "monitoring")


class AlarmState(str, enum.Enum):
    OPEN, ACKNOWLEDGED = "open", "acknowledged"


class Priority(str, enum.Enum):
    """A case's place in the review queue, set by the most severe alarm of its analysis."""

    CRITICAL, URGENT, ROUTINE = "critical", "urgent", "routine"

    @classmethod
    def of_severity(cls, severity: str) -> "Priority":
        return {"critical": cls.CRITICAL, "urgent": cls.URGENT}.get(severity, cls.ROUTINE)

    @property
    def rank(self) -> int:
        return {Priority.CRITICAL: 2, Priority.URGENT: 1, Priority.ROUTINE: 0}[self]


class PushChannel(str, enum.Enum):
    """Channels that have outbox rows (SSE reads the events themselves and needs none)."""

    MQTT, WEBHOOK = "mqtt", "webhook"


@dataclass(frozen=True)
class AlarmInfo:
    """An alarm as the API lists it."""

    id: int
    case_id: int
    object_id: int
    site_id: int
    type: str
    severity: str
    start_s: float
    end_s: float
    text: str
    text_zh: str
    evidence: dict
    raised_at: datetime
    state: AlarmState
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    escalation_level: int


@dataclass(frozen=True)
class AlarmEventInfo:
    """One event of the alarm stream (``id`` is the SSE event id): about an alarm, or a signed
    report pushed to its clinic (``report``) and the clinic's acknowledgement (``report_ack``)."""

    id: int
    kind: Literal["alarm", "ack", "escalation", "report", "report_ack"]
    #: None for a report's events.
    alarm_id: int | None
    site_ids: tuple[int, ...]
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class DeliveryTask:
    """A delivery claimed for sending: what to send, where, and the site's webhook if any."""

    id: int
    event_id: int
    channel: PushChannel
    site_id: int
    attempts: int
    payload: dict[str, Any]
    webhook_url: str | None = None
    webhook_secret: str | None = None


@dataclass(frozen=True)
class Notification:
    """A push that reached a site: who was notified of an alarm, how and when."""

    event_id: int
    kind: Literal["alarm", "ack", "escalation"]
    channel: str
    site_id: int
    sent_at: datetime


class AlarmNotFound(LookupError):
    """No such alarm within the caller's sites."""
