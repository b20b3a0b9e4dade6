"""The ingest repository: the rows a received object adds, written on the raw DB-API connection.

Every received object - a C-STORE, an HTTP upload of DICOM, WFDB or a vendor ECG file -
is recorded through this one repository, and every C-STORE waits for its transaction, so
it is the one place that does not go through SQLAlchemy's execution layer: that layer costs about 30 us per statement and
a stored object needs up to seven. The statements are still defined once with
SQLAlchemy Core on the mapped tables and compiled once for the engine's dialect
(SQLite or PostgreSQL), and the values still pass through each column type's own bind
processor, so the rows are the same as the ORM writes; only the per-call machinery is
skipped. Errors come out as :class:`RowConflict` (a unique constraint: another sender
recorded the same thing first) or :class:`DatabaseUnavailable` (anything else).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, NamedTuple

from sqlalchemy import Dialect, bindparam, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import ClauseElement

from sqlalchemy import Engine

from telediag.domain import CaseKind, CaseStatus, Deadlines, JobState, Priority, ReviewState
from telediag.store.errors import DatabaseUnavailable, RowConflict
from telediag.store.tables import Case, Job, Patient, QuarantinedObject, Site, StoredObject


class KnownInstance(NamedTuple):
    """The stored object already recorded under a SOP Instance UID (or WFDB fingerprint)."""

    id: int
    sha256: str
    case_id: int


@dataclass(frozen=True)
class StudyCatalog:
    """What the study catalog (QIDO-RS, C-FIND) matches and returns of a study, from its first
    object; None where absent or malformed (they describe an object, they never refuse it)."""

    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    study_description: str | None = None
    referring_physician_name: str | None = None
    study_id: str | None = None


@dataclass(frozen=True)
class InstanceCatalog:
    """The catalog's series and instance attributes of one object; image sizes from the pixel check."""

    series_number: int | None = None
    series_description: str | None = None
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None


@dataclass(frozen=True)
class ObjectRow:
    """What the ``stored_objects`` row of one received file holds.

    ``sop_instance_uid`` identifies the object across the network: the DICOM SOP Instance
    UID, or a content fingerprint for a WFDB record or a vendor ECG file (on the record's
    header row only); a re-send is recognised by it.
    """

    key: str
    size: int
    sha256: str
    media_type: str
    sop_instance_uid: str | None
    sop_class_uid: str | None = None
    series_instance_uid: str | None = None
    transfer_syntax_uid: str | None = None
    modality: str | None = None
    record_name: str | None = None
    #: The catalog's instance and series attributes (QIDO-RS, C-FIND), as the object was sent.
    catalog: InstanceCatalog = InstanceCatalog()


@dataclass(frozen=True)
class StudyRef:
    """Where an object belongs: its site and device, its study (None: a case of its own),
    and its patient as sent; the study's catalog attributes are those of its first object."""

    site_id: int
    device_id: int
    study_instance_uid: str | None
    is_ecg: bool
    patient_key: str | None
    patient_name: str | None = None
    patient_sex: str | None = None
    patient_birth_date: str | None = None
    catalog: StudyCatalog = StudyCatalog()


_objects, _cases, _patients, _jobs, _quarantine, _sites = (
    StoredObject.__table__, Case.__table__, Patient.__table__, Job.__table__, QuarantinedObject.__table__,
    Site.__table__)

