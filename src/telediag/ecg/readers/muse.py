"""GE MUSE RestingECG XML: the export of GE's MUSE ECG management system (MAC carts).

Each ``Waveform`` block (``Rhythm`` = the 10-s recording, ``Median`` = the representative
beat) holds one ``LeadData`` per stored lead: base64 little-endian int16 samples with their
scale (``LeadAmplitudeUnitsPerBit`` in ``LeadAmplitudeUnits``), byte count and CRC-32.
GE stores 8 leads (I, II, V1-V6); III, aVR, aVL and aVF are linear combinations of I and
II and are derived here, as the MUSE viewer does. The byte count and CRC are checked so
that a payload damaged in transit is refused instead of analysed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zlib
from datetime import datetime

import numpy as np

from ..recording import Recording, RecordingSource, WaveformError
from ._xml import base64_payload, number, parse, stack_columns, standard_order, text
from .leads import mv_factor, normalise_lead_name

__all__ = ["read_ge_muse"]

_FORMAT = "GE MUSE XML"
_UNITS = {"MICROVOLTS": "uV", "MILLIVOLTS": "mV", "VOLTS": "V", "NANOVOLTS": "nV"}
_MEASUREMENTS = {"VentricularRate": "heart_rate_bpm", "PRInterval": "pr_ms", "QRSDuration": "qrs_ms",
                 "QTInterval": "qt_ms", "QTCorrected": "qtc_ms", "PAxis": "p_axis_deg",
                 "RAxis": "qrs_axis_deg", "TAxis": "t_axis_deg"}


def _int(el: ET.Element, tag: str, section: str) -> int | None:
    raw = text(el, tag)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise WaveformError(f"{tag} is not an integer", format=_FORMAT, section=section) from None


def _lead(lead_data: ET.Element, section: str) -> tuple[str, np.ndarray]:
    """One ``LeadData``: (lead name, samples in mV), after checking byte count and CRC-32."""
    name = text(lead_data, "LeadID")
    if name is None:
        raise WaveformError("LeadData has no LeadID", format=_FORMAT, section=section)
    name = normalise_lead_name(name)
    section = f"{section}/LeadData[{name}]"
    payload = text(lead_data, "WaveFormData")
    if payload is None:
        raise WaveformError(f"lead {name} has no WaveFormData", format=_FORMAT, section=section)
    raw = base64_payload(payload, format=_FORMAT, section=section)
    n_bytes = _int(lead_data, "LeadByteCountTotal", section)
    if n_bytes is not None and n_bytes != len(raw):
        raise WaveformError(f"lead {name}: LeadByteCountTotal is {n_bytes} but WaveFormData holds {len(raw)} bytes",
                            format=_FORMAT, section=section)
    crc = _int(lead_data, "LeadDataCRC32", section)
    if crc is not None and crc != zlib.crc32(raw):
        raise WaveformError(f"lead {name}: CRC-32 mismatch (data damaged)", format=_FORMAT, section=section)
    sample_size = _int(lead_data, "LeadSampleSize", section) or 2
    if sample_size != 2 or len(raw) % 2:
        raise WaveformError(f"lead {name}: only 2-byte samples are supported", format=_FORMAT, section=section)
    per_bit = number(text(lead_data, "LeadAmplitudeUnitsPerBit"))
    if per_bit is None or per_bit <= 0:
        raise WaveformError(f"lead {name}: missing or invalid LeadAmplitudeUnitsPerBit",
                            format=_FORMAT, section=section)
    unit_text = text(lead_data, "LeadAmplitudeUnits")
    if unit_text is None:
        raise WaveformError(f"lead {name}: missing LeadAmplitudeUnits", format=_FORMAT, section=section)
    try:
        to_mv = mv_factor(_UNITS.get(unit_text.upper(), unit_text))
    except WaveformError as exc:
        raise WaveformError(f"lead {name}: {exc.reason}", format=_FORMAT, section=section) from None
    if to_mv is None:
        raise WaveformError(f"lead {name} is not a voltage ({unit_text})", format=_FORMAT, section=section)
    return name, np.frombuffer(raw, dtype="<i2") * (per_bit * to_mv)


def _waveform(wf: ET.Element, kind: str) -> tuple[float, tuple[str, ...], np.ndarray]:
    """One ``Waveform`` block as (fs, leads, (n, n_leads) mV), limb leads derived from I and II."""
    section = f"Waveform[{kind}]"
    base = number(text(wf, "SampleBase"))
    exponent = number(text(wf, "SampleExponent")) or 0.0
    if base is None or base <= 0:
        raise WaveformError("missing or invalid SampleBase", format=_FORMAT, section=section)
    fs = base * 10.0 ** exponent
    leads: dict[str, np.ndarray] = {}
    for lead_data in wf.iter("LeadData"):
        name, samples = _lead(lead_data, section)
        if name in leads:
            raise WaveformError(f"lead {name} is stored twice", format=_FORMAT, section=section)
        leads[name] = samples
    if not leads:
        raise WaveformError("no LeadData", format=_FORMAT, section=section)
    if "I" in leads and "II" in leads and len(leads["I"]) == len(leads["II"]):
        lead_i, lead_ii = leads["I"], leads["II"]
        leads.setdefault("III", lead_ii - lead_i)
        leads.setdefault("aVR", -(lead_i + lead_ii) / 2)
        leads.setdefault("aVL", lead_i - lead_ii / 2)
        leads.setdefault("aVF", lead_ii - lead_i / 2)
    names = standard_order(list(leads))
    return fs, tuple(names), stack_columns([leads[n] for n in names])


def _waveforms(root: ET.Element) -> dict[str, ET.Element]:
    """The first Waveform block of each type, keyed by lowercased WaveformType."""
    found: dict[str, ET.Element] = {}
    for wf in root.iter("Waveform"):
        found.setdefault((text(wf, "WaveformType") or "").lower(), wf)
    return found


def _statements(root: ET.Element) -> tuple[str, ...]:
    """Diagnosis statements (the confirmed ``Diagnosis``, else ``OriginalDiagnosis``).

    MUSE splits a printed line into several ``DiagnosisStatement`` fragments; only the one
    flagged ``ENDSLINE`` closes the line, so fragments are joined up to that flag.
    """
    block = root.find("Diagnosis")
    if block is None or block.find("DiagnosisStatement") is None:
        block = root.find("OriginalDiagnosis")
    if block is None:
        return ()
    lines: list[str] = []
    current: list[str] = []
    for stmt in block.iter("DiagnosisStatement"):
        fragment = text(stmt, "StmtText")
        if fragment:
            current.append(fragment)
        flags = {(f.text or "").strip().upper() for f in stmt.iter("StmtFlag")}
        if "ENDSLINE" in flags and current:
            lines.append(" ".join(current))
            current = []
    if current:
        lines.append(" ".join(current))
    return tuple(lines)


def _date(value: str | None) -> str | None:
    """MUSE dates are MM-DD-YYYY; the Recording contract wants YYYYMMDD."""
    m = re.fullmatch(r"(\d{1,2})[-/](\d{1,2})[-/](\d{4})", value or "")
    return f"{m.group(3)}{int(m.group(1)):02d}{int(m.group(2)):02d}" if m else None


def _start_time(root: ET.Element) -> datetime | None:
    date, time = text(root, "TestDemographics/AcquisitionDate"), text(root, "TestDemographics/AcquisitionTime")
    try:
        return datetime.strptime(f"{date} {time}", "%m-%d-%Y %H:%M:%S") if date and time else None
    except ValueError:
        return None


def _source(root: ET.Element, median: tuple[float, tuple[str, ...], np.ndarray] | None) -> RecordingSource:
    patient = root.find("PatientDemographics")
    last, first = text(patient, "PatientLastName"), text(patient, "PatientFirstName")
    name = f"{last or ''}^{first or ''}".strip("^") or None
    sex = {"MALE": "M", "FEMALE": "F"}.get((text(patient, "Gender") or "").upper())
    block = root.find("RestingECGMeasurements")
    measurements = {}
    for tag, key in _MEASUREMENTS.items():
        value = number(text(block, tag)) if block is not None else None
        if value is not None:
            measurements[key] = value
    return RecordingSource(
        format="ge-muse",
        patient_id=text(patient, "PatientID") if patient is not None else None,
        patient_name=name,
        patient_sex=sex,
        patient_birth_date=_date(text(patient, "DateofBirth")) if patient is not None else None,
        model=text(root, "TestDemographics/AcquisitionDevice"),
        serial=text(root, "TestDemographics/CartNumber") or text(root, "PharmaData/PharmaCartID"),
        measurements=measurements,
        statements=_statements(root),
        median_beats=median,
    )


def read_ge_muse(data: bytes) -> Recording:
    """Read a GE MUSE RestingECG XML export: the Rhythm waveform in mV with derived limb
    leads, the Median beat, the cart's measurements and statements, patient and cart."""
    root = parse(data, format=_FORMAT)
    if root.tag != "RestingECG":
        raise WaveformError(f"root element is {root.tag!r}, not RestingECG", format=_FORMAT)
    blocks = _waveforms(root)
    if "rhythm" not in blocks:
        raise WaveformError("no Rhythm waveform", format=_FORMAT, section="Waveform")
    fs, leads, signals = _waveform(blocks["rhythm"], "Rhythm")
    median = _waveform(blocks["median"], "Median") if "median" in blocks else None
    return Recording(fs=fs, leads=leads, signals=signals, start_time=_start_time(root), source=_source(root, median))
