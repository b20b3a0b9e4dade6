"""QRS detection, quality and beat labels: synthetic signals with known beats, and MIT-BIH excerpts."""

from __future__ import annotations

import numpy as np
import pytest

from telediag.ecg import Recording, read_wfdb
from telediag.ecg.analysis import analyze
from telediag.ecg.beats import classify_beats
from telediag.ecg.filters import bandpass, remove_baseline, remove_mains, resample
from telediag.ecg.qrs import detect_qrs
from telediag.ecg.quality import assess_quality
from telediag.bench.refdata import project_root, shared_data_dir
from telediag.bench.scoring import match_beats, score_record

SAMPLES = project_root() / "sample_data" / "wfdb"


def synthetic_ecg(beat_times: np.ndarray, fs: float, duration: float, n_leads: int = 2,
                  pvc_every: int = 0) -> np.ndarray:
    """Sum-of-Gaussians ECG (P, Q, R, S, T) with R peaks at ``beat_times`` (s); optional wide PVCs."""
    t = np.arange(int(duration * fs)) / fs
    x = np.zeros((t.size, n_leads))
    waves = [(-0.20, 0.025, 0.15), (-0.03, 0.008, -0.12), (0.0, 0.010, 1.2), (0.03, 0.008, -0.25),
             (0.28, 0.050, 0.30)]
    pvc = [(0.0, 0.035, 1.6), (0.08, 0.04, -0.6), (0.32, 0.06, -0.4)]
    gains = np.linspace(1.0, 0.6, n_leads)
    for k, bt in enumerate(beat_times):
        shape = pvc if pvc_every and k % pvc_every == pvc_every - 1 else waves
        lo, hi = np.searchsorted(t, [bt - 0.5, bt + 0.7])
        tt = t[lo:hi] - bt
        beat = sum(a * np.exp(-0.5 * ((tt - c) / w) ** 2) for c, w, a in shape)
        x[lo:hi] += beat[:, None] * gains[None, :]
    return x


def _beats(rate_bpm: float, duration: float, start: float = 0.5) -> np.ndarray:
    return np.arange(start, duration - 0.5, 60.0 / rate_bpm)


def _assert_detects(x: np.ndarray, fs: float, truth: np.ndarray, tol_s: float = 0.03) -> np.ndarray:
    det = detect_qrs(x, fs).samples
    ref = np.round(truth * fs).astype(int)
    mr, md = match_beats(ref, det, int(tol_s * fs))
    assert mr.size == ref.size, f"missed {ref.size - mr.size} of {ref.size} beats"
    assert det.size == ref.size, f"{det.size - mr.size} false detections"
    return det


@pytest.mark.parametrize("fs", [250.0, 360.0, 500.0])
def test_synthetic_noise_sample_accurate(fs: float) -> None:
    rng = np.random.default_rng(1)
    truth = _beats(72, 60)
    x = synthetic_ecg(truth, fs, 60) + rng.normal(0, 0.03, (int(60 * fs), 2))
    det = _assert_detects(x, fs, truth)
    # Fiducial = R peak within one or two samples.
    assert np.max(np.abs(det - np.round(truth * fs))) <= 2


def test_synthetic_baseline_wander_and_mains() -> None:
    fs = 500.0
    truth = _beats(80, 60)
    t = np.arange(int(60 * fs)) / fs
    x = synthetic_ecg(truth, fs, 60)
    x += (1.0 * np.sin(2 * np.pi * 0.3 * t) + 0.4 * np.sin(2 * np.pi * 50 * t)
          + 0.1 * np.sin(2 * np.pi * 150 * t))[:, None]
    _assert_detects(x, fs, truth)
    # The preprocessing filters remove what they should.
    clean = remove_mains(remove_baseline(x, fs), fs)
    spec_in = np.abs(np.fft.rfft(x[:, 0]))
    spec_out = np.abs(np.fft.rfft(clean[:, 0]))
    freqs = np.fft.rfftfreq(len(x), 1 / fs)
    for f0 in (0.3, 50.0, 150.0):
        k = int(np.argmin(np.abs(freqs - f0)))
        assert spec_out[k] < spec_in[k] / 5, f0
    # The QRS itself survives: R-peak amplitude within 10 %.
    r = np.round(truth[5:-5] * fs).astype(int)
    assert np.median(clean[r, 0]) == pytest.approx(1.2 - 0.0, rel=0.15)


@pytest.mark.parametrize("rate", [30.0, 200.0])
def test_synthetic_extreme_rates(rate: float) -> None:
    fs = 360.0
    truth = _beats(rate, 60, start=1.0)
    x = synthetic_ecg(truth, fs, 60) + np.random.default_rng(2).normal(0, 0.02, (int(60 * fs), 2))
    _assert_detects(x, fs, truth)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    assert result["heart_rate_bpm"] == pytest.approx(rate, rel=0.02)
    codes = {f["code"] for f in result["findings"]}
    assert ("extreme bradycardia" in codes) == (rate < 40)
    assert ("extreme tachycardia" in codes) == (rate > 150)


