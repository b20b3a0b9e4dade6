"""DICOMweb (PS3.18) as use cases: search the study catalog (QIDO-RS), retrieve instances,
metadata, frames, bulk data and rendered images (WADO-RS), and store (STOW-RS).

Who sees what is the review stage's rule (:meth:`ReviewService.scope`: a township's people
and devices their site's studies, a county's readers what is routed to it now or was, the
prefecture all); a study the caller may not see and one that does not exist are the same 404
(:class:`CaseNotVisible`). Storing goes through the one ingest use case C-STORE uses
(``prepare_dicom`` with the pixel or waveform check, then ``store_received``), so an instance
is durable and recorded before it is acknowledged, and a refused one leaves nothing behind.

Bytes are read from the object store one instance at a time (each checked against its
recorded SHA-256), so retrieving a study never holds more than one of its instances; the
Part 10 objects are sent exactly as stored, in their stored transfer syntax, or decompressed to
Explicit VR Little Endian when the client accepts only that (a compressed syntax it names
that is not the stored one is answered 406: telediag does not re-compress).

Every search and every read is audited (in batches, ``store.read_audit``): a search as
``search`` (level, the keys matched, how many results), a read as ``retrieve``, ``metadata``,
``frames``, ``bulk``, ``rendered`` or ``thumbnail`` on each case it touches.

Errors: :class:`InvalidRequest` (a query or parameter that cannot be read: HTTP 400),
:class:`NotAcceptable` (no acceptable representation: 406), ``imaging.ImageError`` (the
object cannot be rendered: 422).
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

from telediag import imaging
from telediag.analysis import THUMBNAIL_SIDE
from telediag.domain import CaseNotVisible, DeviceIdentity, Principal
from telediag.ingest import ACCEPTED_SOP_CLASSES, InvalidObject, StorageUnavailable
from telediag.review.service import ReviewService, audit_read
from telediag.store import Database, ObjectStore
from telediag.store.catalog import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS, InvalidMatch

if TYPE_CHECKING:
    from telediag.ingest import IngestService

log = logging.getLogger(__name__)

__all__ = ["DicomWeb", "InvalidRequest", "NotAcceptable", "Part", "StowItem", "Query", "parse_query", "DICOM",
           "DICOM_JSON", "OCTET_STREAM"]

DICOM, DICOM_JSON, OCTET_STREAM = "application/dicom", "application/dicom+json", "application/octet-stream"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
Level = Literal["study", "series", "instance"]

#: Results of a search without ``limit``, and the most one search answers (a Warning header
#: tells the client there are more, which it pages through with ``offset``).
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000
#: Binary values longer than this go into metadata as a BulkDataURI, not inline base64.
BULK_THRESHOLD = 256
#: The attributes each level returns by default (PS3.18 Table 6.7.1-2, of those the catalog holds).
_DEFAULTS: dict[Level, tuple[str, ...]] = {
    "study": ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
              "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "series": ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
               "NumberOfSeriesRelatedInstances"),
    "instance": ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"),
}
#: A level and the levels above it, top first.
_LINEAGE: dict[Level, tuple[Level, ...]] = {
    "study": ("study",), "series": ("study", "series"), "instance": ("study", "series", "instance")}
_MATCHABLE: dict[Level, frozenset[str]] = {
    "study": STUDY_KEYS, "series": STUDY_KEYS | SERIES_KEYS, "instance": STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS}
_NUMERIC_VRS = {"IS", "US", "UL", "SS", "SL", "UV", "SV"}

#: The media type a compressed frame is sent as, by transfer syntax (PS3.18 Table 8.7.3-2).
_FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}

#: STOW-RS Failure Reason (0008,1197) values (PS3.18 Table I.2-2; 0xC409 and 0x0111 are telediag's).
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_SOP_CLASS_NOT_SUPPORTED = 0x0122
FAILURE_STUDY_MISMATCH = 0xC409
FAILURE_DUPLICATE = 0x0111
#: Group 0002 (File Meta Information), little endian: how a Part 10 file goes on after its preamble.
_META_GROUP = b"\x02\x00"


class InvalidRequest(ValueError):
    """A query key, value or parameter that cannot be read (HTTP 400)."""


class NotAcceptable(ValueError):
    """None of the representations the client accepts can be given (HTTP 406)."""


# -- content negotiation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Accepted:
    """One acceptable representation: a media type (``*/*`` and ``image/*`` allowed) and, for
    DICOM and frames, a transfer syntax (None or ``*``: any)."""

    media_type: str
    transfer_syntax: str | None = None

    def allows(self, media_type: str, transfer_syntax: str | None = None) -> bool:
        family = media_type.split("/")[0] + "/*"
        if self.media_type not in ("*/*", family, media_type):
            return False
        return self.transfer_syntax in (None, "*", transfer_syntax) or transfer_syntax is None


def accepted(ranges: Iterable[tuple[str, dict[str, str]]]) -> list[Accepted]:
    """What an Accept header's media ranges (type, parameters) allow: the inner ``type`` of a
    ``multipart/related`` range, or the range itself; everything when there are none."""
    out = []
    for media_type, params in ranges:
        inner = params.get("type", "*/*") if media_type == "multipart/related" else media_type
        out.append(Accepted(inner.lower(), params.get("transfer-syntax")))
    return out or [Accepted("*/*")]


def _choose(accept: list[Accepted], *options: tuple[str, str | None]) -> tuple[str, str | None]:
    """The first of ``options`` (media type, transfer syntax) that ``accept`` allows."""
    for option in options:
        if any(a.allows(*option) for a in accept):
            return option
    wanted = ", ".join(f"{a.media_type}" + (f" ({a.transfer_syntax})" if a.transfer_syntax else "") for a in accept)
    offered = ", ".join(f"{m}" + (f" ({t})" if t else "") for m, t in options)
    raise NotAcceptable(f"cannot give any of {wanted}; available: {offered}")


# -- queries ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """A QIDO-RS request's parameters: what to match, what to return, which page."""

    match: dict[str, str]
    include: frozenset[str] = frozenset()
    include_all: bool = False
    fuzzy: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    #: Query keys given but not matched on (told back in a Warning header, PS3.18 8.3.4.1).
    ignored: tuple[str, ...] = ()


def _keyword(name: str) -> str | None:
    """A query key as a DICOM keyword: given as one, or as its tag in hex (``00100020``)."""
    if tag_for_keyword(name) is not None:
        return name
    if len(name) == 8:
        try:
            return keyword_for_tag(int(name, 16)) or None
        except ValueError:
            return None
    return None


def _int_param(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number, not {value!r}") from None
    if number < low:
        raise InvalidRequest(f"{name} must be at least {low}")
    return min(number, high)


def parse_query(level: Level, items: Iterable[tuple[str, str]]) -> Query:
    """A QIDO-RS query string (its items in order, a key possibly repeated) as a :class:`Query`."""
    match: dict[str, str] = {}
    include: set[str] = set()
    include_all = fuzzy = False
    limit, offset = DEFAULT_LIMIT, 0
    ignored: list[str] = []
    for name, value in items:
        if name == "limit":
            limit = _int_param(name, value, 1, MAX_LIMIT)
        elif name == "offset":
            offset = _int_param(name, value, 0, 2**31)
        elif name == "fuzzymatching":
            fuzzy = value.strip().lower() == "true"
        elif name == "includefield":
            for each in filter(None, (v.strip() for v in value.split(","))):
                if each == "all":
                    include_all = True
                elif (keyword := _keyword(each)) is not None:
                    include.add(keyword)
        elif (keyword := _keyword(name)) is not None and keyword in _MATCHABLE[level]:
            match[keyword] = value
        else:
            ignored.append(name)
    return Query(match, frozenset(include), include_all, fuzzy, limit, offset, tuple(ignored))


# -- DICOM JSON --------------------------------------------------------------------------------------
@functools.cache
def _tag_and_vr(keyword: str) -> tuple[str, str]:
    """A keyword's tag (as DICOM JSON names it) and VR; pydicom's look-ups cost about 10 us each,
    which a page of 100 studies would pay 3,000 times."""
    return f"{tag_for_keyword(keyword):08X}", str(dictionary_VR(keyword))


def _tag(keyword: str) -> str:
    return _tag_and_vr(keyword)[0]


def json_attribute(keyword: str, value: Any) -> dict[str, Any]:
    """One catalog value as a DICOM JSON attribute (PS3.18 F.2); None is an empty attribute."""
    vr = _tag_and_vr(keyword)[1]
    values = value if isinstance(value, list) else [] if value is None or value == "" else [value]
    if not values:
        return {"vr": vr}
    if vr == "PN":
        groups = ("Alphabetic", "Ideographic", "Phonetic")
        return {"vr": vr, "Value": [{g: part for g, part in zip(groups, str(v).split("=")) if part} for v in values]}
    if vr in _NUMERIC_VRS:
        return {"vr": vr, "Value": [int(v) for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}


def _dataset_json(ds: Dataset, bulk_uri: str) -> dict[str, Any]:
    """A data set as DICOM JSON whose large binary values (pixel data, waveform data) are
    BulkDataURIs ``{bulk_uri}/{tag}[/{item}/{tag}...]``: pydicom's handler sees only the
    element, so the path of each is found first (the same element objects are serialised)."""
    paths: dict[int, str] = {}

    def walk(items: Dataset, prefix: str) -> None:
        for element in items:
            path = f"{prefix}{element.tag:08X}"
            if element.VR == "SQ":
                for index, item in enumerate(element.value):
                    walk(item, f"{path}/{index}/")
            else:
                paths[id(element)] = path

    walk(ds, "")
    return ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, suppress_invalid_tags=True,
                           bulk_data_element_handler=lambda element: f"{bulk_uri}/{paths[id(element)]}")


def _element(ds: Dataset, path: str) -> DataElement:
    """The element at a bulk data path (``tag[/item/tag]...``)."""
    steps = path.strip("/").split("/")
    try:
        current: Any = ds
        for i, step in enumerate(steps):
            current = current[int(step, 16)] if i % 2 == 0 else current.value[int(step)]
            if i % 2 == 0 and i + 1 < len(steps) and current.VR != "SQ":
                raise KeyError(step)
    except (KeyError, IndexError, ValueError):
        raise CaseNotVisible(f"no bulk data at {path}") from None
    if not isinstance(current, DataElement) or current.VR == "SQ":
        raise CaseNotVisible(f"no bulk data at {path}")
    return current


# -- results of retrieve and store -------------------------------------------------------------
class Part(NamedTuple):
    """One part of a multipart answer: its media type (with parameters) and its bytes."""

    media_type: str
    data: bytes


@dataclass(frozen=True)
class StowItem:
    """What became of one instance of a STOW-RS request."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    failure: int | None = None
    reason: str = ""


def _identity(data: bytes) -> tuple[str | None, str | None]:
    """(SOP Class UID, SOP Instance UID) of a refused part, as far as they can be read."""
    try:
        ds = dcmread(io.BytesIO(data), force=True, stop_before_pixels=True,
                     specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return (str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID") or "") or None,
                str(ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID") or "") or None)
    except Exception:  # a part that pydicom cannot read either has no identity to give
        return None, None


def _with_preamble(data: bytes) -> bytes:
    """A part that starts with its File Meta group but no preamble (what pydicom writes for a
    data set made in memory, and so what ``dicomweb-client`` sends) as the Part 10 file it is
    meant to be, the way the SCP wraps what C-STORE receives; anything else as it came."""
    if data[128:132] != b"DICM" and data[:2] == _META_GROUP:
        return bytes(128) + b"DICM" + data
    return data


def _failure_of(sop_class_uid: str | None) -> int:
    """A refused part's Failure Reason: its SOP class is not one telediag keeps, or it is
    malformed (truncated, inconsistent, not DICOM)."""
    if sop_class_uid is not None and sop_class_uid not in ACCEPTED_SOP_CLASSES:
        return FAILURE_SOP_CLASS_NOT_SUPPORTED
    return FAILURE_CANNOT_UNDERSTAND


# -- the use cases -------------------------------------------------------------------------------------
@dataclass
class DicomWeb:
    """DICOMweb's use cases over the catalog, the object store and the ingest use case."""

    db: Database
    store: ObjectStore
    ingest: IngestService
    #: The caller's network address, for the audit trail.
    address: str | None = None

    # -- QIDO-RS --------------------------------------------------------------------------------------
    def search(self, p: Principal, level: Level, query: Query, base: str, study: str | None = None,
               series: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """The matching records of ``level`` as DICOM JSON, and whether there are more than
        ``query.limit``; within a study (and series) when given."""
        scope = ReviewService.scope(p)
        page = dict(limit=query.limit + 1, offset=query.offset, fuzzy=query.fuzzy)
        try:
            with self.db.uow() as uow:
                if level == "study":
                    rows = uow.catalog.studies(scope, query.match, **page)
                elif level == "series":
                    rows = uow.catalog.series(scope, study, query.match, **page)
                else:
                    rows = uow.catalog.instances(scope, study, series, query.match, **page)
        except InvalidMatch as exc:
            raise InvalidRequest(str(exc)) from exc
        audit_read(self.db, p, "search", self.address, level=level, study=study, series=series,
                   keys=sorted(query.match), results=min(len(rows), query.limit))
        fixed: tuple[Level, ...] = ("study", "series") if series else ("study",) if study else ()
        keys = self._returned(level, query, fixed)
        return [self._json(row, keys, base, level) for row in rows[:query.limit]], len(rows) > query.limit

    @staticmethod
    def _returned(level: Level, query: Query, fixed: tuple[Level, ...]) -> list[str] | None:
        """The keywords a result carries (None: all it has): its UIDs, the level's defaults and
        those of the levels above it that the URL does not fix, the matched keys and ``includefield``."""
        if query.include_all:
            return None
        keys = ["StudyInstanceUID"] if level == "study" else ["StudyInstanceUID", "SeriesInstanceUID"]
        for each in _LINEAGE[level]:
            if each == level or each not in fixed:
                keys.extend(_DEFAULTS[each])
        keys.extend(query.match)
        keys.extend(query.include)
        return list(dict.fromkeys(keys))

    @staticmethod
    def _json(row: dict[str, Any], keys: list[str] | None, base: str, level: Level) -> dict[str, Any]:
        out = {_tag(k): json_attribute(k, row[k]) for k in (keys if keys is not None else row)
               if k in row and not k.startswith("_")}
        out["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        url = f"{base}/studies/{row['StudyInstanceUID']}"
        if level != "study":
            url += f"/series/{row['SeriesInstanceUID']}"
        if level == "instance":
            url += f"/instances/{row['SOPInstanceUID']}"
        out["00081190"] = {"vr": "UR", "Value": [url]}
        return dict(sorted(out.items()))

    # -- WADO-RS ---------------------------------------------------------------------------------------
    def instances(self, p: Principal, study: str, series: str | None = None, instance: str | None = None,
                  action: str = "retrieve") -> list[dict[str, Any]]:
        """The catalog records of a study, series or instance the caller may see (404 otherwise);
        the read, ``action``, is audited on each case it touches."""
        match = {"SOPInstanceUID": instance} if instance else {}
        with self.db.uow() as uow:
            rows = uow.catalog.instances(ReviewService.scope(p), study, series, match)
        for case_id in dict.fromkeys(row["_case_id"] for row in rows):
            audit_read(self.db, p, action, self.address, case_id, study=study, series=series, instance=instance)
        if not rows:
            what = f"instance {instance}" if instance else f"series {series}" if series else f"study {study}"
            raise CaseNotVisible(f"no {what} for this caller")
        return rows

    def _read(self, row: dict[str, Any]) -> bytes:
        return self.store.get(row["_key"], row["_sha256"])

    def retrieve(self, p: Principal, accept: list[Accepted], study: str, series: str | None = None,
                 instance: str | None = None) -> Iterator[Part]:
        """The Part 10 objects, read one at a time as the answer is sent: as stored, or, for a
        client that asks for Explicit VR Little Endian only, a compressed one decompressed
        (a viewer without the codec). What the caller may see and what it accepts is
        checked before the first byte."""
        rows = self.instances(p, study, series, instance)
        plan = []
        for row in rows:
            stored = UID(row["_transfer_syntax"])
            options = [(DICOM, str(stored))] + ([(DICOM, EXPLICIT_LE)] if stored.is_encapsulated else [])
            plan.append((row, _choose(accept, *options)[1]))
        return (self._part10(row, syntax) for row, syntax in plan)

    def _part10(self, row: dict[str, Any], syntax: str | None) -> Part:
        data = self._read(row)
        if syntax != row["_transfer_syntax"]:
            ds = dcmread(io.BytesIO(data))
            ds.decompress(generate_instance_uid=False)  # the instance asked for keeps its UID
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            data = out.getvalue()
        return Part(f"{DICOM}; transfer-syntax={syntax}", data)

    def metadata(self, p: Principal, base: str, study: str, series: str | None = None,
                 instance: str | None = None) -> Iterator[dict[str, Any]]:
        """Each instance's data set as DICOM JSON, pixel and waveform data as BulkDataURIs."""
        rows = self.instances(p, study, series, instance, action="metadata")

        def each() -> Iterator[dict[str, Any]]:
            for row in rows:
                ds = dcmread(io.BytesIO(self._read(row)))
                yield _dataset_json(ds, f"{base}/studies/{row['StudyInstanceUID']}/series/"
                                        f"{row['SeriesInstanceUID']}/instances/{row['SOPInstanceUID']}/bulk")
        return each()

    def bulk(self, p: Principal, study: str, series: str, instance: str, path: str) -> Part:
        """The value of one binary element (a BulkDataURI of :meth:`metadata`)."""
        (row,) = self.instances(p, study, series, instance, action="bulk")
        element = _element(dcmread(io.BytesIO(self._read(row))), path)
        value = element.value
        if not isinstance(value, (bytes, bytearray)):
            raise CaseNotVisible(f"{path} is not bulk data")
        return Part(OCTET_STREAM, bytes(value))

    def frames(self, p: Principal, accept: list[Accepted], study: str, series: str, instance: str,
               numbers: list[int]) -> tuple[str, Iterator[Part]]:
        """Frames (numbered from 1) of an image: uncompressed as stored, compressed in their
        stored encoding when the client accepts it (image/jpeg, image/jp2, ...), else decoded."""
        (row,) = self.instances(p, study, series, instance, action="frames")
        ds = dcmread(io.BytesIO(self._read(row)))
        if "PixelData" not in ds:
            raise NotAcceptable("the instance has no pixel data")
        count = int(ds.get("NumberOfFrames") or 1)
        for n in numbers:
            if not 1 <= n <= count:
                raise InvalidRequest(f"frame {n} does not exist: the instance has {count} frame(s)")
        ts = UID(row["_transfer_syntax"])
        native = (OCTET_STREAM, EXPLICIT_LE)
        if ts.is_encapsulated:
            stored = _FRAME_TYPES.get(str(ts), OCTET_STREAM)
            media, chosen = _choose(accept, (stored, str(ts)), native)
        else:
            media, chosen = _choose(accept, native)
        if chosen == str(ts) and ts.is_encapsulated:
            parts = (Part(f"{media}; transfer-syntax={ts}", get_frame(ds.PixelData, n - 1, number_of_frames=count))
                     for n in numbers)
        elif ts in (EXPLICIT_LE, "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99") and int(ds.BitsAllocated) > 1:
            size = get_expected_length(ds, "bytes") // count
            parts = (Part(f"{media}; transfer-syntax={EXPLICIT_LE}", ds.PixelData[(n - 1) * size:n * size])
                     for n in numbers)
        else:  # compressed, big endian or 1-bit: decoded frame by frame, little endian
            decoded = imaging.decode_frames(ds)
            parts = (Part(f"{media}; transfer-syntax={EXPLICIT_LE}", _little_endian(decoded[n - 1])) for n in numbers)
        return media, parts

    def rendered(self, p: Principal, accept: list[Accepted], study: str, series: str, instance: str,
                 frame: int | None = None, window: str | None = None, viewport: str | None = None,
                 quality: str | None = None) -> Part:
        """An instance (its first frame) or one frame (from 1) as JPEG or PNG, with the
        PS3.18 rendering parameters ``window=center,width[,function]``, ``viewport=width,height``
        and ``quality``."""
        (row,) = self.instances(p, study, series, instance, action="rendered")
        media, _ = _choose(accept, ("image/jpeg", None), ("image/png", None))
        frames = imaging.decode_frames(self._read(row))
        index = 0 if frame is None else frame - 1
        size = _viewport(viewport)
        choice = _window(window)
        if media == "image/png":
            return Part(media, imaging.render_png(frames, index, window=choice, size=size))
        q = _int_param("quality", quality, 1, 100) if quality else 90
        return Part(media, imaging.render_jpeg(frames, index, window=choice, size=size, quality=q))

    def thumbnail(self, p: Principal, accept: list[Accepted], study: str, series: str | None = None,
                  instance: str | None = None, frame: int | None = None, viewport: str | None = None) -> Part:
        """A small picture of a study (the middle image of its first series with images), a
        series (its middle image), an instance (its middle frame) or a frame."""
        rows = [r for r in self.instances(p, study, series, instance, action="thumbnail") if r["Rows"] is not None]
        if not rows:
            raise NotAcceptable("nothing to draw: no image in it")
        first = rows[0]["SeriesInstanceUID"]
        in_series = [r for r in rows if r["SeriesInstanceUID"] == first]
        row = in_series[len(in_series) // 2]
        media, _ = _choose(accept, ("image/jpeg", None), ("image/png", None))
        size = _viewport(viewport) or THUMBNAIL_SIDE
        side = max(size) if isinstance(size, tuple) else size
        return Part(media, imaging.thumbnail(self._read(row), side, frame=None if frame is None else frame - 1,
                                             fmt="png" if media == "image/png" else "jpeg"))

    # -- STOW-RS ---------------------------------------------------------------------------------------
    def store_part(self, device: DeviceIdentity, media_type: str, data: bytes, study: str | None) -> StowItem:
        """Store one part of a STOW-RS request as C-STORE would (checked in full, durable and
        recorded on return), or say why not."""
        if media_type.split(";")[0].strip().lower() != DICOM:
            return StowItem(None, None, failure=FAILURE_CANNOT_UNDERSTAND,
                            reason=f"part of type {media_type or 'none'}: only {DICOM} is stored")
        data = _with_preamble(data)
        try:
            received = self.ingest.prepare_dicom(device, data, thorough=True)
        except InvalidObject as exc:
            log.warning("STOW-RS part from device %s refused: %s", device.device_id, exc)
            sop_class, sop_instance = _identity(data)
            return StowItem(sop_class, sop_instance, failure=_failure_of(sop_class), reason=str(exc))
        info = received.dicom
        assert info is not None  # prepare_dicom describes every object it accepts
        item = StowItem(info.sop_class_uid, info.sop_instance_uid, info.study_instance_uid, info.series_instance_uid)
        if study is not None and info.study_instance_uid != study:
            return StowItem(item.sop_class_uid, item.sop_instance_uid, failure=FAILURE_STUDY_MISMATCH,
                            reason=f"the instance belongs to study {info.study_instance_uid}, not {study}")
        try:
            outcome = self.ingest.store_received(device, received)
        except StorageUnavailable as exc:
            return StowItem(item.sop_class_uid, item.sop_instance_uid, failure=FAILURE_OUT_OF_RESOURCES,
                            reason=f"storage unavailable, retry later ({exc})")
        if outcome.status == "quarantined":
            return StowItem(item.sop_class_uid, item.sop_instance_uid, failure=FAILURE_DUPLICATE,
                            reason="a different instance is stored under this SOP Instance UID; kept in quarantine")
        return item

    @staticmethod
    def stow_response(items: list[StowItem], base: str, study: str | None) -> tuple[int, dict[str, Any]]:
        """The Store Instances Response (PS3.18 10.5.3) and its HTTP status: 200 when every
        instance was stored, 202 when some were, 409 when none was."""
        stored = [i for i in items if i.failure is None]
        failed = [i for i in items if i.failure is not None]
        out: dict[str, Any] = {}
        studies = {i.study_instance_uid for i in stored}
        if study is not None or len(studies) == 1:
            out[_tag("RetrieveURL")] = json_attribute("RetrieveURL", f"{base}/studies/{study or studies.pop()}")
        if stored:
            out[_tag("ReferencedSOPSequence")] = {"vr": "SQ", "Value": [{
                _tag("ReferencedSOPClassUID"): json_attribute("ReferencedSOPClassUID", i.sop_class_uid),
                _tag("ReferencedSOPInstanceUID"): json_attribute("ReferencedSOPInstanceUID", i.sop_instance_uid),
                _tag("RetrieveURL"): json_attribute("RetrieveURL", f"{base}/studies/{i.study_instance_uid}/series/"
                                                                   f"{i.series_instance_uid}/instances/"
                                                                   f"{i.sop_instance_uid}"),
            } for i in stored]}
        if failed:
            out[_tag("FailedSOPSequence")] = {"vr": "SQ", "Value": [{
                _tag("ReferencedSOPClassUID"): json_attribute("ReferencedSOPClassUID", i.sop_class_uid),
                _tag("ReferencedSOPInstanceUID"): json_attribute("ReferencedSOPInstanceUID", i.sop_instance_uid),
                _tag("FailureReason"): json_attribute("FailureReason", i.failure),
                _tag("ErrorComment"): json_attribute("ErrorComment", i.reason[:64]),  # an LO: 64 characters
            } for i in failed]}
        status = 200 if not failed else 202 if stored else 409
        return status, dict(sorted(out.items()))


def _little_endian(frame: Any) -> bytes:
    """A decoded frame's values as little-endian bytes (PS3.18's uncompressed frame encoding)."""
    return frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes()


def _viewport(value: str | None) -> int | tuple[int, int] | None:
    if not value:
        return None
    parts = value.split(",")
    try:
        width, height = int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1] else int(parts[0])
    except ValueError:
        raise InvalidRequest(f"viewport must be width,height in pixels, not {value!r}") from None
    if not (0 < width <= 4096 and 0 < height <= 4096):
        raise InvalidRequest("viewport width and height must be 1 to 4096 pixels")
    return width, height


def _window(value: str | None) -> imaging.Window | None:
    if not value:
        return None
    parts = value.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise InvalidRequest(f"window must be center,width[,function], not {value!r}") from None
    function = (parts[2] if len(parts) > 2 else "linear").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or width <= 0:
        raise InvalidRequest(f"window {value!r}: width must be positive, function linear, linear_exact or sigmoid")
    return imaging.Window(center, width, function)
