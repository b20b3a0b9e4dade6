"""Readers: every ECG file format a township cart produces, to one :class:`Recording`.

Each reader is a pure function from bytes (or a WFDB record's files) to a ``Recording``
with leads in mV, and raises :class:`WaveformError` naming the format, the section and
the fault for anything it cannot read. The format is detected from the content, never
from a file name, because carts and operators name files arbitrarily.

| format        | module      | detected by                                     |
|---------------|-------------|-------------------------------------------------|
| ``dicom``     | ``dicom``   | Part 10 preamble ``DICM``                        |
| ``scp-ecg``   | ``scpecg``  | section 0 header (``SCPECG`` tag or pointer table) |
| ``hl7-aecg``  | ``aecg``    | XML root ``AnnotatedECG``                         |
| ``ge-muse``   | ``muse``    | XML root ``RestingECG``                           |
| ``philips-xml`` | ``philips`` | XML root ``restingecgdata``                     |
| ``wfdb``      | ``wfdb``    | a ``.hea`` header with its signal files (several files, so not by ``read_bytes``) |

This package is the only place in ``telediag.ecg`` that reads files.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

from ..recording import Recording, WaveformError
from .dicom import check_waveform_group, read_dicom_waveform
from .leads import normalise_lead_name
from .wfdb import read_wfdb, read_wfdb_files

__all__ = ["read_bytes", "read_recording", "detect_format", "read_wfdb", "read_wfdb_files",
           "read_dicom_waveform", "check_waveform_group", "normalise_lead_name", "SINGLE_FILE_FORMATS"]

#: format -> "module:reader function"; imported on first use, so a process that only
#: ingests DICOM never loads the XML readers.
_READERS: dict[str, str] = {
    "dicom": "dicom:read_dicom_waveform",
    "scp-ecg": "scpecg:read_scp_ecg",
    "hl7-aecg": "aecg:read_hl7_aecg",
    "ge-muse": "muse:read_ge_muse",
    "philips-xml": "philips:read_philips_xml",
}
#: Formats one file holds whole (every format but WFDB).
SINGLE_FILE_FORMATS: tuple[str, ...] = tuple(_READERS)
_XML_ROOTS = {"AnnotatedECG": "hl7-aecg", "RestingECG": "ge-muse", "restingecgdata": "philips-xml"}


def _reader(fmt: str) -> Callable[[bytes], Recording]:
    module, name = _READERS[fmt].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def detect_format(data: bytes) -> str | None:
    """The format of a single ECG file from its first bytes, or None when it is none we read."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    from .scpecg import looks_like_scp_ecg
    from ._xml import root_tag

    if looks_like_scp_ecg(data):
        return "scp-ecg"
    return _XML_ROOTS.get(root_tag(data) or "")


def read_bytes(data: bytes) -> tuple[str, Recording]:
    """Detect the format of one ECG file and read it; returns (format, recording)."""
    fmt = detect_format(data)
    if fmt is None:
        raise WaveformError("unsupported ECG file format (not DICOM, SCP-ECG, HL7 aECG, GE MUSE XML or Philips XML); "
                            "a WFDB record is uploaded as its .hea and signal files")
    return fmt, _reader(fmt)(data)


def read_recording(path: str | os.PathLike) -> Recording:
    """Read any supported ECG file from disk: a WFDB record (``.hea``, ``.dat`` or the bare
    record name) or any single-file format, detected from its content."""
    p = Path(path)
    if p.suffix.lower() in {".hea", ".dat"} or Path(f"{p}.hea").is_file():
        return read_wfdb(p)
    if not p.is_file():
        raise WaveformError(f"file {p.name!r} not found")
    return read_bytes(p.read_bytes())[1]
