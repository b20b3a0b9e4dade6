"""Ingest: take an object from a device, make it durable, record it, queue its analysis.

The order is what makes "success" to the device mean durable:

1. validate (a refused object gets ``InvalidObject`` with the reason);
2. write the bytes to the object store (durable on return);
3. commit the object row *and* its outbox job row in one transaction;
4. only then report success; publishing the job to the broker comes after, and a
   crash between 3 and 4 leaves a ``pending`` job that the sweeper publishes.

Any failure in 2 or 3 raises ``StorageUnavailable`` (the device must retry) and leaves
no row behind; an object written in 2 whose row could not be committed is deleted
(unless identical bytes were already in the store: another send may have recorded them).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from telediag.db import Database
from telediag.dicom_objects import DicomInfo, InvalidObject, inspect
from telediag.ingest_rows import (DatabaseUnavailable, IngestRows, KnownInstance, ObjectRow, RowConflict,
                                  StudyRef)
from telediag.models import Case, CaseKind, Job, Patient, QuarantinedObject, StoredObject, utcnow
from telediag.network import DeviceIdentity
from telediag.objectstore import ObjectStore, ObjectStoreError, sha256_hex

log = logging.getLogger(__name__)

DICOM_MEDIA_TYPE = "application/dicom"
WFDB_HEADER_MEDIA_TYPE = "application/x-wfdb-header"
WFDB_DATA_MEDIA_TYPE = "application/x-wfdb-signal"
WFDB_ANNOTATION_MEDIA_TYPE = "application/x-wfdb-annotation"
ANALYZE_ECG = "analyze_ecg"


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


#: Stripes of the per-SOP-instance lock (a lock per UID would grow without bound).
_INSTANCE_LOCKS = 64


class IngestService:
    """The one place where received objects become stored, recorded and queued."""

    def __init__(self, db: Database, store: ObjectStore, publisher: JobPublisher) -> None:
        self.db = db
        self.store = store
        self.publisher = publisher
        self.rows = IngestRows(db)
        self._writer = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="telediag-write")
        self._instance_locks = [threading.Lock() for _ in range(_INSTANCE_LOCKS)]

    # -- DICOM ---------------------------------------------------------------------------
    def ingest_dicom(self, device: DeviceIdentity, data: bytes) -> IngestOutcome:
        """Store one DICOM Part 10 object sent by ``device``."""
        info = inspect(data)
        digest = sha256_hex(data)
        key = dicom_key(device.site_id, info, digest)
        row = ObjectRow(key=key, size=len(data), sha256=digest, media_type=DICOM_MEDIA_TYPE,
                        sop_class_uid=info.sop_class_uid, sop_instance_uid=info.sop_instance_uid,
                        series_instance_uid=info.series_instance_uid, transfer_syntax_uid=info.transfer_syntax_uid,
                        modality=info.modality)
        study = StudyRef(site_id=device.site_id, device_id=device.device_id,
                         study_instance_uid=info.study_instance_uid, is_ecg=info.is_ecg, patient_key=info.patient_id,
                         patient_name=info.patient_name, patient_sex=info.patient_sex,
                         patient_birth_date=info.patient_birth_date)
        # Sends of one SOP instance through this process take turns, so the second sees the
        # first one's committed row: a re-send or a quarantine, and never the owner of bytes
        # that the first one recorded (which a failing second one would otherwise delete).
        with self._instance_locks[hash(info.sop_instance_uid) % _INSTANCE_LOCKS]:
            try:
                outcome = self._record_dicom(device, data, row, study)
            except RowConflict:
                # Another process recorded this instance, or another association this study's
                # case, a moment ago: decide again on the committed rows.
                try:
                    outcome = self._record_dicom(device, data, row, study)
                except RowConflict as exc:
                    log.error("database refused the row of %s twice", key)
                    raise StorageUnavailable("database refused the object row") from exc
        if outcome.status == "stored":
            log.debug("stored object %s (case %s, %d bytes, sop class %s)", outcome.object_id, outcome.case_id,
                      len(data), info.sop_class_uid)
            self._after_commit(outcome)
        return outcome

    def _record_dicom(self, device: DeviceIdentity, data: bytes, row: ObjectRow, study: StudyRef) -> IngestOutcome:
        """One attempt: look the instance up, write the object while inserting its rows,
        commit once the write is durable. Raises RowConflict when a unique constraint
        says someone else got there first."""
        put: futures.Future[bool] | None = None
        try:
            with self.rows.transaction() as tx:
                known = tx.find_instance(row.sop_instance_uid)
                if known is None:
                    # The write (mostly fsync, which releases the GIL) runs while the rows are
                    # inserted; the commit waits for it, and a failed write rolls everything back.
                    put = self._writer.submit(self._put, row.key, data, DICOM_MEDIA_TYPE)
                    now = utcnow()
                    case_id = tx.case_for_study(study, now)
                    object_id = tx.insert_object(case_id, row, now)
                    job_id = tx.insert_job(object_id, ANALYZE_ECG, now) if study.is_ecg else None
                    put.result()
                    tx.commit()
        except DatabaseUnavailable as exc:
            # Remove only bytes this call wrote: identical bytes already there may be another
            # send's (from another process, which the instance lock does not cover).
            if put is not None and self._wrote(put):
                self._discard(row.key)
            log.error("database unavailable while recording %s: %s", row.key, exc)
            raise StorageUnavailable("database unavailable") from exc
        except RowConflict:
            if put is not None:
                futures.wait([put])  # the bytes are identical to what the winner recorded, or ours for the retry
            raise
        if known is not None:
            return self._known_instance(device, known, row.sop_instance_uid, row.sha256, data)
        return IngestOutcome(case_id, object_id, "stored", job_id)

    @staticmethod
    def _wrote(put: futures.Future[bool]) -> bool:
        """Whether a finished or failing write created the object (waits for it)."""
        futures.wait([put])
        return put.exception() is None and put.result()

    def _known_instance(self, device: DeviceIdentity, existing: KnownInstance, sop_instance_uid: str, digest: str,
                        data: bytes) -> IngestOutcome:
        """A re-send (same bytes: success, nothing new) or a conflicting object under a
        known SOP Instance UID (kept aside in quarantine, never overwriting)."""
        if existing.sha256 == digest:
            log.info("re-send of stored object %s from device %s: already stored", existing.id, device.device_id)
            return IngestOutcome(existing.case_id, existing.id, "duplicate")
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
        return IngestOutcome(existing.case_id, None, "quarantined")

    def _stored_instance(self, uid: str) -> KnownInstance | None:
        """The stored object with this instance UID or WFDB fingerprint."""
        try:
            return self.rows.find_instance(uid)
        except (DatabaseUnavailable, RowConflict) as exc:
            raise StorageUnavailable("database unavailable") from exc

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
                            patient_id=_patient_for(s, device.site_id, patient_id))
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
    def _put(self, key: str, data: bytes, media_type: str) -> bool:
        """Write to the store; True when this call stored the bytes (see ``ObjectStore.put``)."""
        try:
            return self.store.put(key, data, media_type)
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


def _patient_for(session, site_id: int, key: str | None) -> int | None:
    """The id of the site's patient with this identifier, created on first sight."""
    if not key:
        return None
    patient_id = session.scalar(select(Patient.id).where(Patient.site_id == site_id, Patient.patient_key == key))
    if patient_id is None:
        patient = Patient(site_id=site_id, patient_key=key)
        session.add(patient)
        session.flush()
        patient_id = patient.id
    return patient_id


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