#: name -> (statement, the value names an INSERT binds)
_STATEMENTS: dict[str, tuple[ClauseElement, tuple[str, ...]]] = {
    "find_instance": (select(_objects.c.id, _objects.c.sha256, _objects.c.case_id)
                      .where(_objects.c.sop_instance_uid == bindparam("uid")), ()),
    "find_case": (select(_cases.c.id).where(_cases.c.site_id == bindparam("site"),
                                            _cases.c.study_instance_uid == bindparam("study")), ()),
    "find_patient": (select(_patients.c.id).where(_patients.c.site_id == bindparam("site"),
                                                  _patients.c.patient_key == bindparam("key")), ()),
    "insert_patient": (insert(_patients).returning(_patients.c.id),
                       ("site_id", "patient_key", "name", "sex", "birth_date")),
    # A new case goes to the queue of the township's county (a center's own exam: its own).
    "insert_case": (insert(_cases).values(route_site_id=select(func.coalesce(_sites.c.parent_id, _sites.c.id))
                                          .where(_sites.c.id == bindparam("route_of")).scalar_subquery())
                    .returning(_cases.c.id),
                    ("site_id", "device_id", "patient_id", "kind", "study_instance_uid", "status", "priority",
                     "received_at", "updated_at", "deadline_at", "review_state", "route_of", "study_date",
                     "study_time", "accession_number", "study_description", "referring_physician_name",
                     "study_id")),
    "insert_object": (insert(_objects).returning(_objects.c.id),
                      ("case_id", "key", "size", "sha256", "media_type", "sop_class_uid", "sop_instance_uid",
                       "series_instance_uid", "transfer_syntax_uid", "modality", "record_name", "received_at",
                       "series_number", "series_description", "instance_number", "rows", "columns",
                       "number_of_frames")),
    "insert_job": (insert(_jobs).returning(_jobs.c.id),
                   ("object_id", "kind", "state", "attempts", "last_error", "rules", "created_at", "updated_at")),
    "find_quarantined": (select(_quarantine.c.id).where(_quarantine.c.key == bindparam("key")), ()),
    "insert_quarantined": (insert(_quarantine).returning(_quarantine.c.id),
                           ("device_id", "key", "size", "sha256", "sop_instance_uid", "reason", "received_at")),
}


