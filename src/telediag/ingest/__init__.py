"""The ingest stage: what devices send becomes durable, recorded and queued, one way for all.

Public API:

- :class:`IngestService` - the one use case (``prepare_dicom`` / ``prepare_wfdb`` /
  ``prepare_ecg_file`` parse and validate once, ``store_received`` stores; the C-STORE path
  calls ``ingest_dicom``);
- :class:`StorageSCP` - the DICOM network entry point (C-ECHO, C-STORE), given the use case
  and an ``authorize`` callable for calling AE titles; given a :class:`QueryService` (what a
  device may find and retrieve), it also answers C-FIND, C-GET and C-MOVE on the same AE;
- :exc:`InvalidObject` (refused, with the reason for the sender) and
  :exc:`StorageUnavailable` (nothing recorded; the sender should retry).
"""

from telediag.ingest.dicom import ACCEPTED_SOP_CLASSES, ECG_SOP_CLASSES, IMAGE_SOP_CLASSES, DicomInfo, InvalidObject
from telediag.ingest.query import QueryService
from telediag.ingest.scp import StorageSCP
from telediag.ingest.service import IngestService, Received, StorageUnavailable

__all__ = ["IngestService", "Received", "StorageSCP", "QueryService", "InvalidObject", "StorageUnavailable",
           "DicomInfo", "ECG_SOP_CLASSES", "IMAGE_SOP_CLASSES", "ACCEPTED_SOP_CLASSES"]
