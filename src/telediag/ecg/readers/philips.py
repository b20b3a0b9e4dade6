"""Philips ECG XML: Sierra ECG 1.03 and PhilipsECG 1.04 / 1.04.01 (PageWriter, TraceMasterVue,
IntelliSpace ECG, HeartStart MRx exports; root ``restingecgdata``).

The rhythm waveform is one base64 block, normally compressed with Philips' "XLI" scheme.
The format is not published; it is known from Christopher Watford's sierra-ecg-tools
(MIT), from which this implementation was written (the code here is our own):

* the block is a sequence of chunks, one per lead: an 8-byte header (payload size as
  little-endian int32, two bytes unused here, the lead's first sample as int16) then an
  LZW payload with fixed 10-bit codes read most-significant bit first, 256 single-byte
  roots, a dictionary that stops growing at code 1022, and code 1023 ending the stream;
* the decoded bytes are the high bytes of every int16 value followed by all low bytes;
* the int16 values are second differences: sample[i] = 2 sample[i-1] - sample[i-2] - e[i],
  where e[2] is the header's first-sample value and e[i] = value[i-1] - 64 after that;
  the first two values are samples as they are.

For the limb leads the cart stores only what I and II do not predict: III, aVR, aVL and
aVF are rebuilt as III = II - I - s3, aVR = -s4 - floor((I + II) / 2),
aVL = floor((I - III) / 2) - s5, aVF = floor((II + III) / 2) - s6 (sN the stored chunk),
exactly as sierra-ecg-tools does, so the result matches it sample for sample. The stored
residuals are 0 or +-1 (rounding) except during the cart's calibration pulse.

Every Philips rhythm block ends with the cart's 1 mV calibration pulse, identical on all
leads (0.1 s of 0, 0.2 s of 1 mV, 0.1 s of 0 at 500 Hz). It is not ECG, and a QRS
detector would take its edges for beats, so it is cut off here: the recording ends where
the leads stop being identical.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime

import numpy as np

from ..recording import Recording, RecordingSource, WaveformError
from ._xml import STANDARD_LEADS, base64_payload, number, parse, stack_columns, standard_order, text
from .leads import normalise_lead_name

__all__ = ["read_philips_xml", "xli_decode"]

_FORMAT = "Philips XML"
_VERSIONS = ("1.03", "1.04", "1.04.01")
_LZW_BITS = 10
_LZW_MAX_CODE = (1 << _LZW_BITS) - 2
#: Measurement element names (1.04 ``globalmeasurements`` / 1.03 ``interpretationmeasurements``
#: and ``globalmeasurements``) -> our keys; the first name found wins.
_MEASUREMENTS = {
    "heart_rate_bpm": ("heartrate", "meanventrate"), "pr_ms": ("print", "meanprint"),
    "qrs_ms": ("qrsdur", "meanqrsdur"), "qt_ms": ("qtint", "meanqtint"), "qtc_ms": ("qtcb", "meanqtc"),
    "p_axis_deg": ("pfrontaxis",), "qrs_axis_deg": ("qrsfrontaxis",), "t_axis_deg": ("tfrontaxis",),
}
_MEASUREMENT_BLOCKS = ("interpretations/interpretation/globalmeasurements",
                       "interpretations/interpretation/interpretationmeasurements",
                       "measurements/globalmeasurements", "internalmeasurements/crossleadmeasurements")
_CAL_MV = 1.0
_PAD = 32767
#: Most samples (all leads) a rhythm block may declare: 12 leads x 10 min at 500 Hz.
_MAX_SAMPLES = 12 * 600 * 500


# --------------------------------------------------------------------------
# XLI
# --------------------------------------------------------------------------


def _lzw_codes(payload: bytes) -> list[int]:
    """The payload's 10-bit codes, MSB first, as ints (a trailing partial code is dropped).

    Done with numpy bit unpacking: pulling bits one code at a time in Python costs more
    than the whole dictionary walk that follows.
    """
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
    n = bits.size // _LZW_BITS
    weights = 1 << np.arange(_LZW_BITS - 1, -1, -1, dtype=np.int32)
    return (bits[: n * _LZW_BITS].reshape(n, _LZW_BITS).astype(np.int32) @ weights).tolist()


def _lzw_decode(payload: bytes, max_out: int, section: str) -> bytes:
    """Decode one chunk's LZW payload; at most ``max_out`` bytes (bounds a hostile stream)."""
    table = [bytes((i,)) for i in range(256)]
    append = table.append
    out: list[bytes] = []
    prev = b""
    size = 0
    for code in _lzw_codes(payload):
        if code > _LZW_MAX_CODE:
            break
        if code < len(table):
            entry = table[code]
        elif code == len(table) and prev:
            entry = prev + prev[:1]
        else:
            raise WaveformError("compressed waveform is corrupt (LZW code out of sequence)",
                                format=_FORMAT, section=section)
        if prev and len(table) <= _LZW_MAX_CODE:
            append(prev + entry[:1])
        out.append(entry)
        size += len(entry)
        if size > max_out:
            raise WaveformError("compressed waveform expands beyond the declared duration",
                                format=_FORMAT, section=section)
        prev = entry
    return b"".join(out)


