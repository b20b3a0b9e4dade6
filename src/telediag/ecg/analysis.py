"""One call from a Recording to the JSON-serialisable result the CLI prints and the worker stores.

Critical findings are raised only from readable signal: a pause that
overlaps an unreadable window is reported as unreadable signal, never as
asystole, because a false 3 a.m. alarm from a loose electrode costs trust
that a real alarm then lacks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .beats import classify_beats
from .measure import heart_rate_bpm, interval_measurements, rr_summary
from .qrs import detect_qrs
from .quality import assess_quality
from .recording import Recording

__all__ = ["analyze", "ANALYZER_VERSION"]

ANALYZER_VERSION = "telediag-ecg 0.1.0"
PAUSE_S = 3.0                     # RR longer than this: pause / asystole
BRADY_BPM, TACHY_BPM = 40.0, 150.0
TWELVE_LEAD = {"I", "II", "V1", "V2", "V3", "V4", "V5", "V6"}


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


def analyze(rec: Recording) -> dict[str, Any]:
    """Full ECG analysis of one recording; the returned dict is JSON-serialisable.

    Keys: fs, leads, duration_s, qrs (sample indices from record start), beats
    (N/V/Q per QRS), heart_rate_bpm, rr_ms, quality, measurements (12-lead
    only, else None), findings, analyzer_version.
    """
    x, fs, n = rec.signals, rec.fs, rec.n_samples
    quality = assess_quality(x, fs)
    result = detect_qrs(x, fs, quality.usable, quality.block_s)
    qrs = result.samples
    block = int(round(quality.block_s * fs))
    readable_beat = quality.usable[np.minimum(qrs // block, quality.usable.shape[0] - 1)].any(axis=1) \
        if qrs.size else np.zeros(0, bool)
    labels = classify_beats(x, fs, qrs, readable_beat, quality.usable, quality.block_s)
    hr = heart_rate_bpm(qrs, fs)

    measurements = None
    if TWELVE_LEAD.issubset(set(rec.leads)):
        normal = qrs[np.asarray(labels, dtype=object) == "N"] if qrs.size else qrs
        if normal.size >= 3:
            try:
                measurements = interval_measurements(x, fs, normal, rec.leads)
            except ValueError:
                measurements = None

    usable = quality.usable
    per_lead = {
        lead: {
            "usable_fraction": round(float(usable[:, j].mean()), 4),
            "flat_blocks": int(quality.flat[:, j].sum()),
            "clipped_blocks": int(quality.clipped[:, j].sum()),
            "noisy_blocks": int(quality.noisy[:, j].sum()),
            "baseline_jump_blocks": int(quality.jump[:, j].sum()),
        }
        for j, lead in enumerate(rec.leads)
    }
    unreadable = quality.unreadable_windows(rec.duration_s)
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
        "quality": {
            "block_s": quality.block_s,
            "per_lead": per_lead,
            "unreadable_windows": [{"start_s": a, "end_s": b} for a, b in unreadable],
            "unreadable_fraction": round(float(quality.unreadable_blocks.mean()), 4),
        },
        "measurements": measurements,
        "findings": _findings(qrs, fs, n, quality, hr),
    }
