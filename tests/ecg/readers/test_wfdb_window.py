"""Windows of a WFDB record read by range (``wfdb_layout``, ``read_wfdb_window``): every window
is bit for bit the same slice of the full reader's signals, only the window's bytes are read,
and what cannot be read by range is left to the full reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from telediag.bench.refdata import project_root
from telediag.ecg.readers.wfdb import RangeRead, read_wfdb, read_wfdb_window, wfdb_layout
from telediag.ecg.recording import WaveformError

MITDB = project_root() / "sample_data" / "wfdb"
N = 1001  # odd, so that packed formats end in a partial block
#: Windows of every kind: the start, odd and even starts (212 packs two samples), single
#: samples, the end, the whole record, an empty one.
WINDOWS = [(0, 10), (1, 2), (3, 500), (250, 251), (999, 1001), (1000, 1001), (0, N), (400, 400)]


def _ranged(folder: Path, calls: list[tuple[str, int, int]] | None = None) -> dict[str, RangeRead]:
    """A ranged read per file of ``folder``, as the object store gives them, noting each call."""
    def reader(path: Path) -> RangeRead:
        def read(offset: int, length: int) -> bytes:
            if calls is not None:
                calls.append((path.name, offset, length))
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        return read

    return {p.name: reader(p) for p in folder.iterdir() if p.suffix != ".hea"}


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == \
        np.ascontiguousarray(b).tobytes()


def _digital(fmt: str, n: int = N) -> np.ndarray:
    """Three channels of a random walk within ``fmt``'s range, with WFDB's missing-sample value
    (NaN to the reader) here and there."""
    rng = np.random.default_rng(int(fmt))
    low = {"80": -127, "212": -2047}.get(fmt, -3000)
    d = np.clip(np.cumsum(rng.integers(-40, 41, size=(n, 3)), axis=0), low, -low).astype(np.int64)
    d[[7, 500], 0] = {"80": -2**7, "212": -2**11, "24": -2**23, "32": -2**31}.get(fmt, -2**15)
    return d


@pytest.mark.parametrize("fmt", ["16", "212", "80", "61", "160", "24", "32"])
def test_every_window_is_the_full_readers_slice_bit_for_bit(tmp_path: Path, fmt: str) -> None:
    d = _digital(fmt)
    written = {"61": "16", "160": "16"}.get(fmt, fmt)  # wfdb writes neither: 16 recoded below
    wfdb.wrsamp("r", fs=360, units=["uV", "mV", "mmHg"], sig_name=["MLII", "lead V1", "ABP"], d_signal=d,
                fmt=[written] * 3, adc_gain=[2.0, 200.0, 1.5], baseline=[10, -5, 3], write_dir=str(tmp_path))
    if fmt != written:
        dat, hea = tmp_path / "r.dat", tmp_path / "r.hea"
        samples = np.frombuffer(dat.read_bytes(), dtype="<i2")
        dat.write_bytes(samples.astype(">i2").tobytes() if fmt == "61"
                        else (samples.astype(np.int32) + 32768).astype("<u2").tobytes())
        hea.write_text(hea.read_text().replace("r.dat 16 ", f"r.dat {fmt} "))
    full = read_wfdb(tmp_path / "r")
    layout = wfdb_layout((tmp_path / "r.hea").read_bytes())
    assert layout is not None
    assert (layout.fs, layout.n_samples, layout.leads, layout.duration_s) == \
        (full.fs, full.n_samples, full.leads, full.duration_s)       # the pressure channel is no lead
    files = _ranged(tmp_path)
    for start, stop in WINDOWS:
        assert _same_bits(read_wfdb_window(layout, files, start, stop), full.signals[start:stop]), (start, stop)
    assert np.isnan(read_wfdb_window(layout, files, 500, 501)[0, 0])
    assert _same_bits(read_wfdb_window(layout, files, 3, 500, [1]), full.signals[3:500, 1:2])


def test_only_the_windows_bytes_are_read(tmp_path: Path) -> None:
    d = _digital("212", 100_000)
    wfdb.wrsamp("r", fs=250, units=["mV"] * 3, sig_name=["I", "II", "V5"], d_signal=d, fmt=["212"] * 3,
                adc_gain=[200.0] * 3, baseline=[0] * 3, write_dir=str(tmp_path))
    layout = wfdb_layout((tmp_path / "r.hea").read_bytes())
    calls: list[tuple[str, int, int]] = []
    read_wfdb_window(layout, _ranged(tmp_path, calls), 50_001, 52_501)
    # one read of the blocks that hold frames 50,001 to 52,500: 3 samples a frame, 2 a block of 3 bytes
    assert calls == [("r.dat", 50_001 * 3 // 2 * 3, (2500 * 3 + 1) * 3 // 2 + 1)]


def test_signals_in_files_of_their_own_with_a_byte_offset(tmp_path: Path) -> None:
    """A header may spread the signals over several files, each after a prelude of bytes."""
    d = _digital("212")
    for j, name in enumerate(("a", "b")):
        wfdb.wrsamp(name, fs=500, units=["mV"], sig_name=["II"], d_signal=d[:, j:j + 1], fmt=["212"],
                    adc_gain=[100.0], baseline=[0], write_dir=str(tmp_path))
        dat = tmp_path / f"{name}.dat"
        dat.write_bytes(b"prelude!" * (j + 1) + dat.read_bytes())
        (tmp_path / f"{name}.hea").unlink()
    (tmp_path / "r.hea").write_text(f"r 2 500 {N}\na.dat 212+8 100/mV 12 0 0 0 0 II\n"
                                    f"b.dat 212+16 50(7)/mV 12 0 0 0 0 V2\n")
    full = read_wfdb(tmp_path / "r")
    layout = wfdb_layout((tmp_path / "r.hea").read_bytes())
    assert layout is not None and layout.leads == ("II", "V2")
    for start, stop in WINDOWS:
        assert _same_bits(read_wfdb_window(layout, _ranged(tmp_path), start, stop), full.signals[start:stop])


@pytest.mark.parametrize("record", ["mitdb101_600s", "mitdb119_300s"])
def test_the_mit_bih_samples(record: str) -> None:
    header = MITDB / f"{record}.hea"
    if not header.is_file():
        pytest.skip("sample_data/wfdb is not present")
    full = read_wfdb(MITDB / record)
    layout = wfdb_layout(header.read_bytes())
    files = _ranged(MITDB)
    n = full.n_samples
    for start, stop in [(0, 3600), (3601, 7201), (n // 2 + 1, n), (0, n)]:
        assert _same_bits(read_wfdb_window(layout, files, start, stop), full.signals[start:stop])


@pytest.mark.parametrize("header", [
    "multi/2 2 250 250\ns1 100\ns2 150\n",                    # several segments
    "r 1 250 100\nr.dat 8 200/mV 8 0 0 0 0 II\n",              # first differences: needs what came before
    "r 1 250 100\nr.dat 16x2 200/mV 16 0 0 0 0 II\n",          # two samples a frame
    "r 2 250 100\nr.dat 16:3 200/mV 16 0 0 0 0 II\nr.dat 16 200/mV 16 0 0 0 0 V1\n",   # skew
    "r 1 250\nr.dat 16 200/mV 16 0 0 0 0 II\n",                # no length: the file's size says it
    "r 1 250 100\nr.dat 16 200/mmHg 16 0 0 0 0 ABP\n",         # no ECG lead
    "not a header\n",
    "",
])
def test_what_cannot_be_read_by_range_is_left_to_the_full_reader(header: str) -> None:
    assert wfdb_layout(header.encode()) is None


def test_units_no_reader_understands_are_refused_as_by_the_full_reader() -> None:
    with pytest.raises(WaveformError, match="units"):
        wfdb_layout(b"r 1 250 100\nr.dat 16 200/furlong 16 0 0 0 0 II\n")


def test_a_short_or_missing_file_and_a_window_outside_the_record_are_refused(tmp_path: Path) -> None:
    wfdb.wrsamp("r", fs=250, units=["mV"], sig_name=["II"], d_signal=_digital("16")[:, :1], fmt=["16"],
                adc_gain=[200.0], baseline=[0], write_dir=str(tmp_path))
    layout = wfdb_layout((tmp_path / "r.hea").read_bytes())
    dat = tmp_path / "r.dat"
    dat.write_bytes(dat.read_bytes()[:-30])
    files = _ranged(tmp_path)
    assert read_wfdb_window(layout, files, 0, N - 15).shape == (N - 15, 1)
    with pytest.raises(WaveformError, match="truncated"):
        read_wfdb_window(layout, files, N - 100, N)
    with pytest.raises(WaveformError, match="missing"):
        read_wfdb_window(layout, {}, 0, 10)
    for start, stop in [(-1, 5), (10, 5), (0, N + 1)]:
        with pytest.raises(ValueError):
            read_wfdb_window(layout, files, start, stop)
