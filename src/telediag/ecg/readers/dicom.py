"""DICOM waveform objects (12-lead, General, Ambulatory ECG; ECGs under Hemodynamic) in mV."""

from __future__ import annotations

import io
import math
import os
from datetime import datetime, timedelta

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..recording import Recording, RecordingSource, WaveformError
from .leads import mv_factor, scp_lead_name, normalise_lead_name

__all__ = ["read_dicom_waveform", "check_waveform_group"]



def _lead_from_channel(ch: Dataset, index: int) -> str:
    """Lead name from a DICOM channel definition: codes first (unambiguous), then text."""
    src = ch.get("ChannelSourceSequence")
    if src:
        item = src[0]
        value = str(item.get("CodeValue", "")).strip()
        coded = scp_lead_name(value) if value and not value.isdigit() else None
        if coded:
            return coded
        meaning = str(item.get("CodeMeaning", "")).strip()
        if meaning:
            return normalise_lead_name(meaning)
        if value:
            return normalise_lead_name(value)
    label = str(ch.get("ChannelLabel", "")).strip()
    return normalise_lead_name(label) if label else f"CH{index + 1}"

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


#: DICOM waveform annotation concept names (CodeMeaning) of the cart's global measurements.
_CART_MEASUREMENTS = {"PR Interval": "pr_ms", "QRS Duration": "qrs_ms", "QT Interval": "qt_ms",
                      "QTc Interval": "qtc_ms", "QRS Axis": "qrs_axis_deg", "P Axis": "p_axis_deg",
                      "T Axis": "t_axis_deg", "Heart Rate": "heart_rate_bpm", "Ventricular Heart Rate":
                      "heart_rate_bpm"}


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value not in (None, "") else ""
    return text or None


def _source(ds: Dataset) -> RecordingSource:
    """The cart's identity, the patient as sent, and the cart's own measurements and
    statements from the Waveform Annotation Sequence (numeric values by concept name;
    unlinked text annotations as statements)."""
    measurements: dict[str, float] = {}
    statements: list[str] = []
    for item in ds.get("WaveformAnnotationSequence") or []:
        code = item.get("ConceptNameCodeSequence")
        if code and item.get("NumericValue") is not None:
            key = _CART_MEASUREMENTS.get(str(code[0].get("CodeMeaning", "")).strip())
            if key and key not in measurements:
                try:
                    measurements[key] = float(item.NumericValue)
                except (TypeError, ValueError):
                    continue
        elif item.get("UnformattedTextValue"):
            statements.append(str(item.UnformattedTextValue).strip())
    sex = (_text(ds, "PatientSex") or "")[:1] or None
    return RecordingSource(format="dicom", patient_id=_text(ds, "PatientID"), patient_name=_text(ds, "PatientName"),
                           patient_sex=sex, patient_birth_date=_text(ds, "PatientBirthDate"),
                           manufacturer=_text(ds, "Manufacturer"), model=_text(ds, "ManufacturerModelName"),
                           serial=_text(ds, "DeviceSerialNumber"), measurements=measurements,
                           statements=tuple(statements))


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
            factor = mv_factor(str(units_seq[0].CodeValue))
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
        return Recording.from_channels(float(group.SamplingFrequency), leads, columns, "waveform",
                                       start_time=_dicom_start(ds, group), source=_source(ds))
    except WaveformError:
        raise
    except Exception as exc:  # malformed elements (bad DS strings, wrong VRs, ...)
        raise WaveformError(f"malformed waveform definition: {exc}") from exc


