"""Ingest: take an object from a device, make it durable, record it, queue its analysis.

The order is what makes "success" to the device mean durable:

1. validate (a refused object gets ``InvalidObject`` with the reason);
2. write the bytes to the object store (durable on return);
3. commit the object row *and* its outbox job row in one transaction;
4. only then report success; publishing the job to the broker comes after, and a
   crash between 3 and 4 leaves a ``pending`` job that the sweeper publishes.

Any failure in 2 or 3 raises ``StorageUnavailable`` (the device must retry) and leaves
no row behind; an object written in 2 whose row could not be committed is deleted.
"""

from __future__ import annotations

import logging
import os
from concurrent import futures
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from telediag.db import Database
from telediag.dicom_objects import DicomInfo, InvalidObject, inspect
from telediag.models import (Case, CaseKind, CaseStatus, Job, JobState, Patient, QuarantinedObject, StoredObject,
                             utcnow)
from telediag.network import DeviceIdentity
from telediag.objectstore import ObjectStore, ObjectStoreError, sha256_hex

log = logging.getLogger(__name__)

DICOM_MEDIA_TYPE = "application/dicom"
WFDB_HEADER_MEDIA_TYPE = "application/x-wfdb-header"
WFDB_DATA_MEDIA_TYPE = "application/x-wfdb-signal"
WFDB_ANNOTATION_MEDIA_TYPE = "application/x-wfdb-annotation"
ANALYZE_ECG = "analyze_ecg"


# Statements on every C-STORE's path, built once on the plain tables (no ORM compile step).
_objects, _cases, _patients, _jobs = (StoredObject.__table__, Case.__table__, Patient.__table__, Job.__table__)
_FIND_INSTANCE = select(_objects.c.id, _objects.c.sha256, _objects.c.case_id).where(
    _objects.c.sop_instance_uid == bindparam("uid"))
_FIND_CASE = select(_cases.c.id).where(_cases.c.site_id == bindparam("site"),
                                       _cases.c.study_instance_uid == bindparam("study"))
_FIND_PATIENT = select(_patients.c.id).where(_patients.c.site_id == bindparam("site"),
                                             _patients.c.patient_key == bindparam("key"))
_INSERT_CASE = insert(_cases).returning(_cases.c.id)
_INSERT_PATIENT = insert(_patients).returning(_patients.c.id)
_INSERT_OBJECT = insert(_objects).returning(_objects.c.id)
_INSERT_JOB = insert(_jobs).returning(_jobs.c.id)


class StorageUnavailable(RuntimeError):
    """The object could not be made durable; nothing was recorded and the sender should retry."""


class JobPublisher(Protocol):
    """Hands committed jobs to the workers (a broker in production, in-process when embedded).

    Must not raise for a broker outage: the jobs are committed ``pending`` already and the
    sweeper publishes what could not be sent.
    """

    def publish(self, job_ids: Sequence[int]) -> None: ...


@dataclass(frozen=True)
class IngestOutcome:
    """What became of one received object (or WFDB record)."""

    case_id: int
    object_id: int | None
    status: Literal["stored", "duplicate", "quarantined"]
    job_id: int | None = None


def _fault_point(name: str) -> None:
    """Fault-injection seam for the crash-window tests: when ``TELEDIAG_FAULT_PAUSE`` names
    this point, write a marker file and stop here until the process is killed."""
    spec = os.environ.get("TELEDIAG_FAULT_PAUSE", "")
    if spec.partition("=")[0] == name:
        Path(spec.partition("=")[2]).write_text(str(os.getpid()))
        while True:
            time.sleep(3600)


def dicom_key(site_id: int, info: DicomInfo, sha256: str) -> str:
    """Object-store key of a DICOM instance: site / study / series / instance, tagged with
    the start of the content hash so that two different objects sent at the same moment
    under one SOP Instance UID can never overwrite each other's bytes."""
    return (f"sites/{site_id}/studies/{info.study_instance_uid}/series/{info.series_instance_uid}"
            f"/{info.sop_instance_uid}.{sha256[:16]}.dcm")


