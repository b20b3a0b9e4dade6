"""Preprocessing filters: baseline wander, mains interference, band-limiting, resampling.

All functions take arrays shaped (n_samples,) or (n_samples, n_leads), filter
along axis 0 and return new arrays. Offline analysis uses zero-phase
(forward-backward) filtering so that fiducial points and interval
measurements are not shifted by filter group delay. Filter designs are cached
per sampling rate because workers see the same few rates over and over.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal

__all__ = [
    "bandpass",
    "bandpass_rows",
    "highpass",
    "lowpass",
    "remove_baseline",
    "remove_mains",
    "resample",
    "preprocess",
]

MAINS_HZ = 50.0  # China's mains frequency


@lru_cache(maxsize=64)
def _butter(order: int, cutoff: tuple[float, ...], btype: str, fs: float) -> np.ndarray:
    nyq = fs / 2.0
    # Clamp the upper edge below Nyquist so low-rate devices (e.g. 100-128 Hz)
    # still get a valid design instead of an exception.
    wn = tuple(min(c, 0.95 * nyq) for c in cutoff)
    arg = wn[0] if len(wn) == 1 else list(wn)
    return signal.butter(order, arg, btype=btype, fs=fs, output="sos")


def _apply(sos: np.ndarray, x: np.ndarray, zero_phase: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if zero_phase:
        padlen = min(3 * (2 * len(sos) + 1), x.shape[0] - 1)
        return signal.sosfiltfilt(sos, x, axis=0, padlen=max(padlen, 0))
    return signal.sosfilt(sos, x, axis=0)


try:  # scipy's in-place SOS kernel (what sosfilt calls after copying its input)
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_inplace
except ImportError:  # pragma: no cover - private API moved; fall back to the public, copying one
    _sosfilt_inplace = None


@lru_cache(maxsize=64)
def _sos_zi(sos_key: bytes, n_sections: int) -> np.ndarray:
    sos = np.frombuffer(sos_key, dtype=np.float64).reshape(n_sections, 6)
    return signal.sosfilt_zi(sos)


def _sosfilt_rows(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """``sosfilt(sos, x, axis=-1, zi=zi)[0]`` for 2-D ``x`` with contiguous rows, in place when possible.

    ``zi`` has shape (n_sections, rows, 2), as ``sosfilt`` expects it.
    """
    if _sosfilt_inplace is not None and x.dtype == np.float64 and x.strides[1] == x.itemsize:
        zr = np.ascontiguousarray(np.moveaxis(zi, 0, 1))          # (rows, n_sections, 2)
        if x.flags.c_contiguous:
            _sosfilt_inplace(sos, x, zr)
        else:  # rows are contiguous but spaced: one row (a C-contiguous (1, n) view) at a time
            for r in range(x.shape[0]):
                _sosfilt_inplace(sos, x[r:r + 1], zr[r:r + 1])
        return x
    return signal.sosfilt(sos, x, axis=-1, zi=zi)[0]


def _zero_phase_edge(n_sections: int, n: int) -> int:
    """Odd-extension length ``_apply`` uses for zero-phase filtering of ``n`` samples."""
    return max(min(3 * (2 * n_sections + 1), n - 1), 0)


def _filtfilt_rows_inplace(sos: np.ndarray, buf: np.ndarray, start: int, n: int) -> np.ndarray:
    """Zero-phase filtering of the rows ``buf[:, start:start + n]``, using ``buf`` as work space.

    Bit-for-bit the same arithmetic as ``_apply(sos, x.T, zero_phase=True).T``
    (``sosfiltfilt`` with odd extension of ``padlen`` samples), but on a
    lead-major layout: no transposing copies, no per-call ``sosfilt_zi``
    solve, the odd extension written around the signal in ``buf`` (which
    needs ``_zero_phase_edge`` free columns on both sides), filtered there in
    place, and the result stored back at ``buf[:, :n]`` (returned; rows are
    contiguous). One extra signal-sized buffer is needed for the backward pass.
    """
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    edge = _zero_phase_edge(len(sos), n)
    if edge == 0:
        out = buf[:, :n]
        out[...] = _apply(sos, buf[:, start:start + n].T, zero_phase=True).T
        return out
    if start < edge or buf.shape[1] < start + n + edge or buf.strides[1] != buf.itemsize:
        raise ValueError("buffer lacks room for the odd extension")
    ext = buf[:, start - edge:start + n + edge]
    x = ext[:, edge:edge + n]
    # odd extension, same expressions as scipy.signal._arraytools.odd_ext
    np.subtract(2 * x[:, :1], x[:, edge:0:-1], out=ext[:, :edge])
    np.subtract(2 * x[:, -1:], x[:, -2:-(edge + 2):-1], out=ext[:, edge + n:])
    zi = _sos_zi(sos.tobytes(), len(sos)).reshape(len(sos), 1, 2)
    y = _sosfilt_rows(sos, ext, zi * ext[:, :1])
    rev = np.ascontiguousarray(y[:, ::-1])
    rev = _sosfilt_rows(sos, rev, zi * rev[:, :1])
    out = buf[:, :n]        # the extension is no longer needed: its memory takes the result
    out[...] = rev[:, ::-1][:, edge:edge + n]
    return out


def _filtfilt_rows(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Zero-phase filtering of each row of ``x`` (rows, n); see :func:`_filtfilt_rows_inplace`."""
    rows, n = x.shape
    edge = _zero_phase_edge(len(sos), n)
    buf = np.empty((rows, n + 2 * edge))
    buf[:, edge:edge + n] = x
    return _filtfilt_rows_inplace(sos, buf, edge, n)


