"""Beat classification: normal/supraventricular ("N") versus ventricular ectopic ("V"), else "Q".

Why this method: a PVC is defined against the patient's own conducted beat
(wide, differently shaped, usually premature), not against population norms
that break for bundle-branch block or paced patients. So each beat is
compared with the record's dominant beat template on all usable leads:

* morphology: correlation with the dominant template after fiducial alignment;
* width: QRS slope-energy duration relative to the dominant beat's;
* energy: QRS energy relative to the template;
* timing: prematurity of the RR interval against the local mean RR.

Beats whose window runs off the record, or that lie in unusable signal,
are "Q" (unclassifiable) rather than a guess.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .filters import bandpass

__all__ = ["classify_beats", "beat_features"]

PRE_S, POST_S = 0.10, 0.16   # morphology window around the fiducial
WIDTH_LEVEL = 0.25           # fraction of a beat's max slope that counts as "inside the QRS"
TEMPLATE_S = 60.0            # stretch of record sharing one dominant-beat template


def _windows(x: np.ndarray, qrs: np.ndarray, pre: int, post: int) -> tuple[np.ndarray, np.ndarray]:
    """Beat segments (n_beats, pre+post, n_leads) and a mask of beats fully inside the record."""
    n = x.shape[0]
    inside = (qrs - pre >= 0) & (qrs + post <= n)
    idx = np.clip(qrs[:, None] + np.arange(-pre, post)[None, :], 0, n - 1)
    return x[idx], inside


def _dominant(seg: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Dominant beat of a group: median beat, re-estimated from the beats resembling it."""
    pool = seg[inside] if inside.any() else seg
    template = np.median(pool, axis=0)
    corr = _correlation(pool, template)
    similar = corr >= np.quantile(corr, 0.5)
    if similar.sum() >= 3:
        template = np.median(pool[similar], axis=0)
    return template


def _width(slope: np.ndarray, fs: float) -> np.ndarray:
    """QRS width proxy: time the summed |slope| stays above WIDTH_LEVEL of its maximum."""
    peak = slope.max(axis=-1, keepdims=True)
    return (slope > WIDTH_LEVEL * peak).sum(axis=-1) / fs


def beat_features(signals: np.ndarray, fs: float, qrs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-beat features relative to the local dominant beat (arrays of length n_beats).

    The dominant beat is estimated per ``TEMPLATE_S`` stretch of the record,
    because conduction (and lead position on a Holter) drifts over hours; a
    single template makes every beat of a changed-but-normal morphology look
    ectopic.
    """
    x = np.nan_to_num(np.asarray(signals, dtype=np.float64).reshape(len(signals), -1))
    qrs = np.asarray(qrs, dtype=np.int64)
    pre, post = int(round(PRE_S * fs)), int(round(POST_S * fs))
    y = bandpass(x, fs, 1.0, 40.0)
    seg, inside = _windows(y, qrs, pre, post)                # (B, W, L)
    seg = seg - np.median(seg, axis=1, keepdims=True)
    slope = np.abs(np.diff(seg, axis=1)).sum(axis=2)         # (B, W-1), summed over leads
    width = _width(slope, fs)
    corr = np.zeros(qrs.size)
    width_ratio = np.ones(qrs.size)
    energy = np.ones(qrs.size)
    group = (qrs // int(round(TEMPLATE_S * fs))).astype(np.int64)
    n_groups = int(group.max()) + 1 if group.size else 0
    for g in range(n_groups):
        # Pool with the neighbouring stretches so short or ectopy-rich stretches still get a stable template.
        members = group == g
        pool = (group >= g - 1) & (group <= g + 1)
        if not members.any():
            continue
        template = _dominant(seg[pool], inside[pool])
        t_slope = np.abs(np.diff(template, axis=0)).sum(axis=1)
        t_width = float(_width(t_slope, fs))
        corr[members] = _correlation(seg[members], template)
        width_ratio[members] = width[members] / max(t_width, 1.0 / fs)
        energy[members] = np.sqrt((seg[members] ** 2).sum(axis=(1, 2)) / max((template ** 2).sum(), 1e-12))

    rr = np.diff(qrs).astype(np.float64)
    rr_prev = np.concatenate([[np.nan], rr])
    local = (ndimage.median_filter(np.concatenate([rr[:1], rr]), size=9, mode="nearest")
             if rr.size else np.full(qrs.size, float(fs)))
    return {
        "corr": corr,
        "width_ratio": width_ratio,
        "width_s": width,
        "energy_ratio": energy,
        "prematurity": rr_prev / local,
        "inside": inside,
    }


def _correlation(seg: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Pearson correlation of each beat with the template, all leads concatenated."""
    a = seg.reshape(seg.shape[0], -1)
    b = template.reshape(-1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean()
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum())
    return np.divide(a @ b, den, out=np.zeros(a.shape[0]), where=den > 0)


def classify_beats(signals: np.ndarray, fs: float, qrs: np.ndarray,
                   readable: np.ndarray | None = None) -> list[str]:
    """Label each detected QRS "N", "V" or "Q" (see module docstring).

    ``readable`` is an optional boolean per beat (e.g. from signal quality);
    beats in unreadable signal are "Q".
    """
    qrs = np.asarray(qrs, dtype=np.int64)
    if qrs.size == 0:
        return []
    if qrs.size < 3:
        return ["Q"] * qrs.size
    f = beat_features(signals, fs, qrs)
    corr, wr, er = f["corr"], f["width_ratio"], f["energy_ratio"]
    premature = np.nan_to_num(f["prematurity"], nan=1.0) < 0.85
    # Ventricular: shaped unlike the local dominant beat AND wider, or much
    # larger, or premature and not narrower (a narrow premature beat with a
    # different shape is more likely aberrant supraventricular or noise).
    is_v = (corr < 0.85) & ((wr > 1.25) | (er > 1.5) | (premature & (wr > 1.05)))
    labels = np.where(is_v, "V", "N").astype(object)
    labels[~f["inside"]] = "Q"
    if readable is not None:
        labels[~np.asarray(readable, bool)] = "Q"
    return [str(v) for v in labels]