def _undelta(values: np.ndarray, first: int) -> np.ndarray:
    """Integrate XLI's second differences (see the module docstring) in closed form.

    With d[i] = s[i] - s[i-1], the recurrence s[i] = 2 s[i-1] - s[i-2] - e[i] is
    d[i] = d[i-1] - e[i], so d and then s are two cumulative sums.
    """
    v = values.astype(np.int64)
    if v.size < 3:
        return v
    e = np.empty(v.size - 2, dtype=np.int64)
    e[0] = first
    e[1:] = v[2:-1] - 64
    d = (v[1] - v[0]) - np.cumsum(e)
    out = np.empty_like(v)
    out[:2] = v[:2]
    out[2:] = v[1] + np.cumsum(d)
    return out


def xli_decode(block: bytes, max_samples: int, max_chunks: int, section: str = "parsedwaveforms") -> list[np.ndarray]:
    """The first ``max_chunks`` chunks of an XLI block as int64 sample arrays (one per
    stored channel). LZW can expand a payload ~800-fold, so the output, not the input, is
    bounded: a chunk may not decode to more than twice ``max_samples``."""
    chunks: list[np.ndarray] = []
    offset = 0
    while offset < len(block) and len(chunks) < max_chunks:
        if offset + 8 > len(block):
            raise WaveformError("compressed waveform is truncated (chunk header)", format=_FORMAT, section=section)
        size = int.from_bytes(block[offset:offset + 4], "little", signed=True)
        first = int.from_bytes(block[offset + 6:offset + 8], "little", signed=True)
        offset += 8
        if size < 0 or offset + size > len(block):
            raise WaveformError("compressed waveform is truncated (chunk payload)", format=_FORMAT, section=section)
        raw = _lzw_decode(block[offset:offset + size], 4 * max_samples + 2, section)  # slack, then cut to n
        offset += size
        if len(raw) % 2:
            raw += b"\x00"
        half = len(raw) // 2
        hi = np.frombuffer(raw, dtype=np.uint8, count=half).astype(np.int16)
        lo = np.frombuffer(raw, dtype=np.uint8, offset=half).astype(np.int16)
        chunks.append(_undelta((hi << 8) | lo, first))
    return chunks


def _rebuild_limb_leads(leads: dict[str, np.ndarray]) -> None:
    """Turn the stored limb-lead residuals into III, aVR, aVL, aVF (module docstring)."""
    lead_i, lead_ii = leads["I"], leads["II"]
    lead_iii = lead_ii - lead_i - leads["III"]
    leads["III"] = lead_iii
    leads["aVR"] = -leads["aVR"] - np.floor_divide(lead_i + lead_ii, 2)
    leads["aVL"] = np.floor_divide(lead_i - lead_iii, 2) - leads["aVL"]
    leads["aVF"] = np.floor_divide(lead_ii + lead_iii, 2) - leads["aVF"]


def _calibration_start(signals: np.ndarray) -> int:
    """Index where the trailing calibration pulse starts, or len(signals) if there is none.

    The pulse is recognised only when every lead carries the very same samples and they
    reach 1 mV: real ECG never makes all twelve leads identical.
    """
    n = signals.shape[0]
    differs = np.any(signals != signals[:, :1], axis=1)
    if signals.shape[1] < 2 or n == 0 or differs[-1]:
        return n
    last_real = np.flatnonzero(differs)
    start = int(last_real[-1]) + 1 if last_real.size else 0
    tail = signals[start:, 0]
    return start if start > 0 and np.isclose(tail.max(), _CAL_MV, atol=0.01) else n


# --------------------------------------------------------------------------
# Document
# --------------------------------------------------------------------------


