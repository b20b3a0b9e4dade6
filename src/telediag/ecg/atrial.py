"""Atrial activity independent of the QRS: flutter waves, and P waves that the ventricles did not follow.

Why a separate stage: the beat-level rhythm sees only when the ventricles
fired. Atrial flutter with variable conduction has AF's irregular RR, and
AV block is a disagreement between the atrial and the ventricular rhythm;
both are visible only in the atrial signal itself. Everything here works on
the 1-20 Hz band at about 50 Hz (:func:`telediag.ecg.rhythm.low_band`).

* **Flutter** (:func:`flutter_rate`): flutter waves are conducted at a
  fixed phase, so they are locked to the QRS whatever the ratio; in the
  average of the pre-QRS segments of neighbouring beats (QRS bridged,
  3-12 Hz) they survive as an even train of identical waves at
  220-370 /min, where AF's f waves average out and sinus rhythm leaves one
  P wave. Judged only where the ventricular response is irregular: a
  regular rhythm repeats its own P and T waves in that average too.
* **P waves** (:func:`qrst_residuals`, :func:`p_waves`,
  :func:`p_findings`, :func:`p_wave_findings`): each beat's QRST is
  cancelled with the mean of its neighbours'; what the ventricles repeat
  cancels, and so does whatever is locked to the QRS. Two atrial signals
  come out: one keeping the conducted P waves (the PR, and a P wave after
  the T wave that no QRS followed: second degree) and one keeping only the
  P waves not locked to the QRS (dissociation: third degree). P waves are
  energy peaks standing well above the signal's floor (a fibrillatory or
  noisy baseline yields none), alike the P waves seen before the QRS.

The beat-level decisions (``afl``, ``av_block`` and its degree) are in
:mod:`telediag.ecg.rhythm`.

Approximations, said plainly: P waves inside a QRS are not found, and a
P wave inside a T wave only where it is not locked to the QRS; flutter
with a fixed conduction ratio, with 1:1 conduction, or at an atrial rate
outside 220-370 /min (atypical, drug-slowed) is not found, and an atrial
tachycardia with variable block looks like flutter. No threshold here was
set on a record with flutter or AV block: MIT-BIH DS1 has no AV block, and
its one flutter (203) is neither locked to the QRS nor slower than
370 /min, so it looks like that record's AF to this method (its AF and its
"AFL" have the same P-wave consistency and spectral organisation); the
thresholds are physiological limits, held by synthetic tests to find the
arrhythmia and by DS1 to say nothing on sinus rhythm, ectopy and AF.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage, signal

from .filters import bandpass_rows

__all__ = ["flutter_rate", "qrst_residuals", "p_waves", "p_findings", "p_wave_findings", "P_FIELDS", "FLUTTER_BPM"]

NEIGHBOURS = 16             # N beats whose pre-QRS segments are averaged
SEGMENT_S = (0.90, 0.10)    # the segment: this long before the QRS fiducial to this long before it
BLANK_S = (0.05, 0.06)      # every QRS bridged by a straight line (before, after the fiducial)
F_BAND_HZ = (3.0, 12.0)     # F waves and their harmonic, above most T-wave power
FLUTTER_BPM = (220.0, 370.0)
FLUTTER_ACF = 0.7           # autocorrelation of the average at the flutter cycle at least ...
FLUTTER_ANTI = -0.3         # ... and at half the cycle at most (a repeated wave, not a lone P wave) ...
FLUTTER_LOCKED = 0.35       # ... the average keeping this share of the segments' energy (locked waves) ...
FLUTTER_MIN_MV = 0.015      # ... at this RMS or more (3-12 Hz part of F waves of about 0.1 mV) ...
FLUTTER_EVEN = 0.3          # ... and as strong in every third of the segment (within this share of the strongest)
FLUTTER_AGREE = 1           # leads showing it agree on the cycle within this many samples ...
FLUTTER_LEADS = 4           # ... one lead in this many at least (F waves show in a few leads of a 12-lead set)
STRIDE = 4                  # the average is judged at every STRIDE-th N beat (it changes slowly) ...
IRREGULARITY = 0.10         # ... where the neighbours' RR is irregular: mean |dRR| / mean RR above this
SPAN_MARGIN_S = 1.0         # signal read either side of a stretch analysed (filter settling, the first P wave)


def _bridge_qrs(x: np.ndarray, fs_low: float, beat_s: np.ndarray) -> np.ndarray:
    """x (L, m) with every QRS replaced by a straight line between its edges (the T wave is kept)."""
    m = x.shape[1]
    t = np.arange(m)
    cover = np.zeros(m + 1, np.int64)
    a = np.clip(np.round((beat_s - BLANK_S[0]) * fs_low).astype(np.int64), 0, m)
    b = np.clip(np.round((beat_s + BLANK_S[1]) * fs_low).astype(np.int64), 0, m)
    np.add.at(cover, a, 1)
    np.add.at(cover, b, -1)
    keep = np.cumsum(cover[:m]) == 0
    if keep.sum() < 2:
        return np.zeros_like(x)
    return np.stack([np.interp(t, t[keep], row[keep]) for row in x])


def flutter_rate(low: np.ndarray, fs_low: float, beat_samples: np.ndarray, fs: float,
                 beat_labels: Sequence[str]) -> np.ndarray:
    """Per beat: the atrial flutter rate (/min) seen before it and its neighbours, 0 where none.

    ``low`` is :func:`telediag.ecg.rhythm.low_band` output (n_leads, m) at
    ``fs_low``. Every QRS is bridged by a straight line and the signal is
    band-passed to ``F_BAND_HZ``; the segments from ``SEGMENT_S[0]`` to
    ``SEGMENT_S[1]`` before the ``NEIGHBOURS`` N beats around each beat are
    averaged. Flutter is conducted at a fixed phase (each QRS follows an F
    wave by the same interval, whatever the ratio), so F waves are locked to
    the QRS and survive the average as a train of identical waves: the
    average's autocorrelation peaks (``FLUTTER_ACF``) at a cycle of
    220-370 /min, is strongly negative at half of it (``FLUTTER_ANTI``), and
    the average keeps a good share of the segments' energy
    (``FLUTTER_LOCKED``), as much in every third of the segment
    (``FLUTTER_EVEN``: F waves leave no isoelectric line). AF's f waves are
    not locked and average out; sinus rhythm leaves a P wave and perhaps the
    previous T wave, not an even train; the QRST of earlier beats, at
    varying distances when conduction varies, is smeared. A quarter of the
    leads (one of a 2- or 3-lead Holter) must show it at the same cycle.

    A regular rhythm repeats everything, previous beats included, in the
    average, so it is judged only where the ventricular response is
    irregular (the mean successive difference of the neighbours' N-N
    intervals above ``IRREGULARITY`` of their mean; ectopic beats and their
    pauses do not count), every ``STRIDE``-th N beat, and the signal is
    prepared only around those beats: flutter with a fixed conduction ratio,
    2:1 above all, is not told from a sinus rhythm.
    """
    x = np.asarray(low, dtype=np.float64)
    n_leads, m = x.shape
    beat_s = np.asarray(beat_samples, dtype=np.float64) / fs
    out = np.zeros(beat_s.size)
    normal = np.flatnonzero(np.asarray(list(beat_labels), dtype=object) == "N")
    if normal.size < NEIGHBOURS or n_leads == 0 or m < int(4 * fs_low):
        return out
    k = NEIGHBOURS
    judged = np.arange(0, normal.size, STRIDE)
    lo = np.clip(judged - k // 2, 0, normal.size - k)
    # intervals between consecutive N beats only: ectopic beats and their pauses make no irregularity
    gaps = np.diff(beat_s[normal])
    gaps[np.diff(normal) != 1] = np.nan
    rr = np.lib.stride_tricks.sliding_window_view(gaps, k - 1)[lo]                           # (J, k-1)
    steps = np.abs(np.diff(rr, axis=1))
    n_steps = np.isfinite(steps).sum(axis=1)
    mean_step = np.nan_to_num(steps).sum(axis=1) / np.maximum(n_steps, 1)
    mean_rr = np.nan_to_num(rr).sum(axis=1) / np.maximum(np.isfinite(rr).sum(axis=1), 1)
    irregular = (n_steps >= 3) & (mean_step > IRREGULARITY * mean_rr)
    rate = np.zeros(judged.size)
    # the signal is bridged and filtered only where an irregular stretch needs it (plus margins)
    need = np.zeros(normal.size + 1, np.int64)
    np.add.at(need, lo[irregular], 1)
    np.add.at(need, lo[irregular] + k, -1)
    offsets = np.arange(-int(round(SEGMENT_S[0] * fs_low)), -int(round(SEGMENT_S[1] * fs_low)) + 1)
    margin = int(round(SPAN_MARGIN_S * fs_low))
    averages, shares, judged_at = [], [], []
    for a, b in _true_runs(np.cumsum(need[:-1]) > 0):
        s0 = max(int(beat_s[normal[a]] * fs_low) + offsets[0] - margin, 0)
        s1 = min(int(beat_s[normal[b - 1]] * fs_low) + margin, m)
        near = (beat_s >= s0 / fs_low) & (beat_s < s1 / fs_low)
        y = bandpass_rows(_bridge_qrs(x[:, s0:s1], fs_low, beat_s[near] - s0 / fs_low), fs_low, *F_BAND_HZ)
        centre = np.round(beat_s[normal[a:b]] * fs_low).astype(np.int64) - s0
        seg = y[:, np.clip(centre[:, None] + offsets[None, :], 0, y.shape[1] - 1)]      # (L, B, w)
        sel = np.flatnonzero(irregular & (lo >= a) & (lo + k <= b))
        csum = np.concatenate([np.zeros((n_leads, 1, offsets.size)), np.cumsum(seg, axis=1)], axis=1)
        esum = np.concatenate([np.zeros((n_leads, 1)), np.cumsum((seg ** 2).sum(axis=2), axis=1)], axis=1)
        first = lo[sel] - a
        avg = (csum[:, first + k] - csum[:, first]) / k
        avg -= avg.mean(axis=2, keepdims=True)
        averages.append(avg)
        shares.append((avg ** 2).sum(axis=2) / np.maximum((esum[:, first + k] - esum[:, first]) / k, 1e-18))
        judged_at.append(sel)
    if judged_at:
        rate[np.concatenate(judged_at)] = _judge_flutter(np.concatenate(averages, axis=1),
                                                         np.concatenate(shares, axis=1), fs_low)
    # ... and every N beat takes the judgement of the nearest judged one
    out[normal] = rate[np.minimum((np.arange(normal.size) + STRIDE // 2) // STRIDE, judged.size - 1)]
    return out


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the True runs of a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _judge_flutter(avg: np.ndarray, locked: np.ndarray, fs_low: float) -> np.ndarray:
    """Flutter rate (/min, 0 where none) of each average of pre-QRS segments (``avg``: (L, J, w), mean
    removed) keeping the share ``locked`` (L, J) of the segments' energy; see :func:`flutter_rate`."""
    n_leads, _, w = avg.shape
    power = (avg ** 2).sum(axis=2)
    rms = np.sqrt(power / w)
    cycles = np.arange(int(np.floor(60.0 * fs_low / FLUTTER_BPM[1])), int(np.ceil(60.0 * fs_low / FLUTTER_BPM[0])) + 1)

    def corr(lag: int) -> np.ndarray:
        a, b = avg[:, :, :-lag], avg[:, :, lag:]
        return (a * b).sum(axis=2) / np.sqrt(np.maximum((a * a).sum(axis=2) * (b * b).sum(axis=2), 1e-36))

    acf = np.stack([corr(int(c)) for c in cycles])                                # (C, L, B)
    best = np.argmax(acf, axis=0)
    peak = np.take_along_axis(acf, best[None], 0)[0]
    halves = np.stack([corr(max(int(round(c / 2.0)), 1)) for c in cycles])
    anti = np.take_along_axis(halves, best[None], 0)[0]
    cycle = cycles[best]
    interior = (cycle > cycles[0]) & (cycle < cycles[-1])                         # a peak, not the range's edge
    thirds = np.stack([(part ** 2).sum(axis=2) for part in np.array_split(avg, 3, axis=2)])   # (3, L, B)
    even = thirds.min(axis=0) >= FLUTTER_EVEN * thirds.max(axis=0)             # no isoelectric stretch
    shows = (peak >= FLUTTER_ACF) & (anti <= FLUTTER_ANTI) & (locked >= FLUTTER_LOCKED) & (rms >= FLUTTER_MIN_MV)
    shows &= interior & even
    # the cycle of the lead showing it best; the others must agree with it
    typical = np.take_along_axis(cycle, np.argmax(np.where(shows, peak, -2.0), axis=0)[None], 0)[0]
    agree = shows & (np.abs(cycle - typical[None, :]) <= FLUTTER_AGREE)
    need = max(1, int(np.ceil(n_leads / FLUTTER_LEADS)))
    return np.where(agree.sum(axis=0) >= need, 60.0 * fs_low / typical, 0.0)