class IngestService:
    """The one place where received objects become stored, recorded and queued."""

    def __init__(self, db: Database, store: ObjectStore, publisher: JobPublisher) -> None:
        self.db = db
        self.store = store
        self.publisher = publisher
        self._writer = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="telediag-write")

    # -- DICOM ---------------------------------------------------------------------------
    def ingest_dicom(self, device: DeviceIdentity, data: bytes) -> IngestOutcome:
        """Store one DICOM Part 10 object sent by ``device``."""
        info = inspect(data)
        digest = sha256_hex(data)
        try:
            known = self._known_instance(device, info.sop_instance_uid, digest, data)
        except SQLAlchemyError as exc:
            log.error("database unavailable while checking a received object: %s", type(exc).__name__)
            raise StorageUnavailable("database unavailable") from exc
        if known is not None:
            return known
        key = dicom_key(device.site_id, info, digest)
        # The write (mostly fsync, which releases the GIL) runs while the rows are inserted;
        # the transaction commits only after the write is durable, and rolls back if it fails.
        put = self._writer.submit(self._put, key, data, DICOM_MEDIA_TYPE)
        try:
            with self.db.engine.connect() as conn:  # Core only: no ORM session on the hot path
                case_id = self._case_for_study(conn, device, info)
                now = utcnow()
                object_id = conn.scalar(_INSERT_OBJECT, dict(
                    case_id=case_id, key=key, size=len(data), sha256=digest, media_type=DICOM_MEDIA_TYPE,
                    sop_class_uid=info.sop_class_uid, sop_instance_uid=info.sop_instance_uid,
                    series_instance_uid=info.series_instance_uid, transfer_syntax_uid=info.transfer_syntax_uid,
                    modality=info.modality, record_name=None, received_at=now))
                job_id = conn.scalar(_INSERT_JOB, dict(
                    object_id=object_id, kind=ANALYZE_ECG, state=JobState.PENDING, attempts=0, last_error=None,
                    created_at=now, updated_at=now)) if info.is_ecg else None
                put.result()  # raises StorageUnavailable: nothing is committed
                conn.commit()
                outcome = IngestOutcome(case_id, object_id, "stored", job_id)
        except DBIntegrityError:
            # Another association stored the same instance meanwhile: decide again on the committed row.
            futures.wait([put])
            known = self._known_instance(device, info.sop_instance_uid, digest, data)
            if known is not None:
                return known
            raise StorageUnavailable("database refused the object row")
        except SQLAlchemyError as exc:
            futures.wait([put])
            self._discard(key)
            log.error("database unavailable while recording %s: %s", key, type(exc).__name__)
            raise StorageUnavailable("database unavailable") from exc
        log.debug("stored object %s (case %s, %d bytes, sop class %s)", outcome.object_id, outcome.case_id,
                 len(data), info.sop_class_uid)
        self._after_commit(outcome)
        return outcome

    def _known_instance(self, device: DeviceIdentity, sop_instance_uid: str, digest: str,
                        data: bytes) -> IngestOutcome | None:
        """Recognise a re-send (same bytes: success, nothing new) or a conflicting object
        under a known SOP Instance UID (kept aside in quarantine, never overwriting)."""
        existing = self._stored_instance(sop_instance_uid)
        if existing is None:
            return None
        if existing.sha256 == digest:
            log.info("re-send of stored object %s from device %s: already stored", existing.id, device.device_id)
            return IngestOutcome(existing.case_id, existing.id, "duplicate")
        case_id = existing.case_id
        key = f"quarantine/{sop_instance_uid}/{digest}.dcm"
        self._put(key, data, DICOM_MEDIA_TYPE)
        try:
            with self.db.uow() as uow:
                if uow.session.scalar(select(QuarantinedObject).where(QuarantinedObject.key == key)) is None:
                    uow.session.add(QuarantinedObject(
                        device_id=device.device_id, key=key, size=len(data), sha256=digest,
                        sop_instance_uid=sop_instance_uid,
                        reason="different content under an already stored SOP Instance UID"))
                    uow.commit()
        except SQLAlchemyError as exc:
            raise StorageUnavailable("database unavailable") from exc
        log.warning("conflicting object under a stored SOP Instance UID from device %s kept aside as %s",
                    device.device_id, key)
        return IngestOutcome(case_id, None, "quarantined")

    def _stored_instance(self, uid: str):
        """(id, sha256, case_id) of the stored object with this instance UID or WFDB fingerprint."""
        with self.db.engine.connect() as conn:
            return conn.execute(_FIND_INSTANCE, {"uid": uid}).first()

    def _case_for_study(self, conn, device: DeviceIdentity, info: DicomInfo) -> int:
        """The case of this study at the device's site, created with its patient on first sight."""
        case_id = conn.scalar(_FIND_CASE, {"site": device.site_id, "study": info.study_instance_uid})
        if case_id is None:
            patient_id = self._patient_id(conn, device.site_id, info.patient_id, info.patient_name,
                                          info.patient_sex, info.patient_birth_date)
            now = utcnow()
            case_id = conn.scalar(_INSERT_CASE, dict(
                site_id=device.site_id, device_id=device.device_id, patient_id=patient_id,
                kind=CaseKind.ECG if info.is_ecg else CaseKind.IMAGING, study_instance_uid=info.study_instance_uid,
                status=CaseStatus.RECEIVED, received_at=now, updated_at=now))
        return case_id

    @staticmethod
    def _patient_id(conn, site_id: int, key: str | None, name: str | None = None, sex: str | None = None,
                    birth_date: str | None = None) -> int | None:
        if not key:
            return None
        patient_id = conn.scalar(_FIND_PATIENT, {"site": site_id, "key": key})
        if patient_id is None:
            patient_id = conn.scalar(_INSERT_PATIENT, dict(site_id=site_id, patient_key=key, name=name, sex=sex,
                                                           birth_date=birth_date))
        return patient_id

    # -- WFDB ----------------------------------------------------------------------------
    def ingest_wfdb(self, device: DeviceIdentity, files: dict[str, bytes],
                    patient_id: str | None = None) -> IngestOutcome:
        """Store one WFDB record given as ``{file name: bytes}`` (.hea, its signal files,
        optionally annotation files). Identical re-uploads are recognised by content."""
        header_name, record_name = validate_wfdb(files)
        # 64 characters, the width of a SOP Instance UID column ("wfdb:" + 59 hex digits); the ':'
        # keeps it apart from any DICOM UID, which has digits and dots only.
        fingerprint = "wfdb:" + sha256_hex(b"".join(
            name.encode() + b"\0" + sha256_hex(files[name]).encode() for name in sorted(files)))[:59]
        existing = self._stored_instance(fingerprint)
        if existing is not None:
            log.info("re-upload of WFDB record object %s from device %s", existing.id, device.device_id)
            return IngestOutcome(existing.case_id, existing.id, "duplicate")
        prefix = f"sites/{device.site_id}/wfdb/{uuid.uuid4().hex}"
        written: list[str] = []
        try:
            for name in sorted(files):
                self._put(f"{prefix}/{name}", files[name], _wfdb_media_type(name, header_name))
                written.append(f"{prefix}/{name}")
        except StorageUnavailable:
            for key in written:
                self._discard(key)
            raise
        try:
            with self.db.uow() as uow:
                s = uow.session
                case = Case(site_id=device.site_id, device_id=device.device_id, kind=CaseKind.ECG,
                            patient_id=self._patient_id(s.connection(), device.site_id, patient_id))
                s.add(case)
                header_obj = None
                for name in sorted(files):
                    media = _wfdb_media_type(name, header_name)
                    obj = StoredObject(case=case, key=f"{prefix}/{name}", size=len(files[name]),
                                       sha256=sha256_hex(files[name]), media_type=media, record_name=record_name,
                                       modality="ECG",
                                       sop_instance_uid=fingerprint if name == header_name else None)
                    s.add(obj)
                    if name == header_name:
                        header_obj = obj
                job = Job(object=header_obj, kind=ANALYZE_ECG)
                s.add(job)
                uow.commit()
                outcome = IngestOutcome(case.id, header_obj.id, "stored", job.id)
        except SQLAlchemyError as exc:
            for key in written:
                self._discard(key)
            existing = self._stored_instance(fingerprint) if isinstance(exc, DBIntegrityError) else None
            if existing is not None:  # the same record was uploaded twice at once
                return IngestOutcome(existing.case_id, existing.id, "duplicate")
            log.error("database unavailable while recording a WFDB record: %s", type(exc).__name__)
            raise StorageUnavailable("database unavailable") from exc
        log.info("stored WFDB record as object %s (case %s, %d files)", outcome.object_id, outcome.case_id, len(files))
        self._after_commit(outcome)
        return outcome

    # -- shared steps --------------------------------------------------------------------
    def _put(self, key: str, data: bytes, media_type: str) -> None:
        try:
            self.store.put(key, data, media_type)
        except ObjectStoreError as exc:
            log.error("object store unavailable: %s", exc)
            raise StorageUnavailable("object store unavailable") from exc

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except ObjectStoreError as exc:  # an orphan file is harmless; a lost row would not be
            log.warning("could not remove unrecorded object %s: %s", key, exc)

    def _after_commit(self, outcome: IngestOutcome) -> None:
        _fault_point("after-commit")
        if outcome.job_id is None:
            return
        self.publisher.publish([outcome.job_id])