def _labels(waveforms: ET.Element, signal: ET.Element | None) -> list[str]:
    """Lead names: ``leadlabels`` (1.04), else the standard 12 for a 12-lead acquisition (1.03)."""
    labels = (waveforms.get("leadlabels") or "").split()
    if not labels and (text(signal, "acquisitiontype") or "").upper() in {"STD-12", "10-WIRE"}:
        labels = list(STANDARD_LEADS)
    if not labels:
        raise WaveformError("no lead labels and no standard 12-lead acquisition type",
                            format=_FORMAT, section="parsedwaveforms")
    count = number(waveforms.get("numberofleads"))
    return [normalise_lead_name(x) for x in labels[: int(count) if count else len(labels)]]


def _rhythm(root: ET.Element) -> tuple[float, tuple[str, ...], np.ndarray]:
    section = "waveforms/parsedwaveforms"
    waveforms = root.find("waveforms/parsedwaveforms")
    if waveforms is None:
        raise WaveformError("no parsedwaveforms element", format=_FORMAT, section=section)
    signal = root.find("dataacquisition/signalcharacteristics")
    fs = number(text(signal, "samplingrate")) or number(waveforms.get("samplespersecond"))
    resolution_uv = (number(text(signal, "signalresolution")) or number(text(signal, "resolution"))
                     or number(waveforms.get("resolution")))
    duration_ms = number(waveforms.get("durationperchannel"))
    if not fs or fs <= 0 or not resolution_uv or resolution_uv <= 0:
        raise WaveformError("missing sampling rate or signal resolution", format=_FORMAT,
                            section="dataacquisition/signalcharacteristics")
    if not duration_ms or duration_ms <= 0:
        raise WaveformError("missing durationperchannel", format=_FORMAT, section=section)
    n = int(round(duration_ms * fs / 1000.0))
    labels = _labels(waveforms, signal)
    if n * len(labels) > _MAX_SAMPLES:
        raise WaveformError(f"{len(labels)} leads x {n} samples is above the {_MAX_SAMPLES} sample limit",
                            format=_FORMAT, section=section)
    if (waveforms.get("dataencoding") or "Base64").lower() != "base64":
        raise WaveformError(f"unsupported data encoding {waveforms.get('dataencoding')!r}", format=_FORMAT,
                            section=section)
    block = base64_payload(waveforms.text, format=_FORMAT, section=section)
    method = (waveforms.get("compressmethod") or waveforms.get("compression") or "").upper()
    compressed = (waveforms.get("compressflag") or "").lower() == "true" or method == "XLI"
    if compressed and method not in ("XLI", ""):
        raise WaveformError(f"unsupported compression {method!r}", format=_FORMAT, section=section)
    if compressed:
        chunks = xli_decode(block, n, len(labels), section)
    else:
        if len(block) % 2:
            raise WaveformError("uncompressed waveform has an odd byte count", format=_FORMAT, section=section)
        flat = np.frombuffer(block, dtype="<i2").astype(np.int64)
        chunks = [flat[i:i + n] for i in range(0, flat.size - n + 1, n)]
    if len(chunks) < len(labels):
        raise WaveformError(f"{len(labels)} leads labelled but {len(chunks)} stored", format=_FORMAT,
                            section=section)
    short = [label for label, chunk in zip(labels, chunks) if len(chunk) < n]
    if short:
        raise WaveformError(f"lead {short[0]} decodes to fewer than the {n} samples declared", format=_FORMAT,
                            section=section)
    if len(set(labels)) != len(labels):
        raise WaveformError("a lead label appears twice", format=_FORMAT, section=section)
    leads = {label: chunk[:n] for label, chunk in zip(labels, chunks)}
    if list(leads)[:6] == list(STANDARD_LEADS[:6]):
        _rebuild_limb_leads(leads)
    names = standard_order(list(leads))
    signals = stack_columns([leads[x] * (resolution_uv / 1000.0) for x in names])
    return fs, tuple(names), signals[: _calibration_start(signals)]