# --------------------------------------------------------------------------
# P waves independent of the QRS (AV block)
# --------------------------------------------------------------------------

QRST_NEIGHBOURS = 8         # beats of the same class whose mean QRST is cancelled
CONDUCTED_PRE_S = 0.10      # the cancelled span starts this long before the fiducial (the low band smears the
LOCKED_PRE_S = 0.30         # QRS), or this long to cancel a conducted P wave too (never beyond NEXT_P_S) ...
QRST_MAX_S = 0.60           # ... and ends past the T wave's steep part: 0.05 + 0.32 sqrt(RR) s, at most this ...
NEXT_P_S = 0.30             # ... and never within this of the next QRS (where its P wave is)
P_BAND_HZ = (3.0, 15.0)     # P waves, above the baseline undulation the 1-Hz high-pass leaves after QRS and T
QRS_BLANK_S = (0.08, 0.10)  # the QRS itself is blanked after cancellation (its residue is the largest)
P_SMOOTH_S = 0.08           # energy smoothed over about a P wave's width
P_MIN_RR_S = 0.25           # P peaks at least this far apart (240 /min)
P_FLOOR_S = 4.0             # energy floor: 30th percentile per block of this length ...
P_PEAK = 8.0                # ... a P wave's energy peak at least this many times above it ...
P_MIN_MV = 0.04             # ... and at least this amplitude
P_HALF_S = 0.06             # P-wave shape: the residual this long either side of its peak ...
P_JITTER_S = 0.04           # ... aligned within this ...
P_SHAPE = 0.7               # ... correlating with the typical P wave at least this ...
P_SIZE = 2.5                # ... at most this many times larger or smaller than it
PR_TYPICAL_S = (0.13, 0.30)  # the typical P wave: those this long before a QRS ...
P_REFERENCE = 5             # ... when there are this many


