"""The coded diagnostic ECG statements a reader signs, and the ones the analysis proposes.

Why codes: a signed report stores statement codes, never free text, so the
queue, quality control and statistics can count diagnoses across the network,
and the Chinese and English wording can be corrected in ``statements.toml``
without touching a signed report. The list is modelled on the AHA/ACC/HRS 2007
standardized statement list (see the header of ``statements.toml``).

:func:`propose` pre-fills a reader's draft from the stored automated analysis
(:func:`telediag.ecg.analysis.analyze`). It proposes only what the analysis
measures: rhythm episodes, beat classes, critical-value alarms and the global
12-lead measurements, with the thresholds below. It never proposes "normal",
because the analysis does not read morphology (hypertrophy, Q waves, T-wave
inversion): calling an ECG normal is the reader's decision.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["Statement", "Category", "STATEMENTS", "CATEGORIES", "statement", "unknown_codes", "propose",
           "PR_LONG_MS", "PR_SHORT_MS", "QRS_WIDE_MS", "QTC_LONG_MS", "QTC_SHORT_MS", "BRADY_BPM", "TACHY_BPM",
           "LAD_DEG", "RAD_DEG", "POOR_QUALITY_FRACTION", "SUSTAINED_S"]

# Thresholds of propose() (adults; the reader corrects a child's ECG).
PR_LONG_MS = 200.0        # PR > 200 ms: first-degree AV block
PR_SHORT_MS = 120.0       # PR < 120 ms: short PR interval
QRS_WIDE_MS = 120.0       # QRS >= 120 ms: wide QRS (the reader names the block from its shape)
QTC_LONG_MS = {"M": 470.0, "F": 480.0}  # QTc > these (Bazett, as carts print it): prolonged QT ...
QTC_SHORT_MS = 340.0      # ... QTc <= 340 ms: short QT (the ESC short-QT threshold)
BRADY_BPM, TACHY_BPM = 60.0, 100.0      # sinus rate < 60 bradycardia, > 100 tachycardia, else sinus rhythm
LAD_DEG, RAD_DEG = -30.0, 90.0          # QRS axis < -30 (to -90) left, > 90 (to 180) right, -90..-180 right superior
POOR_QUALITY_FRACTION = 0.25            # unreadable share of the recording from which its quality is poor
SUSTAINED_S = 30.0                      # a VT episode this long is sustained, shorter ones unsustained

_CODE = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class Statement:
    """One coded statement: its stable code, its category key and its English and Chinese texts."""

    code: str
    category: str
    en: str
    zh: str


@dataclass(frozen=True)
class Category:
    """A statement category (a section of the 2007 list), in report order."""

    key: str
    aha: str
    en: str
    zh: str


def _load() -> tuple[tuple[Category, ...], tuple[Statement, ...]]:
    """Read and check ``statements.toml``; a broken catalogue fails at import, not in a signed report."""
    doc = tomllib.loads(resources.files(__package__).joinpath("statements.toml").read_text(encoding="utf-8"))
    categories = tuple(Category(key, v["aha"], v["en"], v["zh"]) for key, v in doc["categories"].items())
    known = {c.key for c in categories}
    out: list[Statement] = []
    seen: set[str] = set()
    for category, table in doc["statements"].items():
        if category not in known:
            raise ValueError(f"statements.toml: unknown category {category!r}")
        for code, texts in table.items():
            if not _CODE.fullmatch(code) or code in seen:
                raise ValueError(f"statements.toml: code {code!r} is malformed or not unique")
            if not (isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) and t.strip()
                                                                         for t in texts)):
                raise ValueError(f"statements.toml: {code} needs [English, Chinese] texts")
            seen.add(code)
            out.append(Statement(code, category, texts[0], texts[1]))
    return categories, tuple(out)


CATEGORIES, STATEMENTS = _load()
_BY_CODE: dict[str, Statement] = {s.code: s for s in STATEMENTS}


def statement(code: str) -> Statement:
    """The statement of ``code``; KeyError when there is none (the API answers 422)."""
    return _BY_CODE[code]


def unknown_codes(codes: Iterable[Any]) -> list[str]:
    """The codes of ``codes`` that name no statement, once each in the order given (empty: all known).

    Anything that is not a string (a number in a JSON list) is unknown too, so a draft
    can be checked as it arrives.
    """
    out: list[str] = []
    for code in codes:
        if not (isinstance(code, str) and code in _BY_CODE) and str(code) not in out:
            out.append(str(code))
    return out


# --------------------------------------------------------------------------
# Proposals from the automated analysis
# --------------------------------------------------------------------------

# Rhythm labels (telediag.ecg.rhythm.LABELS) that are background rhythms, and the code of each
# one besides the sinus family (whose code follows from the rate).
_SINUS_LABELS = frozenset({"sinus", "sinus_bradycardia", "sinus_tachycardia"})
_BACKGROUND = {"af": "AFIB", "afl": "AFL", "paced": "PACED"}
_EVENTS = {"svt": "SVT", "vf": "VF", "asystole": "ASYSTOLE", "pause": "PAUSE"}
# Critical-value alarm types (telediag.ecg.rules.ALARM_TYPES) and their statements; the rate
# alarms add none, the rhythm episodes already carry the rate.
_ALARMS = {"asystole": "ASYSTOLE", "pause": "PAUSE", "polymorphic_vt": "VT_POLY", "ventricular_fibrillation": "VF",
           "svt_rapid": "SVT", "af_rapid": "AFIB_RVR", "af_preexcited": "AFIB_PREEXC", "av_block_3": "AVB3",
           "hyperkalaemia": "HYPERK"}
# A more specific statement makes the general one redundant.
_SUPERSEDES = {"AFIB_RVR": ("AFIB",), "AFIB_PREEXC": ("AFIB",), "VT_POLY": ("VT", "NSVT"), "VT": ("NSVT",)}
# Report order: the background rhythm first, then the other rhythm findings, pacing, conduction,
# axis, chambers, repolarisation, infarction, the recording's quality, and the overall verdict
# last, as a Chinese report ends.
_LEADING = ("SR", "SBRAD", "STACH", "AFIB", "AFIB_RVR", "AFIB_PREEXC", "AFL", "PACED")
_ORDER = ("sinus", "supraventricular", "supraventricular_tachy", "ventricular", "ventricular_tachy", "pacemaker",
          "av_conduction", "intraventricular", "axis_voltage", "hypertrophy", "st_t_u", "infarction", "technical",
          "overall")
_RANK = {s.code: (_LEADING.index(s.code) if s.code in _LEADING else len(_LEADING), _ORDER.index(s.category), i)
         for i, s in enumerate(STATEMENTS)}


def propose(findings: Mapping[str, Any] | None, *, sex: str | None = None) -> list[str]:
    """Statement codes pre-filled from a stored analysis result, in report order.

    ``findings`` is the dict :func:`telediag.ecg.analysis.analyze` returns (as stored, JSON);
    anything else (an imaging case, a failed analysis, an empty dict) gives ``[]``, and
    missing or malformed keys are skipped, never raised on. ``sex`` ("M"/"F") chooses the
    QTc limit.

    * Rhythm episodes: the sinus family becomes one statement by its duration-weighted
      rate: ``SBRAD`` below 60 /min, ``STACH`` above 100, else ``SR`` (so a rate hovering
      at 60 does not propose both); ``af`` ``AFIB``, ``afl`` ``AFL``, ``paced`` ``PACED``;
      ``svt``, ``vf``, ``asystole``, ``pause`` their statements; ``vt`` ``VT`` when an
      episode lasts 30 s or more, else ``NSVT``.
    * Beats, when ventricular beats are a minority: ``PVC``, ``PVC_COUPLET`` for two in a
      row, ``PVC_BIGEMINY`` for three N-V pairs in a row, ``PVC_TRIGEMINY`` for three N-N-V.
    * Alarms: their statements (``af_rapid`` ``AFIB_RVR`` ...), ``ventricular_tachycardia``
      sustained or not as above; ``stemi`` the infarct location from its leads;
      ``long_qtc_r_on_t`` ``LQT``, with ``PVC_R_ON_T`` for the R-on-T variant.
    * Measurements (ours, else the cart's): PR > 200 ms ``AVB1``, < 120 ms ``SHORT_PR``
      (not in AF/flutter); QRS >= 120 ms ``WIDE_QRS`` unless paced; QTc > 470 ms (men and
      unknown sex) or > 480 ms (women) ``LQT``, <= 340 ms ``SQT``; QRS axis -30 to -90
      ``LAD``, 90 to 180 ``RAD``, -90 to -180 ``RSA``; pacing spikes ``PACED``.
    * Quality: all unreadable ``UNINT`` alone; a quarter or more ``POOR_QUALITY``.
    * ``ABN`` when anything besides the sinus rhythm (of any rate) and quality was proposed:
      whether a slow or fast sinus rhythm alone is abnormal depends on the patient.
    """
    if not isinstance(findings, Mapping):
        return []
    quality = _mapping(findings.get("quality"))
    unreadable = _number(quality.get("unreadable_fraction"))
    if unreadable is not None and unreadable >= 1.0:
        return ["UNINT"]
    codes: set[str] = set()
    codes |= _rhythm_codes(_dicts(findings.get("rhythm")), _heart_rate(findings))
    codes |= _beat_codes(findings.get("beats"))
    codes |= _alarm_codes(_dicts(findings.get("alarms")))
    codes |= _measurement_codes(_measurements(findings), sex, af="AFIB" in codes or "AFL" in codes)
    for code, general in _SUPERSEDES.items():
        if code in codes:
            codes -= set(general)
    if codes - {"SR", "SBRAD", "STACH"}:
        codes.add("ABN")
    if unreadable is not None and unreadable >= POOR_QUALITY_FRACTION:
        codes.add("POOR_QUALITY")
    return sorted(codes, key=_RANK.__getitem__)


def _rhythm_codes(episodes: list[Mapping[str, Any]], rate: float | None) -> set[str]:
    codes: set[str] = set()
    sinus: dict[str, float] = {}
    weighted, weight = 0.0, 0.0
    for e in episodes:
        label = e.get("label")
        if not isinstance(label, str):
            continue
        start, end = _number(e.get("start_s")), _number(e.get("end_s"))
        duration = end - start if start is not None and end is not None and end > start else 0.0
        if label in _SINUS_LABELS:
            sinus[label] = sinus.get(label, 0.0) + duration
            episode_rate = _number(_mapping(e.get("evidence")).get("rate_bpm"))
            if episode_rate is not None and duration > 0:
                weighted, weight = weighted + episode_rate * duration, weight + duration
        elif label == "vt":
            codes.add(_vt_code(duration))
        elif label in _BACKGROUND:
            codes.add(_BACKGROUND[label])
        elif label in _EVENTS:
            codes.add(_EVENTS[label])
    if sinus:
        sinus_rate = weighted / weight if weight else rate
        if sinus_rate is None:
            codes.add({"sinus": "SR", "sinus_bradycardia": "SBRAD", "sinus_tachycardia": "STACH"}[
                max(sinus, key=sinus.__getitem__)])
        else:
            codes.add("SBRAD" if sinus_rate < BRADY_BPM else "STACH" if sinus_rate > TACHY_BPM else "SR")
    return codes


def _vt_code(duration_s: float | None) -> str:
    """``VT`` for a run of 30 s or more (sustained), else ``NSVT``."""
    return "VT" if duration_s is not None and duration_s >= SUSTAINED_S else "NSVT"


def _beat_codes(beats: Any) -> set[str]:
    if not isinstance(beats, Sequence) or isinstance(beats, str):
        return set()
    kinds = "".join(b if b in ("N", "V") else "Q" for b in beats)
    n_v, n_n = kinds.count("V"), kinds.count("N")
    if n_v == 0 or n_v >= n_n:
        return set()    # none, or a ventricular (or paced, or wide-QRS) rhythm: not ectopy
    codes = {"PVC"}
    if re.search(r"(?<!V)VV(?!V)", kinds):
        codes.add("PVC_COUPLET")
    if "NVNVNV" in kinds:
        codes.add("PVC_BIGEMINY")
    if "NNVNNVNNV" in kinds:
        codes.add("PVC_TRIGEMINY")
    return codes


def _alarm_codes(alarms: list[Mapping[str, Any]]) -> set[str]:
    codes: set[str] = set()
    for alarm in alarms:
        kind = alarm.get("type")
        evidence = _mapping(alarm.get("evidence"))
        if not isinstance(kind, str):
            continue
        if kind in _ALARMS:
            codes.add(_ALARMS[kind])
        elif kind == "ventricular_tachycardia":
            codes.add(_vt_code(_number(evidence.get("duration_s"))))
        elif kind == "long_qtc_r_on_t":
            # The "with VT" variant: the VT itself comes from the rhythm (sustained or not).
            codes |= {"LQT", "PVC_R_ON_T"} if "coupling_ms" in evidence else {"LQT"}
        elif kind == "stemi":
            leads = evidence.get("leads")
            codes |= _stemi_codes([str(x) for x in leads] if isinstance(leads, list) else [])
    return codes


def _stemi_codes(leads: list[str]) -> set[str]:
    """The infarct location of ST elevation in ``leads``, by the Chinese report convention.

    Inferior: two of II, III, aVF. Precordial: five or more of V1-V6 extensive anterior,
    else two of V1-V3 (none beyond) anteroseptal, else two of V3-V5 anterior. Lateral: two
    of I, aVL, V5, V6 (V5/V6 only when not already extensive anterior). Elevation that
    fits none: ``STEMI``, location to be named by the reader.
    """
    found = set(leads)
    chest = found & {"V1", "V2", "V3", "V4", "V5", "V6"}
    codes: set[str] = set()
    if len(found & {"II", "III", "aVF"}) >= 2:
        codes.add("STEMI_INF")
    if len(chest) >= 5:
        codes.add("STEMI_EXTANT")
    elif len(chest) >= 2 and chest <= {"V1", "V2", "V3"}:
        codes.add("STEMI_ANTSEP")
    elif len(chest & {"V3", "V4", "V5"}) >= 2:
        codes.add("STEMI_ANT")
    lateral = {"I", "aVL"} if "STEMI_EXTANT" in codes else {"I", "aVL", "V5", "V6"}
    if len(found & lateral) >= 2:
        codes.add("STEMI_LAT")
    return codes or {"STEMI"}


def _measurement_codes(m: Mapping[str, Any], sex: str | None, *, af: bool) -> set[str]:
    codes: set[str] = set()
    paced = m.get("paced") is True
    if paced:
        codes.add("PACED")
    pr, qrs, qtc = _number(m.get("pr_ms")), _number(m.get("qrs_ms")), _number(m.get("qtc_ms"))
    if pr is not None and not af:
        if pr > PR_LONG_MS:
            codes.add("AVB1")
        elif pr < PR_SHORT_MS:
            codes.add("SHORT_PR")
    if qrs is not None and qrs >= QRS_WIDE_MS and not paced:
        codes.add("WIDE_QRS")
    if qtc is not None:
        if qtc > QTC_LONG_MS.get((sex or "").upper(), QTC_LONG_MS["M"]):
            codes.add("LQT")
        elif qtc <= QTC_SHORT_MS:
            codes.add("SQT")
    axis = _number(m.get("qrs_axis_deg"))
    if axis is not None:
        axis = (axis + 180.0) % 360.0 - 180.0       # (-180, 180]; -180 and 180 are one direction
        if -90.0 <= axis < LAD_DEG:
            codes.add("LAD")
        elif axis > RAD_DEG or axis == -180.0:
            codes.add("RAD")
        elif axis < -90.0:
            codes.add("RSA")
    return codes


def _measurements(findings: Mapping[str, Any]) -> Mapping[str, Any]:
    """Our 12-lead measurements, else the cart's (a 12-lead file we could not measure)."""
    ours = _mapping(findings.get("measurements"))
    return ours or _mapping(findings.get("device_measurements"))


def _heart_rate(findings: Mapping[str, Any]) -> float | None:
    rate = _number(_mapping(findings.get("measurements")).get("heart_rate_bpm"))
    return rate if rate is not None else _number(findings.get("heart_rate_bpm"))


def _number(value: Any) -> float | None:
    """A finite number, else None (a stored null, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