def test_synthetic_amplitude_changes() -> None:
    fs = 360.0
    truth = _beats(75, 90)
    x = synthetic_ecg(truth, fs, 90)
    gain = np.ones(len(x))
    # Gain steps placed in the isoelectric gap between T and the next P wave.
    gain[int(30.6 * fs):int(60.2 * fs)] = 0.25
    gain[int(60.2 * fs):] = 3.0
    x = x * gain[:, None] + np.random.default_rng(3).normal(0, 0.01, x.shape)
    _assert_detects(x, fs, truth)


def test_flat_line_segment_no_beats_and_unreadable() -> None:
    fs = 360.0
    truth = _beats(70, 60)
    x = synthetic_ecg(truth, fs, 60) + np.random.default_rng(4).normal(0, 0.02, (int(60 * fs), 2))
    a, b = int(20 * fs), int(32 * fs)
    x[a:b] = 0.0  # both leads off
    det = detect_qrs(x, fs).samples
    assert not np.any((det > a + 0.1 * fs) & (det < b - 0.1 * fs))
    q = assess_quality(x, fs)
    windows = q.unreadable_windows(60.0)
    assert any(s <= 22.0 and e >= 30.0 for s, e in windows)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    assert all(f["code"] != "asystole/pause" for f in result["findings"])  # no alarm from lead-off
    assert result["quality"]["unreadable_windows"]


def test_one_lead_off_other_carries() -> None:
    fs = 360.0
    truth = _beats(70, 60)
    x = synthetic_ecg(truth, fs, 60) + np.random.default_rng(5).normal(0, 0.02, (int(60 * fs), 2))
    x[int(10 * fs):int(40 * fs), 0] = 0.0
    _assert_detects(x, fs, truth)
    assert not assess_quality(x, fs).unreadable_windows(60.0)


def test_real_pause_is_reported() -> None:
    fs = 360.0
    truth = np.concatenate([_beats(70, 20), 24.0 + _beats(70, 20)])
    x = synthetic_ecg(truth, fs, 44) + np.random.default_rng(6).normal(0, 0.03, (int(44 * fs), 2))
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    pauses = [f for f in result["findings"] if f["code"] == "asystole/pause"]
    assert len(pauses) == 1 and pauses[0]["duration_s"] > 3.0


def test_synthetic_pvcs_classified() -> None:
    fs = 360.0
    truth = _beats(70, 120)
    x = synthetic_ecg(truth, fs, 120, pvc_every=5) + np.random.default_rng(7).normal(0, 0.02, (int(120 * fs), 2))
    det = _assert_detects(x, fs, truth, tol_s=0.05)
    labels = np.array(classify_beats(x, fs, det))
    expected = np.array(["V" if k % 5 == 4 else "N" for k in range(truth.size)])
    inside = labels != "Q"
    assert np.mean(labels[inside] == expected[inside]) > 0.97


def test_resample_keeps_beats() -> None:
    truth = _beats(60, 30)
    x = synthetic_ecg(truth, 500.0, 30)
    y = resample(x, 500.0, 250.0)
    assert y.shape[0] == x.shape[0] // 2
    _assert_detects(y, 250.0, truth)
    assert bandpass(x[:, 0], 500.0, 5, 20).shape == (x.shape[0],)


def test_sample_record_pvcs() -> None:
    """The shipped 60-s excerpt of MIT-BIH 119 (bigeminy): every beat found, PVCs labelled."""
    import wfdb

    rec = read_wfdb(SAMPLES / "mitdb119_300s")
    ann = wfdb.rdann(str(SAMPLES / "mitdb119_300s"), "atr")
    det = detect_qrs(rec.signals, rec.fs).samples
    labels = classify_beats(rec.signals, rec.fs, det)
    s = score_record(ann.sample, ann.symbol, det, rec.fs, labels, skip_s=0, n_samples=rec.n_samples)
    assert s.fn == 0 and s.fp == 0
    assert s.veb_se >= 0.9 and s.veb_ppv >= 0.9


@pytest.mark.parametrize("record,minutes,se_min,ppv_min", [
    ("119", (5, 10), 0.999, 0.999),
    ("208", (0, 5), 0.99, 0.99),
    ("223", (10, 14), 0.98, 0.995),  # contains runs of low-energy PVCs (known weakness)
])
def test_mitdb_excerpts(record: str, minutes: tuple[int, int], se_min: float, ppv_min: float) -> None:
    import wfdb

    shared = shared_data_dir()
    if shared is None or not (shared / "mitdb" / f"{record}.hea").is_file():
        pytest.skip("MIT-BIH reference data not available")
    base = str(shared / "mitdb" / record)
    a, b = (m * 60 * 360 for m in minutes)
    rec = read_wfdb(base)
    x = rec.signals[a:b]
    ann = wfdb.rdann(base, "atr", sampfrom=a, sampto=b, shift_samps=True)
    det = detect_qrs(x, rec.fs).samples
    s = score_record(ann.sample, ann.symbol, det, rec.fs, skip_s=0, n_samples=len(x))
    assert s.se >= se_min and s.ppv >= ppv_min, s.as_dict()
