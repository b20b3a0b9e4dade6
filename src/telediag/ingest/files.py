"""Validation of the ECG files that arrive over HTTP: WFDB records and vendor exports.

Each is read in full with the same reader the analysis worker uses, so a truncated or
corrupt file is refused at upload, while the device can still send it again, rather than
failing later in a worker where nobody at the township sees it.
"""

from __future__ import annotations

from telediag.domain import MediaType
from telediag.ecg import RecordingSource, WaveformError
from telediag.ingest.dicom import InvalidObject

_SAFE_NAME = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def wfdb_media_type(name: str, header_name: str) -> str:
    if name == header_name:
        return MediaType.WFDB_HEADER
    if name.endswith(".dat") or name.endswith(".mat"):
        return MediaType.WFDB_SIGNAL
    return MediaType.WFDB_ANNOTATION


def validate_wfdb(files: dict[str, bytes]) -> tuple[str, str]:
    """Check that ``files`` hold one complete, readable WFDB record; return (header file, record name)."""
    for name in files:
        if not name or set(name) - _SAFE_NAME or name.startswith("."):
            raise InvalidObject(f"file name {name!r} is not allowed (letters, digits, '.', '_', '-')")
    headers = [n for n in files if n.endswith(".hea")]
    if len(headers) != 1:
        raise InvalidObject(f"a WFDB upload needs exactly one .hea header file, got {len(headers)}")
    header_name = headers[0]
    record_name = header_name[:-4]
    from telediag.ecg.readers import read_wfdb_files

    try:
        read_wfdb_files(files, record_name)
    except WaveformError as exc:
        raise InvalidObject(f"WFDB record {record_name} is invalid: {exc}") from exc
    except Exception as exc:
        raise InvalidObject(f"WFDB record {record_name} cannot be read: {type(exc).__name__}: {exc}") from exc
    return header_name, record_name


def validate_ecg_file(data: bytes) -> tuple[str, RecordingSource]:
    """Detect and read one ECG file in full; return its format and what it says of the exam.

    A DICOM file is only detected here (the DICOM path validates it); any other format is
    decoded completely, so the reason of a refusal names the format and the section.
    """
    from telediag.ecg.readers import detect_format, read_bytes

    fmt = detect_format(data)
    if fmt == "dicom":
        return fmt, RecordingSource(format="dicom")
    try:
        fmt, recording = read_bytes(data)
    except WaveformError as exc:
        raise InvalidObject(str(exc)) from exc
    except Exception as exc:  # a reader's own bug must still be a clear refusal, not a 500
        raise InvalidObject(f"{fmt or 'ECG file'} cannot be read: {type(exc).__name__}") from exc
    return fmt, recording.source
