"""QRS detection on one lead or fused across all usable leads.

Method (principled, no per-record tuning):

1. Each lead is band-passed to the QRS band (zero-phase) and differentiated;
   a moving-window integral of |slope| (~QRS width) gives an envelope.
2. Each lead's envelope is divided by a running estimate of its own typical
   QRS energy (a rolling median of block maxima), so leads of very different
   amplitudes, and amplitude changes over time, become comparable (QRS ~ 1).
3. The fused envelope is the mean of the normalised envelopes of the leads
   that signal quality marks usable in each block; a lead-off or noisy lead
   therefore cannot create or hide beats on its own.
4. Pan-Tompkins style decision on the fused envelope's peaks: adaptive signal
   and noise levels, a refractory period, T-wave discrimination by slope and
   search-back with a lower threshold when an RR gap is too long.
5. Each detection is moved to a sample-accurate fiducial: the absolute maximum
   of the band-limited signal of the record's reference lead near the
   envelope peak.

Everything except step 4 (a loop over a few thousand candidate peaks) is
vectorised numpy/scipy, so a 30-minute 2-lead Holter takes well under 0.2 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from .filters import bandpass
from .quality import assess_quality

__all__ = ["QRSResult", "detect_qrs", "qrs_envelope"]

BAND_HZ = (5.0, 20.0)       # QRS energy band: above P/T and baseline, below EMG/mains
MWI_S = 0.10                # integration window ~ QRS duration
BLOCK_S = 2.0               # >= one beat per block down to 30 bpm
SCALE_BLOCKS = 9            # rolling window for the per-lead QRS energy level (18 s)
REFRACTORY_S = 0.20         # physiological minimum RR (300 bpm)
T_WAVE_S = 0.36             # candidates closer than this to the last QRS may be T waves
BUSY_FLOOR = 0.05            # floor of a lead's between-beat energy when weighting leads
WEIGHT_POWER = 2.0          # lead weight = busy ** -2: strongly prefer the cleaner lead
THR1 = 0.45                 # detection threshold: npk + THR1 * (spk - npk)
THR2 = 0.5                  # search-back threshold as a fraction of THR1's
SEARCHBACK_RR = 1.66        # search back when no beat for 166 % of the mean RR
FIDUCIAL_S = 0.08           # search half-window for the fiducial point


@dataclass(frozen=True)
class QRSResult:
    """Detections plus the intermediate signals later stages reuse (no recomputation)."""

    samples: np.ndarray       # int64 fiducial sample indices
    envelope: np.ndarray      # fused normalised envelope, shape (n,)
    bandpassed: np.ndarray    # QRS-band signals, shape (n, n_leads)
    reference_lead: int       # lead used for fiducial points


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 via cumulative sums (O(n), zero delay).

    Edges average over the part of the window inside the signal, scaled by the
    full width, which is what an integrator of a zero-padded signal gives.
    """
    width = max(int(width), 1)
    n = x.shape[0]
    c = np.empty((n + 1,) + x.shape[1:])
    c[0] = 0.0
    np.cumsum(x, axis=0, out=c[1:])
    half = width // 2
    out = np.empty(x.shape)
    lo_end = min(half, n)
    hi_start = max(n - (width - half) + 1, lo_end)
    # interior: window [i - half, i + width - half)
    out[lo_end:hi_start] = c[lo_end + width - half: hi_start + width - half] - c[0: hi_start - lo_end]
    for i in (*range(0, lo_end), *range(hi_start, n)):
        out[i] = c[min(i + width - half, n)] - c[max(i - half, 0)]
    return out / width


