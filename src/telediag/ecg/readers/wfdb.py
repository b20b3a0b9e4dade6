"""WFDB records (PhysioNet): header plus signal files, any storage format, in mV."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..recording import Recording, RecordingSource, WaveformError
from .leads import mv_factor, normalise_lead_name

__all__ = ["RangeRead", "WfdbLayout", "read_wfdb", "read_wfdb_files", "read_wfdb_window", "wfdb_layout"]


# Bytes per stored sample for the uncompressed WFDB formats; FLAC formats
# (508/516/524) have no fixed size, so they are not size-checked.
_WFDB_BYTES_PER_SAMPLE = {
    "8": 1.0, "16": 2.0, "24": 3.0, "32": 4.0, "61": 2.0, "80": 1.0, "160": 2.0,
    "212": 1.5, "310": 4.0 / 3.0, "311": 4.0 / 3.0,
}


# Non-voltage channels kept beside the ECG: pulsatile signals (arterial pressure,
# photoplethysmogram) that confirm or refute a pulseless rhythm.
_PULSATILE_NAMES = frozenset({"ABP", "ART", "AOBP", "PLETH", "PPG"})


def _record_base(path: str | os.PathLike) -> str:
    p = Path(path)
    if p.suffix.lower() in {".hea", ".dat"}:
        p = p.with_suffix("")
    return str(p)


def _check_wfdb_files(header: Any, directory: Path) -> None:
    """Verify every signal file exists and is long enough for the header's sample count.

    wfdb may return zero-filled or shortened arrays for truncated files; a
    short upload must be refused rather than analysed as a flat line.
    """
    sig_len = header.sig_len
    if header.n_sig == 0:
        raise WaveformError("WFDB header declares no signals")
    if sig_len is not None and sig_len <= 0:
        raise WaveformError("WFDB record has zero samples")
    # Group signals by file; one file may hold several interleaved signals.
    files: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name):
        files.setdefault(name, []).append(i)
    for name, idx in files.items():
        fpath = directory / name
        if not fpath.is_file():
            raise WaveformError(f"signal file {name!r} named in the header is missing")
        fmt = str(header.fmt[idx[0]])
        bps = _WFDB_BYTES_PER_SAMPLE.get(fmt)
        if bps is None or sig_len is None:
            continue
        spf = sum(int(header.samps_per_frame[i] or 1) for i in idx)
        offset = int(header.byte_offset[idx[0]] or 0)
        needed = offset + math.ceil(sig_len * spf * bps)
        actual = fpath.stat().st_size
        if actual < needed:
            raise WaveformError(
                f"signal file {name!r} is truncated: {actual} bytes, header needs {needed}"
            )


def _wfdb_start(header: Any) -> datetime | None:
    if header.base_date is not None and header.base_time is not None:
        return datetime.combine(header.base_date, header.base_time)
    return None


def read_wfdb(path: str | os.PathLike) -> Recording:
    """Read a WFDB record (single- or multi-segment, any storage format) in mV.

    ``path`` is the record path without extension, or the ``.hea`` file.
    Channels whose units are not voltages are not ECG leads; pulsatile ones (ABP/ART,
    PLETH/PPG) are kept in ``Recording.pulsatile``, the others (e.g. RESP) are dropped.
    """
    import wfdb  # local import: only WFDB users pay its import time

    base = _record_base(path)
    directory = Path(base).parent
    name = Path(base).name
    if not (directory / f"{name}.hea").is_file():
        raise WaveformError(f"WFDB header {name}.hea not found")
    try:
        header = wfdb.rdheader(base)
    except Exception as exc:  # wfdb raises many types for bad headers
        raise WaveformError(f"malformed WFDB header: {exc}") from exc

    try:
        if isinstance(header, wfdb.MultiRecord):
            if not header.sig_len:
                raise WaveformError("WFDB record has zero samples")
            for seg_name, seg_len in zip(header.seg_name, header.seg_len):
                if seg_name == "~" or seg_len == 0:
                    continue
                try:
                    seg = wfdb.rdheader(str(directory / seg_name))
                except FileNotFoundError as exc:
                    raise WaveformError(f"segment header {seg_name}.hea is missing") from exc
                _check_wfdb_files(seg, directory)
        else:
            _check_wfdb_files(header, directory)
        record = wfdb.rdrecord(base, physical=True, m2s=True, smooth_frames=True)
    except WaveformError:
        raise
    except Exception as exc:
        raise WaveformError(f"cannot read WFDB record: {exc}") from exc

    signal = record.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[0] == 0 or signal.shape[1] == 0:
        raise WaveformError("WFDB record has zero samples")
    expected = header.sig_len
    if expected is not None and signal.shape[0] != expected:
        raise WaveformError(
            f"WFDB record has {signal.shape[0]} samples, header declares {expected}"
        )
    units = list(record.units or ["mV"] * signal.shape[1])
    columns, leads = [], []
    pulsatile: dict[str, tuple[float, np.ndarray]] = {}
    for j in range(signal.shape[1]):
        factor = mv_factor(units[j] or "mV")
        if factor is None:
            name = str(record.sig_name[j]).strip().upper()
            if name in _PULSATILE_NAMES and name not in pulsatile:
                pulsatile[name] = (float(record.fs), signal[:, j].astype(np.float64))
            continue
        columns.append(signal[:, j].astype(np.float64) * factor)
        leads.append(normalise_lead_name(str(record.sig_name[j])))
    return Recording.from_channels(float(record.fs), leads, columns, "WFDB record", start_time=_wfdb_start(header),
                                   source=RecordingSource(format="wfdb"), pulsatile=pulsatile)


def read_wfdb_files(files: Mapping[str, bytes], record_name: str) -> Recording:
    """Read a WFDB record held in memory as ``{file name: bytes}`` (an upload, or files
    fetched from the object store); the wfdb package reads only from disk, hence the
    temporary folder."""
    with tempfile.TemporaryDirectory(prefix="telediag-wfdb-") as tmp:
        for name, data in files.items():
            Path(tmp, Path(name).name).write_bytes(data)
        return read_wfdb(Path(tmp, record_name))


# -- windows of a record, read by range ---------------------------------------------------------
#: ``read(offset, length) -> bytes`` of one signal file: up to ``length`` bytes from ``offset``.
RangeRead = Callable[[int, int], bytes]

#: The formats a window is read of by range, each as (samples per block, bytes per block): a
#: sample's bytes are found from its index alone. Format 8 (first differences) needs every
#: sample before the window, FLAC has no fixed size; 310/311 are rare: those read whole.
_RANGED_FORMATS = {"16": (1, 2), "24": (1, 3), "32": (1, 4), "61": (1, 2), "80": (1, 1), "160": (1, 2),
                   "212": (2, 3)}

#: WFDB's sentinel for a missing sample per format, which the full reader turns into NaN.
_INVALID_SAMPLE = {"16": -(2**15), "24": -(2**23), "32": -(2**31), "61": -(2**15), "80": -(2**7),
                   "160": -(2**15), "212": -(2**11)}


@dataclass(frozen=True)
class _Channel:
    """Where one voltage channel's samples are and how they become mV."""

    file: str
    column: int        #: its place among the signals its file interleaves
    width: int         #: how many signals its file interleaves (samples per frame)
    fmt: str
    byte_offset: int
    baseline: int
    gain: float
    factor: float      #: header units to mV


