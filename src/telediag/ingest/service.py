"""The one ingest use case: take what a device sent, make it durable, record it, queue it.

Every input kind - DICOM over DIMSE (C-STORE), DICOM over HTTP, a WFDB record over HTTP,
a vendor ECG file over HTTP - goes through the same two steps:

``prepare_*`` parses and validates the input once (a refused input raises
``InvalidObject`` with the reason) and describes it as a :class:`Received`: its files,
its identity (SOP Instance UID or content fingerprint), its study and patient.

:meth:`IngestService.store` makes it durable, in the order that makes "success" to the
device mean durable:

1. write the files to the object store (durable on return) while the rows are inserted;
2. commit the object rows *and* the outbox job row in one transaction;
3. only then report success and announce :class:`ObjectStored` on the message bus (whose
   handler publishes the job); a crash between 2 and 3 leaves a ``pending`` job that the
   sweeper publishes.

Any failure in 1 or 2 raises ``StorageUnavailable`` (the device must retry) and leaves no
row behind; a file written in 1 whose row could not be committed is deleted (unless
identical bytes were already in the store: another send may have recorded them).

With an :class:`~telediag.store.IngestJournal` (the embedded mode), step 1 also appends the
input to the journal, and "durable" is the journal's flush: the file and the rows are written
without waiting for the disk, and the journal's checkpoint makes them durable a second's
worth at a time. :meth:`IngestService.recover` records, at start, what the journal of a
process that died still holds, through this same use case.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Literal

from telediag.domain import DeviceIdentity, IngestOutcome, JobKind, MediaType, ObjectQuarantined, ObjectStored
from telediag.ingest.dicom import DicomInfo, InvalidObject, inspect
from telediag.ingest.files import validate_ecg_file, validate_wfdb, wfdb_media_type
from telediag.messagebus import MessageBus
from telediag.store import (Database, DatabaseUnavailable, IngestJournal, JournalEntry, JournalError, JournalRecord,
                            KnownInstance, ObjectRow, ObjectStore, ObjectStoreError, RowConflict, StudyRef,
                            encode_record, sha256_hex)
from telediag.store.tables import utcnow

log = logging.getLogger(__name__)

QUARANTINE_REASON = "different content under an already stored SOP Instance UID"


class StorageUnavailable(RuntimeError):
    """The object could not be made durable; nothing was recorded and the sender should retry."""


@dataclass(frozen=True)
class ReceivedFile:
    """One file of a received object, as the object store will keep it."""

    key: str
    data: bytes
    sha256: str
    media_type: str


@dataclass(frozen=True)
class Received:
    """A validated input, ready to store: what ``prepare_*`` returns and ``store`` takes.

    ``files[0]`` is the object that identifies the input (the DICOM object, the WFDB
    header, the ECG file); its row carries ``instance_uid``.
    """

    kind: Literal["dicom", "wfdb", "ecg-file"]
    instance_uid: str
    files: tuple[ReceivedFile, ...]
    study: StudyRef
    dicom: DicomInfo | None = None
    record_name: str | None = None
    ecg_format: str | None = None

    @property
    def job(self) -> JobKind | None:
        """The job its arrival queues: an ECG's analysis, an image's preview; none for anything
        else (a report filed back into its study)."""
        if self.study.is_ecg:
            return JobKind.ANALYZE_ECG
        if self.dicom is not None and self.dicom.instance.rows is not None:
            return JobKind.RENDER_PREVIEW
        return None

    def journal_record(self, device: DeviceIdentity, rules: str | None) -> JournalRecord:
        """The journal's record of this input: its files, and what it takes to prepare and
        record them again (see :meth:`IngestService.recover`)."""
        meta = {"kind": self.kind, "device": vars(device), "rules": rules, "patient_id": self.study.patient_key,
                "names": [f.key.rsplit("/", 1)[-1] for f in self.files]}
        return encode_record(meta, [f.data for f in self.files], [f.sha256 for f in self.files])

    def rows(self) -> list[ObjectRow]:
        info = self.dicom
        if info is None:
            return [ObjectRow(key=f.key, size=len(f.data), sha256=f.sha256, media_type=f.media_type,
                              sop_instance_uid=self.instance_uid if i == 0 else None, modality="ECG",
                              record_name=self.record_name)
                    for i, f in enumerate(self.files)]
        (f,) = self.files
        return [ObjectRow(key=f.key, size=len(f.data), sha256=f.sha256, media_type=f.media_type,
                          sop_instance_uid=self.instance_uid, sop_class_uid=info.sop_class_uid,
                          series_instance_uid=info.series_instance_uid, transfer_syntax_uid=info.transfer_syntax_uid,
                          modality=info.modality, catalog=info.instance)]


def dicom_key(site_id: int, info: DicomInfo, sha256: str) -> str:
    """Object-store key of a DICOM instance: site / study / series / instance, tagged with
    the start of the content hash so that two different objects sent at the same moment
    under one SOP Instance UID can never overwrite each other's bytes. Every part is a
    checked UID (``inspect`` refuses any other) or a number."""
    return (f"sites/{site_id}/studies/{info.study_instance_uid}/series/{info.series_instance_uid}"
            f"/{info.sop_instance_uid}.{sha256[:16]}.dcm")


def _fingerprint(prefix: str, files: dict[str, bytes]) -> str:
    """A content identity of at most 64 characters (the width of a SOP Instance UID column);
    the ':' keeps it apart from any DICOM UID, which has digits and dots only."""
    digest = hashlib.sha256(b"".join(name.encode() + b"\0" + sha256_hex(files[name]).encode()
                                     for name in sorted(files))).hexdigest()
    return f"{prefix}:{digest}"[:64]


def _written(result: bool) -> futures.Future[bool]:
    """A write done in the calling thread, as the result of one handed to the writer pool."""
    future: futures.Future[bool] = futures.Future()
    future.set_result(result)
    return future


#: Stripes of the per-instance lock (a lock per UID would grow without bound).
_INSTANCE_LOCKS = 64


class IngestService:
    """The one place where received objects become stored, recorded and queued."""

    def __init__(self, db: Database, store: ObjectStore, bus: MessageBus, journal: IngestJournal | None = None) -> None:
        self.db = db
        self.store = store
        self.bus = bus
        self.journal = journal
        self.rows = db.ingest_rows
        self._writer = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="telediag-write")
        self._instance_locks = [threading.Lock() for _ in range(_INSTANCE_LOCKS)]

    # -- parse and validate once -----------------------------------------------------------
    @staticmethod
    def prepare_dicom(device: DeviceIdentity, data: bytes, thorough: bool = False) -> Received:
        """A DICOM Part 10 object; ``thorough`` decodes the waveform or pixel data too (HTTP
        uploads can afford it; the C-STORE path checks structure only, see ``inspect``)."""
        info = inspect(data, thorough=thorough)
        digest = sha256_hex(data)
        study = StudyRef(site_id=device.site_id, device_id=device.device_id,
                         study_instance_uid=info.study_instance_uid, is_ecg=info.is_ecg,
                         patient_key=info.patient_id, patient_name=info.patient_name,
                         patient_sex=info.patient_sex, patient_birth_date=info.patient_birth_date,
                         catalog=info.study)
        file = ReceivedFile(dicom_key(device.site_id, info, digest), data, digest, MediaType.DICOM)
        return Received("dicom", info.sop_instance_uid, (file,), study, dicom=info)

    @staticmethod
    def prepare_wfdb(device: DeviceIdentity, files: dict[str, bytes], patient_id: str | None = None) -> Received:
        """One WFDB record given as ``{file name: bytes}`` (.hea, its signal files, optionally
        annotation files); identical re-uploads are recognised by content."""
        header_name, record_name = validate_wfdb(files)
        fingerprint = _fingerprint("wfdb", files)
        prefix = f"sites/{device.site_id}/wfdb/{fingerprint.split(':', 1)[1][:32]}"
        ordered = [header_name] + sorted(n for n in files if n != header_name)
        received = tuple(ReceivedFile(f"{prefix}/{name}", files[name], sha256_hex(files[name]),
                                      wfdb_media_type(name, header_name)) for name in ordered)
        study = StudyRef(site_id=device.site_id, device_id=device.device_id, study_instance_uid=None, is_ecg=True,
                         patient_key=patient_id or None)
        return Received("wfdb", fingerprint, received, study, record_name=record_name, ecg_format="wfdb")

    @classmethod
    def prepare_ecg_file(cls, device: DeviceIdentity, data: bytes, thorough: bool = True) -> Received:
        """Any single-file ECG a cart exports, its format detected from the content: DICOM
        goes the DICOM way (it has UIDs and a study); SCP-ECG, HL7 aECG, GE MUSE and Philips
        XML are read in full here, stored as received and identified by their content."""
        fmt, source = validate_ecg_file(data)
        if fmt == "dicom":
            return cls.prepare_dicom(device, data, thorough=thorough)
        digest = sha256_hex(data)
        media_type, extension = MediaType.ECG_FILES[fmt]
        file = ReceivedFile(f"sites/{device.site_id}/ecg/{digest[:2]}/{digest}.{extension}", data, digest, media_type)
        study = StudyRef(site_id=device.site_id, device_id=device.device_id, study_instance_uid=None, is_ecg=True,
                         patient_key=source.patient_id, patient_name=source.patient_name,
                         patient_sex=source.patient_sex, patient_birth_date=source.patient_birth_date)
        return Received("ecg-file", _fingerprint("ecg", {"file": data}), (file,), study, ecg_format=fmt)

    # -- store -------------------------------------------------------------------------------
    def ingest_dicom(self, device: DeviceIdentity, data: bytes) -> IngestOutcome:
        """Validate (structurally) and store one DICOM object: the C-STORE path."""
        return self.store_received(device, self.prepare_dicom(device, data))

    def ingest_wfdb(self, device: DeviceIdentity, files: dict[str, bytes],
                    patient_id: str | None = None) -> IngestOutcome:
        """Validate and store one WFDB record given as ``{file name: bytes}``."""
        return self.store_received(device, self.prepare_wfdb(device, files, patient_id))

    def recover(self) -> int:
        """Record what the journal segments of processes that died hold (see module doc) and
        drop them; return how many inputs were newly recorded. A segment whose replay fails
        (the database is away) stays for the next start."""
        if self.journal is None:
            return 0
        recorded = seen = 0
        for segment in self.journal.orphans():
            for entry in segment.entries:
                device = DeviceIdentity(**entry.meta["device"])
                received = self._prepare_again(device, entry)
                # The rows may have reached the disk without the files (a later commit's fsync
                # takes earlier commits along): the files first, whole and durable, then the rows.
                for f in received.files:
                    self._put(f.key, f.data, f.media_type)
                outcome = self.store_received(device, received, entry.meta["rules"], journaled=False)
                seen += 1
                recorded += outcome.status != "duplicate"
            self.journal.drop(segment)
        if seen:
            log.warning("ingest journal of a process that stopped: %d input(s) replayed, %d of them recorded "
                        "only now", seen, recorded)
        return recorded

    @classmethod
    def _prepare_again(cls, device: DeviceIdentity, entry: JournalEntry) -> Received:
        """The :class:`Received` of a journal entry (validated when it arrived)."""
        meta = entry.meta
        if meta["kind"] == "wfdb":
            return cls.prepare_wfdb(device, dict(zip(meta["names"], entry.blobs)), meta["patient_id"])
        if meta["kind"] == "dicom":
            return cls.prepare_dicom(device, entry.blobs[0])
        return cls.prepare_ecg_file(device, entry.blobs[0], thorough=False)

    def store_received(self, device: DeviceIdentity, received: Received, rules: str | None = None, *,
                       journaled: bool = True) -> IngestOutcome:
        """Make a prepared input durable and recorded, queue its analysis (with the critical-value
        rule set ``rules`` the upload named, else the device's), announce it. ``journaled=False``
        waits for the disk at each write even where there is a journal (its own replay)."""
        journal = self.journal if journaled else None
        # Sends of one instance through this process take turns, so the second sees the
        # first one's committed row: a re-send or a quarantine, and never the owner of bytes
        # that the first one recorded (which a failing second one would otherwise delete).
        with self._instance_locks[hash(received.instance_uid) % _INSTANCE_LOCKS]:
            try:
                outcome = self._record(device, received, rules, journal)
            except RowConflict:
                # Another process recorded this instance, or another association this study's
                # case, a moment ago: decide again on the committed rows.
                try:
                    outcome = self._record(device, received, rules, journal)
                except RowConflict as exc:
                    log.error("database refused the rows of %s twice", received.files[0].key)
                    raise StorageUnavailable("database refused the object row") from exc
        if outcome.status == "stored":
            log.debug("stored %s object %s (case %s, %d bytes)", received.kind, outcome.object_id, outcome.case_id,
                      sum(len(f.data) for f in received.files))
            self.bus.handle(ObjectStored(outcome.case_id, outcome.object_id, outcome.job_id))
        return outcome

    def _record(self, device: DeviceIdentity, received: Received, rules: str | None,
                journal: IngestJournal | None) -> IngestOutcome:
        """One attempt: look the instance up, write the files (and the journal record) while
        inserting their rows, commit once the writes are durable. Raises RowConflict when a
        unique constraint says someone else got there first."""
        puts: list[futures.Future[bool]] = []
        appended: futures.Future | None = None
        try:
            with self.rows.transaction() as tx:
                known = tx.find_instance(received.instance_uid)
                if known is None:
                    # The writes (mostly fsync, which releases the GIL) run while the rows are
                    # inserted; the commit waits for them, and a failed write rolls all back.
                    if journal is not None:
                        # One flush makes the input durable; the files are written meanwhile,
                        # here: without an fsync, a write is quicker than handing it over.
                        appended = self._writer.submit(journal.append, received.journal_record(device, rules))
                        for f in received.files:  # each one listed as written, should the next fail
                            puts.append(_written(self._put(f.key, f.data, f.media_type, False)))
                    else:
                        puts = [self._writer.submit(self._put, f.key, f.data, f.media_type) for f in received.files]
                    now = utcnow()
                    case_id = tx.case_for_study(received.study, now)
                    object_ids = [tx.insert_object(case_id, row, now) for row in received.rows()]
                    job = received.job
                    job_id = None if job is None else tx.insert_job(object_ids[0], job.value, now, rules)
                    for put in puts:
                        put.result()
                    if appended is not None:
                        self._journaled(appended)
                    tx.commit()
        except DatabaseUnavailable as exc:
            self._discard_written(received, puts)
            log.error("database unavailable while recording %s: %s", received.files[0].key, exc)
            raise StorageUnavailable("database unavailable") from exc
        except StorageUnavailable:
            self._discard_written(received, puts)
            raise
        except RowConflict:
            futures.wait(puts)  # the bytes are identical to what the winner recorded, or ours for the retry
            raise
        finally:
            if appended is not None:
                self._settle(journal, appended)
        if known is not None:
            return self._known_instance(device, known, received)
        return IngestOutcome(case_id, object_ids[0], "stored", job_id)

    @staticmethod
    def _journaled(appended: futures.Future) -> None:
        try:
            appended.result()
        except JournalError as exc:
            log.error("%s", exc)
            raise StorageUnavailable("ingest journal unavailable") from exc

    @staticmethod
    def _settle(journal: IngestJournal, appended: futures.Future) -> None:
        """Tell the journal this record's writes are over (a failed append settled itself)."""
        futures.wait([appended])
        if appended.exception() is None:
            journal.settle(appended.result())

    def _discard_written(self, received: Received, puts: list[futures.Future[bool]]) -> None:
        """Remove only bytes this call wrote: identical bytes already there may be another
        send's (from another process, which the instance lock does not cover)."""
        futures.wait(puts)
        for f, put in zip(received.files, puts):
            if put.exception() is None and put.result():
                self._discard(f.key)

    def _known_instance(self, device: DeviceIdentity, existing: KnownInstance, received: Received) -> IngestOutcome:
        """A re-send (same bytes: success, nothing new) or a conflicting object under a
        known SOP Instance UID (kept aside in quarantine, never overwriting)."""
        first = received.files[0]
        if existing.sha256 == first.sha256:
            log.info("re-send of stored object %s from device %s: already stored", existing.id, device.device_id)
            return IngestOutcome(existing.case_id, existing.id, "duplicate")
        key = f"quarantine/{received.instance_uid}/{first.sha256}.dcm"
        self._put(key, first.data, first.media_type)
        row = ObjectRow(key=key, size=len(first.data), sha256=first.sha256, media_type=first.media_type,
                        sop_instance_uid=received.instance_uid)
        try:
            with self.rows.transaction() as tx:
                quarantine_id = tx.quarantine(device.device_id, row, QUARANTINE_REASON, utcnow())
                tx.commit()
        except (DatabaseUnavailable, RowConflict) as exc:
            raise StorageUnavailable("database unavailable") from exc
        log.warning("conflicting object under a stored SOP Instance UID from device %s kept aside as %s",
                    device.device_id, key)
        self.bus.handle(ObjectQuarantined(quarantine_id, device.device_id))
        return IngestOutcome(existing.case_id, None, "quarantined")

    def _put(self, key: str, data: bytes, media_type: str, durable: bool = True) -> bool:
        """Write to the store; True when this call stored the bytes (see ``ObjectStore.put``)."""
        try:
            return self.store.put(key, data, media_type, durable)
        except ObjectStoreError as exc:
            log.error("object store unavailable: %s", exc)
            raise StorageUnavailable("object store unavailable") from exc

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except ObjectStoreError as exc:  # an orphan file is harmless; a lost row would not be
            log.warning("could not remove unrecorded object %s: %s", key, exc)


__all__ = ["IngestService", "Received", "ReceivedFile", "StorageUnavailable", "InvalidObject", "dicom_key"]
