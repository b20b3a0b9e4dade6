"""Critical-value rules (心电图危急值): readable, versioned TOML files and their evaluation.

Why files: which findings are critical, and at what threshold, is a clinical
policy that a network changes without a software release (a province adopts
the revised list, a Holter service its own pause limits). So thresholds live
in TOML files shipped with the package (``resting``, ``holter``,
``monitoring``) or supplied by path, each rule naming its source; the code
only knows how to measure each alarm type. Comparisons are spelled in the key
(``min_*`` >=, ``max_*`` <=, ``above_*`` >, ``below_*`` <) so a reader of the
file never has to guess whether a boundary is inclusive.

Rates are compared after rounding to 0.1 /min, durations to 1 ms and QTc to
0.1 ms (the resolution they are reported at), so that 35.0 /min computed as
34.99999 in floating point still meets "<= 35".

Nothing here raises an alarm from unreadable signal: the rhythm stage has
already excluded unreadable stretches, and what a pulsatile channel refuted.

What is approximate, said plainly: ``stemi`` reads ST at J+60 ms on the
median conducted beat against the PR segment, per lead group, in two
contiguous leads; it does not tell acute injury from LVH strain, early
repolarisation, pericarditis or an aneurysm (the standard's own exclusions
need history and prior ECGs). ``hyperkalaemia`` is wide QRS + a tall,
narrow, symmetric T in any lead + no P wave, not validated on labelled
cases. ``polymorphic_vt`` is a fast (>= 200 /min) VT run with irregular
cycle length; the twisting axis is not measured. ``av_block_3`` fires on the
rhythm stage's third-degree ``av_block`` episodes (P waves marching through a
slow escape rhythm), which it reports only where it is sure: a complete block
whose P waves it cannot resolve raises no alarm.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from ..rhythm import Episode, RhythmResult

__all__ = ["Rule", "RuleSet", "Alarm", "RulesError", "Severity", "ALARM_TYPES", "SEVERITIES", "BUILTIN",
           "load_rules", "evaluate"]

ALARM_TYPES: tuple[str, ...] = ("asystole", "pause", "extreme_bradycardia", "extreme_tachycardia",
                                "ventricular_tachycardia", "polymorphic_vt", "ventricular_fibrillation", "svt_rapid",
                                "af_rapid", "af_preexcited", "av_block_3", "long_qtc_r_on_t", "stemi", "hyperkalaemia")
#: How urgent an alarm is; each rule names one, and its alarms carry it.
Severity = Literal["critical", "urgent", "info"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
BUILTIN: tuple[str, ...] = ("resting", "holter", "monitoring")

# Parameters each alarm type accepts (name -> type); a rule must give at least one of the
# listed alternatives (tuples of keys that go together), or none where the tuple is empty.
_PARAMS: dict[str, dict[str, type]] = {
    "asystole": {"min_s": float},
    "pause": {"min_s": float, "in_af_min_s": float, "count": int, "count_min_s": float, "longest_min_s": float},
    "extreme_bradycardia": {"max_mean_rate_bpm": float, "below_rate_bpm": float, "beats": int},
    "extreme_tachycardia": {"above_rate_bpm": float, "beats": int},
    "ventricular_tachycardia": {"min_rate_bpm": float, "min_duration_s": float, "min_beats": int,
                                "above_rate_bpm": float},
    "polymorphic_vt": {"min_beats": int, "min_rate_bpm": float},
    "ventricular_fibrillation": {"min_duration_s": float},
    "svt_rapid": {"min_rate_bpm": float},
    "af_rapid": {"min_rate_bpm": float},
    "af_preexcited": {"max_shortest_rr_ms": float},
    "av_block_3": {},
    "long_qtc_r_on_t": {"min_qtc_ms": float, "with": str},
    "stemi": {"limb_min_mv": float, "v4_v6_min_mv": float, "v1_v3_above_mv": float, "min_contiguous": int},
    "hyperkalaemia": {"min_qrs_ms": float, "min_t_mv": float},
}
_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "asystole": (("min_s",),),
    "pause": (("min_s",), ("in_af_min_s", "count", "count_min_s", "longest_min_s")),
    "extreme_bradycardia": (("max_mean_rate_bpm",), ("below_rate_bpm", "beats")),
    "extreme_tachycardia": (("above_rate_bpm", "beats"),),
    "ventricular_tachycardia": (("min_rate_bpm", "min_duration_s"), ("min_beats", "above_rate_bpm")),
    "polymorphic_vt": (("min_beats", "min_rate_bpm"),),
    "ventricular_fibrillation": (("min_duration_s",),),
    "svt_rapid": (("min_rate_bpm",),),
    "af_rapid": (("min_rate_bpm",),),
    "af_preexcited": (("max_shortest_rr_ms",),),
    "av_block_3": ((),),
    "long_qtc_r_on_t": (("min_qtc_ms", "with"),),
    "stemi": (("limb_min_mv", "v4_v6_min_mv", "v1_v3_above_mv", "min_contiguous"),),
    "hyperkalaemia": (("min_qrs_ms", "min_t_mv"),),
}
_WITH = ("r_on_t", "vt")
PULSE_MARGIN = 1.25   # pulse rate this much above a bradycardia limit refutes it


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the rule and the fault."""