def qrst_residuals(low: np.ndarray, fs_low: float, beat_samples: np.ndarray, fs: float,
                   beat_labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Two atrial signals (L, m each): the 1-20 Hz band minus each beat's QRST, at 3-15 Hz, QRS blanked.

    Each beat's template is the mean of the segments of its
    ``QRST_NEIGHBOURS`` nearest beats of the same class (N, V and Q have
    their own QRST) at the same offsets from their fiducial; it is subtracted
    up to past the T wave's steep part, never reaching into the ``NEXT_P_S``
    before the next QRS. A P wave that is not locked to the QRS (AV
    dissociation) stays even inside the T wave, where the mean of neighbours
    at random phases holds little of it. The first signal is cancelled from
    ``CONDUCTED_PRE_S`` before the fiducial, so a conducted P wave (before
    its QRS) and one after the T wave stay too; the second from
    ``LOCKED_PRE_S``, so every P wave at a fixed distance before the QRS
    cancels (and so does the onset of a wide QRS), which leaves only the P
    waves the ventricles did not follow.
    """
    x = np.asarray(low, dtype=np.float64)
    n_leads, m = x.shape
    beat_s = np.asarray(beat_samples, dtype=np.float64) / fs
    centre = np.round(beat_s * fs_low).astype(np.int64)
    nb = centre.size
    pre, post = int(round(LOCKED_PRE_S * fs_low)), int(round(QRST_MAX_S * fs_low))
    offsets = np.arange(-pre, post)
    pos = centre[:, None] + offsets[None, :]                                       # (B, w)
    seg = x[:, np.clip(pos, 0, m - 1)]                                             # (L, B, w)
    labels = np.asarray(list(beat_labels), dtype=object)
    template = np.zeros_like(seg)
    for cls in np.unique(labels):
        ii = np.flatnonzero(labels == cls)
        k = min(QRST_NEIGHBOURS, ii.size)
        csum = np.concatenate([np.zeros((n_leads, 1, offsets.size)), np.cumsum(seg[:, ii], axis=1)], axis=1)
        lo = np.clip(np.arange(ii.size) - k // 2, 0, ii.size - k)
        template[:, ii] = (csum[:, lo + k] - csum[:, lo]) / k
    rr_after = np.concatenate([np.diff(beat_s), [np.inf]])
    end_s = np.minimum(np.minimum(0.05 + 0.32 * np.sqrt(np.minimum(rr_after, 4.0)), QRST_MAX_S), rr_after - NEXT_P_S)
    inside = (offsets[None, :] < np.round(end_s * fs_low)[:, None]) & (pos >= 0) & (pos < m)   # never overlapping
    blank = np.clip(centre[:, None] + np.arange(-int(round(QRS_BLANK_S[0] * fs_low)),
                                                int(round(QRS_BLANK_S[1] * fs_low)) + 1)[None, :], 0, m - 1).ravel()
    out = []
    for start in (CONDUCTED_PRE_S, LOCKED_PRE_S):
        b_idx, w_idx = np.nonzero(inside & (offsets[None, :] >= -int(round(start * fs_low))))
        res = x.copy()
        res[:, pos[b_idx, w_idx]] -= template[:, b_idx, w_idx]
        res = bandpass_rows(res, fs_low, *P_BAND_HZ)
        res[:, blank] = 0.0
        out.append(res)
    return out[0], out[1]


def p_waves(residual: np.ndarray, fs_low: float, beat_samples: np.ndarray,
            fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P-wave times (s) in an atrial signal (:func:`qrst_residuals`), how alike each is to a P wave, its size.

    The energy of the atrial signal summed over leads, smoothed over
    ``P_SMOOTH_S``; its peaks at least ``P_MIN_RR_S`` apart, standing
    ``P_PEAK`` times above the energy floor (30th percentile per ``P_FLOOR_S``)
    at ``P_MIN_MV`` or more. A fibrillatory, flutter or noisy baseline has
    a high floor, so it yields no P waves rather than random ones. The
    second array is each wave's correlation (all leads, ``P_HALF_S`` either
    side of the peak, best within ``P_JITTER_S``) with the typical P wave,
    or -1 where its size is not a P wave's (``P_SIZE``): the median of the
    waves found 0.13-0.30 s before a QRS (where a conducted P wave is) when
    there are ``P_REFERENCE`` of them, else of all. P waves of one atrial
    rhythm are alike, residues of a T wave or noise are not. The third is
    each wave's size relative to that typical P wave: a wave many times
    larger is a QRS the detector missed.
    """
    x = np.asarray(residual, dtype=np.float64)
    n_leads, m = x.shape
    empty = (np.zeros(0), np.zeros(0), np.zeros(0))
    block = max(int(round(P_FLOOR_S * fs_low)), 1)
    if m < 2 * block:
        return empty
    e = ndimage.uniform_filter1d((x ** 2).sum(axis=0), max(int(round(P_SMOOTH_S * fs_low)), 1), mode="nearest")
    n_b = m // block
    floor = np.repeat(np.percentile(e[:n_b * block].reshape(n_b, block), 30, axis=1), block)
    floor = np.concatenate([floor, np.full(m - floor.size, floor[-1])])
    floor = np.maximum(floor, 1e-12)
    peaks, _ = signal.find_peaks(e, distance=max(int(round(P_MIN_RR_S * fs_low)), 1))
    peaks = peaks[(e[peaks] >= P_PEAK * floor[peaks]) & (np.sqrt(e[peaks]) >= P_MIN_MV)]
    half = max(int(round(P_HALF_S * fs_low)), 1)
    shift = max(int(round(P_JITTER_S * fs_low)), 1)
    peaks = peaks[(peaks >= half + shift) & (peaks < m - half - shift)]
    if peaks.size == 0:
        return empty

    shifts = np.arange(-shift, shift + 1)        # the energy peak wanders a sample or two on a P wave
    idx = peaks[:, None, None] + shifts[None, :, None] + np.arange(-half, half + 1)[None, None, :]
    waves = np.moveaxis(x[:, idx], 0, 2).reshape(peaks.size, shifts.size, -1)     # (P, S, L * w)
    waves -= waves.mean(axis=2, keepdims=True)
    every = waves[:, shift]
    beat_s = np.sort(np.asarray(beat_samples, dtype=np.float64) / fs)
    ahead = beat_s[np.minimum(np.searchsorted(beat_s, peaks / fs_low), beat_s.size - 1)] - peaks / fs_low \
        if beat_s.size else np.full(peaks.size, np.inf)
    before_qrs = (ahead >= PR_TYPICAL_S[0]) & (ahead <= PR_TYPICAL_S[1])
    typical = np.median(every[before_qrs] if before_qrs.sum() >= P_REFERENCE else every, axis=0)
    norm = np.sqrt((typical ** 2).sum())
    den = np.sqrt((waves ** 2).sum(axis=2)) * norm
    alike = np.where(den > 0, waves @ typical / np.maximum(den, 1e-18), -1.0).max(axis=1)
    size = np.sqrt((every ** 2).sum(axis=1)) / max(norm, 1e-12)
    alike[(size < 1.0 / P_SIZE) | (size > P_SIZE)] = -1.0
    return peaks / fs_low, alike, size


PP_NEIGHBOURS = 9           # P-P intervals whose median is the local atrial cycle ...
PP_TOLERANCE = 0.15         # ... each within this share of it (or of twice it: a P hidden in a QRS) ...
PP_REGULAR = 0.7            # ... for this share of them: a regular atrial rhythm
PR_EDGE_S = 0.08            # P waves counted in an RR interval from this long after its first QRS ...
T_END_S = (0.05, 0.38)      # a non-conducted P wave: after the T wave (a + b sqrt(RR) s after the QRS) ...
NON_CONDUCTED_S = 0.50      # ... and further than this from the next QRS (not conducted to it)


def p_findings(p_times: np.ndarray, alike: np.ndarray, size: np.ndarray, beat_samples: np.ndarray,
               fs: float) -> dict[str, np.ndarray]:
    """Per beat, the P waves of the RR interval ending at it (NaN where unknown, e.g. the first beat).

    ``p_waves``: how many; ``pr_s``: from the last one to the QRS;
    ``late_p_s``: the first one after the T wave of the interval's first
    beat (``T_END_S``: about the upper limit of a normal QT for the RR before
    that beat, which sets its QT), from that beat; ``blocked_p``: how many lie
    after that T wave and more than ``NON_CONDUCTED_S`` before the QRS, so
    that no QRS followed them; ``pp_s``: the local atrial cycle where the
    atrial rhythm is regular (most of the ``PP_NEIGHBOURS`` P-P intervals
    around the nearest P wave within ``PP_TOLERANCE`` of their median, or of
    twice it: a P wave hidden in a QRS is missed), else NaN. Only P waves
    alike the typical one (``P_SHAPE``, :func:`p_waves`) count; ``foreign``
    counts the waves of the interval larger than ``P_SIZE`` times a P wave
    (a QRS the detector missed: the interval is no pause).
    """
    beat_s = np.asarray(beat_samples, dtype=np.float64) / fs
    nb = beat_s.size
    out = {k: np.full(nb, np.nan) for k in ("p_waves", "blocked_p", "late_p_s", "pr_s", "pp_s", "foreign")}
    pt = np.sort(np.asarray(p_times, dtype=np.float64)[np.asarray(alike) >= P_SHAPE])
    if nb < 2:
        return out
    big = np.sort(np.asarray(p_times, dtype=np.float64)[np.asarray(size) > P_SIZE])
    out["foreign"][1:] = np.searchsorted(big, beat_s[1:] - PR_EDGE_S) - np.searchsorted(big, beat_s[:-1] + PR_EDGE_S)
    rr = np.diff(beat_s)
    first = np.searchsorted(pt, beat_s[:-1] + PR_EDGE_S)
    last = np.searchsorted(pt, beat_s[1:] - PR_EDGE_S)
    out["p_waves"][1:] = last - first
    has = last > first
    out["pr_s"][1:][has] = beat_s[1:][has] - pt[last[has] - 1]
    qt_rr = np.concatenate([rr[:1], rr[:-1]])                 # the RR before each interval's first beat
    b0 = np.searchsorted(pt, beat_s[:-1] + T_END_S[0] + T_END_S[1] * np.sqrt(qt_rr))
    b1 = np.searchsorted(pt, beat_s[1:] - NON_CONDUCTED_S)
    out["blocked_p"][1:] = np.maximum(b1 - b0, 0)
    late = b0 < last
    out["late_p_s"][1:][late] = pt[b0[late]] - beat_s[:-1][late]
    if pt.size < PP_NEIGHBOURS + 1:
        return out
    pp = np.diff(pt)
    cycle = ndimage.median_filter(pp, size=PP_NEIGHBOURS, mode="nearest")
    ratio = pp / cycle
    on_cycle = (np.abs(ratio - 1.0) <= PP_TOLERANCE) | (np.abs(ratio - 2.0) <= 2 * PP_TOLERANCE)
    regular = ndimage.uniform_filter1d(on_cycle.astype(np.float64), PP_NEIGHBOURS, mode="nearest") >= PP_REGULAR
    near = np.clip(np.searchsorted(pt, beat_s) - 1, 0, pp.size - 1)
    out["pp_s"] = np.where(regular[near], cycle[near], np.nan)
    return out


AV_SLOW_RR_S = 1.0          # AV block is looked for around beats at a local RR this long or longer (<= 60 /min)
AV_UNLOCKED = 0.3           # whose P-wave consistency is below this (no P wave at a fixed PR: dissociation?) ...
AV_STEADY = 0.1             # ... and whose RR is steady (median |dRR| below this share of it: not AF), ...
AV_VERY_SLOW_RR_S = 1.3     # ... or at a local RR this long or longer (2:1 block) ...
AV_PAUSE = 1.4              # ... or an N-N interval this many times the local RR (a dropped beat) ...
AV_SPAN_BEATS = 8           # ... over this many beats either side
AV_LOCAL_BEATS = 9          # (the local RR: median over this many intervals)
P_FIELDS = ("pr_s", "blocked_p", "late_p_s", "foreign", "free_p", "free_pr_s", "free_pp_s")


def p_wave_findings(low: np.ndarray, fs_low: float, beat_samples: np.ndarray, fs: float,
                    beat_labels: Sequence[str], consistency: np.ndarray) -> dict[str, np.ndarray]:
    """Per beat, the P-wave findings AV block is judged on (``P_FIELDS``), NaN where not looked for.

    From the signal with the conducted P waves kept (:func:`p_findings`:
    ``pr_s``, ``blocked_p``, ``late_p_s``, ``foreign``) and from the one with only the P
    waves the ventricles did not follow (``free_p``, ``free_pr_s`` and
    ``free_pp_s``: its ``p_waves``, ``pr_s`` and ``pp_s``). Why only around
    some beats: second- and third-degree AV block show there and nowhere
    else, and the cancellation costs more than the rest of the atrial
    analysis, so sinus rhythm is not paid for. Complete block has a slow
    ventricular rate (``AV_SLOW_RR_S``) without a P wave at a fixed distance
    before the QRS (``consistency``, the P-wave consistency of
    :func:`telediag.ecg.rhythm.atrial_consistency`, below ``AV_UNLOCKED``)
    and a steady RR (``AV_STEADY``: AF's is not); 2:1 block, found only
    where its non-conducted P wave clears the T wave, a very slow one
    (``AV_VERY_SLOW_RR_S``), and a dropped beat a pause (``AV_PAUSE``), both
    with conducted P waves (a consistency of ``AV_UNLOCKED`` or more: not AF).
    """
    beat_s = np.asarray(beat_samples, dtype=np.float64) / fs
    labels = np.asarray(list(beat_labels), dtype=object)
    nb = beat_s.size
    out = {k: np.full(nb, np.nan) for k in P_FIELDS}
    n_leads, m = np.shape(low)
    if nb < 3:
        return out
    rr = np.diff(beat_s)
    local = ndimage.median_filter(rr, size=min(AV_LOCAL_BEATS, rr.size), mode="nearest")
    normal_pair = (labels[1:] == "N") & (labels[:-1] == "N")
    unlocked = np.nan_to_num(np.asarray(consistency, dtype=np.float64), nan=1.0)[1:] < AV_UNLOCKED
    steady = ndimage.median_filter(np.abs(np.diff(rr, prepend=rr[0])), size=min(AV_LOCAL_BEATS, rr.size),
                                   mode="nearest") <= AV_STEADY * local          # an escape rhythm is regular
    wanted = np.concatenate([[False], ((local >= AV_SLOW_RR_S) & unlocked & steady)
                             | (~unlocked & ((local >= AV_VERY_SLOW_RR_S) | (normal_pair & (rr >= AV_PAUSE * local))))])
    if not wanted.any():
        return out
    wanted = ndimage.binary_dilation(wanted, structure=np.ones(2 * AV_SPAN_BEATS + 1, bool))
    margin = int(round(SPAN_MARGIN_S * fs_low))
    found: dict[str, list[list[np.ndarray]]] = {"conducted": [], "free": []}
    for a, b in _true_runs(wanted):
        s0 = max(int(beat_s[a] * fs_low) - margin, 0)
        s1 = min(int(beat_s[b - 1] * fs_low) + margin, m)
        local_beats = np.asarray(beat_samples[a:b], dtype=np.float64) - s0 * fs / fs_low
        for name, sig in zip(("conducted", "free"),
                             qrst_residuals(np.asarray(low)[:, s0:s1], fs_low, local_beats, fs, labels[a:b])):
            times, alike, size = p_waves(sig, fs_low, local_beats, fs)
            found[name].append([times + s0 / fs_low, alike, size])
    conducted, free = (p_findings(*(np.concatenate(part) for part in zip(*found[name])), beat_samples, fs)
                       for name in ("conducted", "free"))
    out.update({k: conducted[k] for k in ("pr_s", "blocked_p", "late_p_s", "foreign")})
    out.update({"free_p": free["p_waves"], "free_pr_s": free["pr_s"], "free_pp_s": free["pp_s"]})
    for k in P_FIELDS:
        out[k][~wanted] = np.nan
    return out