def bandpass_rows(x: np.ndarray, fs: float, low: float, high: float, order: int = 2) -> np.ndarray:
    """Zero-phase :func:`bandpass` of each row of ``x`` (shape (n_leads, n)).

    Identical values to ``bandpass(x.T, ...).T``, several times faster and with
    less memory; the rows of the result are contiguous.
    """
    x = np.asarray(x, dtype=np.float64)
    return _filtfilt_rows(_butter(order, (low, high), "bandpass", float(fs)), x.reshape(-1, x.shape[-1]))


def _bandpass_rows_inplace(buf: np.ndarray, start: int, n: int, fs: float, low: float, high: float,
                           order: int = 2) -> np.ndarray:
    """:func:`bandpass_rows` of ``buf[:, start:start + n]`` using ``buf`` as work space (see
    :func:`_filtfilt_rows_inplace`; ``start`` and the columns after the signal must be at
    least ``BANDPASS_MARGIN``). Returns ``buf[:, :n]``."""
    return _filtfilt_rows_inplace(_butter(order, (low, high), "bandpass", float(fs)), buf, start, n)


BANDPASS_MARGIN = 3 * (2 * 2 + 1)   # odd-extension room for order-2 band-pass (2 sections)


def bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = 2,
             zero_phase: bool = True) -> np.ndarray:
    """Butterworth band-pass ``low``-``high`` Hz (order per edge; doubled when zero-phase)."""
    return _apply(_butter(order, (low, high), "bandpass", float(fs)), x, zero_phase)


def highpass(x: np.ndarray, fs: float, cutoff: float, order: int = 2, zero_phase: bool = True) -> np.ndarray:
    """Butterworth high-pass; 0.5 Hz or lower keeps ST segments diagnostically intact."""
    return _apply(_butter(order, (cutoff,), "highpass", float(fs)), x, zero_phase)


def lowpass(x: np.ndarray, fs: float, cutoff: float, order: int = 4, zero_phase: bool = True) -> np.ndarray:
    """Butterworth low-pass, e.g. 40 Hz for display/measurement band-limiting."""
    return _apply(_butter(order, (cutoff,), "lowpass", float(fs)), x, zero_phase)


def remove_baseline(x: np.ndarray, fs: float, cutoff: float = 0.5) -> np.ndarray:
    """Remove baseline wander (respiration, electrode drift) with a zero-phase 0.5 Hz high-pass.

    A zero-phase IIR high-pass at 0.5 Hz is the AHA-recommended compromise:
    it removes respiration wander without the ST distortion of a causal filter.
    """
    return highpass(x, fs, cutoff, order=2, zero_phase=True)


@lru_cache(maxsize=64)
def _notches(fs: float, f0: float, q: float) -> np.ndarray:
    sections = []
    k = 1
    while k * f0 < 0.98 * fs / 2:
        b, a = signal.iirnotch(k * f0, q, fs=fs)
        sections.append(signal.tf2sos(b, a))
        k += 1
    return np.vstack(sections) if sections else np.empty((0, 6))


def remove_mains(x: np.ndarray, fs: float, mains_hz: float = MAINS_HZ, q: float = 30.0) -> np.ndarray:
    """Notch out power-line interference at ``mains_hz`` and its harmonics below Nyquist (zero-phase)."""
    sos = _notches(float(fs), float(mains_hz), float(q))
    if sos.shape[0] == 0:
        return np.asarray(x, dtype=np.float64).copy()
    return _apply(sos, x, zero_phase=True)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``fs_in`` to ``fs_out`` along axis 0."""
    from fractions import Fraction

    ratio = Fraction(float(fs_out) / float(fs_in)).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(x, dtype=np.float64).copy()
    return signal.resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=0)


def preprocess(x: np.ndarray, fs: float, mains_hz: float = MAINS_HZ, high_hz: float = 100.0) -> np.ndarray:
    """Diagnostic-band cleaning for measurement and display: baseline, mains, low-pass.

    NaN (missing) samples are replaced by 0 first, because a single NaN would
    spread through every IIR filter output.
    """
    y = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    y = remove_baseline(y, fs)
    y = remove_mains(y, fs, mains_hz)
    if high_hz < 0.45 * fs:
        y = lowpass(y, fs, high_hz)
    return y
