"""WFDB records (PhysioNet): header plus signal files, any storage format, in mV."""

from __future__ import annotations

import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..recording import Recording, RecordingSource, WaveformError
from .leads import mv_factor, normalise_lead_name

__all__ = ["read_wfdb", "read_wfdb_files"]


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
