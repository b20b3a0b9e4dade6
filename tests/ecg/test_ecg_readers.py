"""Reader tests: decoded values checked against independent maths, and every bad-input kind."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import wfdb

from telediag.ecg import Recording, WaveformError, read_dicom_waveform, read_recording, read_wfdb
from telediag.ecg.readers import normalise_lead_name
from telediag.bench.refdata import project_root, shared_data_dir

SAMPLES = project_root() / "sample_data" / "wfdb"
SHARED = shared_data_dir()


def _shared(*parts: str) -> Path:
    target = SHARED.joinpath(*parts) if SHARED is not None else None
    if target is None or not (target.exists() or Path(f"{target}.hea").exists()):
        pytest.skip("shared reference data not available")
    return SHARED.joinpath(*parts)


def _unpack_212(raw: bytes, n_sig: int) -> np.ndarray:
    """Independent format-212 decoder: two 12-bit two's-complement samples per 3 bytes."""
    b = np.frombuffer(raw, dtype=np.uint8).astype(np.int32)
    b = b[: len(b) // 3 * 3].reshape(-1, 3)
    s0 = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    s1 = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    out = np.column_stack([s0, s1]).ravel()
    out[out >= 2048] -= 4096
    return out.reshape(-1, n_sig)


# ---------------------------------------------------------------- WFDB


def test_wfdb_sample_matches_independent_212_decoding() -> None:
    rec = read_wfdb(SAMPLES / "mitdb119_300s")
    assert rec.fs == 360.0 and rec.leads == ("MLII", "V1")
    assert rec.signals.shape == (21600, 2) and rec.signals.dtype == np.float64
    digital = _unpack_212((SAMPLES / "mitdb119_300s.dat").read_bytes(), 2)
    np.testing.assert_allclose(rec.signals, (digital - 1024) / 200.0, atol=1e-12)
    assert rec.duration_s == pytest.approx(60.0)
    # The .hea path and read_recording dispatch give the same result.
    np.testing.assert_array_equal(read_recording(SAMPLES / "mitdb119_300s.hea").signals, rec.signals)
    np.testing.assert_array_equal(read_recording(SAMPLES / "mitdb119_300s").signals, rec.signals)


def test_wfdb_full_mitdb_record() -> None:
    path = _shared("mitdb", "101")
    rec = read_wfdb(path)
    assert rec.signals.shape == (650000, 2)
    digital = _unpack_212(path.with_suffix(".dat").read_bytes(), 2)
    np.testing.assert_allclose(rec.signals, (digital - 1024) / 200.0, atol=1e-12)


@pytest.mark.parametrize("fmt", ["16", "80", "212", "24", "32", "516"])
def test_wfdb_storage_formats_and_units(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    n = 1001  # odd, to exercise partial frames of the packed formats
    d = np.clip(np.cumsum(rng.integers(-3, 4, size=(n, 2)), axis=0), -100, 100).astype(np.int64)
    wfdb.wrsamp("r", fs=500, units=["uV", "mV"], sig_name=["II", "lead V2"], d_signal=d,
                fmt=[fmt, fmt], adc_gain=[2.0, 100.0], baseline=[10, -5], write_dir=str(tmp_path))
    rec = read_wfdb(tmp_path / "r")
    assert rec.leads == ("II", "V2") and rec.fs == 500.0
    np.testing.assert_allclose(rec.signals[:, 0], (d[:, 0] - 10) / 2.0 * 1e-3, atol=1e-9)
    np.testing.assert_allclose(rec.signals[:, 1], (d[:, 1] + 5) / 100.0, atol=1e-9)


def test_wfdb_multi_segment(tmp_path: Path) -> None:
    a = np.arange(200).reshape(100, 2).astype(np.int64)
    b = -np.arange(300).reshape(150, 2).astype(np.int64)
    for name, d in (("s1", a), ("s2", b)):
        wfdb.wrsamp(name, fs=250, units=["mV", "mV"], sig_name=["I", "II"], d_signal=d,
                    fmt=["16", "16"], adc_gain=[100.0, 100.0], baseline=[0, 0], write_dir=str(tmp_path))
    (tmp_path / "multi.hea").write_text("multi/2 2 250 250\ns1 100\ns2 150\n")
    rec = read_wfdb(tmp_path / "multi")
    assert rec.signals.shape == (250, 2) and rec.leads == ("I", "II")
    np.testing.assert_allclose(rec.signals, np.vstack([a, b]) / 100.0)


def _copy_sample(tmp_path: Path) -> Path:
    for ext in (".hea", ".dat"):
        shutil.copy(SAMPLES / f"mitdb101_600s{ext}", tmp_path / f"rec{ext}")
    hea = (tmp_path / "rec.hea").read_text().replace("mitdb101_600s", "rec")
    (tmp_path / "rec.hea").write_text(hea)
    return tmp_path / "rec"


def test_wfdb_truncated_dat(tmp_path: Path) -> None:
    base = _copy_sample(tmp_path)
    dat = base.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:-30])
    with pytest.raises(WaveformError, match="truncated"):
        read_wfdb(base)


