"""HL7 v3 annotated ECG (aECG, the FDA's XML format for ECGs in clinical trials).

An ``AnnotatedECG`` holds ``series`` (the rhythm recording), each optionally with a
``derivedSeries`` (the representative beat). A series' ``sequenceSet`` pairs one time
sequence (``GLIST_TS``/``GLIST_PQ``: head + increment, so fs = 1 / increment) with one
sequence per lead (``SLIST_PQ``/``SLIST_INT``: physical value = origin + scale x digit).

Generators in the field are not all conformant: some omit the namespace or its prefix,
vary the case of element names, pad the digits with line breaks, or leave out the
origin. Elements are therefore matched by lowercased local name, and a missing origin
means zero; a missing scale or voltage unit is an error, because guessing it would
mis-scale the trace.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from datetime import datetime

import numpy as np

from ..recording import Recording, RecordingSource, WaveformError
from ._xml import number, parse, stack_columns, standard_order, text
from .leads import mv_factor, normalise_lead_name

__all__ = ["read_hl7_aecg"]

_FORMAT = "HL7 aECG"
_TIME_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}
#: Global measurement codes (MDC, ISO/IEEE 11073-10101) -> our keys, and the unit each key wants.
_MEASUREMENTS = {
    "MDC_ECG_TIME_PD_PR": "pr_ms", "MDC_ECG_TIME_PD_PQ": "pr_ms", "MDC_ECG_TIME_PD_QRS": "qrs_ms",
    "MDC_ECG_TIME_PD_QT": "qt_ms", "MDC_ECG_TIME_PD_QTC": "qtc_ms", "MDC_ECG_TIME_PD_QTCB": "qtc_ms",
    "MDC_ECG_ANGLE_P_FRONT": "p_axis_deg", "MDC_ECG_ANGLE_QRS_FRONT": "qrs_axis_deg",
    "MDC_ECG_ANGLE_T_FRONT": "t_axis_deg", "MDC_ECG_HEART_RATE": "heart_rate_bpm",
}
_STATEMENT_CODES = {"MDC_ECG_INTERPRETATION", "MDC_ECG_INTERPRETATION_STATEMENT", "MDC_ECG_INTERPRETATION_SUMMARY"}
_SEX = {"M": "M", "F": "F", "UN": "O", "O": "O"}


def _code(el: ET.Element | None) -> str:
    """The ``code`` attribute of ``el``'s ``<code>`` child, uppercased ('' when absent)."""
    code = el.find("code") if el is not None else None
    return (code.get("code") or "").strip().upper() if code is not None else ""


def _ts(value: str | None) -> datetime | None:
    """An HL7 TS (YYYYMMDDHHMMSS[.fff], possibly shorter or with a zone) as a naive datetime."""
    digits = (value or "").strip().split("+")[0].split("-")[0]
    whole, _, frac = digits.partition(".")
    for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d"):
        try:
            start = datetime.strptime(whole, fmt)
        except ValueError:
            continue
        return start.replace(microsecond=int((frac + "000000")[:6])) if frac.isdigit() else start
    return None


def _increment_s(value: ET.Element, section: str) -> float:
    inc = value.find("increment")
    step = number(inc.get("value")) if inc is not None else None
    unit = ((inc.get("unit") if inc is not None else None) or "s").strip()
    if step is None or step <= 0 or unit not in _TIME_TO_S:
        raise WaveformError("time sequence has no valid increment (value > 0 in s or ms)",
                            format=_FORMAT, section=section)
    return step * _TIME_TO_S[unit]


def _digits(raw: str | None, lead: str, section: str) -> np.ndarray:
    """Whitespace-separated numbers parsed by numpy straight from the text.

    ``str.split`` would first make one Python string per sample (~60 bytes each): a
    document of 16 MB of digits would then take about a gigabyte.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # older numpy only warns on bad data
        try:
            return np.fromstring(raw or "", dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            raise WaveformError(f"lead {lead} has non-numeric digits", format=_FORMAT, section=section) from None


def _to_mv(unit: str, lead: str, section: str) -> float:
    try:
        factor = mv_factor(unit)
    except WaveformError as exc:
        raise WaveformError(f"lead {lead}: {exc.reason}", format=_FORMAT, section=section) from None
    if factor is None:
        raise WaveformError(f"lead {lead} is not a voltage ({unit})", format=_FORMAT, section=section)
    return factor


def _physical(value: ET.Element, lead: str, section: str) -> np.ndarray:
    """A lead's digits as mV: (origin + scale x digit), each term in its own unit."""
    scale, origin = value.find("scale"), value.find("origin")
    scale_value = number(scale.get("value")) if scale is not None else None
    if scale is None or scale_value is None:
        raise WaveformError(f"lead {lead} has no scale", format=_FORMAT, section=section)
    unit = (scale.get("unit") or (origin.get("unit") if origin is not None else None) or "").strip()
    if not unit:
        raise WaveformError(f"lead {lead} has no voltage unit", format=_FORMAT, section=section)
    to_mv = _to_mv(unit, lead, section)
    origin_mv = 0.0
    if origin is not None and origin.get("value") is not None:
        origin_value = number(origin.get("value"))
        if origin_value is None:
            raise WaveformError(f"lead {lead} has an invalid origin", format=_FORMAT, section=section)
        origin_mv = origin_value * _to_mv((origin.get("unit") or unit).strip(), lead, section)
    digits = value.find("digits")
    samples = _digits(digits.text if digits is not None else None, lead, section)
    if samples.size == 0:
        raise WaveformError(f"lead {lead} has no digits", format=_FORMAT, section=section)
    return origin_mv + samples * (scale_value * to_mv)


