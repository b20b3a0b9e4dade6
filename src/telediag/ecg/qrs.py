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
vectorised numpy/scipy on a lead-major (n_leads, n) layout, so every filter,
cumulative sum and per-block reduction runs on contiguous memory; a 30-minute
2-lead Holter takes well under 0.1 s of CPU. The arithmetic (and its order) is
that of the straightforward (n, n_leads) formulation, so results are
bit-for-bit reproducible across the two layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from .filters import BANDPASS_MARGIN, _bandpass_rows_inplace, bandpass_rows
from .quality import _assess_padded

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


_CHUNK = 1 << 16  # samples per chunk for chunked in-place passes (keeps temporaries cache-sized)


def _moving_average_inplace(work: np.ndarray, n: int, width: int) -> None:
    """Centred moving average (window ``[i - half, i + width - half)``) from running sums, in place.

    On entry ``work[:, half + j]`` holds ``C[j]`` = [0, cumsum(x)][j] for j = 0..n
    (``half = width // 2``); on exit ``work[:, i]`` holds the average at sample
    i < n: ``(C[min(i + width - half, n)] - C[max(i - half, 0)]) / width``.
    Edges average over the part of the window inside the signal, scaled by the
    full width, which is what an integrator of a zero-padded signal gives.
    The result at i is written where C[i - half] was, so a forward pass never
    reads an overwritten value; edges are computed first.
    """
    width = max(int(width), 1)
    half = width // 2
    lo_end = min(half, n)
    hi_start = max(n - (width - half) + 1, lo_end)
    edge = np.r_[0:lo_end, hi_start:n]
    edge_vals = (work[:, half + np.minimum(edge + width - half, n)] - work[:, half + np.maximum(edge - half, 0)]
                 if edge.size else None)
    for k in range(lo_end, hi_start, _CHUNK):
        e = min(k + _CHUNK, hi_start)
        np.subtract(work[:, k + width:e + width], work[:, k:e], out=work[:, k:e])
    if edge.size:
        work[:, edge] = edge_vals
    np.divide(work[:, :n], width, out=work[:, :n])