def test_wfdb_missing_dat(tmp_path: Path) -> None:
    base = _copy_sample(tmp_path)
    base.with_suffix(".dat").unlink()
    with pytest.raises(WaveformError, match="missing"):
        read_recording(base.with_suffix(".hea"))


@pytest.mark.parametrize("text", ["this is not a header\n", "rec 2 abc 100\n", "rec 2 360 100\nrec.dat 212\n"])
def test_wfdb_malformed_header(tmp_path: Path, text: str) -> None:
    base = _copy_sample(tmp_path)
    base.with_suffix(".hea").write_text(text)
    with pytest.raises(WaveformError):
        read_wfdb(base)


def test_wfdb_zero_samples(tmp_path: Path) -> None:
    (tmp_path / "z.hea").write_text("z 1 360 0\nz.dat 16 200 16 0 0 0 0 I\n")
    (tmp_path / "z.dat").write_bytes(b"")
    with pytest.raises(WaveformError):
        read_wfdb(tmp_path / "z")


def test_wfdb_missing_header(tmp_path: Path) -> None:
    with pytest.raises(WaveformError, match="not found"):
        read_wfdb(tmp_path / "nothing")


# ---------------------------------------------------------------- DICOM


def _mortara() -> pydicom.Dataset:
    return pydicom.dcmread(_shared("dicom", "waveform_ecg.dcm"))


def test_dicom_mortara_picks_rhythm_and_matches_pydicom() -> None:
    ds = _mortara()
    rec = read_dicom_waveform(ds)
    assert rec.fs == 1000.0 and rec.signals.shape == (10000, 12)
    assert rec.leads == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    # pydicom's own scaling is in the channel's units (uV here) -> /1000 for mV.
    np.testing.assert_allclose(rec.signals, ds.waveform_array(0) / 1000.0, atol=1e-12)
    # Independent maths: int16 LE samples x 1.25 uV, correction 1, baseline 0.
    raw = np.frombuffer(ds.WaveformSequence[0].WaveformData, dtype="<i2").reshape(10000, 12)
    np.testing.assert_allclose(rec.signals, raw * 1.25e-3, atol=1e-12)
    # Einthoven: III = II - I within quantisation.
    assert np.max(np.abs(rec.signals[:, 2] - (rec.signals[:, 1] - rec.signals[:, 0]))) < 0.01
    assert rec.start_time is not None and rec.start_time.year == 2013


def test_dicom_group_choice_independent_of_order() -> None:
    ds = _mortara()
    ds.WaveformSequence = pydicom.Sequence([ds.WaveformSequence[1], ds.WaveformSequence[0]])
    assert read_dicom_waveform(ds).signals.shape == (10000, 12)


def test_dicom_ge_hemodynamic_mv() -> None:
    path = _shared("dicom", "test_ecg.dcm")
    ds = pydicom.dcmread(path)
    rec = read_dicom_waveform(path)
    assert rec.fs == 240.0 and rec.signals.shape == (2400, 12) and rec.leads[3] == "aVR"
    raw = np.frombuffer(ds.WaveformSequence[0].WaveformData, dtype="<i2").reshape(2400, 12)
    np.testing.assert_allclose(rec.signals, raw * 0.00122, atol=1e-12)
    np.testing.assert_allclose(rec.signals, ds.waveform_array(0), atol=1e-12)
    # bytes input and read_recording dispatch agree
    np.testing.assert_array_equal(read_dicom_waveform(path.read_bytes()).signals, rec.signals)
    np.testing.assert_array_equal(read_recording(path).signals, rec.signals)


def test_dicom_sensitivity_correction_baseline_units() -> None:
    ds = _mortara()
    g = ds.WaveformSequence[0]
    ch0, ch1 = g.ChannelDefinitionSequence[0], g.ChannelDefinitionSequence[1]
    ch0.ChannelSensitivityCorrectionFactor = "2"
    ch0.ChannelBaseline = "100"  # in channel units (uV)
    ch1.ChannelSensitivity = "0.00000125"
    ch1.ChannelSensitivityUnitsSequence[0].CodeValue = "V"
    raw = np.frombuffer(g.WaveformData, dtype="<i2").reshape(10000, 12).astype(float)
    rec = read_dicom_waveform(ds)
    np.testing.assert_allclose(rec.signals[:, 0], (raw[:, 0] * 1.25 * 2 + 100) / 1000.0)
    np.testing.assert_allclose(rec.signals[:, 1], raw[:, 1] * 1.25e-6 * 1000.0)
    np.testing.assert_allclose(rec.signals[:, 0] * 1000.0, ds.waveform_array(0)[:, 0])


