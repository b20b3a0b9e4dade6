"""Readers: turn WFDB records and DICOM waveform objects into a :class:`Recording`.

Everything that can go wrong with uploaded input is reported as
:class:`WaveformError` with a message fit to send back to the device, because
ingest uses these readers as the validation gate for ECG uploads. The readers
do their own consistency checks (file sizes, sample counts, units) instead of
trusting the parsing libraries, which silently accept some broken inputs.
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .recording import Recording, WaveformError

__all__ = ["read_wfdb", "read_wfdb_files", "read_dicom_waveform", "read_recording", "normalise_lead_name",
           "check_waveform_group"]

# --------------------------------------------------------------------------
# Lead names
# --------------------------------------------------------------------------

# SCP-ECG lead codes (EN 1064 / ISO 11073-91064), shared by the DICOM CID 3001
# "SCPECG 5.6.3-9-N" codes and the MDC "2:N" ECG lead codes (MDC_ECG_LEAD_*).
_SCP_LEADS: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    9: "V7", 10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R",
    16: "X", 17: "Y", 18: "Z", 19: "CC5", 20: "CM5", 21: "LA", 22: "RA", 23: "LL",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR", 66: "V8", 67: "V9",
    68: "V8R", 69: "V9R",
}
_CANONICAL = {name.upper(): name for name in _SCP_LEADS.values()}
_CANONICAL.update({"MLII": "MLII", "MLI": "MLI", "MLIII": "MLIII"})
_SCP_CODE = re.compile(r"^5\.6\.3-9-(\d+)$")
_MDC_CODE = re.compile(r"^2:(\d+)$")


def normalise_lead_name(name: str) -> str:
    """Map vendor spellings ("Lead I (Einthoven)", "lead avr", "MDC_ECG_LEAD_V1") to "I", "aVR", "V1".

    Unknown names are returned stripped but otherwise unchanged, so that no
    information is lost for leads we do not recognise.
    """
    s = name.strip()
    s = re.sub(r"\s*\(.*?\)\s*", "", s)  # "(Einthoven)", "(Goldberger)", ...
    s = re.sub(r"^(MDC_ECG_LEAD_|LEAD\s*)", "", s, flags=re.IGNORECASE).strip()
    return _CANONICAL.get(s.upper(), s or name.strip())


def _lead_from_channel(ch: Dataset, index: int) -> str:
    """Lead name from a DICOM channel definition: codes first (unambiguous), then text."""
    src = ch.get("ChannelSourceSequence")
    if src:
        item = src[0]
        value = str(item.get("CodeValue", "")).strip()
        for pattern in (_SCP_CODE, _MDC_CODE):
            m = pattern.match(value)
            if m and int(m.group(1)) in _SCP_LEADS:
                return _SCP_LEADS[int(m.group(1))]
        meaning = str(item.get("CodeMeaning", "")).strip()
        if meaning:
            return normalise_lead_name(meaning)
        if value:
            return normalise_lead_name(value)
    label = str(ch.get("ChannelLabel", "")).strip()
    return normalise_lead_name(label) if label else f"CH{index + 1}"


# --------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------

_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6, "kv": 1e6}
# Non-voltage channels that legitimately share a waveform object with ECG
# (e.g. Hemodynamic Waveform: pressures, respiration). They are dropped, not
# rejected; a unit we know nothing about is an error.
_NON_ECG_UNITS = {
    "mm[hg]", "mmhg", "kpa", "cm[h2o]", "cmh2o", "%", "cel", "degc", "l/min", "ml/s",
    "l/s", "ml", "l", "ohm", "{beats}/min", "/min", "1/min", "nu", "1", "{ratio}",
}


def _mv_factor(unit: str) -> float | None:
    """Multiplier to millivolts, or None for a known non-voltage unit.

    Raises WaveformError for units we cannot interpret, so that a wrongly
    scaled trace never reaches the analysis.
    """
    key = unit.strip().replace("\u00b5", "µ").lower()
    if key in _TO_MV:
        return _TO_MV[key]
    if key in _NON_ECG_UNITS:
        return None
    raise WaveformError(f"unknown signal units {unit.strip()!r}; expected uV, mV or V")


# --------------------------------------------------------------------------
# WFDB
# --------------------------------------------------------------------------

# Bytes per stored sample for the uncompressed WFDB formats; FLAC formats
# (508/516/524) have no fixed size, so they are not size-checked.
_WFDB_BYTES_PER_SAMPLE = {
    "8": 1.0, "16": 2.0, "24": 3.0, "32": 4.0, "61": 2.0, "80": 1.0, "160": 2.0,
    "212": 1.5, "310": 4.0 / 3.0, "311": 4.0 / 3.0,
}


def _record_base(path: str | os.PathLike) -> str:
    p = Path(path)
    if p.suffix.lower() in {".hea", ".dat"}:
        p = p.with_suffix("")
    return str(p)


def _check_wfdb_files(header: Any, directory: Path) -> None:
    """Verify every signal file exists and is long enough for the header's sample count.

    wfdb may return zero-filled or shortened arrays for truncated files; a
    short upload must be refused rather than analysed as a flat line.
    """
    sig_len = header.sig_len
    if header.n_sig == 0:
        raise WaveformError("WFDB header declares no signals")
    if sig_len is not None and sig_len <= 0:
        raise WaveformError("WFDB record has zero samples")
    # Group signals by file; one file may hold several interleaved signals.
    files: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name):
        files.setdefault(name, []).append(i)
    for name, idx in files.items():
        fpath = directory / name
        if not fpath.is_file():
            raise WaveformError(f"signal file {name!r} named in the header is missing")
        fmt = str(header.fmt[idx[0]])
        bps = _WFDB_BYTES_PER_SAMPLE.get(fmt)
        if bps is None or sig_len is None:
            continue
        spf = sum(int(header.samps_per_frame[i] or 1) for i in idx)
        offset = int(header.byte_offset[idx[0]] or 0)
        needed = offset + math.ceil(sig_len * spf * bps)
        actual = fpath.stat().st_size
        if actual < needed:
            raise WaveformError(
                f"signal file {name!r} is truncated: {actual} bytes, header needs {needed}"
            )


def _wfdb_start(header: Any) -> datetime | None:
    if header.base_date is not None and header.base_time is not None:
        return datetime.combine(header.base_date, header.base_time)
    return None


def read_wfdb(path: str | os.PathLike) -> Recording:
    """Read a WFDB record (single- or multi-segment, any storage format) in mV.

    ``path`` is the record path without extension, or the ``.hea`` file.
    Channels whose units are not voltages (e.g. blood pressure) are dropped.
    """
    import wfdb  # local import: only WFDB users pay its import time

    base = _record_base(path)
    directory = Path(base).parent
    name = Path(base).name
    if not (directory / f"{name}.hea").is_file():
        raise WaveformError(f"WFDB header {name}.hea not found")
    try:
        header = wfdb.rdheader(base)
    except Exception as exc:  # wfdb raises many types for bad headers
        raise WaveformError(f"malformed WFDB header: {exc}") from exc

    try:
        if isinstance(header, wfdb.MultiRecord):
            if not header.sig_len:
                raise WaveformError("WFDB record has zero samples")
            for seg_name, seg_len in zip(header.seg_name, header.seg_len):
                if seg_name == "~" or seg_len == 0:
                    continue
                try:
                    seg = wfdb.rdheader(str(directory / seg_name))
                except FileNotFoundError as exc:
                    raise WaveformError(f"segment header {seg_name}.hea is missing") from exc
                _check_wfdb_files(seg, directory)
        else:
            _check_wfdb_files(header, directory)
        record = wfdb.rdrecord(base, physical=True, m2s=True, smooth_frames=True)
    except WaveformError:
        raise
    except Exception as exc:
        raise WaveformError(f"cannot read WFDB record: {exc}") from exc

    signal = record.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[0] == 0 or signal.shape[1] == 0:
        raise WaveformError("WFDB record has zero samples")
    expected = header.sig_len
    if expected is not None and signal.shape[0] != expected:
        raise WaveformError(
            f"WFDB record has {signal.shape[0]} samples, header declares {expected}"
        )
    units = list(record.units or ["mV"] * signal.shape[1])
    columns, leads = [], []
    for j in range(signal.shape[1]):
        factor = _mv_factor(units[j] or "mV")
        if factor is None:
            continue
        columns.append(signal[:, j].astype(np.float64) * factor)
        leads.append(normalise_lead_name(str(record.sig_name[j])))
    if not columns:
        raise WaveformError("WFDB record has no voltage (ECG) channels")
    return Recording(
        fs=float(record.fs),
        leads=tuple(leads),
        signals=np.column_stack(columns),
        start_time=_wfdb_start(header),
    )


# --------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------

_DICOM_DTYPES = {
    (8, "SB"): "i1", (8, "UB"): "u1",
    (16, "SS"): "<i2", (16, "US"): "<u2",
    (32, "SL"): "<i4", (32, "UL"): "<u4",
    (64, "SV"): "<i8", (64, "UV"): "<u8",
}


def _group_dtype(group: Dataset, index: int) -> np.dtype:
    bits = group.get("WaveformBitsAllocated")
    interp = str(group.get("WaveformSampleInterpretation", "")).strip()
    key = (int(bits) if bits is not None else -1, interp)
    if key not in _DICOM_DTYPES:
        raise WaveformError(
            f"waveform group {index + 1}: unsupported sample encoding "
            f"{bits} bits allocated / interpretation {interp or 'missing'!r}"
        )
    dtype = np.dtype(_DICOM_DTYPES[key])
    return dtype


def check_waveform_group(group: Dataset, index: int) -> tuple[int, int, np.dtype]:
    """Structural checks for one multiplex group; returns (n_channels, n_samples, dtype)."""
    n_ch = group.get("NumberOfWaveformChannels")
    n_s = group.get("NumberOfWaveformSamples")
    if not n_ch or not n_s:
        raise WaveformError(f"waveform group {index + 1} has no channels or no samples")
    n_ch, n_s = int(n_ch), int(n_s)
    defs = group.get("ChannelDefinitionSequence") or []
    if len(defs) != n_ch:
        raise WaveformError(
            f"waveform group {index + 1}: {n_ch} channels declared but "
            f"{len(defs)} channel definitions present"
        )
    dtype = _group_dtype(group, index)
    data = group.get("WaveformData")
    if data is None or len(data) == 0:
        raise WaveformError(f"waveform group {index + 1} has empty waveform data")
    expected = n_ch * n_s * dtype.itemsize
    # DICOM pads odd-length values with one byte; anything else is a mismatch
    # between the declared sample count and the data actually sent.
    if not (len(data) == expected or (expected % 2 == 1 and len(data) == expected + 1)):
        raise WaveformError(
            f"waveform group {index + 1}: data length {len(data)} bytes does not match "
            f"{n_ch} channels x {n_s} samples x {dtype.itemsize} bytes = {expected}"
        )
    fs = group.get("SamplingFrequency")
    if fs is None or not float(fs) > 0:
        raise WaveformError(f"waveform group {index + 1} has no valid sampling frequency")
    return n_ch, n_s, dtype


def _pick_group(groups: list[Dataset]) -> int:
    """Index of the rhythm group: original data first, 'RHYTHM' label, then longest.

    Carts add derived groups (median/average beats) that must never be
    analysed as if they were the patient's rhythm.
    """

    def score(i: int) -> tuple[int, int, float, int]:
        g = groups[i]
        label = str(g.get("MultiplexGroupLabel", "")).upper()
        original = str(g.get("WaveformOriginality", "ORIGINAL")).upper() != "DERIVED"
        derived_label = any(k in label for k in ("MEDIAN", "AVERAGE", "TEMPLATE"))
        duration = int(g.NumberOfWaveformSamples) / float(g.SamplingFrequency)
        return (int(original and not derived_label), int("RHYTHM" in label), duration,
                int(g.NumberOfWaveformChannels))

    return max(range(len(groups)), key=score)


def _dicom_start(ds: Dataset, group: Dataset) -> datetime | None:
    """Acquisition start plus the group's time offset, if the object says when."""
    try:
        if "AcquisitionDateTime" in ds and ds.AcquisitionDateTime:
            start = pydicom.valuerep.DT(ds.AcquisitionDateTime)
        elif ds.get("ContentDate") and ds.get("ContentTime"):
            start = pydicom.valuerep.DT(f"{ds.ContentDate}{ds.ContentTime}")
        else:
            return None
        start = datetime(start.year, start.month, start.day, start.hour, start.minute,
                         start.second, start.microsecond, start.tzinfo)
    except (ValueError, TypeError):
        return None
    offset_ms = group.get("MultiplexGroupTimeOffset")
    if offset_ms:
        start += timedelta(milliseconds=float(offset_ms))
    return start