def _block_view(n: int, block: int) -> tuple[int, int]:
    nb = -(-n // block)
    return nb, nb * block - n


def _lead_scale(bmax: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Per-block typical QRS energy of each lead: rolling median of block maxima (nb, L) over usable blocks."""
    nb, n_leads = bmax.shape
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


def _envelope_rows(bp: np.ndarray, fs: float, usable: np.ndarray, block: int) -> np.ndarray:
    """Fused envelope (n,) from the QRS-band signals ``bp`` (L, n), lead-major."""
    n_leads, n = bp.shape
    nb, _ = _block_view(n, block)
    width = max(int(round(MWI_S * fs)), 1)
    half = width // 2
    # One work buffer: running sums of |slope| at [half, half + n], then the
    # integrated envelope in place at [0, n), zero-padded to whole blocks.
    work = np.empty((n_leads, max(half + n + 1, nb * block)))
    # |slope| (not slope^2): a linear envelope keeps small or wide beats
    # (aberrant, ectopic) within reach of the threshold.
    slope = work[:, half + 1:half + 1 + n]
    np.subtract(bp[:, :1], bp[:, :1], out=slope[:, :1])
    np.subtract(bp[:, 1:], bp[:, :-1], out=slope[:, 1:])
    np.abs(slope, out=slope)
    np.multiply(slope, fs, out=slope)
    work[:, half] = 0.0
    np.cumsum(slope, axis=1, out=slope)
    _moving_average_inplace(work, n, width)
    work[:, n:nb * block] = 0.0
    eb = work[:, :nb * block].reshape(n_leads, nb, block)   # a view
    scale = _lead_scale(eb.max(axis=2).T, usable)
    # Lead weights per block: inverse of the lead's mean normalised energy in
    # the block, i.e. favour leads whose QRS stands out from what lies between
    # beats (noise, tall T waves). Weights of the usable leads sum to 1.
    # Block sums accumulate sample by sample (a cumulative sum), the order of
    # the reference (n, L) formulation, so the weights are bit-identical to it.
    step = max(_CHUNK // block, 1)
    tmp = np.empty((n_leads, min(step, nb), block))
    sums = np.empty((n_leads, nb))
    for b0 in range(0, nb, step):
        b1 = min(b0 + step, nb)
        part = tmp[:, :b1 - b0]
        np.cumsum(eb[:, b0:b1], axis=2, out=part)
        sums[:, b0:b1] = part[:, :, -1]
    busy = sums.T / block / scale
    busy = ndimage.uniform_filter1d(busy, 3, axis=0, mode="nearest")
    raw_w = np.where(usable, 1.0 / np.maximum(busy, BUSY_FLOOR) ** WEIGHT_POWER, 0.0)
    total = raw_w.sum(axis=1, keepdims=True)
    per_block = np.divide(raw_w, total, out=np.zeros_like(raw_w), where=total > 0) / scale
    if n_leads == 2:
        # sum_j env_j * w_j over two leads is exactly p0 + p1, whatever the summation kernel
        fused = np.multiply(eb[0], per_block[:, 0, None])
        for b0 in range(0, nb, step):
            b1 = min(b0 + step, nb)
            term = np.multiply(eb[1, b0:b1], per_block[b0:b1, 1, None], out=tmp[0, :b1 - b0])
            fused[b0:b1] += term
        return fused.reshape(-1)[:n]
    # Other lead counts: the reference einsum on (samples, leads) chunks, because
    # its summation order over leads (SIMD partial sums) is the one to reproduce.
    fused = np.empty(nb * block)
    for b0 in range(0, nb, step):
        b1 = min(b0 + step, nb)
        chunk = np.ascontiguousarray(eb[:, b0:b1].reshape(n_leads, -1).T)
        w = np.repeat(per_block[b0:b1], block, axis=0)
        np.einsum("ij,ij->i", chunk, w, out=fused[b0 * block:b1 * block])
    return fused[:n]


def qrs_envelope(signals: np.ndarray, fs: float, usable: np.ndarray | None = None,
                 block_s: float = BLOCK_S) -> tuple[np.ndarray, np.ndarray]:
    """Fused, per-lead-normalised QRS energy envelope and the QRS-band signals.

    ``usable`` is a boolean (n_blocks, n_leads) mask on ``block_s`` blocks (from
    :mod:`telediag.ecg.quality`); blocks where no lead is usable give 0.
    Returns the envelope (n,) and the QRS-band signals (n, n_leads).
    """
    x = np.asarray(signals, dtype=np.float64).reshape(len(signals), -1)
    n, n_leads = x.shape
    block = max(int(round(block_s * fs)), 1)
    nb, _ = _block_view(n, block)
    if usable is None:
        usable = np.ones((nb, n_leads), bool)
    bp = bandpass_rows(np.nan_to_num(np.ascontiguousarray(x.T)), fs, *BAND_HZ)
    return _envelope_rows(bp, fs, usable, block), bp.T


def _candidate_slopes(cand: np.ndarray, ref_bp: np.ndarray, half: int) -> np.ndarray:
    """``maximum_filter1d(|diff(ref_bp, prepend=ref_bp[0])|, 2*half+1)`` evaluated at ``cand`` only.

    Same values as filtering the whole record (mode 'reflect'), at a fraction of the cost.
    """
    n = ref_bp.shape[0]
    size = 2 * half + 1
    slope_env = np.empty(n)
    np.subtract(ref_bp[:1], ref_bp[:1], out=slope_env[:1])
    np.subtract(ref_bp[1:], ref_bp[:-1], out=slope_env[1:])
    np.abs(slope_env, out=slope_env)
    if n <= size:
        return ndimage.maximum_filter1d(slope_env, size)[cand]
    out = np.empty(cand.shape[0])
    inner = (cand >= half) & (cand < n - half)
    ci = cand[inner]
    if ci.size:
        # window maxima via reduceat on [start, stop) pairs (odd slots are discarded)
        bounds = np.empty(2 * ci.size, dtype=np.intp)
        bounds[0::2] = ci - half
        bounds[1::2] = ci + half + 1
        if bounds[-1] >= n:
            bounds = bounds[:-1]
        out[inner] = np.maximum.reduceat(slope_env, bounds)[0::2]
    if ci.size < cand.size:
        c = cand[~inner]
        idx = c[:, None] + np.arange(-half, half + 1)[None, :]
        idx = np.where(idx < 0, -idx - 1, idx)             # 'reflect': d c b a | a b c d
        idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
        out[~inner] = slope_env[idx].max(axis=1)
    return out


def _decide(env: np.ndarray, ref_bp: np.ndarray, fs: float) -> np.ndarray:
    """Adaptive-threshold decision with T-wave discrimination and search-back.

    Signal (``spk``) and noise (``npk``) peak levels are running averages as in
    Pan & Tompkins (1985); updates are clamped so that one artefact cannot lift
    the threshold above real beats for many seconds. The envelope is already
    normalised (typical QRS ~ 1), which makes the clamps meaningful.
    ``ref_bp`` is the QRS-band signal of the reference lead (its slope drives
    T-wave discrimination).
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
    cand = cand_arr.tolist()
    h = h_arr.tolist()
    slope = _candidate_slopes(cand_arr, ref_bp, half).tolist()
    # This loop is the only per-candidate Python code, so it is kept lean: the
    # last accepted beat lives in locals (last_*), constants are local, the
    # search-back gap (SEARCHBACK_RR * mean of the last 8 RR) is updated only
    # when a beat is accepted. Same arithmetic, in the same order, as the
    # textbook formulation with per-beat lists.
    thr1_k, thr2_k, sb_k = THR1, THR2, SEARCHBACK_RR
    beats: list[int] = []
    rr: list[int] = []
    rr_sum = 0
    sb_gap = sb_k * fs                 # mean RR defaults to 1 s before two beats exist
    last_b = last_i = -1
    last_h = last_s = 0.0
    i, n = 0, len(cand)
    while i < n:                       # until the first beat
        hp = h[i]
        i += 1
        if hp > npk + thr1_k * (spk - npk):
            last_b, last_h, last_s, last_i = cand[i - 1], hp, slope[i - 1], i - 1
            beats.append(last_b)
            spk = 0.125 * (hp if hp < 2 * spk else 2 * spk) + 0.875 * spk
            break
        npk = 0.125 * (spk if spk < hp else hp) + 0.875 * npk
    while i < n:
        hp = h[i]
        thr1 = npk + thr1_k * (spk - npk)
        p = cand[i]
        gap = p - last_b
        if gap > sb_gap:
            # Search-back: best non-T-wave candidate in the gap above a lower threshold
            # (the first highest candidate past the refractory period).
            best = -1
            lim = last_b + refractory
            for k in range(last_i + 1, i):
                if cand[k] > lim and (best < 0 or h[k] > h[best]):
                    best = k
            if (best >= 0 and h[best] > thr2_k * thr1
                    and not (cand[best] - last_b < t_wave and slope[best] < 0.5 * last_s)):
                hb = h[best]
                interval = cand[best] - last_b
                rr.append(interval)
                rr_sum += interval
                if len(rr) > 8:
                    rr_sum -= rr.pop(0)
                sb_gap = sb_k * (rr_sum / len(rr))
                last_b, last_h, last_s, last_i = cand[best], hb, slope[best], best
                beats.append(last_b)
                spk = 0.25 * (hb if hb < 2 * spk else 2 * spk) + 0.75 * spk
                i = best + 1
                continue
        if hp > thr1:
            if gap > refractory:
                if gap < t_wave and slope[i] < 0.5 * last_s:
                    npk = 0.125 * (spk if spk < hp else hp) + 0.875 * npk  # T wave
                else:
                    rr.append(gap)
                    rr_sum += gap
                    if len(rr) > 8:
                        rr_sum -= rr.pop(0)
                    sb_gap = sb_k * (rr_sum / len(rr))
                    last_b, last_h, last_s, last_i = p, hp, slope[i], i
                    beats.append(p)
                    spk = 0.125 * (hp if hp < 2 * spk else 2 * spk) + 0.875 * spk
            elif hp > last_h:
                # Larger peak inside the refractory period: the earlier one was
                # the wrong peak (P wave, onset of a wide QRS); replace it.
                beats[-1] = last_b = p
                last_h, last_s, last_i = hp, slope[i], i
        else:
            npk = 0.125 * (spk if spk < hp else hp) + 0.875 * npk
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


def _reference_lead(bp: np.ndarray, mask: np.ndarray) -> int:
    """Lead used for fiducials: the one usable most often, ties to the larger QRS band energy (RMS).

    Equivalent to ``lexsort((rms, usable_count))[-1]`` with ``rms`` computed on
    the (n, L) layout; the exact RMS is only needed when two candidates are close.
    """
    counts = mask.sum(axis=0)
    top = np.flatnonzero(counts == counts.max())
    if top.size == 1:
        return int(top[0])
    sq = np.array([float(np.dot(bp[j], bp[j])) for j in top])
    order = np.argsort(sq, kind="stable")
    if sq[order[-1]] > sq[order[-2]] * (1.0 + 1e-9):
        return int(top[order[-1]])
    bt = np.ascontiguousarray(bp.T)                 # exact reference formulation (rare path)
    energy = np.sqrt(np.mean(bt * bt, axis=0))
    return int(np.lexsort((energy, counts))[-1])


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
    n, n_leads = x.shape
    block = max(int(round(block_s * fs)), 1)
    # One lead-major buffer serves signal quality (the signal padded to whole
    # blocks) and the band-pass (odd extension around the signal, filtered in
    # place, result written back at its start): no other input copies.
    qblock = max(block, 4)
    nbq = -(-n // qblock)
    m = BANDPASS_MARGIN
    buf = np.empty((n_leads, m + max(nbq * qblock, n + m)))
    xq = buf[:, m:m + nbq * qblock]
    xq[:, :n] = x.T
    if usable is None:
        if nbq * qblock > n:
            xq[:, n:] = xq[:, n - 1:n]
        usable = _assess_padded(xq, n, fs, qblock, block_s).usable   # zeroes NaN in xq
        if not np.isfinite(np.add.reduce(xq[:, :n], axis=None)):
            np.nan_to_num(xq[:, :n], copy=False)                    # +-inf (NaN is already 0)
    else:
        np.nan_to_num(xq[:, :n], copy=False)
    bp = _bandpass_rows_inplace(buf, m, n, fs, *BAND_HZ)
    env = _envelope_rows(bp, fs, usable, block)
    ref = _reference_lead(bp, usable)
    ref_bp = bp[ref]
    peaks = _decide(env, ref_bp, fs)
    fid = _fiducials(peaks, ref_bp, fs)
    return QRSResult(samples=fid, envelope=env, bandpassed=bp.T, reference_lead=ref)
