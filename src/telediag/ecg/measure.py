"""Beat-level measurements: RR / heart rate, and for resting 12-lead ECGs PR, QRS, QT, QTc, QRS axis.

Interval measurements are made on a median beat (per lead, over the dominant
"N" beats), as resting-ECG carts do, because a median beat suppresses noise
and ectopy that would otherwise jitter single-beat fiducials. Onsets/offsets
are global (taken from all leads together): the earliest onset and latest
offset across leads is what the standards (IEC 60601-2-25) measure.
"""

from __future__ import annotations

import math

import numpy as np

from .filters import lowpass, remove_baseline

__all__ = ["rr_summary", "heart_rate_bpm", "median_beats", "interval_measurements"]

PRE_S, POST_S = 0.40, 0.70   # median-beat window around the QRS fiducial


def rr_summary(qrs: np.ndarray, fs: float) -> dict[str, float | int | None]:
    """RR interval statistics in ms (count, mean, median, min, max, SDNN)."""
    rr = np.diff(np.asarray(qrs, dtype=np.float64)) * 1000.0 / fs
    if rr.size == 0:
        return {"count": 0, "mean": None, "median": None, "min": None, "max": None, "sdnn": None}
    return {
        "count": int(rr.size),
        "mean": float(rr.mean()),
        "median": float(np.median(rr)),
        "min": float(rr.min()),
        "max": float(rr.max()),
        "sdnn": float(rr.std(ddof=1)) if rr.size > 1 else 0.0,
    }


def heart_rate_bpm(qrs: np.ndarray, fs: float) -> float | None:
    """Average heart rate from the median RR (robust to a missed or extra beat)."""
    rr = np.diff(np.asarray(qrs, dtype=np.float64)) / fs
    return float(60.0 / np.median(rr)) if rr.size else None


def median_beats(signals: np.ndarray, fs: float, qrs: np.ndarray) -> tuple[np.ndarray, int]:
    """Median beat per lead, shape (window, n_leads), and the fiducial's index in it."""
    x = np.nan_to_num(np.asarray(signals, dtype=np.float64))
    x = lowpass(remove_baseline(x, fs), fs, 40.0)
    pre, post = int(round(PRE_S * fs)), int(round(POST_S * fs))
    qrs = np.asarray(qrs, dtype=np.int64)
    qrs = qrs[(qrs - pre >= 0) & (qrs + post <= x.shape[0])]
    if qrs.size == 0:
        raise ValueError("no complete beat for a median beat")
    idx = qrs[:, None] + np.arange(-pre, post)[None, :]
    return np.median(x[idx], axis=0), pre


def _first_below(curve: np.ndarray, start: int, stop: int, level: float) -> int:
    """First index from ``start`` towards ``stop`` (either direction) where curve < level."""
    step = 1 if stop >= start else -1
    for i in range(start, stop, step):
        if curve[i] < level:
            return i
    return stop


def interval_measurements(signals: np.ndarray, fs: float, qrs: np.ndarray,
                          leads: tuple[str, ...]) -> dict[str, float | None]:
    """PR, QRS, QT (ms), QTc Bazett/Fridericia (ms) and frontal QRS axis (deg) from the median beat."""
    med, f0 = median_beats(signals, fs, qrs)
    rr_s = float(np.median(np.diff(qrs))) / fs if len(qrs) > 1 else None
    ms = 1000.0 / fs
    # Combined slope over leads, lightly smoothed: large inside the QRS, small on segments.
    slope = np.abs(np.diff(med, axis=0)).sum(axis=1)
    k = max(int(0.01 * fs), 1)
    slope = np.convolve(slope, np.ones(k) / k, mode="same")
    search = int(0.08 * fs)
    peak = f0 - search + int(np.argmax(slope[f0 - search: f0 + search]))
    smax = slope[peak]
    # Isoelectric level of the slope curve: its low percentile over the beat.
    floor = float(np.percentile(slope, 10))
    level = floor + 0.08 * (smax - floor)
    onset = _first_below(slope, peak, max(peak - int(0.12 * fs), 0), level)
    offset = _first_below(slope, peak, min(peak + int(0.14 * fs), len(slope) - 1), level)
    qrs_ms = (offset - onset) * ms

    base = np.median(med[max(onset - int(0.03 * fs), 0): onset + 1], axis=0)  # PR-segment level per lead
    amp = np.abs(med - base)

    # P wave: largest combined deflection 40-300 ms before QRS onset; its onset by slope.
    p_lo, p_hi = max(onset - int(0.30 * fs), 0), onset - int(0.04 * fs)
    pr_ms = None
    if p_hi > p_lo:
        p_curve = amp[p_lo:p_hi].sum(axis=1)
        p_peak = p_lo + int(np.argmax(p_curve))
        p_level = floor + 0.15 * (slope[p_lo:p_hi].max() - floor)
        p_on = _first_below(slope, p_peak, max(p_peak - int(0.12 * fs), 0), p_level)
        if slope[p_lo:p_hi].max() > 2 * floor:
            pr_ms = (onset - p_on) * ms

    # T wave end: tangent at the steepest descent after the T peak, on the lead with the largest T.
    t_lo = offset + int(0.08 * fs)
    t_hi = min(onset + int((0.65 * rr_s if rr_s else 0.6) * fs), med.shape[0] - 2)
    qt_ms = None
    if t_hi > t_lo + 2:
        lead = int(np.argmax(amp[t_lo:t_hi].max(axis=0)))
        y = med[:, lead] - base[lead]
        t_peak = t_lo + int(np.argmax(np.abs(y[t_lo:t_hi])))
        sign = np.sign(y[t_peak]) or 1.0
        d = np.diff(y) * sign
        tail_end = min(t_peak + int(0.2 * fs), len(d))
        if tail_end > t_peak + 1:
            j = t_peak + int(np.argmin(d[t_peak:tail_end]))
            if d[j] < 0:
                t_end = j + (y[j] * sign) / (-d[j])  # where the tangent reaches baseline
                qt_ms = (t_end - onset) * ms

    out: dict[str, float | None] = {
        "rr_ms": rr_s * 1000.0 if rr_s else None,
        "pr_ms": pr_ms,
        "qrs_ms": qrs_ms,
        "qt_ms": qt_ms,
        "qtc_bazett_ms": qt_ms / math.sqrt(rr_s) if qt_ms and rr_s else None,
        "qtc_fridericia_ms": qt_ms / rr_s ** (1.0 / 3.0) if qt_ms and rr_s else None,
        "qrs_axis_deg": None,
    }
    # Frontal axis from net QRS area in I and aVF (aVF derived from II and III if absent).
    names = [n.upper() for n in leads]
    seg = med[onset:offset + 1] - base
    lead_i = seg[:, names.index("I")].sum() if "I" in names else None
    if "AVF" in names:
        lead_avf = seg[:, names.index("AVF")].sum()
    elif "II" in names and "III" in names:
        lead_avf = (seg[:, names.index("II")] + seg[:, names.index("III")]).sum() / 2.0
    else:
        lead_avf = None
    if lead_i is not None and lead_avf is not None:
        out["qrs_axis_deg"] = float(math.degrees(math.atan2(lead_avf, lead_i)))
    return {k: (round(float(v), 1) if v is not None else None) for k, v in out.items()}
