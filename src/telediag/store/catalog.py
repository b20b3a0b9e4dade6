"""The study catalog: the DICOM studies, series and instances a caller may see, matched the
way PS3.4 C.2.2.2 says (the rules QIDO-RS and C-FIND share).

A study is a case with a Study Instance UID (WFDB records and vendor ECG files have none and
are not in it); its series and instances are the case's stored objects, whose series
attributes are repeated on each instance. Every query goes through the caller's
:class:`CaseScope`, like every other query of cases.

Records are dicts keyed by DICOM keyword (values as ``str``, ``int`` or, for
ModalitiesInStudy, a list), so DICOMweb and DIMSE turn them into their own encodings; keys
starting with ``_`` are telediag's own (where the bytes are, for a retrieve).

Matching, per key (an empty value is universal matching: the key is only returned):

- UIDs: a single UID or a list (separated by ``\\`` as in DIMSE or ``,`` as in QIDO-RS);
- dates and times: a single value or a range ``A-B``, ``-B``, ``A-`` (stored as YYYYMMDD and
  HHMMSS[.F]; a single time matches as a prefix: ``0800`` is 08:00:00 to 08:00:59);
- person names: case-insensitive, whole value or any of its ``=`` groups (alphabetic,
  ideographic, phonetic), ``*`` and ``?`` wildcards; ``fuzzy`` (QIDO-RS ``fuzzymatching=true``)
  matches when every word of the query begins some component of the name, in any order;
- numbers (IS): equality;
- other text: case-sensitive, with ``*`` and ``?`` wildcards (GLOB on SQLite, whose LIKE
  ignores case; LIKE on PostgreSQL);
- ModalitiesInStudy: a study with any series of any of the given modalities.

Keys the catalog does not hold are ignored (an SCP need not match on optional keys); a
value it cannot read as its key's type raises :class:`InvalidMatch`.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from telediag.store.review import CaseScope
from telediag.store.tables import Case, Patient, Site, StoredObject

__all__ = ["CatalogRepository", "InvalidMatch", "STUDY_KEYS", "SERIES_KEYS", "INSTANCE_KEYS"]


class InvalidMatch(ValueError):
    """A query value that cannot be read as its attribute's type (a date range that is not one, ...)."""


_O = StoredObject

#: keyword -> column of the study attributes (the patient's included).
_STUDY: dict[str, InstrumentedAttribute[Any]] = {
    "StudyInstanceUID": Case.study_instance_uid, "StudyDate": Case.study_date, "StudyTime": Case.study_time,
    "AccessionNumber": Case.accession_number, "StudyDescription": Case.study_description,
    "ReferringPhysicianName": Case.referring_physician_name, "StudyID": Case.study_id,
    "PatientID": Patient.patient_key, "PatientName": Patient.name, "PatientSex": Patient.sex,
    "PatientBirthDate": Patient.birth_date,
}
_SERIES: dict[str, InstrumentedAttribute[Any]] = {
    "SeriesInstanceUID": _O.series_instance_uid, "Modality": _O.modality, "SeriesNumber": _O.series_number,
    "SeriesDescription": _O.series_description,
}
_INSTANCE: dict[str, InstrumentedAttribute[Any]] = {
    "SOPClassUID": _O.sop_class_uid, "SOPInstanceUID": _O.sop_instance_uid, "InstanceNumber": _O.instance_number,
    "Rows": _O.rows, "Columns": _O.columns, "NumberOfFrames": _O.number_of_frames,
}
#: Where the bytes of an instance are, for a retrieve.
_BYTES: dict[str, InstrumentedAttribute[Any]] = {
    "_key": _O.key, "_sha256": _O.sha256, "_size": _O.size, "_transfer_syntax": _O.transfer_syntax_uid,
}