def _sequence_set(series: ET.Element, section: str) -> tuple[float, datetime | None, tuple[str, ...], np.ndarray] | None:
    """(fs, start, leads, (n, n_leads) mV) of the first sequenceSet with leads, else None."""
    for seq_set in series.iterfind("component/sequenceset"):
        fs = start = None
        leads: dict[str, np.ndarray] = {}
        for seq in seq_set.iterfind("component/sequence"):
            value = seq.find("value")
            if value is None:
                continue
            code = _code(seq)
            if value.find("increment") is not None:
                fs = round(1.0 / _increment_s(value, section), 6)  # 1 / 0.004 s is not exactly 250
                head = value.find("head")
                start = _ts(head.get("value")) if head is not None and code == "TIME_ABSOLUTE" else None
            elif value.find("digits") is not None:
                if not code:
                    raise WaveformError("a lead sequence has no code", format=_FORMAT, section=section)
                lead = normalise_lead_name(code)
                if lead in leads:
                    raise WaveformError(f"lead {lead} appears twice", format=_FORMAT, section=section)
                leads[lead] = _physical(value, lead, f"{section}/sequence[{lead}]")
        if leads:
            if fs is None:
                raise WaveformError("sequence set has leads but no time sequence", format=_FORMAT, section=section)
            names = standard_order(list(leads))
            return fs, start, tuple(names), stack_columns([leads[n] for n in names])
    return None


def _measurement(annotation: ET.Element) -> tuple[str, float] | None:
    key = _MEASUREMENTS.get(_code(annotation))
    value = annotation.find("value")
    amount = number(value.get("value")) if value is not None and key else None
    if key is None or value is None or amount is None:
        return None
    unit = (value.get("unit") or "").strip()
    if key.endswith("_ms") and unit in _TIME_TO_S:
        amount *= _TIME_TO_S[unit] * 1e3
    return key, amount


def _annotations(series: ET.Element | None) -> list[tuple[ET.Element, bool]]:
    """Every annotation of a series' annotation sets, with whether it is top level
    (global findings) or nested (per-beat measurements sit inside beat annotations)."""
    if series is None:
        return []
    top = list(series.iterfind("subjectof/annotationset/component/annotation"))
    return [(a, a is t) for t in top for a in t.iter("annotation")]


def _findings(rhythm: ET.Element, derived: ET.Element | None) -> tuple[dict[str, float], tuple[str, ...]]:
    """The cart's global measurements and interpretation statements.

    The representative beat's measurements are global by construction, so they are read
    at any depth and take precedence; in the rhythm series only top-level measurements are
    global (nested ones measure single beats). Statements are global at any depth.
    """
    measurements: dict[str, float] = {}
    statements: list[str] = []
    for series, nested_ok in ((derived, True), (rhythm, False)):
        for annotation, top in _annotations(series):
            found = _measurement(annotation) if (top or nested_ok) else None
            if found is not None:
                measurements.setdefault(*found)
            elif _code(annotation) in _STATEMENT_CODES:
                value = annotation.find("value")
                statement = text(value) or ((value.get("displayName") or "").strip() if value is not None else "")
                if statement and statement not in statements:
                    statements.append(statement)
    return measurements, tuple(statements)


def _source(root: ET.Element, rhythm: ET.Element, derived: ET.Element | None,
            median: tuple[float, tuple[str, ...], np.ndarray] | None) -> RecordingSource:
    subject = root.find(".//trialsubject")
    person = subject.find("subjectdemographicperson") if subject is not None else None
    subject_id = subject.find("id") if subject is not None else None
    sex = person.find("administrativegendercode") if person is not None else None
    birth = person.find("birthtime") if person is not None else None
    birth_digits = (birth.get("value") or "")[:8] if birth is not None else ""
    device = rhythm.find("author/seriesauthor")
    model_el = device.find("manufacturedseriesdevice") if device is not None else None
    serial = model_el.find("id") if model_el is not None else None
    measurements, statements = _findings(rhythm, derived)
    return RecordingSource(
        format="hl7-aecg",
        patient_id=(subject_id.get("extension") or None) if subject_id is not None else None,
        patient_name=text(person, "name") if person is not None else None,
        patient_sex=_SEX.get((sex.get("code") or "").upper()) if sex is not None else None,
        patient_birth_date=birth_digits if len(birth_digits) == 8 and birth_digits.isdigit() else None,
        manufacturer=text(device, "manufacturerorganization/name") if device is not None else None,
        model=text(model_el, "manufacturermodelname") if model_el is not None else None,
        serial=(serial.get("extension") or None) if serial is not None else None,
        measurements=measurements,
        statements=statements,
        median_beats=median,
    )


def read_hl7_aecg(data: bytes) -> Recording:
    """Read an HL7 aECG document: the rhythm series in mV, the representative beat, the
    cart's global measurements and statements, the subject and the device."""
    root = parse(data, format=_FORMAT, fold_case=True)
    if root.tag != "annotatedecg":
        raise WaveformError(f"root element is {root.tag!r}, not AnnotatedECG", format=_FORMAT)
    for index, series in enumerate(root.iterfind("component/series")):
        section = f"AnnotatedECG/component/series[{index + 1}]"
        rhythm = _sequence_set(series, section)
        if rhythm is None:
            continue
        derived = series.find("derivation/derivedseries")
        beat = _sequence_set(derived, f"{section}/derivedSeries") if derived is not None else None
        median = (beat[0], beat[2], beat[3]) if beat is not None else None
        fs, start, leads, signals = rhythm
        return Recording(fs=fs, leads=leads, signals=signals, start_time=start,
                         source=_source(root, series, derived, median))
    raise WaveformError("document holds no waveform series (no sequence with digits)",
                        format=_FORMAT, section="AnnotatedECG/component/series")
