"""One call from a Recording to the JSON-serialisable result the CLI prints and the worker stores.

Critical findings are raised only from readable signal: a pause that
overlaps an unreadable window is reported as unreadable signal, never as
asystole, because a false 3 a.m. alarm from a loose electrode costs trust
that a real alarm then lacks.

Rhythm episodes (:mod:`telediag.ecg.rhythm`) and critical-value alarms
(:mod:`telediag.ecg.rules`, a built-in rule set or a rules file) are computed
for every recording. Long recordings (Holter) stream through the signal
stages in chunks of ``CHUNK_S`` read with ``MARGIN_S`` of signal on either
side; each chunk keeps only the beats and quality blocks it owns, so nothing
at a chunk border is lost or counted twice, and the beat-level rhythm and
rules then run once over the whole stitched beat series (episodes never
break at a border). Peak memory is a few chunk-sized buffers plus the
beat arrays, whatever the length; :func:`analyze_stream` takes any sliceable
signal source, so a Holter need never be held in memory as float64 at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .beats import classify_beats
from .measure import heart_rate_bpm, interval_measurements, rr_summary
from .measure import SPIKE_MIN_FS, remove_pacing_spikes
from .qrs import detect_qrs
from .quality import BLOCK_S, QualityResult, assess_quality
from .recording import Recording
from .rhythm import (RhythmResult, atrial_consistency, detect_rhythm, disorganised_blocks, low_band, paced_beats,
                     oscillation_blocks, pulse_beats, qrs_activity, shape_correlation, st_t_levels,
                     successive_correlation)
from .rules import RuleSet, evaluate, load_rules

__all__ = ["analyze", "analyze_stream", "signal_stage", "SignalParts", "ANALYZER_VERSION"]

ANALYZER_VERSION = "telediag-ecg 0.1.0"
PAUSE_S = 3.0                     # RR longer than this: pause / asystole
BRADY_BPM, TACHY_BPM = 40.0, 150.0
CHUNK_S = 3600.0                  # long recordings: signal stages run on chunks of this length ...
MARGIN_S = 60.0                   # ... with this much signal either side (detector/template settling)
DEDUP_S = 0.2                     # one beat seen by two chunks near their border (refractory period)
HOLTER_FS = 250.0                 # long recordings faster than this are analysed at an integer fraction of it


def _findings(qrs: np.ndarray, fs: float, n: int, quality: Any, hr: float | None) -> list[dict[str, Any]]:
    """Critical flags, each with the time span it rests on; only over readable signal."""
    out: list[dict[str, Any]] = []
    block = int(round(quality.block_s * fs))
    readable = ~quality.unreadable_blocks

    def all_readable(a: int, b: int) -> bool:
        return bool(readable[a // block: b // block + 1].all())

    # Pauses between beats, plus beat-free stretches at the start and end of the record.
    bounds = np.concatenate([[0], qrs, [n - 1]]) if qrs.size else np.array([0, n - 1])
    gaps = np.diff(bounds)
    for a, g in zip(bounds[:-1], gaps):
        if g > PAUSE_S * fs and all_readable(int(a), int(a + g)):
            out.append({"code": "asystole/pause", "severity": "critical",
                        "start_s": round(a / fs, 3), "duration_s": round(g / fs, 3)})
    if hr is not None and qrs.size >= 3 and all_readable(int(qrs[0]), int(qrs[-1])):
        if hr < BRADY_BPM:
            out.append({"code": "extreme bradycardia", "severity": "critical", "heart_rate_bpm": round(hr, 1)})
        elif hr > TACHY_BPM:
            out.append({"code": "extreme tachycardia", "severity": "critical", "heart_rate_bpm": round(hr, 1)})
    return out


@dataclass(frozen=True)
class SignalParts:
    """Signal-level results over the whole recording, stitched from chunks."""

    qrs: np.ndarray             # fiducial samples from the record start
    labels: list[str]           # N/V/Q per beat
    quality: QualityResult
    vf: np.ndarray              # per quality block: VF-like waveform
    activity: np.ndarray        # per quality block: QRS-band activity (gap second opinion)
    atrial: np.ndarray          # per beat: atrial findings (rhythm.ATRIAL_DTYPE: P-wave consistency, flutter, P waves)
    disorganised: np.ndarray    # per quality block: noise without a QRS floor
    shape: np.ndarray           # per beat: correlation with the conducted QRS (ventricular runs)
    paced: np.ndarray           # per beat: a pacing spike precedes it
    alike: np.ndarray           # per beat: correlation with the preceding beat's QRS (run ends)
    sine: np.ndarray            # per quality block: rate of a sine-wave ventricular rhythm, 0 where none


#: The per-beat and per-quality-block fields of SignalParts besides ``qrs`` and ``labels``: how
#: ``signal_stage`` stitches each from the chunks (beats by owner, blocks by position).
_BEAT_FIELDS = ("atrial", "shape", "paced", "alike")
_BLOCK_FIELDS = ("vf", "activity", "disorganised", "sine")
_QUALITY_FIELDS = ("missing", "flat", "clipped", "noisy", "jump", "artefact")


def _chunk_parts(x: np.ndarray, fs: float) -> SignalParts:
    quality = assess_quality(x, fs)
    result = detect_qrs(x, fs, quality.usable, quality.block_s)
    qrs = result.samples
    block = int(round(quality.block_s * fs))
    readable_beat = quality.usable[np.minimum(qrs // block, quality.usable.shape[0] - 1)].any(axis=1) \
        if qrs.size else np.zeros(0, bool)
    labels = classify_beats(x, fs, qrs, readable_beat, quality.usable, quality.block_s)
    low, fs_low = low_band(x, fs)
    vf, sine = oscillation_blocks(low, fs_low, quality.usable | quality.noisy, quality.block_s)
    activity = qrs_activity(result.bandpassed, qrs, fs, quality.usable, quality.block_s)
    atrial = atrial_consistency(low, fs_low, qrs, fs, labels)
    noise = disorganised_blocks(result.envelope, fs, quality.usable.shape[0], quality.block_s)
    shape = shape_correlation(result.bandpassed, qrs, labels, fs, quality.usable, quality.block_s)
    spikes = remove_pacing_spikes(x, fs)[1] if fs >= SPIKE_MIN_FS else np.zeros(0, np.int64)
    alike = successive_correlation(result.bandpassed, qrs, fs, quality.usable, quality.block_s)
    return SignalParts(qrs, labels, quality, vf, activity, atrial, noise, shape, paced_beats(spikes, qrs, fs), alike,
                       sine)


def signal_stage(signals: Any, fs: float, chunk_s: float = CHUNK_S, margin_s: float = MARGIN_S) -> SignalParts:
    """Quality, QRS, beat classes, VF blocks and QRS activity, in chunks when the record is long.

    ``signals`` is any (n, n_leads) array-like in mV that slices along axis 0
    (an ndarray, or a memory map scaled on access), so a 24-hour Holter never
    has to be held in memory as float64 at once. Chunk starts and margins are
    whole quality blocks, so block flags stitch without shifting. Chunked
    (long) recordings above ``HOLTER_FS`` are analysed at an integer fraction
    of their rate (the mean of each run of ``factor`` samples): beat and
    rhythm analysis needs no more than 250 Hz, and fiducials then have 4-ms
    resolution (mapped back to the recording's sample indices).
    """
    n = int(signals.shape[0])
    block = max(int(round(BLOCK_S * fs)), 4)
    chunk = max(int(round(chunk_s * fs / block)), 1) * block
    margin = max(int(round(margin_s * fs / block)), 1) * block
    if n <= chunk + 2 * margin:
        return _chunk_parts(np.asarray(signals[:n], dtype=np.float64), fs)
    factor = max(int(fs // HOLTER_FS), 1)
    if block % factor:
        factor = 1
    qrs_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    beat_parts: dict[str, list[np.ndarray]] = {k: [] for k in _BEAT_FIELDS}
    block_parts: dict[str, list[np.ndarray]] = {k: [] for k in _BLOCK_FIELDS}
    quality_parts: dict[str, list[np.ndarray]] = {k: [] for k in _QUALITY_FIELDS}
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        a, b = max(s - margin, 0), min(e + margin, n)
        x = np.asarray(signals[a:b], dtype=np.float64)
        if factor > 1:
            m = x.shape[0] // factor
            x = x[:m * factor].reshape(m, factor, x.shape[1]).mean(axis=1)
        part = _chunk_parts(x, fs / factor)
        beats = part.qrs * factor + (factor - 1) // 2 + a
        owned = (beats >= s) & (beats < e)
        qrs_parts.append(beats[owned])
        label_parts.append(np.asarray(part.labels, dtype=object)[owned])
        for k in _BEAT_FIELDS:
            beat_parts[k].append(getattr(part, k)[owned])
        b0, b1 = (s - a) // block, (s - a) // block + -(-(e - s) // block)
        for k in _QUALITY_FIELDS:
            quality_parts[k].append(getattr(part.quality, k)[b0:b1])
        for k in _BLOCK_FIELDS:
            block_parts[k].append(getattr(part, k)[b0:b1])
    qrs = np.concatenate(qrs_parts).astype(np.int64)
    labels = np.concatenate(label_parts)
    # A beat near a border may be found by both chunks (fiducials a few ms apart): keep the first.
    keep = np.concatenate([[True], np.diff(qrs) > DEDUP_S * fs]) if qrs.size else np.zeros(0, bool)
    quality = QualityResult(block_s=BLOCK_S, **{k: np.concatenate(v) for k, v in quality_parts.items()})
    return SignalParts(qrs=qrs[keep], labels=[str(v) for v in labels[keep]], quality=quality,
                       **{k: np.concatenate(v)[keep] for k, v in beat_parts.items()},
                       **{k: np.concatenate(v) for k, v in block_parts.items()})


def _rules(rules: str | Path | RuleSet) -> RuleSet:
    return rules if isinstance(rules, RuleSet) else load_rules(rules)


def analyze(rec: Recording, rules: str | Path | RuleSet = "resting", *, chunk_s: float = CHUNK_S) -> dict[str, Any]:
    """Full ECG analysis of one recording; the returned dict is JSON-serialisable.

    Keys: fs, leads, duration_s, qrs (sample indices from record start), beats
    (N/V/Q per QRS), heart_rate_bpm, rr_ms, quality, measurements (ours, 12-lead
    only, else None; keys of :data:`~telediag.ecg.recording.MEASUREMENT_KEYS` and more),
    device_measurements and device_statements (the cart's own, same keys; empty when the
    file has none), format (the file format read), rhythm (``{label, start_s, end_s, evidence}`` episodes),
    alarms (``{type, severity, start_s, end_s, text, text_zh, evidence}``,
    from ``rules``: a built-in set name, a rules file or a loaded
    :class:`~telediag.ecg.rules.RuleSet`), findings (legacy summary flags),
    analyzer_version. Recordings longer than ``chunk_s`` (plus margins) are
    analysed in chunks (see module docstring).
    """
    rule_set = _rules(rules)
    x, fs, n = rec.signals, rec.fs, rec.n_samples
    parts = signal_stage(x, fs, chunk_s)
    quality, qrs, labels = parts.quality, parts.qrs, parts.labels
    hr = heart_rate_bpm(qrs, fs)

    measurements = None
    chest = sum(1 for lead in rec.leads if lead.upper().startswith("V"))
    # Any resting lead set measures globally: I and II give the frontal plane, four or
    # more chest leads the horizontal one (paediatric/right-sided sets such as V3R, V7 too).
    if {"I", "II"} <= set(rec.leads) and chest >= 4 and qrs.size:
        # The median beat is built from the normal beats, or, when fewer than three are
        # normal, from the "V" beats: a fully paced or wide-QRS rhythm may be classed so.
        # The rate counts every beat.
        kinds = np.asarray(labels, dtype=object)
        readable = [k for k in ("N", "V") if (kinds == k).sum() >= 3]
        if readable:
            dominant = qrs[kinds == readable[0]]
            try:
                measurements = interval_measurements(x, fs, dominant, rec.leads, all_qrs=qrs)
            except ValueError:
                measurements = None

    pulses = [pulse_beats(samples, pfs) for pfs, samples in rec.pulsatile.values()]
    rhythm = _rhythm(parts, fs, n, pulses)
    morphology = _morphology(rec, qrs, labels) if measurements is not None else None
    alarms = evaluate(rule_set, rhythm, measurements, morphology)
    return {
        "analyzer_version": ANALYZER_VERSION,
        "fs": fs,
        "leads": list(rec.leads),
        "duration_s": round(rec.duration_s, 3),
        "start_time": rec.start_time.isoformat() if rec.start_time else None,
        "qrs": [int(v) for v in qrs],
        "beats": labels,
        "heart_rate_bpm": round(hr, 1) if hr is not None else None,
        "rr_ms": rr_summary(qrs, fs),
        "quality": _quality_summary(quality, rec.leads, rec.duration_s),
        "measurements": measurements,
        "device_measurements": dict(rec.source.measurements),
        "device_statements": list(rec.source.statements),
        "format": rec.source.format,
        "rhythm": [e.as_dict() for e in rhythm.episodes],
        "alarms": [a.as_dict() for a in alarms],
        "findings": _findings(qrs, fs, n, quality, hr),
    }


def analyze_stream(signals: Any, fs: float, leads: tuple[str, ...], rules: str | Path | RuleSet = "holter", *,
                   chunk_s: float = CHUNK_S) -> dict[str, Any]:
    """Rhythm analysis of a recording too long to hold as a :class:`Recording` (a 24-hour Holter).

    ``signals`` is any (n, n_leads) array-like in mV that slices along axis 0 (a reader that
    decodes a slice of the file on access), read one chunk at a time, so the peak memory is
    the analysis's own (about 150 MB for 24 h x 3 leads at 500 Hz), not the recording's.
    Keys as :func:`analyze` minus what needs the whole signal or the file (start_time,
    measurements and the device's, format); no pulsatile channels.
    """
    rule_set = _rules(rules)
    n = int(signals.shape[0])
    parts = signal_stage(signals, fs, chunk_s)
    qrs, labels = parts.qrs, parts.labels
    hr = heart_rate_bpm(qrs, fs)
    rhythm = _rhythm(parts, fs, n, [])
    return {
        "analyzer_version": ANALYZER_VERSION,
        "fs": fs,
        "leads": list(leads),
        "duration_s": round(n / fs, 3),
        "qrs": [int(v) for v in qrs],
        "beats": labels,
        "heart_rate_bpm": round(hr, 1) if hr is not None else None,
        "rr_ms": rr_summary(qrs, fs),
        "quality": _quality_summary(parts.quality, leads, n / fs),
        "rhythm": [e.as_dict() for e in rhythm.episodes],
        "alarms": [a.as_dict() for a in evaluate(rule_set, rhythm)],
        "findings": _findings(qrs, fs, n, parts.quality, hr),
    }


def _quality_summary(quality: QualityResult, leads: tuple[str, ...], duration_s: float) -> dict[str, Any]:
    """Per-lead quality counts and the unreadable windows, as the result reports them."""
    usable = quality.usable
    per_lead = {
        lead: {
            "usable_fraction": round(float(usable[:, j].mean()), 4),
            "flat_blocks": int(quality.flat[:, j].sum()),
            "clipped_blocks": int(quality.clipped[:, j].sum()),
            "noisy_blocks": int(quality.noisy[:, j].sum()),
            "baseline_jump_blocks": int(quality.jump[:, j].sum()),
        }
        for j, lead in enumerate(leads)
    }
    return {
        "block_s": quality.block_s,
        "per_lead": per_lead,
        "unreadable_windows": [{"start_s": a, "end_s": b} for a, b in quality.unreadable_windows(duration_s)],
        "unreadable_fraction": round(float(quality.unreadable_blocks.mean()), 4),
    }


def _rhythm(parts: SignalParts, fs: float, n: int, pulses: list[np.ndarray]) -> RhythmResult:
    """Beat-level rhythm over the stitched beat series, with pulse beats from pulsatile channels."""
    return detect_rhythm(parts.qrs, parts.labels, fs, n, parts.quality.unreadable_blocks, parts.quality.block_s,
                         parts.vf, pulses, parts.activity, parts.atrial, parts.disorganised, parts.shape, parts.paced,
                         parts.alike, parts.sine)


def _morphology(rec: Recording, qrs: np.ndarray, labels: list[str]) -> dict[str, Any] | None:
    """ST levels and T shape per lead from the median N beat (12-lead rules: stemi, hyperkalaemia)."""
    normal = qrs[np.asarray(labels, dtype=object) == "N"] if qrs.size else qrs
    return st_t_levels(rec.signals, rec.fs, normal, rec.leads) if normal.size >= 3 else None