#: The keys each level matches on (besides those of the levels above it).
STUDY_KEYS = frozenset(_STUDY) | {"ModalitiesInStudy"}
SERIES_KEYS = frozenset(_SERIES)
INSTANCE_KEYS = frozenset(_INSTANCE)

_UIDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
_DATES = {"StudyDate", "PatientBirthDate"}
_TIMES = {"StudyTime"}
_NAMES = {"PatientName", "ReferringPhysicianName"}
_NUMBERS = {"SeriesNumber", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"}

_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"(\d{2}|\d{4}|\d{6})(\.\d{1,6})?")
_LIST = re.compile(r"[\\,]")
_WORDS = re.compile(r"[\^=\s,]+")
#: A name's components start at its beginning or after one of these.
_COMPONENT_STARTS = ("", "%^", "%=", "% ")


def _wild(value: str) -> bool:
    return "*" in value or "?" in value


def _like(value: str) -> str:
    """A DICOM wildcard value as a LIKE pattern (escape character ``\\``)."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _glob(value: str) -> str:
    """A DICOM wildcard value as a GLOB pattern (SQLite's case-sensitive LIKE)."""
    return "".join(f"[{c}]" if c == "[" else c for c in value)


def _date_bounds(value: str) -> tuple[str | None, str | None]:
    lo, sep, hi = value.partition("-")
    bounds = (lo or None, hi or None) if sep else (lo, lo)
    if not any(bounds) or not all(b is None or _DATE.fullmatch(b) for b in bounds):
        raise InvalidMatch(f"{value!r} is not a date (YYYYMMDD) or a date range")
    return bounds


def _time_parts(value: str, original: str) -> tuple[str, str]:
    match = _TIME.fullmatch(value)
    if match is None:
        raise InvalidMatch(f"{original!r} is not a time (HHMMSS[.FFFFFF]) or a time range")
    return match.group(1), match.group(2) or ""


class CatalogRepository:
    """Queries of the catalog (see module doc); read only."""

    def __init__(self, session: Session) -> None:
        self._s = session

    # -- the three levels ------------------------------------------------------------------------
    def studies(self, scope: CaseScope, match: dict[str, str], limit: int | None = None, offset: int = 0, *,
                fuzzy: bool = False) -> list[dict[str, Any]]:
        """The studies that match, newest first, with ModalitiesInStudy and the numbers of
        their series and instances."""
        q = (select(Case.id, *_STUDY.values()).outerjoin(Patient, Patient.id == Case.patient_id)
             .where(*self._study_where(scope, match, fuzzy)).order_by(Case.id.desc()).offset(offset))
        rows = self._s.execute(q if limit is None else q.limit(limit)).all()
        counts = self._counts([r[0] for r in rows])
        out = []
        for row in rows:
            record = self._record(_STUDY, row[1:], row[0])
            modalities, series, instances = counts.get(row[0], ((), 0, 0))
            record.update(ModalitiesInStudy=list(modalities), NumberOfStudyRelatedSeries=series,
                          NumberOfStudyRelatedInstances=instances)
            out.append(record)
        return out

    def series(self, scope: CaseScope, study_uid: str | None, match: dict[str, str], *, limit: int | None = None,
               offset: int = 0, fuzzy: bool = False) -> list[dict[str, Any]]:
        """The series that match (of one study, or of all the caller's), each with its study's
        attributes and NumberOfSeriesRelatedInstances; in study (newest first) and series order."""
        number = func.min(_O.series_number)
        q = (select(Case.id, *_STUDY.values(), _O.series_instance_uid, func.min(_O.modality), number,
                    func.min(_O.series_description), func.count(_O.id))
             .join(_O, _O.case_id == Case.id).outerjoin(Patient, Patient.id == Case.patient_id)
             .where(*self._study_where(scope, match, fuzzy, study_uid), *self._where(_SERIES, match, fuzzy),
                    _O.series_instance_uid.is_not(None))
             .group_by(Case.id, Patient.id, _O.series_instance_uid)
             .order_by(Case.id.desc(), number.nulls_last(), _O.series_instance_uid).offset(offset))
        out = []
        study_width = len(_STUDY)
        for row in self._s.execute(q if limit is None else q.limit(limit)):
            record = self._record(_STUDY, row[1:1 + study_width], row[0])
            record.update(self._record(_SERIES, row[1 + study_width:-1]))
            record["NumberOfSeriesRelatedInstances"] = row[-1]
            out.append(record)
        return out

    def instances(self, scope: CaseScope, study_uid: str | None, series_uid: str | None, match: dict[str, str], *,
                  limit: int | None = None, offset: int = 0, fuzzy: bool = False) -> list[dict[str, Any]]:
        """The instances that match (of a study, a series, or all the caller's), each with its
        series' and study's attributes and where its bytes are (``_key``, ``_sha256``,
        ``_size``, ``_transfer_syntax``); in study (newest first), series and instance order."""
        where = [*self._study_where(scope, match, fuzzy, study_uid), *self._where(_SERIES, match, fuzzy),
                 *self._where(_INSTANCE, match, fuzzy), _O.sop_instance_uid.is_not(None),
                 _O.series_instance_uid.is_not(None)]
        if series_uid is not None:
            where.append(_O.series_instance_uid == series_uid)
        q = (select(Case.id, *_STUDY.values(), *_SERIES.values(), *_INSTANCE.values(), *_BYTES.values())
             .join(_O, _O.case_id == Case.id).outerjoin(Patient, Patient.id == Case.patient_id).where(*where)
             .order_by(Case.id.desc(), _O.series_number.nulls_last(), _O.series_instance_uid,
                       _O.instance_number.nulls_last(), _O.id).offset(offset))
        out = []
        for row in self._s.execute(q if limit is None else q.limit(limit)):
            values = iter(row[1:])
            record = self._record(_STUDY, values, row[0])
            for columns in (_SERIES, _INSTANCE, _BYTES):
                record.update(self._record(columns, values))
            out.append(record)
        return out

    # -- building blocks -------------------------------------------------------------------------
    @staticmethod
    def _record(columns: dict[str, Any], values: Any, case_id: int | None = None) -> dict[str, Any]:
        record = dict(zip(columns, values))
        if case_id is not None:
            record["_case_id"] = case_id
        return record

    def _counts(self, case_ids: list[int]) -> dict[int, tuple[list[str], int, int]]:
        """ModalitiesInStudy, series and instances of each case, in one grouped query."""
        if not case_ids:
            return {}
        parts: dict[int, tuple[set[str], set[str], list[int]]] = {}
        for case_id, series, modality, n in self._s.execute(
                select(_O.case_id, _O.series_instance_uid, _O.modality, func.count())
                .where(_O.case_id.in_(case_ids), _O.series_instance_uid.is_not(None))
                .group_by(_O.case_id, _O.series_instance_uid, _O.modality)):
            modalities, all_series, total = parts.setdefault(case_id, (set(), set(), [0]))
            if modality:
                modalities.add(modality)
            all_series.add(series)
            total[0] += n
        return {case_id: (sorted(m), len(s), t[0]) for case_id, (m, s, t) in parts.items()}

    def _study_where(self, scope: CaseScope, match: dict[str, str], fuzzy: bool,
                     study_uid: str | None = None) -> list[ColumnElement[bool]]:
        where = [scope.clause(), Case.study_instance_uid.is_not(None), *self._where(_STUDY, match, fuzzy)]
        if study_uid is not None:
            where.append(Case.study_instance_uid == study_uid)
        # Always true, and what lets the planner reach a study by UID and a patient by PatientID
        # through the (site, UID) and (site, PatientID) unique indexes, one probe per site: an
        # index of their own would cost every C-STORE of a new study a page written.
        if study_uid is not None or (match.get("StudyInstanceUID") or "").strip():
            where.append(Case.site_id.in_(select(Site.id)))
        patient = (match.get("PatientID") or "").strip()
        if patient and not _wild(patient):
            where.append(Patient.site_id.in_(select(Site.id)))
        modalities = (match.get("ModalitiesInStudy") or "").strip()
        if modalities.strip("*"):
            where.append(exists().where(_O.case_id == Case.id, self._values(_O.modality, modalities)))
        return where

    def _where(self, columns: dict[str, InstrumentedAttribute[Any]], match: dict[str, str],
               fuzzy: bool) -> list[ColumnElement[bool]]:
        """The conditions of the keys of ``match`` that ``columns`` hold (empty ones are universal)."""
        where = []
        for key, raw in match.items():
            column = columns.get(key)
            value = (raw or "").strip()
            if column is None or not value or (key not in _UIDS and not value.strip("*")):
                continue  # not held here, or universal
            where.append(self._condition(key, column, value, fuzzy))
        return where

    def _condition(self, key: str, column: InstrumentedAttribute[Any], value: str,
                   fuzzy: bool) -> ColumnElement[bool]:
        if key in _UIDS:
            uids = [u.strip() for u in _LIST.split(value) if u.strip()]
            return column.in_(uids) if len(uids) > 1 else column == uids[0]
        if key in _DATES:
            lo, hi = _date_bounds(value)
            return and_(*([column >= lo] if lo else []), *([column <= hi] if hi else []))
        if key in _TIMES:
            return self._time(column, value)
        if key in _NAMES:
            return self._name(column, value, fuzzy)
        if key in _NUMBERS:
            try:
                return column == int(value)
            except ValueError:
                raise InvalidMatch(f"{key} {value!r} is not a number") from None
        return self._text(column, value)

    def _values(self, column: InstrumentedAttribute[Any], value: str) -> ColumnElement[bool]:
        """Any of a list of values, each with wildcards (ModalitiesInStudy)."""
        values = [v.strip() for v in _LIST.split(value) if v.strip()]
        return or_(*(self._text(column, v) for v in values))

    def _text(self, column: InstrumentedAttribute[Any], value: str) -> ColumnElement[bool]:
        if not _wild(value):
            return column == value
        if self._s.get_bind().dialect.name == "sqlite":
            return column.op("GLOB")(_glob(value))
        return column.like(_like(value), escape="\\")

    @staticmethod
    def _time(column: InstrumentedAttribute[Any], value: str) -> ColumnElement[bool]:
        plain = value.replace(":", "")
        lo, sep, hi = plain.partition("-")
        if not sep:
            digits, fraction = _time_parts(lo, value)
            return column.like(_like(digits + fraction) + "%", escape="\\")
        if not lo and not hi:
            raise InvalidMatch(f"{value!r} is not a time range")
        where = []
        if lo:
            digits, fraction = _time_parts(lo, value)
            where.append(column >= digits.ljust(6, "0") + fraction)
        if hi:
            digits, fraction = _time_parts(hi, value)
            # Everything within the bound's precision: 12 is up to 12:59:59.999999.
            where.append(column <= digits.ljust(6, "9") + (fraction or "9"))
        return and_(*where)

    @staticmethod
    def _name(column: InstrumentedAttribute[Any], value: str, fuzzy: bool) -> ColumnElement[bool]:
        lowered = func.lower(column)
        like: Callable[[str], ColumnElement[bool]] = lambda pattern: lowered.like(pattern, escape="\\")  # noqa: E731
        if fuzzy:
            words = [w for w in _WORDS.split(value.lower()) if w.strip("*")]
            if not words:
                return true()
            return and_(*(or_(*(like(start + _like(w) + "%") for start in _COMPONENT_STARTS)) for w in words))
        pattern = _like(value.lower())
        return or_(like(pattern), like(pattern + "=%"), like("%=" + pattern), like("%=" + pattern + "=%"))
