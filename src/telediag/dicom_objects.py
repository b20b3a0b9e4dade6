"""What ingest needs to know about a DICOM object, and whether it is whole.

Objects are stored exactly as received; this module only reads them. A device gets a
clear reason when an object is refused (``InvalidObject``), so it can be fixed at the
township rather than vanish.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

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

ACCEPTED_SOP_CLASSES: dict[str, str] = {**ECG_SOP_CLASSES, **IMAGE_SOP_CLASSES}


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

    @property
    def is_ecg(self) -> bool:
        return self.sop_class_uid in ECG_SOP_CLASSES

    def __repr__(self) -> str:
        return f"DicomInfo(sop_class={self.sop_class_uid}, sop_instance={self.sop_instance_uid})"


def _str(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value not in (None, "") else ""
    return text or None


def _require_part10(data: bytes) -> None:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidObject("not a DICOM Part 10 file: no 128-byte preamble and 'DICM' prefix")


def read_part10(data: bytes) -> Dataset:
    """Parse a DICOM Part 10 file, turning pydicom's complaints (truncation is only a warning
    there) into ``InvalidObject``."""
    _require_part10(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns (not raises) on a truncated file
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:
            raise InvalidObject(f"malformed DICOM: {exc}") from exc
    return ds


def _check_pixels(ds: Dataset) -> None:
    """Refuse image objects whose pixel data is shorter than their header promises."""
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
        return
    expected = rows * cols * spp * frames * bits // 8
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        expected = expected * 2 // 3
    actual = len(ds.PixelData)
    if actual < expected:
        raise InvalidObject(f"Pixel Data is {actual} bytes, {expected} expected for "
                            f"{frames} frame(s) of {rows}x{cols}x{spp} at {bits} bits: truncated")


_META_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"


def _data_set_offset(data: bytes) -> int | None:
    """Where the data set starts, from the File Meta Information Group Length (None if absent)."""
    if data[132:140] != _META_GROUP_LENGTH:
        return None
    return 144 + int.from_bytes(data[140:144], "little")


def _header(data: bytes) -> Dataset:
    """File meta and the elements up to the Study/Series UIDs only: enough to file the object."""
    from pydicom.filereader import read_partial

    _require_part10(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return read_partial(io.BytesIO(data), stop_when=lambda tag, vr, length: tag > 0x0020FFFF)
        except Exception as exc:
            raise InvalidObject(f"malformed DICOM: {exc}") from exc


def _check_waveform_fast(data: bytes, ts: str) -> bool:
    """Structural check of an ECG object without building pydicom datasets; False when the
    transfer syntax needs the pydicom path instead."""
    from telediag.dicom_scan import MalformedDataSet, waveform_groups
    from telediag.ecg.io import check_waveform_group
    from telediag.ecg.recording import WaveformError

    offset = _data_set_offset(data)
    if offset is None:
        return False
    try:
        groups = waveform_groups(data, offset, ts)
    except MalformedDataSet as exc:
        raise InvalidObject(f"malformed DICOM: {exc}") from exc
    if groups is None:
        return False
    if not groups:
        raise InvalidObject("ECG waveform is invalid: object has no Waveform Sequence")
    try:
        for index, group in enumerate(groups):
            check_waveform_group(group, index)
    except WaveformError as exc:
        raise InvalidObject(f"ECG waveform is invalid: {exc}") from exc
    return True


def inspect(data: bytes, thorough: bool = False) -> DicomInfo:
    """Parse and validate one received object; raise ``InvalidObject`` with the reason.

    ECG objects in little-endian transfer syntaxes are checked structurally (every length
    fits, every waveform group's data matches its declared channels x samples x bits), which
    is fast enough for the C-STORE path; the full decode into millivolts happens in the
    analysis worker. ``thorough`` decodes the waveform here too (the HTTP upload does, as it
    can afford the few milliseconds), as does any other transfer syntax.
    """
    ds = read_part10(data) if thorough else _header(data)
    meta = ds.file_meta
    sop_class = str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
    sop_instance = str(ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID") or "")
    if not sop_class or not sop_instance:
        raise InvalidObject("object has no SOP Class UID or SOP Instance UID")
    if sop_class not in ACCEPTED_SOP_CLASSES:
        raise InvalidObject(f"SOP class {sop_class} is not accepted by telediag")
    study, series = _str(ds, "StudyInstanceUID"), _str(ds, "SeriesInstanceUID")
    if not study or not series:
        raise InvalidObject("object has no Study or Series Instance UID")
    ts = str(meta.get("TransferSyntaxUID", ""))
    if sop_class in ECG_SOP_CLASSES:
        if thorough or not _check_waveform_fast(data, ts):
            from telediag.ecg.io import read_dicom_waveform
            from telediag.ecg.recording import WaveformError

            try:
                read_dicom_waveform(ds if thorough else read_part10(data))
            except WaveformError as exc:
                raise InvalidObject(f"ECG waveform is invalid: {exc}") from exc
    else:
        _check_pixels(ds if thorough else read_part10(data))
    return DicomInfo(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=study,
        series_instance_uid=series,
        transfer_syntax_uid=ts,
        modality=_str(ds, "Modality"),
        patient_id=_str(ds, "PatientID"),
        patient_name=_str(ds, "PatientName"),
        patient_sex=(_str(ds, "PatientSex") or "")[:1] or None,
        patient_birth_date=_str(ds, "PatientBirthDate"),
    )