@dataclass(frozen=True)
class Rule:
    type: str
    severity: Severity
    source: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class RuleSet:
    name: str
    version: str
    rules: tuple[Rule, ...]
    #: A rules file may leave its description out.
    description: str = ""


# --------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------

def load_rules(name_or_path: str | Path) -> RuleSet:
    """A built-in rule set by name (``resting``, ``holter``, ``monitoring``) or a TOML file by path."""
    key = str(name_or_path)
    if key in BUILTIN:
        text = resources.files(__name__).joinpath(f"{key}.toml").read_text(encoding="utf-8")
        origin = f"built-in rules {key!r}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise RulesError(f"rules {key!r}: neither a built-in set ({', '.join(BUILTIN)}) nor a file")
        text = path.read_text(encoding="utf-8")
        origin = f"rules file {path.name}"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{origin}: not valid TOML: {exc}") from exc
    return _validate(doc, origin)


def _validate(doc: Mapping[str, Any], origin: str) -> RuleSet:
    for key in ("name", "version"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            raise RulesError(f"{origin}: top-level {key!r} (a non-empty string) is required")
    unknown_top = set(doc) - {"name", "version", "description", "rule"}
    if unknown_top:
        raise RulesError(f"{origin}: unknown top-level keys {sorted(unknown_top)}")
    raw = doc.get("rule", [])
    if not isinstance(raw, list) or not raw:
        raise RulesError(f"{origin}: at least one [[rule]] table is required")
    rules = []
    for i, r in enumerate(raw, 1):
        where = f"{origin}, rule {i}"
        if not isinstance(r, dict):
            raise RulesError(f"{where}: must be a table")
        typ = r.get("type")
        if typ not in _PARAMS:
            raise RulesError(f"{where}: unknown type {typ!r}; expected one of {', '.join(ALARM_TYPES)}")
        where = f"{where} ({typ})"
        sev = r.get("severity")
        if sev not in SEVERITIES:
            raise RulesError(f"{where}: severity {sev!r} must be one of {', '.join(SEVERITIES)}")
        src = r.get("source", "")
        if not isinstance(src, str):
            raise RulesError(f"{where}: source must be a string")
        params = {k: v for k, v in r.items() if k not in ("type", "severity", "source")}
        allowed = _PARAMS[typ]
        for k, v in params.items():
            if k not in allowed:
                raise RulesError(f"{where}: unknown parameter {k!r}; allowed: {', '.join(allowed) or 'none'}")
            want = allowed[k]
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = params[k] = float(v)
            if not isinstance(v, want) or isinstance(v, bool):
                raise RulesError(f"{where}: {k} must be {want.__name__}, got {type(v).__name__}")
            if want in (int, float) and (not math.isfinite(v) or v < 0):
                raise RulesError(f"{where}: {k} must be a finite number >= 0, got {v}")
        if typ == "long_qtc_r_on_t" and params.get("with") not in _WITH:
            raise RulesError(f"{where}: with must be one of {', '.join(_WITH)}")
        if not any(all(k in params for k in alt) for alt in _REQUIRED[typ]):
            alts = " or ".join("(" + ", ".join(alt) + ")" for alt in _REQUIRED[typ])
            raise RulesError(f"{where}: needs parameters {alts}")
        rules.append(Rule(typ, sev, src, params))
    return RuleSet(str(doc["name"]), str(doc["version"]), tuple(rules), str(doc.get("description", "")))


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Alarm:
    """What a rule raised: its type and severity, the span it covers, its English and Chinese
    texts, and the evidence (measured values, thresholds, rule set and source)."""

    type: str
    severity: Severity
    start_s: float
    end_s: float
    text: str
    text_zh: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "severity": self.severity, "start_s": round(self.start_s, 3),
                "end_s": round(self.end_s, 3), "text": self.text, "text_zh": self.text_zh,
                "evidence": dict(self.evidence)}


