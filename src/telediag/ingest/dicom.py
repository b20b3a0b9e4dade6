"""What ingest needs to know about a DICOM object, and whether it is whole.

Objects are stored exactly as received; this module only reads them. A device gets a
clear reason when an object is refused (``InvalidObject``), so it can be fixed at the
township rather than vanish.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.values import convert_DA_string, convert_PN, convert_string, convert_text, convert_UI

from telediag.ingest.uids import printable, uid_problem
from telediag.store import InstanceCatalog, StudyCatalog
from telediag.ingest.dicom_scan import (HEADER_VRS, META_VRS, FileMeta, MalformedDataSet, ScanResult,
                                 read_file_meta, scan)

#: Looks up an attribute by pydicom keyword, returning its value as pydicom types it.
_Getter = Callable[[str], Any]
_SPECIFIC_CHARACTER_SET = 0x00080005

log = logging.getLogger(__name__)

#: ECG waveform storage SOP classes (the Hemodynamic class is included because real carts
#: such as GE MAC units send resting 12-lead ECGs under it).
ECG_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.2.1": "Hemodynamic Waveform Storage",
}

IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
}

#: Documents a study holds beside its images and ECGs: signed reports filed back into their study.
DOCUMENT_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
}

ACCEPTED_SOP_CLASSES: dict[str, str] = {**ECG_SOP_CLASSES, **IMAGE_SOP_CLASSES, **DOCUMENT_SOP_CLASSES}


class InvalidObject(ValueError):
    """The object cannot be accepted; the message says why and goes back to the sender."""


@dataclass(frozen=True)
class DicomInfo:
    """Identifying attributes of one received object (PHI stays out of ``__repr__``)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    modality: str | None
    patient_id: str | None
    patient_name: str | None
    patient_sex: str | None
    patient_birth_date: str | None
    #: What the study catalog (QIDO-RS, C-FIND) matches and returns; an image's rows, columns
    #: and frames come from the pixel check, which reads past the header anyway.
    study: StudyCatalog = StudyCatalog()
    instance: InstanceCatalog = InstanceCatalog()

    @property
    def is_ecg(self) -> bool:
        return self.sop_class_uid in ECG_SOP_CLASSES

    def __repr__(self) -> str:
        return f"DicomInfo(sop_class={self.sop_class_uid}, sop_instance={self.sop_instance_uid})"


def _text(value: Any) -> str | None:
    """A decoded value as stored text: surrounding spaces dropped, empty as None."""
    text = str(value).strip() if value not in (None, "") else ""
    return text or None


#: Widths the catalog keeps (the columns' widths; longer values, against the standard, are clipped).
_TEXT_WIDTH, _CODE_WIDTH = 200, 64
_IS_RANGE = (-(2**31), 2**31 - 1)
_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"(\d{2}|\d{4}|\d{6})(\.\d{1,6})?")


def _catalog_value(get: _Getter, keyword: str) -> Any:
    """An attribute as ``get`` decodes it, or None when it cannot be decoded: a catalog
    attribute describes an object and must never be the reason one is refused."""
    try:
        return get(keyword)
    except Exception:  # pydicom's converters raise what their VR's class raises
        return None


def _joined(value: Any, width: int) -> str | None:
    """Text as stored: several values joined by backslash as sent, clipped to ``width``."""
    if isinstance(value, (list, tuple, MultiValue)):
        value = "\\".join(str(v) for v in value)
    text = _text(value)
    return text[:width] if text else None


def _person(value: Any) -> str | None:
    """A PN as stored, None when it has no name in it (only component separators)."""
    text = _joined(value, _TEXT_WIDTH)
    return text if text and text.strip("^= ") else None


def _date(value: Any) -> str | None:
    """A DA as YYYYMMDD (ACR-NEMA's YYYY.MM.DD too), None for anything else, so that ranges
    compare as strings."""
    text = (_joined(value, _CODE_WIDTH) or "").replace(".", "")
    return text if _DATE.fullmatch(text) else None


def _time(value: Any) -> str | None:
    """A TM as HHMMSS[.FFFFFF] (colons dropped, minutes and seconds padded with zeros), so
    that ranges compare as strings."""
    match = _TIME.fullmatch((_joined(value, _CODE_WIDTH) or "").replace(":", ""))
    return None if match is None else match.group(1).ljust(6, "0") + (match.group(2) or "")


