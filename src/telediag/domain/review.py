"""People, the readers' queue, reports and the audit trail: the review stage's domain.

No I/O here: the canonical form of a signed report and the audit chain's hashing are pure
functions, so a report or an audit entry can be verified by anyone holding its content.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple


class Role(str, enum.Enum):
    """What a person may do; devices are not people and have no role."""

    CLINIC = "clinic"
    READER = "reader"
    CENTER_ADMIN = "center_admin"
    NETWORK_ADMIN = "network_admin"

    @property
    def is_admin(self) -> bool:
        return self in (Role.CENTER_ADMIN, Role.NETWORK_ADMIN)


#: What a reader may be qualified to read (a case's kind).
QUALIFICATIONS: tuple[str, ...] = ("ecg", "imaging")


class ReviewState(str, enum.Enum):
    """A case to be read (``open``) or read and signed (``reported``)."""

    OPEN = "open"
    REPORTED = "reported"


class ReportState(str, enum.Enum):
    DRAFT = "draft"
    SIGNED = "signed"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person (by token or page session) or a device (by API key).

    ``site_level`` tells a township clinic from a reading center; ``csrf_token`` is set only
    for a page session, whose state-changing requests must repeat it in a header.
    """

    kind: Literal["user", "device"]
    #: A person's username, or a device's name.
    username: str
    site_id: int
    site_name: str
    #: ``SiteLevel`` value: a township's people are clinic staff, a center's read and administer.
    site_level: str
    role: Role | None = None
    user_id: int | None = None
    device_id: int | None = None
    display_name: str = ""
    qualified: tuple[str, ...] = ()
    csrf_token: str | None = None

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    def has_role(self, *roles: Role) -> bool:
        return self.role in roles


class LoginResult(NamedTuple):
    """A session: the bearer token (or cookie value), shown once and stored only as a hash."""

    token: str
    csrf_token: str
    expires_in: int
    principal: Principal


@dataclass(frozen=True)
class UserInfo:
    """A person as administrators list them (never the password hash or the keys)."""

    id: int
    username: str
    #: What signed reports print.
    display_name: str
    role: Role
    site_id: int
    site_name: str
    #: What a reader may read (``QUALIFICATIONS``); empty for everyone else.
    qualified: tuple[str, ...]
    #: A disabled account cannot log in and its sessions are gone.
    active: bool
    created_at: datetime


class Refusal(Exception):
    """A use case's refusal that carries facts for the caller beside its message (who holds a
    claim, when to try again): ``details``, which the API adds to its answer."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = {k: v for k, v in details.items() if v is not None}


class NotPermitted(Refusal, PermissionError):
    """The caller's role or site does not allow this (the API answers 403)."""


class CaseNotVisible(Refusal, LookupError):
    """No such case for this caller: a missing case and another site's look the same (404)."""


class ClaimConflict(Refusal, RuntimeError):
    """Another reader holds the case (``claimed_by``), or the caller does not hold it (409)."""


class ReportImmutable(Refusal, RuntimeError):
    """The report is signed: a change is an amendment, a new version (409)."""


class InvalidReport(Refusal, ValueError):
    """A report names unknown statements, or an amendment gives no reason (422)."""


class LoginRefused(Refusal, PermissionError):
    """Wrong credentials, a disabled or locked account (``retry_after`` seconds), or too many attempts."""


def utc_seconds(at: datetime) -> str:
    """ISO 8601 UTC with whole seconds: the one spelling of a time inside signed content."""
    return at.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_json(content: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 as itself: two parties serialising the same content
    get the same bytes (see docs/review-api.md)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def report_content(*, case_id: int, version: int, replaces: int | None, site_id: int, patient_key: str | None,
                   statements: list[str], findings: str, conclusion: str, measurements: dict[str, Any],
                   signed_by: str, signed_at: datetime) -> dict[str, Any]:
    """What a reader's signature covers: the whole diagnostic content and who signed it when.
    ``findings`` is an imaging report's free text (its ``conclusion`` is the impression); an
    ECG report signs it empty, so both kinds verify with one canonical form."""
    return {"case_id": case_id, "version": version, "replaces": replaces, "site_id": site_id,
            "patient_key": patient_key, "statements": list(statements), "findings": findings,
            "conclusion": conclusion, "measurements": measurements, "signed_by": signed_by,
            "signed_at": utc_seconds(signed_at)}


def report_digest(content: dict[str, Any]) -> bytes:
    return hashlib.sha256(canonical_json(content)).digest()


#: The hash the first audit entry links to.
AUDIT_GENESIS = "0" * 64


def audit_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """An entry's hash covers its content and its predecessor's hash, so editing or removing
    any entry breaks every later link."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(entry)).hexdigest()


@dataclass(frozen=True)
class SigningKey:
    """A reader's key pair: the public half as base64 of its raw bytes, the private half sealed
    under the server's secret (see ``network.KeyVault``)."""

    algorithm: str
    public_key: str
    sealed: str


@dataclass(frozen=True)
class AuditBreak:
    """The first entry whose stored hash does not follow from its content and predecessor."""

    entry_id: int
    reason: str


@dataclass(frozen=True)
class Deadlines:
    """How long a case may wait unclaimed, by priority, before it moves up to the next center."""

    critical_s: float = 600.0
    urgent_s: float = 1800.0
    routine_s: float = 86400.0

    def seconds(self, priority: str) -> float:
        return {"critical": self.critical_s, "urgent": self.urgent_s}.get(priority, self.routine_s)


@dataclass(frozen=True)
class CaseRef:
    """What the permission checks of the review stage need to know of a case."""

    id: int
    site_id: int
    kind: str
    route_site_id: int | None
    #: Centers it was routed to before (consulted, escalated): they keep seeing it.
    earlier_routes: tuple[int, ...]
    review_state: str
    claimed_by: int | None
    claim_until: datetime | None
    patient_id: int | None
    patient_key: str | None
    priority: str


@dataclass(frozen=True)
class ReportVersion:
    """One version of a case's report as stored."""

    id: int
    case_id: int
    version: int
    state: ReportState
    statements: tuple[str, ...]
    conclusion: str
    measurements: dict[str, Any]
    author: str
    replaces: int | None
    reason: str | None
    signed_by: str | None
    signed_by_name: str | None
    signed_at: datetime | None
    sha256: str | None
    signature: str | None
    signed_content: str | None
    pdf_key: str | None
    #: An imaging report's free-text findings (empty for an ECG report).
    findings: str = ""
    #: The signer's key algorithm (``ed25519`` or ``sm2``); None for a draft.
    algorithm: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "state": self.state.value, "statements": list(self.statements),
                "findings": self.findings, "conclusion": self.conclusion, "measurements": self.measurements,
                "author": self.author, "replaces": self.replaces, "reason": self.reason, "signed_by": self.signed_by,
                "signed_at": utc_seconds(self.signed_at) if self.signed_at else None, "sha256": self.sha256,
                "signature": self.signature, "algorithm": self.algorithm}