def _wfdb_media_type(name: str, header_name: str) -> str:
    if name == header_name:
        return WFDB_HEADER_MEDIA_TYPE
    if name.endswith(".dat") or name.endswith(".mat"):
        return WFDB_DATA_MEDIA_TYPE
    return WFDB_ANNOTATION_MEDIA_TYPE


_SAFE_NAME = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def validate_wfdb(files: dict[str, bytes]) -> tuple[str, str]:
    """Check that ``files`` hold one complete, readable WFDB record; return (header file, record name).

    The record is read in full with the same reader the worker uses, so a truncated
    signal file is refused here, while the device can still resend it.
    """
    for name in files:
        if not name or set(name) - _SAFE_NAME or name.startswith("."):
            raise InvalidObject(f"file name {name!r} is not allowed (letters, digits, '.', '_', '-')")
    headers = [n for n in files if n.endswith(".hea")]
    if len(headers) != 1:
        raise InvalidObject(f"a WFDB upload needs exactly one .hea header file, got {len(headers)}")
    header_name = headers[0]
    record_name = header_name[:-4]
    from telediag.ecg.io import read_wfdb_files
    from telediag.ecg.recording import WaveformError

    try:
        read_wfdb_files(files, record_name)
    except WaveformError as exc:
        raise InvalidObject(f"WFDB record {record_name} is invalid: {exc}") from exc
    except Exception as exc:
        raise InvalidObject(f"WFDB record {record_name} cannot be read: {type(exc).__name__}: {exc}") from exc
    return header_name, record_name