def _number(value: Any) -> int | None:
    """An IS (its first value) as an int within the VR's range, else None."""
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if value else None
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if _IS_RANGE[0] <= number <= _IS_RANGE[1] else None


def _require_part10(data: bytes) -> None:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidObject("not a DICOM Part 10 file: no 128-byte preamble and 'DICM' prefix")


#: pydicom's warnings about a Specific Character Set it does not know or finds misused.
#: The object is whole and only its text may decode imperfectly, so these are logged (by
#: pydicom) rather than refusals: a cart with a misconfigured character set must still be
#: able to send its ECGs, which are stored exactly as sent either way.
_CHARSET_WARNINGS = r"(?s).*(encoding|Specific Character Set|code extension|escape sequence)"


@contextmanager
def _strict_reading() -> Iterator[None]:
    """pydicom's warnings as errors (it only warns on a truncated file), but for the
    character set ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=_CHARSET_WARNINGS)
        yield


def read_part10(data: bytes) -> Dataset:
    """Parse a DICOM Part 10 file, turning pydicom's complaints (truncation is only a warning
    there) into ``InvalidObject``."""
    _require_part10(data)
    with _strict_reading():
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:
            raise InvalidObject(f"malformed DICOM: {exc}") from exc
    return ds


def _check_pixels(ds: Dataset) -> tuple[int, int, int]:
    """Refuse image objects whose pixel data is shorter than their header promises; return
    (rows, columns, frames) for the catalog."""
    if "PixelData" not in ds:
        raise InvalidObject("image object has no Pixel Data")
    ts = UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        spp = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidObject(f"image object has invalid pixel description: {exc}") from exc
    if ts.is_encapsulated:
        from pydicom.encaps import generate_fragmented_frames

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                n = sum(1 for _ in generate_fragmented_frames(ds.PixelData, number_of_frames=frames))
        except Exception as exc:
            raise InvalidObject(f"encapsulated Pixel Data is malformed: {exc}") from exc
        if n < frames:
            raise InvalidObject(f"encapsulated Pixel Data holds {n} of {frames} frames")
        return rows, cols, frames
    expected = rows * cols * spp * frames * bits // 8
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        expected = expected * 2 // 3
    actual = len(ds.PixelData)
    if actual < expected:
        raise InvalidObject(f"Pixel Data is {actual} bytes, {expected} expected for "
                            f"{frames} frame(s) of {rows}x{cols}x{spp} at {bits} bits: truncated")
    return rows, cols, frames


def _check_document(ds: Dataset) -> None:
    """Refuse an encapsulated document that does not hold the document it describes."""
    document = ds.get("EncapsulatedDocument")
    if not document:
        raise InvalidObject("encapsulated document object has no Encapsulated Document")
    length = _number(ds.get("EncapsulatedDocumentLength"))
    if length is not None and length > len(document):
        raise InvalidObject(f"Encapsulated Document is {len(document)} bytes, its length says {length}: truncated")


def _header(data: bytes) -> Dataset:
    """File meta and the elements up to the Study/Series UIDs only: enough to file the object."""
    from pydicom.filereader import read_partial

    _require_part10(data)
    with _strict_reading():
        try:
            return read_partial(io.BytesIO(data), stop_when=lambda tag, vr, length: tag > 0x0020FFFF)
        except Exception as exc:
            raise InvalidObject(f"malformed DICOM: {exc}") from exc


def _check_groups(groups: list[dict[str, Any]]) -> None:
    """Refuse an ECG object whose scanned waveform groups are missing or inconsistent."""
    from telediag.ecg.readers import check_waveform_group
    from telediag.ecg import WaveformError

    if not groups:
        raise InvalidObject("ECG waveform is invalid: object has no Waveform Sequence")
    try:
        for index, group in enumerate(groups):
            check_waveform_group(group, index)
    except WaveformError as exc:
        raise InvalidObject(f"ECG waveform is invalid: {exc}") from exc


def _scan(data: bytes, meta: FileMeta, ts: str) -> ScanResult | None:
    """The structural walk of the data set, refusing a malformed one; None when the walk
    cannot stand in for pydicom (see ``dicom_scan.scan``)."""
    try:
        return scan(data, meta.data_offset, ts)
    except MalformedDataSet as exc:
        raise InvalidObject(f"malformed DICOM: {exc}") from exc


def _check_waveform_fast(data: bytes, ts: str) -> bool:
    """Structural check of an ECG object without building pydicom datasets; False when the
    object needs pydicom's full decode instead. Reached only for the ECG objects the scanned
    path left to pydicom (rare), so walking them again costs nothing that matters."""
    meta = read_file_meta(data)
    scanned = None if meta is None else _scan(data, meta, ts)
    if scanned is None:
        return False
    _check_groups(scanned.groups)
    return True


def _decode(raw: bytes | None, vr: bytes, encodings: Sequence[str]) -> Any:
    """A raw value decoded as pydicom's Dataset decodes ``vr`` (its own converters, but for
    single UIDs), so text comes out exactly as pydicom gives it (Specific Character Set,
    multiple values, padding); None when absent or empty, where pydicom gives None or ''."""
    if not raw:
        return None
    if vr == b"PN":
        return convert_PN(raw, encodings)
    if vr in (b"LO", b"SH"):
        return convert_text(raw, encodings, vr.decode())
    if vr == b"UI":
        return _uid(raw)
    if vr == b"DA":
        return convert_DA_string(raw, True)
    return convert_string(raw, True)


def _uid(raw: bytes) -> Any:
    """A UI value as pydicom gives it, without the cost of ``UID``'s syntax validation
    (a quarter of this path's time, and only a warning when reading): ``convert_UI`` drops
    trailing NULs and spaces, ``UID`` strips the rest. A multi-valued one goes through
    ``convert_UI`` itself."""
    text = raw.decode(default_encoding).rstrip("\0 ")
    return convert_UI(raw, True) if "\\" in text else text.strip()


def _encodings(charset: Any) -> Sequence[str]:
    """The encodings pydicom decodes the data set's text with (``Dataset._character_set``),
    including its fallback for an unknown or misused term (see :data:`_CHARSET_WARNINGS`)."""
    if not charset:
        return [default_encoding]
    return _convert_charset(charset if isinstance(charset, str) else tuple(charset))


@functools.lru_cache(maxsize=64)
def _convert_charset(charset: str | tuple[str, ...]) -> tuple[str, ...]:
    """``convert_encodings`` once per distinct value (carts repeat theirs), logging pydicom's
    complaint about it once rather than for every object; catching warnings changes
    process-wide state that other threads share, which is another reason to do it rarely."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encodings = tuple(convert_encodings(charset if isinstance(charset, str) else list(charset)))
    for warning in caught:
        log.warning("Specific Character Set %r: %s; text is decoded with pydicom's fallback", charset,
                    warning.message)
    return encodings


def _getter(values: dict[int, bytes], vrs: Mapping[int, bytes], encodings: Sequence[str]) -> _Getter:
    """A keyword lookup over scanned raw values, standing in for ``Dataset.get``."""
    def get(keyword: str) -> Any:
        tag = tag_for_keyword(keyword)
        return _decode(values.get(tag), vrs[tag], encodings)

    return get


def _identify(get: _Getter, get_meta: _Getter, ts: str) -> DicomInfo:
    """The identifying attributes, refusing an object that cannot be filed. Both readers
    (pydicom's Dataset and the scan) go through here, so they agree on every value and
    every refusal message."""
    sop_class = str(get("SOPClassUID") or get_meta("MediaStorageSOPClassUID") or "")
    sop_instance = str(get("SOPInstanceUID") or get_meta("MediaStorageSOPInstanceUID") or "")
    if not sop_class or not sop_instance:
        raise InvalidObject("object has no SOP Class UID or SOP Instance UID")
    if sop_class not in ACCEPTED_SOP_CLASSES:
        raise InvalidObject(f"SOP class {sop_class} is not accepted by telediag")
    study, series = _text(get("StudyInstanceUID")), _text(get("SeriesInstanceUID"))
    if not study or not series:
        raise InvalidObject("object has no Study or Series Instance UID")
    for name, uid in (("SOP Instance UID", sop_instance), ("Study Instance UID", study),
                      ("Series Instance UID", series)):
        problem = uid_problem(uid)
        if problem:
            raise InvalidObject(f"{name} {printable(uid)!r} {problem}")
    return DicomInfo(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=study,
        series_instance_uid=series,
        transfer_syntax_uid=ts,
        modality=_text(get("Modality")),
        patient_id=_text(get("PatientID")),
        patient_name=_text(get("PatientName")),
        patient_sex=(_text(get("PatientSex")) or "")[:1] or None,
        patient_birth_date=_text(get("PatientBirthDate")),
        study=StudyCatalog(
            study_date=_date(_catalog_value(get, "StudyDate")),
            study_time=_time(_catalog_value(get, "StudyTime")),
            accession_number=_joined(_catalog_value(get, "AccessionNumber"), _CODE_WIDTH),
            study_description=_joined(_catalog_value(get, "StudyDescription"), _TEXT_WIDTH),
            referring_physician_name=_person(_catalog_value(get, "ReferringPhysicianName")),
            study_id=_joined(_catalog_value(get, "StudyID"), _CODE_WIDTH)),
        instance=InstanceCatalog(
            series_number=_number(_catalog_value(get, "SeriesNumber")),
            series_description=_joined(_catalog_value(get, "SeriesDescription"), _TEXT_WIDTH),
            instance_number=_number(_catalog_value(get, "InstanceNumber"))),
    )


def _inspect_scanned(data: bytes) -> DicomInfo | None:
    """``inspect`` of an ECG object in a little-endian transfer syntax from one structural
    walk, with no pydicom Dataset (parsing the header with pydicom costs more than all the
    rest of the check). None for any other object, or one whose encoding the walk cannot
    read exactly as pydicom would: the caller then takes the pydicom path."""
    _require_part10(data)
    meta = read_file_meta(data)
    if meta is None:
        return None
    get_meta = _getter(meta.values, META_VRS, [])
    if str(get_meta("MediaStorageSOPClassUID") or "") not in ECG_SOP_CLASSES:
        return None
    ts = str(get_meta("TransferSyntaxUID") or "")
    scanned = _scan(data, meta, ts)
    if scanned is None:
        return None
    encodings = _encodings(_decode(scanned.values.get(_SPECIFIC_CHARACTER_SET), b"CS", []))
    info = _identify(_getter(scanned.values, HEADER_VRS, encodings), get_meta, ts)
    if not info.is_ecg:
        return None
    _check_groups(scanned.groups)
    return info


def inspect(data: bytes, thorough: bool = False) -> DicomInfo:
    """Parse and validate one received object; raise ``InvalidObject`` with the reason.

    ECG objects in little-endian transfer syntaxes are checked structurally (every length
    fits, every waveform group's data matches its declared channels x samples x bits), which
    is fast enough for the C-STORE path; the full decode into millivolts happens in the
    analysis worker. Their identifying attributes come from the same walk, decoded as
    pydicom decodes them; an object the walk cannot read exactly as pydicom would (see
    ``dicom_scan``) is parsed by pydicom instead. ``thorough`` decodes the waveform here too (the HTTP
    upload does, as it can afford the few milliseconds), as does any other transfer syntax.
    """
    if not thorough:
        info = _inspect_scanned(data)
        if info is not None:
            return info
    ds = read_part10(data) if thorough else _header(data)
    meta = ds.file_meta
    ts = str(meta.get("TransferSyntaxUID", ""))
    info = _identify(ds.get, meta.get, ts)
    if info.is_ecg:
        if thorough or not _check_waveform_fast(data, ts):
            from telediag.ecg.readers import read_dicom_waveform
            from telediag.ecg import WaveformError

            try:
                read_dicom_waveform(ds if thorough else read_part10(data))
            except WaveformError as exc:
                raise InvalidObject(f"ECG waveform is invalid: {exc}") from exc
        return info
    if info.sop_class_uid in DOCUMENT_SOP_CLASSES:
        _check_document(ds if thorough else read_part10(data))
        return info
    rows, columns, frames = _check_pixels(ds if thorough else read_part10(data))
    return dataclasses.replace(info, instance=dataclasses.replace(info.instance, rows=rows, columns=columns,
                                                                    number_of_frames=frames))