class _Compiled:
    """One statement as SQL text for the dialect plus a function from values to DB-API parameters."""

    def __init__(self, stmt: ClauseElement, insert_keys: tuple[str, ...], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(insert_keys) or None)
        self.sql = compiled.string
        processors: dict[str, Callable[[Any], Any] | None] = {
            name: bind.type.bind_processor(dialect) for name, bind in compiled.binds.items()}
        self._order: tuple[str, ...] | None = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._processors = {name: proc for name, proc in processors.items() if proc is not None}

    def params(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        for name, proc in self._processors.items():
            values[name] = proc(values[name])
        if self._order is None:
            return values
        return tuple(values[name] for name in self._order)


class IngestRows:
    """Writes the rows of received objects (see module doc); thread safe."""

    def __init__(self, engine: Engine, deadlines: Deadlines) -> None:
        self.engine = engine
        #: A new case's deadline is the routine one until its analysis raises its priority.
        self.deadlines = deadlines
        dialect = self.engine.dialect
        self._dbapi = dialect.loaded_dbapi
        self._stmts = {name: _Compiled(stmt, keys, dialect) for name, (stmt, keys) in _STATEMENTS.items()}

    @contextmanager
    def transaction(self) -> Iterator["RowTransaction"]:
        """One transaction on a pooled connection; rolled back unless committed.

        Look-ups before the first insert may see rows another sender commits a moment
        later; the unique constraints then turn the insert into :class:`RowConflict` and
        the caller decides again. (On SQLite the driver begins the transaction at the
        first insert, which takes the single writer lock there and then, so a transaction
        never holds the lock while only reading.)
        """
        try:
            conn = self.engine.raw_connection()
        except (SQLAlchemyError, self._dbapi.Error) as exc:  # the pool may pass on the driver's own
            raise DatabaseUnavailable(type(exc).__name__) from exc
        tx = RowTransaction(self, conn)
        try:
            yield tx
        finally:
            try:
                tx.cursor.close()
                if not tx.committed:
                    conn.rollback()
            except self._dbapi.Error:
                conn.invalidate()  # a connection in an unknown state must not go back to the pool
            conn.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._dbapi.IntegrityError as exc:
            raise RowConflict(type(exc).__name__) from exc
        except self._dbapi.Error as exc:
            raise DatabaseUnavailable(type(exc).__name__) from exc

    def find_instance(self, uid: str) -> KnownInstance | None:
        """The object recorded under ``uid``, outside any transaction of the caller's."""
        with self.transaction() as tx:
            return tx.find_instance(uid)


class RowTransaction:
    """The statements of one ingest transaction (from :meth:`IngestRows.transaction`)."""

    def __init__(self, rows: IngestRows, conn) -> None:
        self._rows = rows
        self._conn = conn
        self.cursor = conn.cursor()
        self.committed = False

    def _one(self, name: str, values: dict[str, Any]) -> Any:
        stmt = self._rows._stmts[name]
        with self._rows._errors():
            self.cursor.execute(stmt.sql, stmt.params(values))
            return self.cursor.fetchone()

    def _id(self, name: str, values: dict[str, Any]) -> int | None:
        row = self._one(name, values)
        return None if row is None else int(row[0])

    def find_instance(self, uid: str) -> KnownInstance | None:
        row = self._one("find_instance", {"uid": uid})
        return None if row is None else KnownInstance(int(row[0]), row[1], int(row[2]))

    def case_for_study(self, ref: StudyRef, now: datetime) -> int:
        """The case of this study at the site, created with its patient on first sight (an
        object without a study, such as a WFDB record, always gets a case of its own)."""
        if ref.study_instance_uid is not None:
            case_id = self._id("find_case", {"site": ref.site_id, "study": ref.study_instance_uid})
            if case_id is not None:
                return case_id
        patient_id = None
        if ref.patient_key:
            patient_id = self._id("find_patient", {"site": ref.site_id, "key": ref.patient_key})
            if patient_id is None:
                patient_id = self._id("insert_patient", dict(
                    site_id=ref.site_id, patient_key=ref.patient_key, name=ref.patient_name, sex=ref.patient_sex,
                    birth_date=ref.patient_birth_date))
        return self._id("insert_case", dict(
            site_id=ref.site_id, device_id=ref.device_id, patient_id=patient_id,
            kind=CaseKind.ECG if ref.is_ecg else CaseKind.IMAGING, study_instance_uid=ref.study_instance_uid,
            status=CaseStatus.RECEIVED, priority=Priority.ROUTINE.value, received_at=now, updated_at=now,
            deadline_at=now + timedelta(seconds=self._rows.deadlines.routine_s),
            review_state=ReviewState.OPEN.value, route_of=ref.site_id, **vars(ref.catalog)))

    def insert_object(self, case_id: int, row: ObjectRow, now: datetime) -> int:
        return self._id("insert_object", dict(
            case_id=case_id, key=row.key, size=row.size, sha256=row.sha256, media_type=row.media_type,
            sop_class_uid=row.sop_class_uid, sop_instance_uid=row.sop_instance_uid,
            series_instance_uid=row.series_instance_uid, transfer_syntax_uid=row.transfer_syntax_uid,
            modality=row.modality, record_name=row.record_name, received_at=now, **vars(row.catalog)))

    def insert_job(self, object_id: int, kind: str, now: datetime, rules: str | None = None) -> int:
        """The object's outbox job; ``rules`` is the rule set the upload named (None: the device's)."""
        return self._id("insert_job", dict(
            object_id=object_id, kind=kind, state=JobState.PENDING, attempts=0, last_error=None, rules=rules,
            created_at=now, updated_at=now))

    def quarantine(self, device_id: int, row: ObjectRow, reason: str, now: datetime) -> int:
        """Record an object kept aside (idempotent per key: the same conflicting bytes sent
        again are one entry)."""
        existing = self._id("find_quarantined", {"key": row.key})
        if existing is not None:
            return existing
        return self._id("insert_quarantined", dict(
            device_id=device_id, key=row.key, size=row.size, sha256=row.sha256,
            sop_instance_uid=row.sop_instance_uid, reason=reason, received_at=now))

    def commit(self) -> None:
        with self._rows._errors():
            self._conn.commit()
        self.committed = True