def _median_beats(root: ET.Element) -> tuple[float, tuple[str, ...], np.ndarray] | None:
    """Representative beats (``repbeats``): base64 int16 per lead at their own rate/resolution."""
    block = root.find("waveforms/repbeats")
    if block is None:
        return None
    fs = number(block.get("samplespersec"))
    resolution_uv = number(block.get("resolution"))
    if not fs or not resolution_uv or (block.get("dataencoding") or "Base64").lower() != "base64":
        return None  # 1.03 files may omit both; such beats cannot be scaled, the rhythm still can
    leads: dict[str, np.ndarray] = {}
    for beat in block.iterfind("repbeat"):
        name = normalise_lead_name(beat.get("leadname") or "")
        wave = beat.find("waveform")
        holder = wave if wave is not None else beat  # 1.03 puts the data in <repbeat> itself
        raw = base64_payload(text(holder), format=_FORMAT, section=f"waveforms/repbeats/repbeat[{name}]")
        # ``duration`` (ms) bounds the buffer; carts pad past the end of the beat with 32767.
        duration_ms = number(holder.get("duration"))
        n = int(round(duration_ms * fs / 1000.0)) if duration_ms else len(raw) // 2
        samples = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")[:n]
        valid = np.flatnonzero(samples != _PAD)
        if name and valid.size:
            beat_mv = samples[: valid[-1] + 1] * (resolution_uv / 1000.0)
            beat_mv[samples[: valid[-1] + 1] == _PAD] = np.nan
            leads[name] = beat_mv
    if not leads:
        return None
    names = standard_order(list(leads))
    return fs, tuple(names), stack_columns([leads[x] for x in names])


def _measurements(root: ET.Element) -> dict[str, float]:
    found: dict[str, float] = {}
    for path in _MEASUREMENT_BLOCKS:
        block = root.find(path)
        if block is None:
            continue
        for key, tags in _MEASUREMENTS.items():
            for tag in tags:
                value = number(text(block, tag))
                if value is not None:
                    found.setdefault(key, value)
                    break
    return found


def _statements(root: ET.Element) -> list[str]:
    """The first interpretation's statements (left column: the finding), then its severity."""
    interpretation = root.find("interpretations/interpretation")
    if interpretation is None:
        return []
    statements = [s for s in (text(st, "leftstatement") for st in interpretation.iterfind("statement")) if s]
    severity = (text(interpretation, "severity") or "").strip(" -")
    return statements + ([severity] if severity else [])


def _start_time(root: ET.Element) -> datetime | None:
    acq = root.find("dataacquisition")
    try:
        return datetime.strptime(f"{acq.get('date')} {acq.get('time')}", "%Y-%m-%d %H:%M:%S") if acq is not None else None
    except ValueError:
        return None


def _source(root: ET.Element) -> RecordingSource:
    patient = root.find("patient/generalpatientdata")
    last = text(patient, "name/lastname") if patient is not None else None
    first = text(patient, "name/firstname") if patient is not None else None
    birth = text(patient, "age/dateofbirth") if patient is not None else None
    birth_digits = (birth or "").replace("-", "")
    sex = {"MALE": "M", "FEMALE": "F"}.get((text(patient, "sex") or "").upper()) if patient is not None else None
    machine = root.find("dataacquisition/machine")
    vendor = (machine.get("detaildescription") or "").split(":")[0].strip() if machine is not None else ""
    return RecordingSource(
        format="philips-xml",
        patient_id=text(patient, "patientid") if patient is not None else None,
        patient_name=f"{last or ''}^{first or ''}".strip("^") or None,
        patient_sex=sex,
        patient_birth_date=birth_digits if len(birth_digits) == 8 and birth_digits.isdigit() else None,
        manufacturer=vendor or "Philips",
        model=text(machine),
        serial=(machine.get("machineid") or None) if machine is not None else None,
        measurements=_measurements(root),
        statements=tuple(_statements(root)),
        median_beats=_median_beats(root),
    )


def read_philips_xml(data: bytes) -> Recording:
    """Read a Philips Sierra/PhilipsECG XML file (1.03, 1.04, 1.04.01): the XLI-compressed
    12-lead rhythm in mV, the representative beats, the cart's measurements and statements."""
    root = parse(data, format=_FORMAT)
    if root.tag != "restingecgdata":
        raise WaveformError(f"root element is {root.tag!r}, not restingecgdata", format=_FORMAT)
    version = text(root, "documentinfo/documentversion")
    if version not in _VERSIONS:
        shown = version if version and re.fullmatch(r"[\w.\-]{1,16}", version) else "(missing)"
        raise WaveformError(f"document version {shown} is not supported ({', '.join(_VERSIONS)})", format=_FORMAT)
    fs, leads, signals = _rhythm(root)
    return Recording(fs=fs, leads=leads, signals=signals, start_time=_start_time(root), source=_source(root))
