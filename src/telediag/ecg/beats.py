"""Beat classification: normal/supraventricular ("N") versus ventricular ectopic ("V"), else "Q".

Why this method: a PVC is defined against the patient's own conducted beat
(wide, differently shaped, usually premature, usually followed by a
compensatory pause), not against population norms that break for bundle-branch
block or paced patients. So each beat is compared with the record's local
dominant beat on all usable leads:

* morphology: correlation with the dominant template over the QRS window,
  combined over the usable leads after noise whitening (each lead is scaled by
  the inverse of its own beat-to-beat residual, so a clean lead counts more
  than a noisy one and a small-but-clean lead such as V1 is not drowned by a
  large one);
* width: duration of the central 80 % of the QRS slope energy, relative to the
  dominant beat's (a PVC's depolarisation spreads slowly through the muscle);
* energy: QRS energy relative to the template;
* timing: prematurity (RR before / local RR) and compensatory pause (RR after /
  local RR).

The dominant beat of each stretch is the majority morphology: the medoid
under correlation seeds it, so bigeminy or ectopy-rich stretches do not pull
the template towards the ectopic shape. The rule set is small and global (no
per-record tuning):

* a beat shaped very unlike the dominant beat (``corr < STRONG_CORR``) is V if
  it is also larger (``energy > BIG``), or wide (``width ratio > WIDE``), or
  not narrower and ectopic in timing (a narrow, small, on-time deflection is
  noise or an aberrant supraventricular beat, not a ventricular beat);
* a beat moderately unlike it (``corr < DIFF_CORR``) is V if it is also wide
  (``width ratio > WIDE``) and either larger (``energy > BIG``) or ectopic in
  timing (premature or followed by a pause).

Beats whose window runs off the record, or that lie where signal quality marks
no lead usable (noise, lead-off), are "Q" (unclassifiable) rather than a guess.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .filters import bandpass_rows
from .quality import BLOCK_S, assess_quality

__all__ = ["classify_beats", "beat_features"]

PRE_S, POST_S = 0.10, 0.10   # QRS morphology window around the fiducial
TEMPLATE_S = 60.0            # stretch of record sharing one dominant-beat template (pooled with neighbours)
RR_BEATS = 9                 # local RR reference: median of this many RR intervals
DOMINANT_SAMPLE = 100        # beats (evenly spaced) searched for the medoid of a template stretch
# Decision rule (physiological, global):
STRONG_CORR = 0.5            # below: shaped unlike the dominant beat
DIFF_CORR = 0.85             # below: noticeably different shape
WIDE = 1.25                  # QRS width ratio to the dominant beat counted as wide
BIG = 1.3                    # QRS energy ratio counted as larger
PREMATURE = 0.85             # RR before / local RR
PAUSE = 1.15                 # RR after / local RR (compensatory pause)


def _correlation(seg: np.ndarray, template: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """Correlation of each beat (B, W, L) with its template ((B, W, L) or (W, L)) over the leads in ``leads`` (B, L)."""
    a = seg - seg.mean(axis=1, keepdims=True)
    b = template - template.mean(axis=-2, keepdims=True)
    w = leads.astype(np.float64)
    # Per-lead dot products summed in one pass, without a (B, W, L) product array each (half the
    # time of beat classification went to those temporaries; the sums are the same).
    ab = (np.einsum("bwl,bwl->bl" if b.ndim == 3 else "bwl,wl->bl", a, b) * w).sum(axis=1)
    aa = (np.einsum("bwl,bwl->bl", a, a) * w).sum(axis=1)
    bb = (np.broadcast_to(np.einsum("...wl,...wl->...l", b, b), w.shape) * w).sum(axis=1)
    den = np.sqrt(aa * bb)
    return np.divide(ab, den, out=np.zeros(seg.shape[0]), where=den > 0)


def _width(seg: np.ndarray, leads: np.ndarray, fs: float) -> np.ndarray:
    """QRS width proxy: time spanned by the central 80 % of the slope energy summed over usable leads."""
    slope = (np.abs(np.diff(seg, axis=1)) * leads[:, None, :]).sum(axis=2)
    cum = np.cumsum(slope, axis=1)
    cum /= np.maximum(cum[:, -1:], 1e-12)
    return ((cum < 0.9).sum(axis=1) - (cum < 0.1).sum(axis=1)) / fs


def _dominant(pool: np.ndarray) -> np.ndarray:
    """Dominant beat of a group of beats (P, W, L).

    The medoid under correlation (the beat whose median correlation with the
    others is highest, i.e. a beat of the majority morphology even when
    ectopic beats are frequent or bigeminal) seeds it; the template is the
    median of the half of the beats resembling the medoid most.
    """
    step = max(pool.shape[0] // DOMINANT_SAMPLE, 1)
    sub = pool[::step].reshape(-(-pool.shape[0] // step), -1)
    sub = sub - sub.mean(axis=1, keepdims=True)
    sub /= np.maximum(np.linalg.norm(sub, axis=1, keepdims=True), 1e-12)
    medoid = pool[::step][int(np.argmax(np.median(sub @ sub.T, axis=1)))]
    corr = _correlation(pool, medoid, np.ones(pool.shape[::2], bool))
    similar = corr >= np.quantile(corr, 0.5)
    if similar.sum() < 3:
        return np.median(pool, axis=0)
    return np.median(pool[similar], axis=0, overwrite_input=True)  # partitions its own copy, not another


def beat_features(signals: np.ndarray, fs: float, qrs: np.ndarray,
                  leads: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-beat features relative to the local dominant beat (arrays of length n_beats).

    ``leads`` is an optional boolean (n_beats, n_leads) mask of the leads usable
    at each beat (from signal quality); all leads if None.

    The dominant beat is estimated per ``TEMPLATE_S`` stretch (pooled with its
    neighbours) because conduction, and lead position on a Holter, drift over
    hours; one template for the whole record would make every beat of a
    changed-but-normal morphology look ectopic.
    """
    x = np.nan_to_num(np.asarray(signals, dtype=np.float64).reshape(len(signals), -1))
    qrs = np.asarray(qrs, dtype=np.int64)
    n, n_leads = x.shape
    if leads is None:
        leads = np.ones((qrs.size, n_leads), bool)
    leads = np.array(leads, dtype=bool).reshape(qrs.size, n_leads)
    leads[~leads.any(axis=1)] = True          # unusable everywhere: label decided by the caller
    pre, post = int(round(PRE_S * fs)), int(round(POST_S * fs))
    # Filtered lead by lead (the same values as bandpass(x, ...), a fraction of its time and copies).
    y = bandpass_rows(x.T, fs, 1.0, 40.0).T                  # (n, L) view of lead-major rows
    inside = (qrs - pre >= 0) & (qrs + post <= n)
    idx = np.clip(qrs[:, None] + np.arange(-pre, post)[None, :], 0, n - 1)
    seg = y[idx]                                              # (B, W, L)
    seg = seg - np.median(seg[:, : max(pre // 2, 1)], axis=1, keepdims=True)  # baseline before the QRS

    template = np.zeros_like(seg)
    group = qrs // max(int(round(TEMPLATE_S * fs)), 1)
    order = np.argsort(group, kind="stable")      # the beats of a stretch and of its neighbours are one range
    ranked = group[order]
    for g in np.unique(group):
        # Pool with the neighbouring stretches so short or ectopy-rich stretches still get a stable template.
        lo, a, b, hi = np.searchsorted(ranked, [g - 1, g, g + 1, g + 2])
        pool = order[lo:hi]
        pool_in = pool[inside[pool]]
        template[order[a:b]] = _dominant(seg[pool_in] if pool_in.size >= 3 else seg[pool])

    # Noise whitening: scale each lead by its typical beat-to-template residual.
    diff = seg - template
    residual = np.sqrt(np.einsum("bwl,bwl->bl", diff, diff) / seg.shape[1])  # (B, L)
    weight = 1.0 / np.maximum(np.median(residual[inside] if inside.any() else residual, axis=0), 1e-9)
    seg = seg * weight
    template = template * weight

    corr = _correlation(seg, template, leads)
    width = _width(seg, leads, fs)
    width_ratio = width / np.maximum(_width(template, leads, fs), 1.0 / fs)
    e_beat = (np.einsum("bwl,bwl->bl", seg, seg) * leads).sum(axis=1)
    e_tmpl = (np.einsum("bwl,bwl->bl", template, template) * leads).sum(axis=1)
    energy = np.sqrt(e_beat / np.maximum(e_tmpl, 1e-12))

    rr = np.diff(qrs).astype(np.float64)
    if rr.size:
        local = ndimage.median_filter(np.concatenate([rr[:1], rr]), size=RR_BEATS, mode="nearest")
        prematurity = np.concatenate([[np.nan], rr]) / local
        pause = np.concatenate([rr, [np.nan]]) / local
    else:
        prematurity = pause = np.full(qrs.size, np.nan)
    return {
        "corr": corr,
        "width_ratio": width_ratio,
        "width_s": width,
        "energy_ratio": energy,
        "prematurity": prematurity,
        "pause": pause,
        "inside": inside,
    }


def _beat_leads(signals: np.ndarray, fs: float, qrs: np.ndarray, usable: np.ndarray | None,
                block_s: float) -> np.ndarray:
    """Per-beat usable-lead mask (n_beats, n_leads) from a block-wise quality mask."""
    if usable is None:
        usable = assess_quality(signals, fs, block_s).usable
    usable = np.asarray(usable, dtype=bool)
    block = max(int(round(block_s * fs)), 1)
    return usable[np.clip(qrs // block, 0, usable.shape[0] - 1)]


def classify_beats(signals: np.ndarray, fs: float, qrs: np.ndarray,
                   readable: np.ndarray | None = None, usable: np.ndarray | None = None,
                   block_s: float = BLOCK_S) -> list[str]:
    """Label each detected QRS "N", "V" or "Q" (see module docstring).

    Args:
        signals: mV, shape (n,) or (n, n_leads).
        fs: sampling rate in Hz.
        qrs: fiducial sample indices.
        readable: optional boolean per beat; beats in unreadable signal are "Q".
        usable: optional (n_blocks, n_leads) quality mask on ``block_s`` blocks
            (:attr:`telediag.ecg.quality.QualityResult.usable`); computed here
            if None. Features use only the leads usable at each beat; beats
            with no usable lead are "Q".
    """
    qrs = np.asarray(qrs, dtype=np.int64)
    if qrs.size == 0:
        return []
    if qrs.size < 3:
        return ["Q"] * qrs.size
    x = np.asarray(signals, dtype=np.float64)
    x = x.reshape(len(x), -1)
    leads = _beat_leads(x, fs, qrs, usable, block_s)
    f = beat_features(x, fs, qrs, leads)
    corr, wr, er = f["corr"], f["width_ratio"], f["energy_ratio"]
    timing = (np.nan_to_num(f["prematurity"], nan=1.0) < PREMATURE) | (np.nan_to_num(f["pause"], nan=1.0) > PAUSE)
    strong = (corr < STRONG_CORR) & ((er > BIG) | (wr > WIDE) | ((wr > 1.0) & timing))
    moderate = (corr < DIFF_CORR) & (wr > WIDE) & ((er > BIG) | timing)
    is_v = strong | moderate
    labels = np.where(is_v, "V", "N").astype(object)
    labels[~f["inside"] | ~leads.any(axis=1)] = "Q"
    if readable is not None:
        labels[~np.asarray(readable, bool)] = "Q"
    return [str(v) for v in labels]
