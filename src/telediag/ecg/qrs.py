"""QRS detection on one lead or fused across all usable leads.

Method (principled, no per-record tuning):

1. Each lead is band-passed to the QRS band (zero-phase), differentiated and
   squared; a moving-window integral (~QRS width) gives an energy envelope.
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

__all__ = ["QRSResult", "detect_qrs", "qrs_envelope"]

BAND_HZ = (5.0, 20.0)       # QRS energy band: above P/T and baseline, below EMG/mains
MWI_S = 0.10                # integration window ~ QRS duration
BLOCK_S = 2.0               # >= one beat per block down to 30 bpm
SCALE_BLOCKS = 9            # rolling window for the per-lead QRS energy level (18 s)
REFRACTORY_S = 0.20         # physiological minimum RR (300 bpm)
T_WAVE_S = 0.36             # candidates closer than this to the last QRS may be T waves
ENV_POWER = 2
BUSY_FLOOR = 0.05
WEIGHT_POWER = 2.0
THR1 = 0.25
THR2 = 0.5
SEARCHBACK_RR = 1.66
FIDUCIAL_S = 0.08           # search half-window for the fiducial point


@dataclass(frozen=True)
class QRSResult:
    """Detections plus the intermediate signals later stages reuse (no recomputation)."""

    samples: np.ndarray       # int64 fiducial sample indices
    envelope: np.ndarray      # fused normalised envelope, shape (n,)
    bandpassed: np.ndarray    # QRS-band signals, shape (n, n_leads)
    reference_lead: int       # lead used for fiducial points


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 via cumulative sums (O(n), zero delay)."""
    width = max(int(width), 1)
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), x], axis=0), axis=0)
    half = width // 2
    n = x.shape[0]
    hi = np.minimum(np.arange(n) + width - half, n)
    lo = np.maximum(np.arange(n) - half, 0)
    return (c[hi] - c[lo]) / width


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
    slope = np.diff(bp, axis=0, prepend=bp[:1])
    env = _moving_average(np.abs(slope) ** ENV_POWER, int(round(MWI_S * fs)))
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
    """Adaptive-threshold decision with T-wave discrimination and search-back."""
    refractory = int(REFRACTORY_S * fs)
    cand, props = signal.find_peaks(env, height=1e-3, distance=max(int(0.1 * fs), 1))
    if cand.size == 0:
        return cand
    h = props["peak_heights"]
    # Initial levels from the first seconds: robust to a noisy or empty start.
    first = h[cand < 8 * fs] if np.any(cand < 8 * fs) else h
    spk = float(np.percentile(first, 90)) if first.size else 1.0
    spk = min(max(spk, 0.3), 3.0)
    npk = 0.1 * spk
    beats: list[int] = []
    beat_h: list[float] = []
    rr_recent: list[int] = []
    last_i = -1  # index into cand of last accepted beat
    i = 0
    n = cand.size
    while i < n:
        p, hp = int(cand[i]), float(h[i])
        thr1 = npk + THR1 * (spk - npk)
        rr_avg = float(np.mean(rr_recent)) if rr_recent else 1.0 * fs
        # Search-back: gap since last beat too long -> best candidate above thr2 in the gap.
        if beats and p - beats[-1] > SEARCHBACK_RR * rr_avg:
            lo = last_i + 1
            seg = np.arange(lo, i)
            seg = seg[(cand[seg] - beats[-1]) > refractory]
            if seg.size:
                k = int(seg[np.argmax(h[seg])])
                if h[k] > THR2 * thr1 and not _is_t_wave(int(cand[k]), beats[-1], slope_env, fs):
                    beats.append(int(cand[k]))
                    beat_h.append(float(h[k]))
                    spk = 0.25 * min(float(h[k]), 2 * spk) + 0.75 * spk
                    rr_recent = (rr_recent + [beats[-1] - beats[-2]])[-8:]
                    last_i = k
                    i = k + 1
                    continue
        if hp > thr1 and (not beats or p - beats[-1] > refractory):
            if beats and p - beats[-1] < T_WAVE_S * fs and _is_t_wave(p, beats[-1], slope_env, fs):
                npk = 0.125 * min(hp, spk) + 0.875 * npk
            else:
                if beats:
                    rr_recent = (rr_recent + [p - beats[-1]])[-8:]
                beats.append(p)
                beat_h.append(hp)
                # Clamp: one artefact must not raise the level so far that
                # real beats fall under the threshold for many seconds.
                spk = 0.125 * min(hp, 2 * spk) + 0.875 * spk
                last_i = i
        elif hp > thr1 and beats and hp > beat_h[-1]:
            # Inside the refractory period but larger: the earlier peak was the
            # wrong one (e.g. a P wave or the onset of a wide QRS); replace it.
            beats[-1] = p
            beat_h[-1] = hp
            last_i = i
        else:
            npk = 0.125 * min(hp, spk) + 0.875 * npk
        i += 1
    return np.asarray(beats, dtype=np.int64)


def _is_t_wave(p: int, prev: int, slope_env: np.ndarray, fs: float) -> bool:
    """A candidate shortly after a QRS whose maximal slope is under half the QRS's is a T wave."""
    half = max(int(0.075 * fs), 1)
    a = slope_env[max(p - half, 0): p + half + 1].max(initial=0.0)
    b = slope_env[max(prev - half, 0): prev + half + 1].max(initial=0.0)
    return a < 0.5 * b


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
        usable: optional (n_blocks, n_leads) boolean mask over ``block_s``
            blocks, as produced by :func:`telediag.ecg.quality.assess_quality`.

    Returns:
        :class:`QRSResult`; ``samples`` are fiducial indices from the record start.
    """
    x = np.asarray(signals, dtype=np.float64)
    x = x.reshape(len(x), -1)
    env, bp = qrs_envelope(x, fs, usable, block_s)
    n = x.shape[0]
    block = max(int(round(block_s * fs)), 1)
    nb, _ = _block_view(n, block)
    mask = np.ones((nb, x.shape[1]), bool) if usable is None else usable
    # Reference lead for fiducials: the one usable most often, ties to the larger QRS band energy.
    energy = np.sqrt(np.mean(bp * bp, axis=0))
    ref = int(np.lexsort((energy, mask.sum(axis=0)))[-1])
    slope_env = np.abs(np.diff(bp[:, ref], prepend=bp[0, ref]))
    slope_env = np.maximum(slope_env, 0)
    peaks = _decide(env, _moving_average(slope_env[:, None], 3)[:, 0], fs)
    fid = _fiducials(peaks, bp[:, ref], fs)
    return QRSResult(samples=fid, envelope=env, bandpassed=bp, reference_lead=ref)