def _block_view(n: int, block: int) -> tuple[int, int]:
    nb = -(-n // block)
    return nb, nb * block - n


def _lead_scale(env: np.ndarray, block: int, usable: np.ndarray) -> np.ndarray:
    """Per-block typical QRS energy of each lead: rolling median of block maxima over usable blocks."""
    n, n_leads = env.shape
    nb, pad = _block_view(n, block)
    padded = np.concatenate([env, np.zeros((pad, n_leads))], axis=0) if pad else env
    bmax = padded.reshape(nb, block, n_leads).max(axis=1)
    bmax = np.where(usable, bmax, np.nan)
    scale = np.empty_like(bmax)
    for j in range(n_leads):
        col = bmax[:, j]
        ok = np.isfinite(col)
        if not ok.any():
            scale[:, j] = np.inf
            continue
        # Unusable blocks get the nearest usable level before the rolling median.
        idx = np.where(ok, np.arange(nb), 0)
        np.maximum.accumulate(idx, out=idx)
        filled = col[idx]
        first = np.argmax(ok)
        filled[:first] = col[first]
        scale[:, j] = ndimage.median_filter(filled, size=min(SCALE_BLOCKS, nb), mode="nearest")
    return np.maximum(scale, 1e-12)


def qrs_envelope(signals: np.ndarray, fs: float, usable: np.ndarray | None = None,
                 block_s: float = BLOCK_S) -> tuple[np.ndarray, np.ndarray]:
    """Fused, per-lead-normalised QRS energy envelope and the QRS-band signals.

    ``usable`` is a boolean (n_blocks, n_leads) mask on ``block_s`` blocks (from
    :mod:`telediag.ecg.quality`); blocks where no lead is usable give 0.
    """
    x = np.nan_to_num(np.asarray(signals, dtype=np.float64).reshape(len(signals), -1))
    n, n_leads = x.shape
    block = max(int(round(block_s * fs)), 1)
    nb, pad = _block_view(n, block)
    if usable is None:
        usable = np.ones((nb, n_leads), bool)
    bp = bandpass(x, fs, *BAND_HZ)
    # |slope| (not slope^2): a linear envelope keeps small or wide beats
    # (aberrant, ectopic) within reach of the threshold.
    slope = np.abs(np.diff(bp, axis=0, prepend=bp[:1])) * fs
    env = _moving_average(slope, int(round(MWI_S * fs)))
    scale = _lead_scale(env, block, usable)
    # Lead weights per block: inverse of the lead's mean normalised energy in
    # the block, i.e. favour leads whose QRS stands out from what lies between
    # beats (noise, tall T waves). Weights of the usable leads sum to 1.
    padded = np.concatenate([env, np.zeros((pad, n_leads))], axis=0) if pad else env
    busy = padded.reshape(nb, block, n_leads).mean(axis=1) / scale
    busy = ndimage.uniform_filter1d(busy, 3, axis=0, mode="nearest")
    raw_w = np.where(usable, 1.0 / np.maximum(busy, BUSY_FLOOR) ** WEIGHT_POWER, 0.0)
    total = raw_w.sum(axis=1, keepdims=True)
    per_block = np.divide(raw_w, total, out=np.zeros_like(raw_w), where=total > 0) / scale
    w = np.repeat(per_block, block, axis=0)[:n]
    fused = np.einsum("ij,ij->i", env, w)
    return fused, bp


def _decide(env: np.ndarray, slope_env: np.ndarray, fs: float) -> np.ndarray:
    """Adaptive-threshold decision with T-wave discrimination and search-back.

    Signal (``spk``) and noise (``npk``) peak levels are running averages as in
    Pan & Tompkins (1985); updates are clamped so that one artefact cannot lift
    the threshold above real beats for many seconds. The envelope is already
    normalised (typical QRS ~ 1), which makes the clamps meaningful.
    """
    refractory = int(REFRACTORY_S * fs)
    t_wave = T_WAVE_S * fs
    cand_arr, props = signal.find_peaks(env, height=1e-3, distance=max(int(0.1 * fs), 1))
    if cand_arr.size == 0:
        return cand_arr.astype(np.int64)
    h_arr = props["peak_heights"]
    early = h_arr[cand_arr < 8 * fs]
    spk = float(np.percentile(early if early.size else h_arr, 90))
    spk = min(max(spk, 0.3), 3.0)
    npk = 0.1 * spk
    # Slope of each candidate (max |d/dt| nearby), used for T-wave discrimination.
    half = max(int(0.075 * fs), 1)
    slope_max = ndimage.maximum_filter1d(slope_env, 2 * half + 1)
    cand = cand_arr.tolist()
    h = h_arr.tolist()
    slope = slope_max[cand_arr].tolist()
    beats: list[int] = []
    beat_h: list[float] = []
    beat_slope: list[float] = []
    rr: list[int] = []
    rr_sum = 0
    last_i = -1

    def accept(k: int) -> None:
        nonlocal rr_sum, last_i
        if beats:
            interval = cand[k] - beats[-1]
            rr.append(interval)
            rr_sum += interval
            if len(rr) > 8:
                rr_sum -= rr.pop(0)
        beats.append(cand[k])
        beat_h.append(h[k])
        beat_slope.append(slope[k])
        last_i = k

    i, n = 0, len(cand)
    while i < n:
        p, hp = cand[i], h[i]
        thr1 = npk + THR1 * (spk - npk)
        if beats:
            rr_avg = rr_sum / len(rr) if rr else fs
            gap = p - beats[-1]
            if gap > SEARCHBACK_RR * rr_avg:
                # Search-back: best non-T-wave candidate in the gap above a lower threshold.
                best = -1
                for k in range(last_i + 1, i):
                    if cand[k] - beats[-1] > refractory and (best < 0 or h[k] > h[best]):
                        best = k
                if (best >= 0 and h[best] > THR2 * thr1
                        and not (cand[best] - beats[-1] < t_wave and slope[best] < 0.5 * beat_slope[-1])):
                    accept(best)
                    spk = 0.25 * min(h[best], 2 * spk) + 0.75 * spk
                    i = best + 1
                    continue
            if hp > thr1:
                if gap > refractory:
                    if gap < t_wave and slope[i] < 0.5 * beat_slope[-1]:
                        npk = 0.125 * min(hp, spk) + 0.875 * npk  # T wave
                    else:
                        accept(i)
                        spk = 0.125 * min(hp, 2 * spk) + 0.875 * spk
                elif hp > beat_h[-1]:
                    # Larger peak inside the refractory period: the earlier one was
                    # the wrong peak (P wave, onset of a wide QRS); replace it.
                    beats[-1], beat_h[-1], beat_slope[-1], last_i = p, hp, slope[i], i
            else:
                npk = 0.125 * min(hp, spk) + 0.875 * npk
        elif hp > thr1:
            accept(i)
            spk = 0.125 * min(hp, 2 * spk) + 0.875 * spk
        else:
            npk = 0.125 * min(hp, spk) + 0.875 * npk
        i += 1
    return np.asarray(beats, dtype=np.int64)


def _fiducials(peaks: np.ndarray, ref_signal: np.ndarray, fs: float) -> np.ndarray:
    """Move each detection to the absolute maximum of ``ref_signal`` within +/- FIDUCIAL_S."""
    if peaks.size == 0:
        return peaks
    half = max(int(round(FIDUCIAL_S * fs)), 1)
    n = ref_signal.shape[0]
    offs = np.arange(-half, half + 1)
    idx = np.clip(peaks[:, None] + offs[None, :], 0, n - 1)
    best = np.argmax(np.abs(ref_signal[idx]), axis=1)
    out = idx[np.arange(peaks.size), best]
    # Two envelope peaks may refine onto the same extremum: keep one.
    return np.unique(out)


def detect_qrs(signals: np.ndarray, fs: float, usable: np.ndarray | None = None,
               block_s: float = BLOCK_S) -> QRSResult:
    """Detect QRS complexes in one lead (1-D) or fused over all usable leads (2-D).

    Args:
        signals: mV, shape (n,) or (n, n_leads). NaN is treated as missing (0).
        fs: sampling rate in Hz.
        usable: (n_blocks, n_leads) boolean mask over ``block_s`` blocks from
            :func:`telediag.ecg.quality.assess_quality`; computed here if None.

    Returns:
        :class:`QRSResult`; ``samples`` are fiducial indices from the record start.
    """
    x = np.asarray(signals, dtype=np.float64)
    x = x.reshape(len(x), -1)
    if usable is None:
        usable = assess_quality(x, fs, block_s).usable
    env, bp = qrs_envelope(x, fs, usable, block_s)
    n = x.shape[0]
    block = max(int(round(block_s * fs)), 1)
    nb, _ = _block_view(n, block)
    mask = np.ones((nb, x.shape[1]), bool) if usable is None else usable
    # Reference lead for fiducials: the one usable most often, ties to the larger QRS band energy.
    energy = np.sqrt(np.mean(bp * bp, axis=0))
    ref = int(np.lexsort((energy, mask.sum(axis=0)))[-1])
    slope_env = np.abs(np.diff(bp[:, ref], prepend=bp[0, ref]))
    peaks = _decide(env, slope_env, fs)
    fid = _fiducials(peaks, bp[:, ref], fs)
    return QRSResult(samples=fid, envelope=env, bandpassed=bp, reference_lead=ref)