@dataclass(frozen=True)
class WfdbLayout:
    """What a single-segment WFDB header says about its voltage channels: enough to decode any
    window of samples from ranged reads of the signal files, with the lead names, sampling
    rate and length :func:`read_wfdb` gives the whole record."""

    fs: float
    n_samples: int
    leads: tuple[str, ...]
    channels: tuple[_Channel, ...]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs


def wfdb_layout(header: bytes) -> WfdbLayout | None:
    """The layout of the record whose ``.hea`` is ``header``, or None when the record must be
    read whole by :func:`read_wfdb_files`: several segments, a format without fixed sample
    positions, several samples per frame, skew, no declared length, a malformed header (the
    full reader says why), or no voltage channel. Units no reader understands raise
    :class:`WaveformError` as the full reader does."""
    # wfdb's own header parsers (what ``wfdb.rdheader`` runs on a file's text), so that the
    # defaults (baseline from ADC zero, gain 0 meaning 200) are exactly the full reader's.
    from wfdb.io import _header
    from wfdb.io.header import parse_header_content

    try:
        lines, _ = parse_header_content(header.decode("ascii", errors="ignore"))
        record = _header._parse_record_line(lines[0])
        if record["n_seg"] is not None or len(lines) < 2:
            return None
        signals = _header._parse_signal_lines(lines[1:])
    except Exception:  # wfdb raises many types for bad headers; the full reader reports them
        return None
    fs, n_samples = record["fs"], record["sig_len"]
    if not n_samples or not fs or fs <= 0:
        return None
    names = signals["file_name"]
    per_file: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        per_file.setdefault(name, []).append(i)
    channels, leads = [], []
    for i, name in enumerate(names):
        first = per_file[name][0]
        if (signals["fmt"][i] not in _RANGED_FORMATS or signals["fmt"][i] != signals["fmt"][first]
                or (signals["samps_per_frame"][i] or 1) != 1 or (signals["skew"][i] or 0) != 0
                or (signals["byte_offset"][i] or 0) != (signals["byte_offset"][first] or 0)):
            return None
        factor = mv_factor(signals["units"][i] or "mV")
        if factor is None:  # pulsatile and other channels: the viewer shows leads only
            continue
        channels.append(_Channel(file=name, column=per_file[name].index(i), width=len(per_file[name]),
                                 fmt=signals["fmt"][i], byte_offset=int(signals["byte_offset"][i] or 0),
                                 baseline=int(signals["baseline"][i]), gain=float(signals["adc_gain"][i]),
                                 factor=factor))
        leads.append(normalise_lead_name(str(signals["sig_name"][i])))
    if not channels:
        return None
    return WfdbLayout(fs=float(fs), n_samples=int(n_samples), leads=tuple(leads), channels=tuple(channels))