def _r1(x: float) -> float:
    return round(float(x), 1)


def _r3(x: float) -> float:
    return round(float(x), 3)


def evaluate(rules: RuleSet, rhythm: RhythmResult, measurements: Mapping[str, Any] | None = None,
             morphology: Mapping[str, Any] | None = None) -> list[Alarm]:
    """Alarms raised by ``rules`` on a rhythm analysis (and, for 12-lead rules, its measurements).

    ``measurements``: global intervals (``qtc_ms`` or ``qtc_bazett_ms``, ``qt_ms``, ``qrs_ms``).
    ``morphology``: per-lead ST and T values from :func:`telediag.ecg.rhythm.st_t_levels`.
    Alarms are sorted by start time; each carries its rule set, version, source and thresholds.
    """
    out: list[Alarm] = []
    for rule in rules.rules:
        for start, end, values in _DETECTORS[rule.type](rule.params, rhythm, measurements or {}, morphology or {}):
            ev = {**values, "thresholds": dict(rule.params), "rules": rules.name, "rules_version": rules.version,
                  "source": rule.source}
            en, zh = _text(rule.type, values)
            out.append(Alarm(rule.type, rule.severity, float(start), float(end), en, zh, ev))
    out.sort(key=lambda a: (a.start_s, a.type))
    return out


Hit = tuple[float, float, dict[str, Any]]


def _with_pulse(values: dict[str, Any], episode: Episode) -> dict[str, Any]:
    """Add the pulsatile-channel finding (present / not found) when the record had one."""
    if "pulse" in episode.evidence:
        values["pulse"] = episode.evidence["pulse"]
    return values


