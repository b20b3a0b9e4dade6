"""Beat-level measurements: RR / heart rate, and for resting 12-lead ECGs global PR, QRS, QT, QTc and axes.

Interval measurements are made on a representative median beat per lead (over
the dominant beats, re-aligned on the QRS first), as resting-ECG carts do,
because a median beat suppresses noise and ectopy that would otherwise jitter
single-beat fiducials. Onsets and offsets are *global*, as IEC 60601-2-25
defines them: the earliest onset and the latest offset over all leads. They are
found on curves that combine the eight independent leads (I, II, V1-V6; the
other limb leads are sums of I and II), so no single lead with a small or
isoelectric wave decides:

* QRS located on the spatial velocity (root of the summed squared slopes), then
  each lead with a real QRS followed on its own slope: the onset is the earliest
  that at least three leads agree on, the offset the latest of that and of the
  spatial velocity, so the slurred end of a bundle-branch-block S wave (slow, in
  a few leads only) is kept and one noisy lead does not decide. An end is where
  the slope *stays* low, so a notch does not end the complex.
* P and T on the spatial magnitude (root of the summed squared deflections from
  the PR-segment level): the P edges by extending the chord of its rising and
  falling flanks to the baseline; the T end where the descent after the T peak
  has flattened to a tenth of its steepest slope.

Measurement is in the full diagnostic band (150 Hz): a 40 Hz band smears the
sharp QRS corners of the IEC test signals by 5-8 ms each side. Mains is then
fitted away (not notched, which would ring after every QRS). Physiology bounds
every search instead of fixed windows: the P wave is sought between the end of
the previous T wave and the QRS, so a first-degree AV block (PR 300 ms and more)
is found and a P sitting on the previous T at fast rates is not confused with
it; the T end is sought before the next beat. Pacemaker spikes (narrower than any
cardiac wave) are cut out before anything else, so a paced QRS is measured from
the ventricular depolarisation, and the result says ``paced``. A P wave is
reported only when it is present in the median beat *and* repeats beat by beat;
atrial fibrillation gives neither, so PR and the P axis are None.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from .filters import lowpass, remove_baseline

__all__ = ["rr_summary", "heart_rate_bpm", "median_beats", "interval_measurements", "frontal_axis_deg",
           "measurement_band", "remove_mains_lines", "remove_pacing_spikes"]

PRE_S, POST_S = 0.60, 0.80        # median-beat window around the QRS fiducial (searches are bounded by RR)
ALIGN_S = 0.02                    # beats are re-aligned on the QRS by up to this much before the median
MAINS_RATIO = 20.0                # mains is removed when its line stands this far above the 35-85 Hz median
MAINS_MASK_S = (0.25, 0.20)       # mains is fitted away from [QRS - 0.25 s, QRS + 0.2 s] (spikes too)
SLOPE_SMOOTH_S = 0.002            # slope curves are averaged over this much (2 ms: corners stay sharp)
MEASURE_LP_HZ = 150.0             # the diagnostic band: a narrower one smears QRS corners by several ms;
                                  # the median over beats removes the noise a narrower band would
INDEPENDENT = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")   # the other limb leads are sums of I and II
QRS_ON_FRAC, QRS_OFF_FRAC = 0.04, 0.06   # fractions of the spatial-velocity peak above the isoelectric floor
SV_NOISE_K = 2.5                  # QRS levels: at least this multiple of the isoelectric velocity
LEAD_FRAC, LEAD_MIN_SHARE = 0.05, 0.2   # per lead: fraction of its own peak slope; leads with a real QRS
LEAD_VOTES = 3                    # leads that must agree on a QRS bound (of the 8 independent ones)
QRS_HOLD_S = 0.016                # the velocity must stay below the level this long to end (slurs, notches)
P_FRAC = 0.10                     # P onset/offset: fraction of the P magnitude above its floor
P_MIN_MV = 0.03                   # IEC 60601-2-25 minimum wave: 30 uV; smaller humps are not a P wave
P_MIN_CORR = 0.5                  # odd-beat and even-beat medians must agree this well on the P (AF: no)
P_ON_T_S = 0.04                   # the P may start this long before the previous T end (fast rates)
P_SEARCH_S = 0.50                 # earliest P onset before the QRS onset (PR up to ~450 ms)
PR_SEGMENT_S = (0.030, 0.008)     # isoelectric reference: this window before the QRS onset
QT_MAX_S = 0.70                   # longest QT searched (the next beat bounds it too)
T_SMOOTH_S = 0.014                # T-wave content is below ~10 Hz: a 14 ms box steadies its slope
T_END_SLOPE_FRAC = 0.10           # T end: the descent has slowed to this fraction of its steepest slope
SPIKE_MIN_MV = 0.2                # pacemaker spike: at most ~4 ms wide and at least this tall
SPIKE_EDGE_SHARE = 0.4            # a spike's rise and fall are each at least this share of its height
SPIKE_MIN_FS = 400.0              # below this rate a spike is a single smeared sample: not detectable


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


def remove_mains_lines(x: np.ndarray, fs: float, qrs: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
    """Subtract power-line interference (50 or 60 Hz and harmonics); returns (signal, mains Hz or None).

    Measuring in the full diagnostic band keeps the QRS corners sharp but lets mains
    through, and a median beat does not cancel it when the heart period happens to be
    a whole number of mains cycles. A notch filter would ring after every sharp QRS
    and widen it by the ringing, so the interference is instead fitted as a steady
    sinusoid per lead and subtracted, with its harmonics, leaving the beats untouched.
    The fit (and the decision that there is mains at all) uses only the signal away
    from the QRS complexes (``qrs``: fiducials) and pacing spikes, whose own 50/60 Hz
    content would otherwise be taken for mains and subtracted from every sample.
    """
    n = x.shape[0]
    if n < int(fs) or fs < 2.2 * 50.0:
        return x, None
    keep = np.ones(n, dtype=bool)
    if qrs is not None and len(qrs):
        cover = np.zeros(n + 1, dtype=np.int64)
        for lo_s, hi_s in (MAINS_MASK_S, (0.10, 0.15)):    # narrower mask when beats leave too little
            cover[:] = 0
            q = np.asarray(qrs, dtype=np.int64)
            np.add.at(cover, np.clip(q - int(lo_s * fs), 0, n), 1)
            np.add.at(cover, np.clip(q + int(hi_s * fs), 0, n), -1)
            keep = np.cumsum(cover[:n]) == 0
            if keep.mean() >= 0.2:
                break
        if keep.mean() < 0.05:
            return x, None
    xk = np.where(keep[:, None], x - x[keep].mean(axis=0), 0.0)
    power = (np.abs(np.fft.rfft(xk, axis=0)) ** 2).sum(axis=1)
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    background = float(np.median(power[(freqs > 35.0) & (freqs < min(85.0, 0.45 * fs))]))
    best: tuple[float, float] | None = None
    for f0 in (50.0, 60.0):
        near = np.flatnonzero(np.abs(freqs - f0) <= 0.5)
        if near.size == 0 or f0 >= 0.45 * fs:
            continue
        k = int(near[np.argmax(power[near])])
        if power[k] > MAINS_RATIO * background and (best is None or power[k] > best[1]):
            # Parabolic interpolation of the spectral line between bins (10 s: 0.1 Hz bins).
            a, b, c = np.log(power[k - 1:k + 2] + 1e-30)
            shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
            best = (float(freqs[k] + shift * (freqs[1] - freqs[0])), float(power[k]))
    if best is None:
        return x, None
    t = np.arange(n) / fs
    out = x.copy()
    h = 1
    while h * best[0] < 0.45 * fs:
        phase = 2 * np.pi * h * best[0] * t
        basis = np.stack([np.cos(phase), np.sin(phase)], axis=1)
        bk = basis[keep]
        coef = np.linalg.solve(bk.T @ bk, bk.T @ xk[keep])     # least squares on the kept samples
        out -= basis @ coef
        h += 1
    return out, round(best[0], 2)


def _band(x: np.ndarray, fs: float) -> np.ndarray:
    x = remove_baseline(x, fs)
    return lowpass(x, fs, MEASURE_LP_HZ) if MEASURE_LP_HZ < 0.45 * fs else x


def measurement_band(x: np.ndarray, fs: float, qrs: np.ndarray | None = None) -> np.ndarray:
    """Mains and baseline wander removed, band-limited to the diagnostic band (when the rate allows)."""
    return _band(remove_mains_lines(x, fs, qrs)[0], fs)


def remove_pacing_spikes(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut pacemaker spikes out of all leads; returns (cleaned copy, spike sample indices).

    A stimulus artefact lasts well under 2 ms, every cardiac wave lasts 20 ms or
    more, so the residual of a short running median isolates spikes, and a spike
    is accepted only with steep edges on both sides (it jumps up and back within a
    sample or two, where the apex of a tall, narrow R wave only curves). The spike
    is then bridged by a straight line in every lead, because it is the same
    event in all of them even where it is small.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    if fs < SPIKE_MIN_FS or x.shape[0] < 16:
        return x, np.zeros(0, dtype=np.int64)
    h = max(2, int(round(0.002 * fs)))
    n = x.shape[0]
    # Cheap screen first (deviation from the mean of the samples h+1 away), then the exact
    # running-median residual only where the screen fires: a full median filter would cost
    # more than all the rest of the measurement.
    g = h + 1
    screen = np.zeros_like(x)
    screen[g:n - g] = np.abs(x[g:n - g] - 0.5 * (x[:n - 2 * g] + x[2 * g:]))
    noise = 1.4826 * np.median(screen[::4], axis=0) + 1e-6   # every 4th sample: plenty for a noise level
    level = np.maximum(SPIKE_MIN_MV, 10.0 * noise)
    cand = np.flatnonzero((screen > level).any(axis=1))
    if cand.size == 0:
        return x, cand
    win = np.clip(cand[:, None] + np.arange(-h, h + 1)[None, :], 0, n - 1)
    resid = np.abs(x[cand] - np.median(x[win], axis=1))
    keep = (resid > level).any(axis=1)
    idx, resid = cand[keep], resid[keep]
    if idx.size == 0:
        return x, idx
    # Group hits into events; an event wider than a spike is a cardiac wave or noise burst: keep it.
    splits = np.flatnonzero(np.diff(idx) > h) + 1
    spikes = []
    for ev, r in zip(np.split(idx, splits), np.split(resid, splits)):
        if ev[-1] - ev[0] > h or ev[0] < 1 or ev[-1] >= n - 1:
            continue
        k = int(np.argmax(r.max(axis=0)))
        edges = min(abs(x[ev[0], k] - x[ev[0] - 1, k]), abs(x[ev[-1] + 1, k] - x[ev[-1], k]))
        if edges < SPIKE_EDGE_SHARE * r[:, k].max():
            continue
        a, b = max(ev[0] - h, 0), min(ev[-1] + h, n - 1)
        t = np.arange(a, b + 1)
        x[a:b + 1] = x[a][None, :] + (x[b] - x[a])[None, :] * ((t - a) / max(b - a, 1))[:, None]
        spikes.append(int(ev[0]))
    return x, np.asarray(spikes, dtype=np.int64)


def _windows(x: np.ndarray, centers: np.ndarray, pre: int, post: int) -> np.ndarray:
    """Beats as (n_beats, pre + post, n_leads); a window running off the record repeats the
    edge sample (a plain median over beats then outvotes the one or two edge beats)."""
    idx = np.clip(centers[:, None] + np.arange(-pre, post)[None, :], 0, x.shape[0] - 1)
    return x[idx]


def median_beats(signals: np.ndarray, fs: float, qrs: np.ndarray, pre_s: float = PRE_S,
                 post_s: float = POST_S, *, filtered: bool = False) -> tuple[np.ndarray, int]:
    """Median beat per lead, shape (window, n_leads), and the fiducial's index in it.

    Beats are first re-aligned on their QRS (least squares over all leads, within
    +-20 ms) because a detector's fiducial jitters by a few samples from beat to
    beat, and a median of misaligned beats blurs exactly the onsets and offsets
    being measured. ``filtered`` says the signal is already band-limited.
    """
    x = np.nan_to_num(np.asarray(signals, dtype=np.float64))
    if not filtered:
        x = measurement_band(x, fs, qrs)
    qrs = np.unique(np.asarray(qrs, dtype=np.int64))
    qrs = qrs[(qrs >= 0) & (qrs < x.shape[0])]
    if qrs.size == 0:
        raise ValueError("no beat for a median beat")
    pre, post = int(round(pre_s * fs)), int(round(post_s * fs))
    lag = max(1, int(round(ALIGN_S * fs)))
    half = int(round(0.06 * fs))
    core = _windows(x, qrs, half + lag, half + lag)          # (B, 2*(half+lag), L)
    template = np.median(core, axis=0)[lag:lag + 2 * half]
    shifts = np.arange(-lag, lag + 1)
    sse = np.empty((qrs.size, shifts.size))
    for k, s in enumerate(shifts):
        seg = core[:, lag + s:lag + s + 2 * half]
        sse[:, k] = ((seg - template[None]) ** 2).sum(axis=(1, 2))
    aligned = qrs + shifts[np.argmin(sse, axis=1)]
    return np.median(_windows(x, aligned, pre, post), axis=0), pre


def frontal_axis_deg(lead_values: dict[str, float]) -> float | None:
    """Frontal-plane axis (deg, -180..180) of a net deflection given in limb leads.

    Least-squares fit of one frontal vector to every limb lead present, with the
    Einthoven/Goldberger projections (I at 0, II at 60, III at 120, aVR at -150,
    aVL at -30, aVF at 90 degrees; augmented leads scaled by sqrt(3)/2). Using the
    projections instead of atan2(aVF, I) removes that shortcut's bias of up to 4
    degrees between the cardinal angles, and any two limb leads suffice.
    """
    dirs = {"I": (0.0, 1.0), "II": (60.0, 1.0), "III": (120.0, 1.0), "AVR": (-150.0, math.sqrt(3) / 2),
            "AVL": (-30.0, math.sqrt(3) / 2), "AVF": (90.0, math.sqrt(3) / 2)}
    rows, vals = [], []
    for name, v in lead_values.items():
        d = dirs.get(name.upper())
        if d is not None and v is not None and np.isfinite(v):
            rows.append((d[1] * math.cos(math.radians(d[0])), d[1] * math.sin(math.radians(d[0]))))
            vals.append(v)
    if len(rows) < 2:
        return None
    a = np.asarray(rows)
    if np.linalg.matrix_rank(a) < 2:
        return None
    hx, hy = np.linalg.lstsq(a, np.asarray(vals), rcond=None)[0]
    if math.hypot(hx, hy) < 1e-9:
        return None
    return float(math.degrees(math.atan2(hy, hx)))


def _box(y: np.ndarray, n: int) -> np.ndarray:
    return uniform_filter1d(y, size=max(int(n), 1), axis=0, mode="nearest")


def _below_for(curve: np.ndarray, start: int, stop: int, level: float, hold: int) -> int:
    """First index from ``start`` towards ``stop`` after which ``curve`` stays below ``level``
    for ``hold`` samples (``stop`` if never)."""
    step = 1 if stop >= start else -1
    run = 0
    for i in range(start, stop, step):
        run = run + 1 if curve[i] < level else 0
        if run >= hold:
            return i - step * (hold - 1)
    return stop


def _qrs_bounds(med: np.ndarray, ind: list[int], f0: int, fs: float) -> tuple[int, int]:
    """(onset, offset) of the QRS: located on the spatial velocity, bounded lead by lead.

    The spatial velocity finds the complex and a first pair of bounds. Each lead
    with a real QRS is then followed on its own slope (relative to its own peak and
    noise) to where it stays flat, and the earliest onset / latest offset that at
    least ``LEAD_VOTES`` leads agree on is taken: the earliest/latest over leads of
    IEC 60601-2-25, with one or two leads' noise outvoted. The onset is that
    consensus, because noise or fibrillatory waves in a few leads lift the combined
    curve before the QRS. The offset is the later of the consensus and the combined
    curve's, because the slurred end of a bundle-branch-block S wave is slow and
    confined to a few leads, where noise can hide it lead by lead but the combined
    curve (summing the leads) still sees it. With fewer usable leads the
    spatial-velocity bounds stand.
    """
    box = int(round(SLOPE_SMOOTH_S * fs))
    d = np.gradient(med[:, ind], axis=0) * fs
    slope = np.abs(_box(d, box))
    sv = _box(np.sqrt((d ** 2).sum(axis=1)), box)
    floor = float(np.percentile(sv, 10))
    search = int(0.10 * fs)
    lo, hi = max(f0 - search, 1), min(f0 + search, sv.size - 2)
    peak = lo + int(np.argmax(sv[lo:hi]))
    amp = sv[peak] - floor
    hold = max(2, int(round(QRS_HOLD_S * fs)))
    back, ahead = max(peak - int(0.20 * fs), 0), min(peak + int(0.24 * fs), sv.size - 1)
    # The levels never sink into the noise: the 10th percentile of a noisy velocity is about
    # half its 90th, so ``SV_NOISE_K`` times it clears most noise samples.
    onset = _below_for(sv, peak, back, max(floor + QRS_ON_FRAC * amp, SV_NOISE_K * floor), hold)
    offset = _below_for(sv, peak, ahead, max(floor + QRS_OFF_FRAC * amp, SV_NOISE_K * floor), hold)

    peaks = slope[onset:offset + 1].max(axis=0)
    noise = np.median(slope, axis=0)
    ons, offs = [], []
    for k in np.flatnonzero(peaks >= LEAD_MIN_SHARE * peaks.max()):
        s = slope[:, k]
        level = max(LEAD_FRAC * peaks[k], 3.0 * noise[k])
        top = onset + int(np.argmax(s[onset:offset + 1]))
        ons.append(_below_for(s, top, back, level, hold))
        offs.append(_below_for(s, top, ahead, level, hold))
    if len(ons) >= LEAD_VOTES:
        onset = sorted(ons)[LEAD_VOTES - 1]
        offset = max(offset, sorted(offs)[-LEAD_VOTES])
    return onset, offset


def _edge(mag: np.ndarray, peak: int, stop: int, floor: float) -> int:
    """Where a hump on ``mag`` leaves (or returns to) ``floor``, walking from ``peak`` to ``stop``.

    The chord between the points at ``P_FRAC`` and ``3 * P_FRAC`` of the height is
    extended to the floor: a plain threshold crossing lands late on every rounded
    wave edge by an amount that grows with the wave's duration, while the chord is
    exact for a straight or half-sine edge and halves the error on a bell-shaped one.
    """
    step = 1 if stop >= peak else -1
    height = mag[peak] - floor
    low = high = None
    i = peak
    while i != stop:
        if high is None and mag[i] <= floor + 3 * P_FRAC * height:
            high = i
        if mag[i] <= floor + P_FRAC * height:
            low = i
            break
        i += step
    if low is None or high is None:
        return stop
    return int(np.clip(round(low + (low - high) / 2.0), min(peak, stop), max(peak, stop)))


def _p_wave(med: np.ndarray, beats_p: np.ndarray | None, ind: list[int], base: np.ndarray, lo: int, hi: int,
            fs: float) -> tuple[int, int] | None:
    """(onset, offset) of the P wave in ``med[lo:hi]``, or None when there is none.

    The P must stand out of the baseline by the IEC minimum wave (30 uV) on the
    spatial magnitude and must be the same in the odd and in the even beats;
    fibrillatory waves are not locked to the QRS, so they fail the second test even
    when their residue in the median beat is large enough for the first.
    """
    if hi - lo < int(0.06 * fs):
        return None
    y = _box(med[:, ind] - base[ind], int(0.02 * fs))
    mag = np.sqrt((y ** 2).sum(axis=1))
    # The P is the most prominent hump of the window, not merely its highest point: the
    # window may open on the descending tail of the previous T wave.
    humps, props = find_peaks(mag[lo:hi], prominence=0.0)
    if humps.size == 0:
        return None
    peak = lo + int(humps[np.argmax(props["prominences"])])
    floor_on = float(mag[lo:peak + 1].min())
    floor_off = float(mag[peak:hi + int(0.02 * fs)].min())
    amp = mag[peak] - max(floor_on, floor_off)
    if amp < P_MIN_MV:
        return None
    end = min(hi + int(0.02 * fs), mag.size - 1)
    p_on = _edge(mag, peak, lo, floor_on)
    p_off = _edge(mag, peak, end, floor_off)
    if p_off - p_on < int(0.03 * fs):
        return None
    if beats_p is not None and beats_p.shape[0] >= 4:
        # Split-half test: the medians of the odd and of the even beats must show the same P.
        # A real P is locked to the QRS and appears in both; fibrillatory waves leave two
        # unrelated residues (a comparison with the full median would correlate with any
        # beat, since every beat helped make it).
        lo_w, hi_w = max(p_on - int(0.01 * fs), 0), p_off + int(0.01 * fs)
        halves = [np.median(beats_p[k::2, lo_w:hi_w][:, :, ind], axis=0) for k in (0, 1)]
        h0, h1 = (h - h.mean(axis=0) for h in halves)
        den = math.sqrt(float((h0 ** 2).sum()) * float((h1 ** 2).sum()))
        if den <= 0 or float((h0 * h1).sum()) / den < P_MIN_CORR:
            return None
    return p_on, p_off


def _t_end(med: np.ndarray, ind: list[int], base: np.ndarray, lo: int, hi: int, fs: float) -> int | None:
    """T end on the spatial ST-T magnitude: where its descent after the T peak has flattened out.

    The magnitude over all independent leads only returns to the baseline when the
    last lead's T wave has ended, which is the global (latest) T offset. The end is
    where the descent slows to a tenth of its steepest slope (a derivative threshold,
    as in Laguna et al. 1994): a tangent at the steepest point would stop short on a
    T wave with a long tail, where carts and cardiologists both see the T continue.
    """
    if hi - lo < int(0.08 * fs):
        return None
    y = _box(med[:, ind] - base[ind], int(T_SMOOTH_S * fs))
    mag = np.sqrt((y ** 2).sum(axis=1))
    peak = lo + int(np.argmax(mag[lo:hi]))
    d = np.gradient(mag)
    tail = min(peak + int(0.25 * fs), hi)
    if tail <= peak + 2:
        return None
    j = peak + int(np.argmin(d[peak:tail]))
    if d[j] >= 0:
        return None
    level = max(T_END_SLOPE_FRAC * -d[j], 2.0 * float(np.median(np.abs(d))))
    k = j
    while k < hi and -d[k] > level:
        k += 1
    return k


def _neighbour_rr(qrs: np.ndarray, every: np.ndarray, rr_s: float | None, fs: float) -> tuple[int, int]:
    """Median distance (samples) from the dominant beats to the previous and the next beat of any kind."""
    fallback = int((rr_s or 1.0) * fs)
    if every.size < 2:
        return fallback, fallback
    k = np.searchsorted(every, qrs)
    prev = qrs[k > 0] - every[k[k > 0] - 1]
    k2 = np.searchsorted(every, qrs, side="right")
    nxt = every[k2[k2 < every.size]] - qrs[k2 < every.size]
    prev, nxt = prev[prev > 0], nxt[nxt > 0]
    return (int(np.median(prev)) if prev.size else fallback), (int(np.median(nxt)) if nxt.size else fallback)


def interval_measurements(signals: np.ndarray, fs: float, qrs: np.ndarray, leads: tuple[str, ...], *,
                          all_qrs: np.ndarray | None = None) -> dict[str, float | bool | None]:
    """Global 12-lead measurements from the median beats of the dominant beats ``qrs``.

    Returns ``pr_ms``, ``qrs_ms``, ``qt_ms``, ``qtc_ms`` (Bazett, as carts print it),
    ``qtc_fridericia_ms``, ``qrs_axis_deg``, ``p_axis_deg``, ``t_axis_deg``,
    ``heart_rate_bpm`` (ventricular rate over ``all_qrs``, every detected beat),
    ``rr_ms`` (median RR), ``p_ms`` (P duration), ``paced`` (pacemaker spikes
    before most beats) and ``qtc_bazett_ms`` (same as ``qtc_ms``, the older name).
    PR and the P axis are None without a P wave (atrial fibrillation, flutter).
    """
    x = np.nan_to_num(np.asarray(signals, dtype=np.float64))
    qrs = np.unique(np.asarray(qrs, dtype=np.int64))
    every = np.unique(np.asarray(all_qrs if all_qrs is not None else qrs, dtype=np.int64))
    # Mains first: a spike is bridged by a straight line, which must not cut a piece out of
    # a mains sinusoid that is later subtracted everywhere.
    x, _ = remove_mains_lines(x, fs, every)
    x, spikes = remove_pacing_spikes(x, fs)
    xf = _band(x, fs)
    med, f0 = median_beats(xf, fs, qrs, filtered=True)
    ms = 1000.0 / fs
    rr_all = np.diff(every) / fs
    rr_s = float(np.median(rr_all)) if rr_all.size else None
    rate = float(60.0 / rr_all.mean()) if rr_all.size else None

    names = [n.upper() for n in leads]
    ind = [names.index(n) for n in INDEPENDENT if n in names]
    if len(ind) < 3:
        ind = list(range(len(names)))

    onset, offset = _qrs_bounds(med, ind, f0, fs)
    a, b = max(onset - int(PR_SEGMENT_S[0] * fs), 0), max(onset - int(PR_SEGMENT_S[1] * fs), 1)
    base = np.median(med[a:b], axis=0)

    # The beats around the dominant ones (ectopics included) bound the searches: the T end
    # comes before the next beat, the P after the previous beat's T wave.
    rr_prev, rr_next = _neighbour_rr(qrs, every, rr_s, fs)
    t_hi = min(onset + int(min(QT_MAX_S, 0.9 * rr_next / fs) * fs), med.shape[0] - 1)
    t_end = _t_end(med, ind, base, offset + int(0.04 * fs), t_hi, fs)

    # P between the previous T wave's descent and the QRS: at fast rates the P may ride on
    # the end of the previous T, which is no hump, so the P (a hump) is still told apart.
    qt_n = (t_end - onset) if t_end is not None else int(0.40 * fs)
    p_lo = max(onset - int(P_SEARCH_S * fs), onset - rr_prev + qt_n - int(P_ON_T_S * fs), 0)
    p_hi = onset - int(0.02 * fs)
    beats_p = _windows(xf, qrs, f0, med.shape[0] - f0)
    p = _p_wave(med, beats_p, ind, base, p_lo, p_hi, fs)

    def area(lo: int, hi: int) -> dict[str, float]:
        seg = med[lo:hi + 1] - base
        return {n: float(seg[:, j].sum()) for j, n in enumerate(names)}

    qt_ms = (t_end - onset) * ms if t_end is not None else None
    paced = False
    if spikes.size and qrs.size:
        before = ((spikes[None, :] >= qrs[:, None] - int(0.40 * fs)) &
                  (spikes[None, :] <= qrs[:, None] + int(0.02 * fs))).any(axis=1)
        paced = bool(before.mean() >= 0.5)
    out: dict[str, float | bool | None] = {
        "rr_ms": rr_s * 1000.0 if rr_s else None,
        "heart_rate_bpm": rate,
        "pr_ms": (onset - p[0]) * ms if p else None,
        "p_ms": (p[1] - p[0]) * ms if p else None,
        "qrs_ms": (offset - onset) * ms,
        "qt_ms": qt_ms,
        "qtc_ms": qt_ms / math.sqrt(rr_s) if qt_ms and rr_s else None,
        "qtc_fridericia_ms": qt_ms / rr_s ** (1.0 / 3.0) if qt_ms and rr_s else None,
        "qrs_axis_deg": frontal_axis_deg(area(onset, offset)),
        "p_axis_deg": frontal_axis_deg(area(p[0], p[1])) if p else None,
        "t_axis_deg": frontal_axis_deg(area(offset, t_end)) if t_end is not None else None,
    }
    result: dict[str, float | bool | None] = {
        k: (round(float(v), 1) if v is not None else None) for k, v in out.items()}
    result["qtc_bazett_ms"] = result["qtc_ms"]
    result["paced"] = paced
    return result
