"""The domain: what the network is and what happens to an exam, with no I/O.

Every stage speaks these types: enums of states, small immutable value objects that
repositories return (so no ORM row leaves the store package) and the domain events the
message bus carries from one stage to the next.
"""

from .events import AlarmEventsRecorded, AnalysisCompleted, AnalysisFailed, Event, ObjectQuarantined, ObjectStored
from .model import (CaseKind, CaseStatus, DeviceIdentity, DeviceInfo, IngestOutcome, JobKind, JobState, MediaType,
                    NetworkError, SiteNotPermitted, UnknownSite,
                    QuarantineEntry, SiteInfo, SiteLevel)
from .model import (RULE_SETS, AlarmEventInfo, AlarmInfo, AlarmNotFound, AlarmState, DeliveryTask, Notification,
                    Priority, PushChannel)
from .review import (AUDIT_GENESIS, QUALIFICATIONS, AuditBreak, CaseNotVisible, CaseRef, ReportVersion, SigningKey, InvalidReport, Refusal, ClaimConflict, Deadlines,
                     LoginRefused, LoginResult, NotPermitted, Principal, ReportImmutable, ReportState, ReviewState,
                     Role, UserInfo, audit_hash, canonical_json, report_content, report_digest, utc_seconds)

__all__ = ["SiteLevel", "CaseKind", "CaseStatus", "JobKind", "JobState", "DeviceIdentity", "DeviceInfo", "SiteInfo",
           "IngestOutcome", "MediaType", "QuarantineEntry", "NetworkError", "UnknownSite", "SiteNotPermitted", "Event", "ObjectStored", "ObjectQuarantined",
           "AnalysisCompleted", "AnalysisFailed", "AlarmEventsRecorded", "RULE_SETS", "AlarmState", "Priority",
           "PushChannel", "AlarmInfo", "AlarmEventInfo", "DeliveryTask", "Notification", "AlarmNotFound",
           "Role", "QUALIFICATIONS", "ReviewState", "ReportState", "Principal", "UserInfo", "LoginResult",
           "NotPermitted", "CaseNotVisible", "ClaimConflict", "ReportImmutable", "LoginRefused", "Deadlines",
           "AuditBreak", "AUDIT_GENESIS", "audit_hash", "canonical_json", "report_content", "report_digest",
           "utc_seconds", "CaseRef", "ReportVersion", "SigningKey", "InvalidReport", "Refusal"]