def _asystole(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    return [(g.start_s, g.end_s, _with_pulse({"duration_s": _r3(g.end_s - g.start_s)}, g)) for g in rh.gaps
            if _r3(g.end_s - g.start_s) >= p["min_s"]]


def _background_at(rh: RhythmResult, t: float) -> str:
    """Background rhythm of the beat that starts a gap (the beat at or before ``t``)."""
    k = int(np.searchsorted(rh.beat_times_s, t + 1e-9)) - 1
    return str(rh.background[k]) if 0 <= k < rh.background.size else "other"


def _pause(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    # Only true RR intervals (a beat on both sides): a beat-free record start/end is not an RR.
    rrs = [(g, _r3(g.end_s - g.start_s), _background_at(rh, g.start_s)) for g in rh.gaps if g.evidence.get("rr")]
    hits: list[Hit] = []
    if "min_s" in p:
        hits += [(g.start_s, g.end_s, {"rr_s": d, "rhythm": bg}) for g, d, bg in rrs if d >= p["min_s"]]
        return hits
    in_af = [(g, d, bg) for g, d, bg in rrs if bg == "af"]
    other = [(g, d, bg) for g, d, bg in rrs if bg != "af"]
    hits += [(g.start_s, g.end_s, {"rr_s": d, "rhythm": "af"}) for g, d, _ in in_af if d >= p["in_af_min_s"]]
    longest = [(g, d, bg) for g, d, bg in other if d >= p["longest_min_s"]]
    hits += [(g.start_s, g.end_s, {"rr_s": d, "rhythm": bg}) for g, d, bg in longest]
    counted = [(g, d) for g, d, _ in other if d >= p["count_min_s"]]
    if len(counted) >= p["count"] and len(longest) < len(counted):
        hits.append((counted[0][0].start_s, counted[-1][0].end_s,
                     {"pauses": len(counted), "rr_s": [d for _, d in counted][:20]}))
    return hits


def _rates(rh: RhythmResult, beats: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean rate over every run of ``beats`` consecutive beats (no unreadable or refuted stretch
    inside), and the run starts."""
    t = rh.beat_times_s
    k = beats - 1
    if t.size < beats:
        return np.zeros(0), np.zeros(0, np.int64)
    span = t[k:] - t[:-k]
    rate = np.round(60.0 * k / np.maximum(span, 1e-9), 1)
    ok = np.ones(rate.size, bool)
    for a, b in rh.unreadable:
        ok &= ~((t[:-k] < b) & (t[k:] > a))
    for g in rh.refuted:
        ok &= ~((t[:-k] < g.end_s) & (t[k:] > g.start_s))
    idx = np.flatnonzero(ok)
    return rate[idx], idx


def _merge_runs(idx: np.ndarray, rh: RhythmResult, k: int, rate: np.ndarray, pick: Any) -> list[Hit]:
    """Merge overlapping beat windows (start indices ``idx``, ``k`` intervals each) into alarms,
    keeping the most extreme window rate (``pick`` = min or max)."""
    t = rh.beat_times_s
    hits: list[Hit] = []
    for j, i in enumerate(idx):
        a, b = float(t[i]), float(t[i + k])
        if hits and a <= hits[-1][1]:
            s0, _, v = hits[-1]
            hits[-1] = (s0, b, {**v, "rate_bpm": pick(v["rate_bpm"], float(rate[j])), "windows": v["windows"] + 1})
        else:
            hits.append((a, b, {"rate_bpm": float(rate[j]), "beats": k + 1, "windows": 1}))
    return hits


def _brady(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    t = rh.beat_times_s
    if "max_mean_rate_bpm" in p:
        # Mean ventricular rate over the readable record: beats per readable time between first and last beat.
        if t.size < 3:
            return []
        rr = np.diff(t)
        ok = np.ones(rr.size, bool)
        for a, b in rh.unreadable:
            ok &= ~((t[:-1] < b) & (t[1:] > a))
        if ok.sum() < 2:
            return []
        rate = _r1(60.0 / float(rr[ok].mean()))
        return [(float(t[0]), float(t[-1]), {"mean_rate_bpm": rate, "beats": int(ok.sum()) + 1})] \
            if rate <= p["max_mean_rate_bpm"] else []
    rate, idx = _rates(rh, int(p["beats"]))
    # Bradycardia is a slow rate sustained over the beats, not one long interval: a single
    # pause or one missed beat (which doubles one interval) does not make a window of 4-5 beats
    # "extreme bradycardia" (pauses have their own rule).
    sel = (rate < p["below_rate_bpm"]) & (_median_rates(rh, idx, int(p["beats"])) < p["below_rate_bpm"])
    hits = _merge_runs(idx[sel], rh, int(p["beats"]) - 1, rate[sel], min)
    return [h for h in hits if not _pulse_faster(rh, h, p["below_rate_bpm"])]


def _median_rates(rh: RhythmResult, idx: np.ndarray, beats: int) -> np.ndarray:
    """Rate from the median interval of each window of ``beats`` beats starting at ``idx``.

    Why: the mean rate of a short window moves a long way with one interval
    that is not the rhythm's (a missed or a double-counted beat, a pause);
    the median interval does not, so a rate alarm needs both to cross.
    """
    k = beats - 1
    if idx.size == 0 or k < 1:
        return np.zeros(idx.size)
    windows = np.lib.stride_tricks.sliding_window_view(np.diff(rh.beat_times_s), k)[idx]
    return np.round(60.0 / np.maximum(np.median(windows, axis=1), 1e-9), 1)


def _pulse_faster(rh: RhythmResult, hit: Hit, limit_bpm: float) -> bool:
    """A regular pulse clearly above the rate limit over the span refutes an ECG bradycardia
    (the detector missed small QRS complexes)."""
    pulse = rh.pulse_over(hit[0], hit[1])
    return pulse is not None and pulse["pulse_rate_bpm"] >= PULSE_MARGIN * limit_bpm


def _tachy(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    rate, idx = _rates(rh, int(p["beats"]))
    # A fast rate sustained over the beats: one double-counted beat (a tall T wave, an artefact)
    # halves one interval and lifts the mean of the window, not its median interval.
    sel = (rate > p["above_rate_bpm"]) & (_median_rates(rh, idx, int(p["beats"])) > p["above_rate_bpm"])
    # No pulse check here: at fast rates the pulse often misses beats (pulse deficit), so a pulse
    # at half the ECG rate does not prove double counting (it removed true alarms in the 2015 set).
    return _merge_runs(idx[sel], rh, int(p["beats"]) - 1, rate[sel], max)


def _vt(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    # Every ventricular run, whatever its rate: the rule's own rate line decides (the rhythm
    # stage's 100 /min line is for its timeline label).
    hits = []
    for e in rh.ventricular_runs:
        rate, dur, beats = _r1(e.evidence["rate_bpm"]), _r3(e.evidence["duration_s"]), e.evidence["beats"]
        if "min_rate_bpm" in p:
            ok = rate >= p["min_rate_bpm"] and dur >= p["min_duration_s"]
        else:
            ok = beats >= p["min_beats"] and rate > p["above_rate_bpm"]
        if ok:
            hits.append((e.start_s, e.end_s, _with_pulse({"rate_bpm": rate, "duration_s": dur, "beats": beats}, e)))
    return hits


def _poly_vt(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    # Approximation: a fast (>= 200 /min) VT run with irregular cycle length (RR CV >= 0.10), the
    # torsades signature available from beat times; the twisting QRS axis itself is not measured.
    t = rh.beat_times_s
    hits = []
    for e in rh.vt_runs:
        if e.evidence["beats"] < p["min_beats"] or _r1(e.evidence["rate_bpm"]) < p["min_rate_bpm"]:
            continue
        rr = np.diff(t[(t >= e.start_s) & (t < e.end_s)])
        cv = float(rr.std() / rr.mean()) if rr.size >= 2 else 0.0
        if cv >= 0.10:
            hits.append((e.start_s, e.end_s, {"rate_bpm": _r1(e.evidence["rate_bpm"]), "beats": e.evidence["beats"],
                                              "rr_cv": round(cv, 3)}))
    return hits


def _vf(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    return [(e.start_s, e.end_s, _with_pulse({"duration_s": _r3(e.end_s - e.start_s)}, e)) for e in rh.vf
            if _r3(e.end_s - e.start_s) >= p["min_duration_s"]]


def _episodes(rh: RhythmResult, labels: Sequence[str]) -> list[Episode]:
    return [e for e in rh.episodes if e.label in labels]


def _rapid(labels: Sequence[str]) -> Any:
    def detect(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
        hits = []
        for e in _episodes(rh, labels):
            rate = e.evidence.get("rate_bpm")
            if rate is not None and e.evidence.get("beats", 0) >= 3 and _r1(rate) >= p["min_rate_bpm"]:
                hits.append((e.start_s, e.end_s, {"rate_bpm": _r1(rate), "rhythm": e.label,
                                                  "beats": e.evidence["beats"]}))
        return hits
    return detect


def _preexcited(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    t, lab = rh.beat_times_s, rh.beat_labels
    hits = []
    for e in _episodes(rh, ("af", "afl")):
        inside = np.flatnonzero((t >= e.start_s) & (t <= e.end_s))
        if inside.size < 3:
            continue
        # Shortest RR between two classified (non-Q) beats: an unclassifiable beat may be noise.
        pairs = inside[:-1][(lab[inside[:-1]] != "Q") & (lab[inside[1:]] != "Q")]
        if pairs.size == 0:
            continue
        shortest = round(float(np.min(t[pairs + 1] - t[pairs])) * 1000.0, 1)
        if shortest <= p["max_shortest_rr_ms"]:
            hits.append((e.start_s, e.end_s, {"shortest_rr_ms": shortest}))
    return hits


def _av3(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    return [(e.start_s, e.end_s, {"degree": e.evidence.get("degree")}) for e in _episodes(rh, ("av_block",))
            if e.evidence.get("degree") == 3]


def _qtc(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    qtc = m.get("qtc_ms", m.get("qtc_bazett_ms"))
    qt = m.get("qt_ms")
    if qtc is None or round(float(qtc), 1) < p["min_qtc_ms"]:
        return []
    t, lab = rh.beat_times_s, rh.beat_labels
    if p["with"] == "vt":
        return [(e.start_s, e.end_s, {"qtc_ms": round(float(qtc), 1), "vt_rate_bpm": e.evidence["rate_bpm"]})
                for e in rh.vt_runs]
    if qt is None:
        return []
    # R on T: a ventricular beat whose coupling interval is not longer than the preceding beat's QT.
    hits = []
    for i in np.flatnonzero(lab[1:] == "V") + 1:
        coupling = (t[i] - t[i - 1]) * 1000.0
        if coupling <= float(qt):
            hits.append((float(t[i - 1]), float(t[i]), {"qtc_ms": round(float(qtc), 1), "qt_ms": round(float(qt), 1),
                                                        "coupling_ms": round(coupling, 1)}))
    return hits[:1]


# Contiguous leads: any two of the inferior leads, the high-lateral and lateral leads, and
# neighbouring precordial leads (V1-V6 in order, V5/V6 with I/aVL).
_CONTIGUOUS = (("II", "III"), ("II", "aVF"), ("III", "aVF"), ("I", "aVL"), ("V1", "V2"), ("V2", "V3"),
               ("V3", "V4"), ("V4", "V5"), ("V5", "V6"), ("V5", "I"), ("V6", "I"), ("V6", "aVL"))


def _stemi(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    st = dict(mo.get("st_mv", {}))
    if not st:
        return []

    def elevated(lead: str) -> bool:
        v = st.get(lead)
        if v is None:
            return False
        v = round(float(v), 3)
        if lead in ("V1", "V2", "V3"):
            return v > p["v1_v3_above_mv"]
        if lead in ("V4", "V5", "V6"):
            return v >= p["v4_v6_min_mv"]
        return v >= p["limb_min_mv"]

    pairs = [(a, b) for a, b in _CONTIGUOUS if elevated(a) and elevated(b)]
    leads = sorted({x for pair in pairs for x in pair}, key=lambda x: list(st).index(x) if x in st else 99)
    if len(leads) < p["min_contiguous"]:
        return []
    return [(0.0, rh.duration_s, {"leads": leads, "st_mv": {k: round(float(st[k]), 3) for k in leads}})]


def _hyperk(p: Mapping[str, Any], rh: RhythmResult, m: Mapping[str, Any], mo: Mapping[str, Any]) -> list[Hit]:
    # Approximation: wide QRS + peaked (tall, narrow-based, symmetric) T in a precordial lead +
    # no measurable P wave (sinoventricular conduction). Not a substitute for a potassium level.
    qrs = m.get("qrs_ms")
    t_amp = mo.get("t_peak_mv", {})
    peaked = mo.get("t_peaked", {})
    if qrs is None or round(float(qrs), 1) < p["min_qrs_ms"] or m.get("pr_ms") is not None:
        return []
    leads = [k for k, v in t_amp.items() if round(float(v), 3) >= p["min_t_mv"] and peaked.get(k)]
    if not leads:
        return []
    return [(0.0, rh.duration_s, {"qrs_ms": round(float(qrs), 1), "leads": leads,
                                  "t_peak_mv": {k: round(float(t_amp[k]), 3) for k in leads}, "p_wave": False})]


_DETECTORS = {
    "asystole": _asystole, "pause": _pause, "extreme_bradycardia": _brady, "extreme_tachycardia": _tachy,
    "ventricular_tachycardia": _vt, "polymorphic_vt": _poly_vt, "ventricular_fibrillation": _vf,
    "svt_rapid": _rapid(("svt",)), "af_rapid": _rapid(("af", "afl")), "af_preexcited": _preexcited,
    "av_block_3": _av3, "long_qtc_r_on_t": _qtc, "stemi": _stemi, "hyperkalaemia": _hyperk,
}


#: English and Chinese alarm texts, formatted with the alarm's evidence (``rate`` is its rate).
_TEXTS: dict[str, tuple[str, str]] = {
    "asystole": ("Asystole: no QRS for {duration_s:.1f} s",
                 "心脏停搏：{duration_s:.1f} 秒无QRS波"),
    "pauses": ("{pauses} pauses >= 3 s",
               "长RR间期（≥3秒）{pauses}次"),
    "pause": ("Pause: RR {rr_s:.2f} s",
              "长RR间期 {rr_s:.2f} 秒"),
    "extreme_bradycardia": ("Extreme bradycardia: {rate:.0f} /min",
                            "极度心动过缓：心室率 {rate:.0f} 次/分"),
    "extreme_tachycardia": ("Extreme tachycardia: {rate:.0f} /min",
                            "极度心动过速：心率 {rate:.0f} 次/分"),
    "ventricular_tachycardia": ("Ventricular tachycardia: {beats} beats at {rate:.0f} /min",
                                "室性心动过速：{beats} 个心搏，{rate:.0f} 次/分"),
    "polymorphic_vt": ("Polymorphic VT / torsades suspected: {rate:.0f} /min",
                       "疑似多形性室速/尖端扭转型室速：{rate:.0f} 次/分"),
    "ventricular_fibrillation": ("Ventricular flutter/fibrillation for {duration_s:.1f} s",
                                 "心室扑动/颤动 {duration_s:.1f} 秒"),
    "svt_rapid": ("SVT with ventricular rate {rate:.0f} /min",
                  "室上性心动过速，心室率 {rate:.0f} 次/分"),
    "af_rapid": ("AF/flutter with ventricular rate {rate:.0f} /min",
                 "心房颤动/扑动，心室率 {rate:.0f} 次/分"),
    "af_preexcited": ("Pre-excited AF suspected: shortest RR {shortest_rr_ms:.0f} ms",
                      "疑似心房颤动伴心室预激：最短RR {shortest_rr_ms:.0f} 毫秒"),
    "av_block_3": ("Third-degree AV block",
                   "三度房室传导阻滞"),
    "long_qtc_r_on_t": ("QTc {qtc_ms:.0f} ms with R-on-T PVC",
                        "QTc {qtc_ms:.0f} 毫秒伴R on T室性早搏"),
    "long_qtc_vt": ("QTc {qtc_ms:.0f} ms with VT",
                    "QTc {qtc_ms:.0f} 毫秒伴室性心动过速"),
    "stemi": ("ST elevation in {lead_list}: acute MI pattern",
              "{lead_list} 导联ST段抬高：急性心肌梗死图形"),
    "hyperkalaemia": ("Severe hyperkalaemia pattern (peaked T, wide QRS, no P)",
                      "严重高钾血症图形（T波高尖、QRS增宽、P波消失）"),
}


def _text(typ: str, v: Mapping[str, Any]) -> tuple[str, str]:
    """Short English and Chinese alarm texts with the measured value."""
    key = {"pause": "pauses" if "pauses" in v else "pause",
           "long_qtc_r_on_t": "long_qtc_r_on_t" if "coupling_ms" in v else "long_qtc_vt"}.get(typ, typ)
    values = {**v, "rate": v.get("rate_bpm", v.get("mean_rate_bpm")), "lead_list": ", ".join(v.get("leads", ()))}
    english, chinese = _TEXTS[key]
    return english.format(**values), chinese.format(**values)