def read_wfdb_window(layout: WfdbLayout, files: Mapping[str, RangeRead], start: int, stop: int,
                     leads: Sequence[int] | None = None) -> np.ndarray:
    """Samples ``[start, stop)`` of every lead of ``layout`` (or of ``leads``, indices into
    ``layout.leads``: an overview needs one, and converting the others would triple its
    time) in mV, shape (stop - start, leads), reading only their bytes through ``files``
    (signal file name -> ranged read). Bit for bit the same slice of :func:`read_wfdb`'s
    signals: the same integers, the same float64 steps (minus baseline, divided by gain,
    times the unit factor) and NaN for WFDB's missing-sample value. A file shorter than the
    header needs raises :class:`WaveformError`."""
    if not 0 <= start <= stop <= layout.n_samples:
        raise ValueError(f"samples [{start}, {stop}) are outside the record's {layout.n_samples}")
    wanted = [layout.channels[i] for i in (range(len(layout.channels)) if leads is None else leads)]
    out = np.empty((stop - start, len(wanted)), dtype=np.float64)
    frames: dict[str, np.ndarray] = {}
    for j, ch in enumerate(wanted):
        if ch.file not in frames:
            if ch.file not in files:
                raise WaveformError(f"signal file {ch.file!r} named in the header is missing")
            frames[ch.file] = _read_frames(files[ch.file], ch, start, stop)
        digital = frames[ch.file][:, ch.column]
        column = digital.astype(np.float64)
        np.subtract(column, ch.baseline, column)
        np.divide(column, ch.gain, column)
        column[digital == _INVALID_SAMPLE[ch.fmt]] = np.nan
        out[:, j] = column * ch.factor
    return out


def _read_frames(read: RangeRead, ch: _Channel, start: int, stop: int) -> np.ndarray:
    """The stored integers of frames ``[start, stop)`` of ``ch``'s file, shape (frames, width):
    the whole blocks that hold them are read, and the samples before ``start`` in the first
    block dropped."""
    per_block, block_bytes = _RANGED_FORMATS[ch.fmt]
    first, end = start * ch.width, stop * ch.width        # flat sample indices in the file
    lead_in = first % per_block
    begin = ch.byte_offset + (first - lead_in) // per_block * block_bytes
    length = math.ceil((end - first + lead_in) * block_bytes / per_block)
    data = read(begin, length) if length else b""
    if len(data) < length:
        raise WaveformError(f"signal file {ch.file!r} is truncated: {begin + len(data)} bytes, "
                            f"samples up to {stop} need {begin + length}")
    flat = _decode(data, ch.fmt, end - first + lead_in)
    return flat[lead_in:].reshape(stop - start, ch.width)


def _decode(data: bytes, fmt: str, n: int) -> np.ndarray:
    """``n`` stored integers of ``fmt`` from ``data``, as WFDB's reader decodes them."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if fmt == "212":  # two 12-bit samples in three bytes; the second's high nibble in byte 1's high half
        blocks = np.zeros(math.ceil(n / 2) * 3, dtype=np.int16)
        blocks[:raw.size] = raw
        samples = np.empty(blocks.size // 3 * 2, dtype=np.int16)
        samples[0::2] = blocks[0::3] + 256 * (blocks[1::3] & 0x0F)
        samples[1::2] = blocks[2::3] + 256 * (blocks[1::3] >> 4)
        samples[samples > 2047] -= 4096
        return samples[:n]
    if fmt == "24":
        triples = raw.reshape(n, 3).astype(np.int32)
        return triples[:, 0] | (triples[:, 1] << 8) | (raw[2::3].view(np.int8).astype(np.int32) << 16)
    if fmt == "80":
        return raw.astype(np.int16) - 128
    if fmt == "160":
        return np.frombuffer(data, dtype="<u2").astype(np.int32) - 32768
    return np.frombuffer(data, dtype={"16": "<i2", "61": ">i2", "32": "<i4"}[fmt])