def _load_dataset(source: Dataset | str | os.PathLike | bytes) -> Dataset:
    if isinstance(source, Dataset):
        return source
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return pydicom.dcmread(io.BytesIO(bytes(source)), force=True)
        return pydicom.dcmread(os.fspath(source), force=True)
    except FileNotFoundError as exc:
        raise WaveformError("DICOM file not found") from exc
    except Exception as exc:
        raise WaveformError(f"not a readable DICOM object: {exc}") from exc


def read_dicom_waveform(source: Dataset | str | os.PathLike | bytes) -> Recording:
    """Decode the rhythm multiplex group of a DICOM ECG waveform into mV.

    Works for 12-lead, General and Ambulatory ECG and for ECGs stored under
    Hemodynamic Waveform. Physical value = raw x ChannelSensitivity x
    ChannelSensitivityCorrectionFactor + ChannelBaseline (PS3.3 C.10.9.1.4),
    converted from the channel's UCUM units to millivolts. Non-voltage channels
    (pressures etc.) are dropped.
    """
    ds = _load_dataset(source)
    try:
        groups = list(ds.get("WaveformSequence") or [])
    except Exception as exc:
        raise WaveformError(f"waveform sequence cannot be parsed: {exc}") from exc
    if not groups:
        raise WaveformError("DICOM object has no waveform sequence (not a waveform object)")
    try:
        shapes = [check_waveform_group(g, i) for i, g in enumerate(groups)]
        gi = _pick_group(groups)
        group = groups[gi]
        n_ch, n_s, dtype = shapes[gi]
        raw = np.frombuffer(bytes(group.WaveformData)[: n_ch * n_s * dtype.itemsize],
                            dtype=dtype).reshape(n_s, n_ch)
        columns, leads = [], []
        for j, ch in enumerate(group.ChannelDefinitionSequence):
            units_seq = ch.get("ChannelSensitivityUnitsSequence")
            if not units_seq or not units_seq[0].get("CodeValue"):
                raise WaveformError(f"channel {j + 1} has no sensitivity units")
            factor = _mv_factor(str(units_seq[0].CodeValue))
            if factor is None:
                continue
            if ch.get("ChannelSensitivity") in (None, ""):
                raise WaveformError(f"channel {j + 1} has no channel sensitivity")
            sens = float(ch.ChannelSensitivity)
            corr = float(ch.get("ChannelSensitivityCorrectionFactor") or 1.0)
            base = float(ch.get("ChannelBaseline") or 0.0)
            if not (math.isfinite(sens) and sens != 0 and math.isfinite(corr) and corr != 0):
                raise WaveformError(f"channel {j + 1} has an invalid sensitivity")
            columns.append((raw[:, j].astype(np.float64) * (sens * corr) + base) * factor)
            leads.append(_lead_from_channel(ch, j))
        if not columns:
            raise WaveformError("waveform has no voltage (ECG) channels")
        return Recording(
            fs=float(group.SamplingFrequency),
            leads=tuple(leads),
            signals=np.column_stack(columns),
            start_time=_dicom_start(ds, group),
        )
    except WaveformError:
        raise
    except Exception as exc:  # malformed elements (bad DS strings, wrong VRs, ...)
        raise WaveformError(f"malformed waveform definition: {exc}") from exc


# --------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------


def read_wfdb_files(files: Mapping[str, bytes], record_name: str) -> Recording:
    """Read a WFDB record held in memory as ``{file name: bytes}`` (an upload, or files
    fetched from the object store); the wfdb package reads only from disk, hence the
    temporary folder."""
    with tempfile.TemporaryDirectory(prefix="telediag-wfdb-") as tmp:
        for name, data in files.items():
            Path(tmp, Path(name).name).write_bytes(data)
        return read_wfdb(Path(tmp, record_name))


def read_recording(path: str | os.PathLike) -> Recording:
    """Read any supported ECG file: WFDB (``.hea``, ``.dat`` or bare record name) or DICOM."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in {".hea", ".dat"} or Path(f"{p}.hea").is_file():
        return read_wfdb(p)
    if not p.is_file():
        raise WaveformError(f"file {p.name!r} not found")
    with open(p, "rb") as fh:
        head = fh.read(132)
    if suffix in {".dcm", ".dicom"} or head[128:132] == b"DICM":
        return read_dicom_waveform(p)
    raise WaveformError(f"unsupported ECG file format for {p.name!r}")
