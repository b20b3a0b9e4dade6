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


def assess_quality(signals: np.ndarray, fs: float, block_s: float = BLOCK_S) -> QualityResult:
    """Flag each ``block_s`` block of each lead (signals in mV, shape (n,) or (n, L))."""
    x = np.asarray(signals, dtype=np.float64)
    xt = x.reshape(len(x), -1).T
    block = max(int(round(block_s * fs)), 4)
    missing_s = np.isnan(xt)
    has_missing = bool(missing_s.any())
    if has_missing:
        xt = np.where(missing_s, 0.0, xt)
    xb = _blocks(xt, block)
    missing = _blocks(missing_s, block).any(axis=2) if has_missing else np.zeros(xb.shape[:2], bool)

    hi = xb.max(axis=2)
    lo = xb.min(axis=2)
    ptp = hi - lo
    flat = ptp < FLAT_MV

    # Clipping: many samples sitting exactly on the lead's extreme value (an ADC rail).
    clipped = np.zeros_like(flat)
    for j in range(xb.shape[0]):
        for rail in (hi[j].max(), lo[j].min()):
            if np.count_nonzero(xt[j] == rail) >= CLIP_FRACTION * block:
                clipped[j] |= (xb[j] == rail).mean(axis=1) > CLIP_FRACTION
    clipped &= ~flat

    # HF noise: continuous slope activity compared with the lead's typical QRS
    # slope, measured after a one-mains-period moving average. That average
    # nulls 50 Hz and all its harmonics, so removable mains hum is not counted
    # as noise; EMG and motion artefact are.
    period = max(int(round(fs / MAINS_HZ)), 1)
    c = np.cumsum(xt, axis=1)
    smooth = np.empty_like(xt)
    smooth[:, period:] = (c[:, period:] - c[:, :-period]) / period
    smooth[:, :period] = smooth[:, period:period + 1] if xt.shape[1] > period else xt[:, :period]
    slope = np.abs(np.diff(_blocks(smooth, block), axis=2))
    typical_qrs = np.median(slope.max(axis=2), axis=1, keepdims=True)     # (L, 1)
    noisy = slope.mean(axis=2) > NOISE_RATIO * np.maximum(typical_qrs, 1e-9)

    # Baseline jumps: a step between consecutive 0.4-s medians (robust to the
    # QRS, blind to smooth respiratory wander), or an excursion no ECG has.
    step = max(int(round(fs / 50.0)), 1)  # baseline needs no more than 50 Hz
    sub = max(int(round(0.4 * fs / step)), 1)
    dec = xb[:, :, ::step]
    m = dec.shape[2] // sub
    medians = np.median(dec[:, :, : m * sub].reshape(*dec.shape[:2], m, sub), axis=3)
    jump = np.abs(np.diff(medians, axis=2)).max(axis=2, initial=0.0) > JUMP_MV
    artefact = ptp > RANGE_MV

    flat |= missing & (ptp < FLAT_MV)
    return QualityResult(block_s=block_s, missing=missing.T, flat=flat.T, clipped=clipped.T,
                         noisy=(noisy & ~flat).T, jump=(jump & ~flat).T, artefact=(artefact & ~flat).T)