def test_dicom_mdc_codes_and_labels() -> None:
    ds = _mortara()
    chans = ds.WaveformSequence[0].ChannelDefinitionSequence
    chans[3].ChannelSourceSequence[0].CodeValue = "2:62"
    chans[3].ChannelSourceSequence[0].CodingSchemeDesignator = "MDC"
    chans[3].ChannelSourceSequence[0].CodeMeaning = "MDC_ECG_LEAD_aVR"
    chans[0].ChannelSourceSequence[0].CodeValue = "X-unknown"
    chans[0].ChannelSourceSequence[0].CodeMeaning = "Lead I (Einthoven)"
    rec = read_dicom_waveform(ds)
    assert rec.leads[0] == "I" and rec.leads[3] == "aVR"
    assert normalise_lead_name("lead avl") == "aVL" and normalise_lead_name("MDC_ECG_LEAD_V6") == "V6"


def test_dicom_drops_pressure_channel() -> None:
    ds = _mortara()
    ch = ds.WaveformSequence[0].ChannelDefinitionSequence[11]
    ch.ChannelSensitivityUnitsSequence[0].CodeValue = "mm[Hg]"
    rec = read_dicom_waveform(ds)
    assert rec.signals.shape == (10000, 11) and "V6" not in rec.leads


def _err(ds: pydicom.Dataset, match: str) -> None:
    with pytest.raises(WaveformError, match=match):
        read_dicom_waveform(ds)


def test_dicom_no_waveform_sequence() -> None:
    _err(pydicom.dcmread(_shared("dicom", "CT_small.dcm")), "no waveform sequence")


def test_dicom_not_dicom_bytes() -> None:
    with pytest.raises(WaveformError):
        read_dicom_waveform(b"\x00\x01garbage" * 10)


def test_dicom_mismatched_sample_count() -> None:
    ds = _mortara()
    ds.WaveformSequence[0].NumberOfWaveformSamples = 10001
    _err(ds, "does not match")


def test_dicom_short_data() -> None:
    ds = _mortara()
    g = ds.WaveformSequence[0]
    g.WaveformData = bytes(g.WaveformData)[:-24]
    _err(ds, "does not match")


def test_dicom_channel_count_mismatch() -> None:
    ds = _mortara()
    ds.WaveformSequence[0].NumberOfWaveformChannels = 13
    _err(ds, "channel definitions")


def test_dicom_unknown_units() -> None:
    ds = _mortara()
    ds.WaveformSequence[0].ChannelDefinitionSequence[2].ChannelSensitivityUnitsSequence[0].CodeValue = "furlong"
    _err(ds, "unknown signal units")


def test_dicom_missing_units() -> None:
    ds = _mortara()
    del ds.WaveformSequence[0].ChannelDefinitionSequence[2].ChannelSensitivityUnitsSequence
    _err(ds, "units")


def test_dicom_empty_channels() -> None:
    ds = _mortara()
    g = ds.WaveformSequence[0]
    g.NumberOfWaveformChannels = 0
    g.ChannelDefinitionSequence = pydicom.Sequence([])
    _err(ds, "no channels")
    ds2 = _mortara()
    ds2.WaveformSequence[0].NumberOfWaveformSamples = 0
    _err(ds2, "no channels or no samples")
    ds3 = _mortara()
    ds3.WaveformSequence[0].WaveformData = b""
    _err(ds3, "empty waveform data")


@pytest.mark.parametrize("bits,interp", [(12, "SS"), (8, "MB"), (16, "UB")])
def test_dicom_unsupported_bits(bits: int, interp: str) -> None:
    ds = _mortara()
    ds.WaveformSequence[0].WaveformBitsAllocated = bits
    ds.WaveformSequence[0].WaveformSampleInterpretation = interp
    _err(ds, "unsupported sample encoding")


def test_dicom_file_written_and_read(tmp_path: Path) -> None:
    ds = _mortara()
    out = tmp_path / "ecg_no_suffix"
    ds.save_as(out)
    assert read_recording(out).signals.shape == (10000, 12)


def test_read_recording_unsupported(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("hello")
    with pytest.raises(WaveformError, match="unsupported"):
        read_recording(p)
    with pytest.raises(WaveformError):
        read_recording(tmp_path / "absent.dcm")


def test_recording_validation() -> None:
    with pytest.raises(WaveformError):
        Recording(fs=360, leads=("I",), signals=np.zeros((0, 1)))
    with pytest.raises(WaveformError):
        Recording(fs=360, leads=("I", "II"), signals=np.zeros((10, 1)))
    r = Recording(fs=100, leads=("I",), signals=np.zeros((250, 1)))
    assert r.duration_s == 2.5
    with pytest.raises(Exception):
        r.fs = 3  # frozen
