"""The domain: what the network is and what happens to an exam, with no I/O.

Every stage speaks these types: enums of states, small immutable value objects that
repositories return (so no ORM row leaves the store package) and the domain events the
message bus carries from one stage to the next.
"""

from .events import AlarmEventsRecorded, AnalysisCompleted, AnalysisFailed, Event, ObjectQuarantined, ObjectStored
from .model import (CaseKind, CaseStatus, DeviceIdentity, DeviceInfo, IngestOutcome, JobState, MediaType,
                    NetworkError, SiteNotPermitted, UnknownSite,
                    QuarantineEntry, SiteInfo, SiteLevel)
from .model import (RULE_SETS, AlarmEventInfo, AlarmInfo, AlarmNotFound, AlarmState, DeliveryTask, Notification,
                    Priority, PushChannel)

__all__ = ["SiteLevel", "CaseKind", "CaseStatus", "JobState", "DeviceIdentity", "DeviceInfo", "SiteInfo",
           "IngestOutcome", "MediaType", "QuarantineEntry", "NetworkError", "UnknownSite", "SiteNotPermitted", "Event", "ObjectStored", "ObjectQuarantined",
           "AnalysisCompleted", "AnalysisFailed", "AlarmEventsRecorded", "RULE_SETS", "AlarmState", "Priority",
           "PushChannel", "AlarmInfo", "AlarmEventInfo", "DeliveryTask", "Notification", "AlarmNotFound"]
