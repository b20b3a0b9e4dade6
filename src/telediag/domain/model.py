"""States and value objects of the network and of received exams."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Literal


class SiteLevel(str, enum.Enum):
    """Tier of a site in the "grassroots exam, superior diagnosis" hierarchy."""

    PREFECTURE = "prefecture"
    COUNTY = "county"
    TOWNSHIP = "township"

    @property
    def parent_level(self) -> "SiteLevel | None":
        """The level a site of this level hangs under (townships under a county, counties
        under the prefecture); None for the prefecture center."""
        return {SiteLevel.COUNTY: SiteLevel.PREFECTURE, SiteLevel.TOWNSHIP: SiteLevel.COUNTY}.get(self)


class CaseKind(str, enum.Enum):
    ECG = "ecg"
    IMAGING = "imaging"


class CaseStatus(str, enum.Enum):
    """Where a case stands; analysis states are derived from its jobs."""

    RECEIVED = "received"
    ANALYSED = "analysed"
    ANALYSIS_FAILED = "analysis_failed"


class JobState(str, enum.Enum):
    """Life of an analysis job (the transactional outbox row).

    ``pending`` is written in the same transaction as the stored object, so a crash before
    the broker hears of it leaves a row that the sweeper publishes. ``running`` carries a
    lease that the worker renews while it works; a lease that runs out means the worker
    died, and the sweeper publishes the job again.
    """

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


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
