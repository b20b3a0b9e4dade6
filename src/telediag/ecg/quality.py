"""Signal quality per lead and per time block: lead-off/flat, clipping, HF noise, baseline jumps.

Why: a detector fed a disconnected lead or a motion artefact produces
confident nonsense. Quality marks each (block, lead) so that detection fuses
only usable leads, and blocks where no lead is usable are reported as
unreadable, so that no alarm (e.g. "asystole") is ever raised from noise or a
loose electrode alone.

All measures are scale-free ratios against the lead's own typical QRS, so the
same thresholds hold for 12-lead carts and Holters, at any sampling rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QualityResult", "assess_quality", "BLOCK_S"]

BLOCK_S = 2.0
FLAT_MV = 0.02          # peak-to-peak below this over a block: lead off / flat line
CLIP_FRACTION = 0.10    # share of a block sitting on the lead's rail value
NOISE_RATIO = 0.35      # mean |slope| vs typical QRS max slope: continuous HF activity
JUMP_MV = 1.0           # baseline step between consecutive 0.4-s medians
MAINS_HZ = 50.0
RANGE_MV = 10.0         # larger excursions than any ECG: artefact


@dataclass(frozen=True)
class QualityResult:
    """Boolean flags of shape (n_blocks, n_leads) on ``block_s`` blocks, and their summary."""

    block_s: float
    missing: np.ndarray
    flat: np.ndarray
    clipped: np.ndarray
    noisy: np.ndarray
    jump: np.ndarray
    artefact: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """Blocks a lead may be used in for detection and alarms."""
        return ~(self.missing | self.flat | self.clipped | self.noisy | self.artefact)

    @property
    def unreadable_blocks(self) -> np.ndarray:
        """Blocks where no lead is usable."""
        return ~self.usable.any(axis=1)

    def unreadable_windows(self, duration_s: float) -> list[tuple[float, float]]:
        """Merged [start_s, end_s) intervals where no lead is usable."""
        bad = self.unreadable_blocks
        out: list[tuple[float, float]] = []
        edges = np.flatnonzero(np.diff(np.concatenate([[0], bad.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            out.append((float(a * self.block_s), float(min(b * self.block_s, duration_s))))
        return out

    def readable_at(self, sample: int, fs: float) -> bool:
        k = int(sample // int(round(self.block_s * fs)))
        return bool(0 <= k < self.usable.shape[0] and self.usable[k].any())


def _blocks(x: np.ndarray, block: int) -> np.ndarray:
    """(L, n) -> (L, n_blocks, block), padding the last block by edge repetition.

    Lead-major layout keeps every per-block reduction on contiguous memory,
    which is several times faster than reducing across a strided axis.
    """
    n_leads, n = x.shape
    nb = -(-n // block)
    pad = nb * block - n
    if pad:
        x = np.concatenate([x, np.repeat(x[:, -1:], pad, axis=1)], axis=1)
    return np.ascontiguousarray(x).reshape(n_leads, nb, block)


def _padded_lead_major(x: np.ndarray, block: int) -> np.ndarray:
    """(n, L) -> C-contiguous (L, n_blocks * block), the last block padded by edge repetition.

    One transposing copy; callers may keep using ``out[:, :n]`` as the lead-major signal.
    """
    n, n_leads = x.shape
    nb = -(-n // block)
    out = np.empty((n_leads, nb * block))
    out[:, :n] = x.T
    if nb * block > n:
        out[:, n:] = out[:, n - 1:n]
    return out


_CHUNK = 1 << 16  # samples per chunk for chunked in-place passes (keeps temporaries cache-sized)


def _smoothed_slope_stats(xt: np.ndarray, period: int, nb: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block max and mean of |diff| of the one-mains-period moving average of ``xt`` (L, n).

    The moving average is ``(c[i] - c[i - period]) / period`` on the running sum
    ``c`` (its first ``period`` samples copy sample ``period``), blocks are padded
    by edge repetition and |diff| is taken within each block. Computed in one
    signal-sized buffer (running sum, then the average in place) and in chunks
    of blocks, with results identical to the whole-array formulation.
    """
    n_leads, n = xt.shape
    buf = np.empty((n_leads, max(period + n, nb * block)))
    np.cumsum(xt, axis=1, out=buf[:, period:period + n])   # c[i] at buf[:, period + i]
    if n > period:
        # smooth[i] = (c[i] - c[i - period]) / period, written to buf[:, i] (which holds
        # c[i - period]); going forward in chunks never reads a value already overwritten.
        for k in range(period, n, _CHUNK):
            e = min(k + _CHUNK, n)
            np.subtract(buf[:, k + period:e + period], buf[:, k:e], out=buf[:, k:e])
        np.divide(buf[:, period:n], period, out=buf[:, period:n])
        buf[:, :period] = buf[:, period:period + 1]
    else:
        buf[:, :n] = xt
    smooth = buf[:, :nb * block]
    if nb * block > n:
        smooth[:, n:] = smooth[:, n - 1:n]
    sb = smooth.reshape(n_leads, nb, block)
    slope_max = np.empty((n_leads, nb))
    slope_mean = np.empty((n_leads, nb))
    step = max(_CHUNK // block, 1)
    for b0 in range(0, nb, step):
        b1 = min(b0 + step, nb)
        part = sb[:, b0:b1]
        slope = np.subtract(part[:, :, 1:], part[:, :, :-1])
        np.abs(slope, out=slope)
        slope.max(axis=2, out=slope_max[:, b0:b1])
        slope.mean(axis=2, out=slope_mean[:, b0:b1])
    return slope_max, slope_mean


def assess_quality(signals: np.ndarray, fs: float, block_s: float = BLOCK_S) -> QualityResult:
    """Flag each ``block_s`` block of each lead (signals in mV, shape (n,) or (n, L))."""
    x = np.asarray(signals, dtype=np.float64)
    x = x.reshape(len(x), -1)
    block = max(int(round(block_s * fs)), 4)
    return _assess_padded(_padded_lead_major(x, block), x.shape[0], fs, block, block_s)


def _assess_padded(xp: np.ndarray, n: int, fs: float, block: int, block_s: float) -> QualityResult:
    """:func:`assess_quality` on the output of :func:`_padded_lead_major` (``n`` real samples).

    Sets NaN samples of ``xp`` to 0 in place (so ``xp[:, :n]`` is then NaN-free).
    ``xp`` may be a column slice of a wider buffer (rows contiguous).
    """
    n_leads = xp.shape[0]
    nb = xp.shape[1] // block
    # A NaN anywhere makes the sum NaN; a NaN-free sum proves there is none (cheap test).
    has_missing = bool(np.isnan(np.add.reduce(xp, axis=None)))
    if has_missing:
        missing_s = np.isnan(xp)
        has_missing = bool(missing_s.any())
    if has_missing:
        missing = missing_s.reshape(n_leads, nb, block).any(axis=2)
        xp[missing_s] = 0.0
    else:
        missing = np.zeros((n_leads, nb), bool)
    xt = xp[:, :n]
    xb = xp.reshape(n_leads, nb, block)  # a view (rows of xp are contiguous)

    hi = xb.max(axis=2)
    lo = xb.min(axis=2)
    ptp = hi - lo
    flat = ptp < FLAT_MV

    # Clipping: many samples sitting exactly on the lead's extreme value (an ADC rail).
    # Only blocks whose max (min) is the rail can hold rail samples, so only those are counted.
    clipped = np.zeros_like(flat)
    for j in range(n_leads):
        for ext_b, rail in ((hi[j], hi[j].max()), (lo[j], lo[j].min())):
            cand = np.flatnonzero(ext_b == rail)
            counts = np.count_nonzero(xb[j, cand] == rail, axis=1)
            total = int(counts.sum())
            if cand.size and cand[-1] == nb - 1 and nb * block > n:
                total -= int(np.count_nonzero(xp[j, n:] == rail))  # edge padding is not signal
            if total >= CLIP_FRACTION * block:
                clipped[j, cand] |= counts / block > CLIP_FRACTION
    clipped &= ~flat

    # HF noise: continuous slope activity compared with the lead's typical QRS
    # slope, measured after a one-mains-period moving average. That average
    # nulls 50 Hz and all its harmonics, so removable mains hum is not counted
    # as noise; EMG and motion artefact are.
    period = max(int(round(fs / MAINS_HZ)), 1)
    slope_max, slope_mean = _smoothed_slope_stats(xt, period, nb, block)
    typical_qrs = np.median(slope_max, axis=1, keepdims=True)             # (L, 1)
    noisy = slope_mean > NOISE_RATIO * np.maximum(typical_qrs, 1e-9)

    # Baseline jumps: a step between consecutive 0.4-s medians (robust to the
    # QRS, blind to smooth respiratory wander), or an excursion no ECG has.
    step = max(int(round(fs / 50.0)), 1)  # baseline needs no more than 50 Hz
    sub = max(int(round(0.4 * fs / step)), 1)
    m = -(-block // step) // sub
    groups = xb[:, :, : m * sub * step: step].reshape(n_leads, nb, m, sub)
    if sub % 2 and m > 0:
        # odd-length median = the middle order statistic (what np.median returns, NaN-free data)
        medians = np.partition(groups, sub // 2, axis=3)[..., sub // 2]
    else:
        medians = np.median(groups, axis=3)
    jump = np.abs(np.diff(medians, axis=2)).max(axis=2, initial=0.0) > JUMP_MV
    artefact = ptp > RANGE_MV

    flat |= missing & (ptp < FLAT_MV)
    return QualityResult(block_s=block_s, missing=missing.T, flat=flat.T, clipped=clipped.T,
                         noisy=(noisy & ~flat).T, jump=(jump & ~flat).T, artefact=(artefact & ~flat).T)
