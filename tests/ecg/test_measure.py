"""Global 12-lead measurements: synthetic beats with known onsets/offsets, axes, and a cart's own values.

The synthetic ECGs are built the way IEC 60601-2-25's analytic test signals are:
waves with sharp, known start and end (triangles for QRS components, half-sines
for P and T), projected onto the twelve leads from a heart vector, so every onset
and offset is known to the sample. Cases follow the issue: first-degree AV block
(PR 280 ms), a wide RBBB-like QRS (150 ms, rsR' in V1, slurred S in I/V6),
ventricular pacing (spikes 20 ms ahead of a 140 ms QRS) and atrial fibrillation
(no P, irregular RR, fibrillatory waves).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from telediag.bench.refdata import project_root
from telediag.ecg import read_recording
from telediag.ecg.analysis import analyze
from telediag.ecg.measure import frontal_axis_deg, interval_measurements

FS = 500.0
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def limb(angle_deg: float, amp: float = 1.0) -> list[float]:
    """Six limb-lead projections of a frontal vector (Einthoven / Goldberger)."""
    i = amp * math.cos(math.radians(angle_deg))
    ii = amp * math.cos(math.radians(angle_deg - 60.0))
    return [i, ii, ii - i, -(i + ii) / 2.0, i - ii / 2.0, ii - i / 2.0]


def gains(angle_deg: float, amp: float, chest: list[float]) -> np.ndarray:
    return np.asarray(limb(angle_deg, amp) + chest)


def tri(t: np.ndarray, a: float, peak: float, b: float) -> np.ndarray:
    return np.clip(np.minimum((t - a) / (peak - a), (b - t) / (b - peak)), 0.0, None)


def half_sine(t: np.ndarray, on: float, dur: float) -> np.ndarray:
    inside = (t >= on) & (t <= on + dur)
    return np.where(inside, np.sin(np.pi * np.clip(t - on, 0.0, dur) / dur), 0.0)


QRS_NORMAL = [  # (gains, (start, peak, end) in s from QRS onset)
    (gains(45.0, 1.0, [-0.3, -0.2, 0.5, 1.0, 1.2, 1.0]), (0.0, 0.035, 0.060)),
    (gains(225.0, 0.3, [-1.0, -1.2, -0.8, -0.4, -0.2, -0.1]), (0.035, 0.060, 0.090)),
]
QRS_RBBB = [
    (gains(40.0, 0.9, [0.2, 0.2, 0.5, 0.9, 1.0, 0.9]), (0.0, 0.030, 0.060)),
    (gains(220.0, 0.4, [-0.9, -1.0, -0.6, -0.3, -0.2, -0.1]), (0.040, 0.070, 0.100)),
    (gains(-150.0, 0.35, [0.8, 0.5, 0.1, -0.2, -0.3, -0.35]), (0.080, 0.115, 0.150)),  # R' V1, slurred S in I/V6
]
QRS_PACED = [(gains(-60.0, 1.2, [-1.2, -1.4, -0.8, 0.3, 0.9, 1.0]), (0.0, 0.070, 0.140))]
P_GAINS = gains(60.0, 0.15, [0.05, 0.08, 0.06, 0.05, 0.05, 0.04])
T_GAINS = gains(50.0, 0.35, [-0.1, 0.3, 0.4, 0.35, 0.3, 0.25])


def synth(onsets_s: np.ndarray, qrs: list, pr_s: float | None, qt_s: float, *, p_dur: float = 0.10,
          t_dur: float = 0.18, t_gains: np.ndarray = T_GAINS, spike_before_s: float | None = None,
          fib: bool = False, duration: float = 10.0, seed: int = 1) -> np.ndarray:
    """12-lead mV signals with every beat's QRS onset at ``onsets_s``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * FS)) / FS
    x = np.zeros((t.size, 12))
    for q in onsets_s:
        for g, (a, pk, b) in qrs:
            x += tri(t, q + a, q + pk, q + b)[:, None] * g[None, :]
        if pr_s is not None:
            x += half_sine(t, q - pr_s, p_dur)[:, None] * P_GAINS[None, :]
        x += half_sine(t, q + qt_s - t_dur, t_dur)[:, None] * t_gains[None, :]
        if spike_before_s is not None:   # one-sample pacemaker stimulus, bipolar-sized in every lead
            k = int(round((q - spike_before_s) * FS))
            x[k] += np.linspace(2.0, -1.0, 12)
    if fib:   # coarse fibrillatory waves, not locked to the QRS
        f = sum(0.04 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi)) for hz in (5.3, 6.1, 7.4))
        x += f[:, None] * gains(80.0, 1.0, [1.0, 0.6, 0.3, 0.2, 0.1, 0.1])[None, :]
    x += 0.05 * np.sin(2 * np.pi * 0.3 * t)[:, None]        # respiration wander
    x += rng.normal(0.0, 0.008, x.shape)                     # 8 uV noise
    return x


def measure(x: np.ndarray, onsets_s: np.ndarray, seed: int = 2) -> dict:
    """Measure with detector-like fiducials: near the R peak, jittered by +-4 ms."""
    jitter = np.random.default_rng(seed).integers(-2, 3, onsets_s.size)
    fid = np.round((onsets_s + 0.03) * FS).astype(np.int64) + jitter
    return interval_measurements(x, FS, fid, LEADS)


def regular(rr_s: float, first: float = 0.7, duration: float = 10.0) -> np.ndarray:
    return np.arange(first, duration - 0.8, rr_s)


def test_first_degree_av_block_long_pr() -> None:
    beats = regular(1.0)
    m = measure(synth(beats, QRS_NORMAL, pr_s=0.28, qt_s=0.40), beats)
    assert m["pr_ms"] == pytest.approx(280, abs=6)
    assert m["p_ms"] == pytest.approx(100, abs=10)
    assert m["qrs_ms"] == pytest.approx(90, abs=6)
    assert m["qt_ms"] == pytest.approx(400, abs=8)
    assert m["qtc_ms"] == pytest.approx(m["qt_ms"], abs=0.2)     # RR 1 s: Bazett = QT
    assert m["heart_rate_bpm"] == pytest.approx(60, abs=0.5)
    assert m["paced"] is False and m["qtc_bazett_ms"] == m["qtc_ms"]


def test_long_pr_at_a_fast_rate_is_not_the_previous_t_wave() -> None:
    beats = regular(0.70)
    m = measure(synth(beats, QRS_NORMAL, pr_s=0.26, qt_s=0.32, t_dur=0.15), beats)
    assert m["pr_ms"] == pytest.approx(260, abs=8)
    assert m["qt_ms"] == pytest.approx(320, abs=8)


def test_wide_rbbb_like_qrs() -> None:
    beats = regular(0.9)
    m = measure(synth(beats, QRS_RBBB, pr_s=0.16, qt_s=0.44), beats)
    assert m["qrs_ms"] == pytest.approx(150, abs=6)
    assert m["pr_ms"] == pytest.approx(160, abs=6)
    assert m["qt_ms"] == pytest.approx(440, abs=8)


def test_wide_qrs_in_noise_keeps_its_slurred_end() -> None:
    # 50 uV of noise hides the slow terminal component lead by lead; the QRS must not lose it.
    beats = regular(0.9)
    x = synth(beats, QRS_RBBB, pr_s=0.16, qt_s=0.44)
    x += np.random.default_rng(5).normal(0.0, 0.05, x.shape)
    m = measure(x, beats)
    assert m["qrs_ms"] == pytest.approx(150, abs=6)
    assert m["pr_ms"] == pytest.approx(160, abs=8)


def test_ventricular_pacing_spikes_are_ignored() -> None:
    beats = regular(0.85)
    discordant_t = gains(120.0, 0.35, [0.3, 0.4, 0.2, -0.1, -0.3, -0.3])
    x = synth(beats, QRS_PACED, pr_s=None, qt_s=0.46, t_gains=discordant_t, spike_before_s=0.02)
    m = measure(x, beats)
    assert m["paced"] is True
    assert m["qrs_ms"] == pytest.approx(140, abs=6)   # from the ventricular depolarisation, not the spike
    assert m["qt_ms"] == pytest.approx(460, abs=8)
    assert m["qrs_axis_deg"] == pytest.approx(-60, abs=5)


@pytest.mark.parametrize("seed", [3, 7, 11])
def test_atrial_fibrillation_has_no_p(seed: int) -> None:
    rng = np.random.default_rng(seed)
    beats = 0.6 + np.cumsum(rng.uniform(0.45, 1.1, 16))
    beats = beats[beats < 9.2]
    m = measure(synth(beats, QRS_NORMAL, pr_s=None, qt_s=0.36, fib=True, seed=seed), beats)
    assert m["pr_ms"] is None and m["p_axis_deg"] is None and m["p_ms"] is None
    assert m["qrs_ms"] == pytest.approx(90, abs=6)
    assert m["heart_rate_bpm"] == pytest.approx(60.0 / np.diff(beats).mean(), abs=1.0)


@pytest.mark.parametrize("hz", [50.0, 60.0])
def test_mains_interference_does_not_widen_the_qrs(hz: float) -> None:
    # RR of 0.9 s is a whole number of mains cycles: the median beat alone would keep the hum.
    beats = regular(0.9)
    x = synth(beats, QRS_NORMAL, pr_s=0.16, qt_s=0.40)
    t = np.arange(x.shape[0]) / FS
    x += 0.1 * np.sin(2 * np.pi * hz * t)[:, None] * np.linspace(0.3, 1.0, 12)[None, :]
    m = measure(x, beats)
    assert m["qrs_ms"] == pytest.approx(90, abs=6)
    assert m["pr_ms"] == pytest.approx(160, abs=6)
    assert m["qt_ms"] == pytest.approx(400, abs=8)


@pytest.mark.parametrize("angle", [-90.0, -45.0, 0.0, 30.0, 75.0, 120.0, 179.0])
def test_frontal_axis_of_a_vector(angle: float) -> None:
    values = dict(zip(LEADS[:6], limb(angle, 0.8)))
    assert frontal_axis_deg(values) == pytest.approx(angle, abs=0.01)
    two = {"I": values["I"], "aVF": values["aVF"]}      # any two independent limb leads suffice
    assert frontal_axis_deg(two) == pytest.approx(angle, abs=0.01)


@pytest.mark.parametrize("angle", [-60.0, 10.0, 80.0, 150.0])
def test_qrs_p_t_axes_on_synthetic_ecg(angle: float) -> None:
    beats = regular(1.0)
    qrs = [(gains(angle, 1.0, [0.5, 0.6, 0.7, 0.8, 0.7, 0.6]), (0.0, 0.045, 0.090))]
    m = measure(synth(beats, qrs, pr_s=0.16, qt_s=0.40), beats)
    assert m["qrs_axis_deg"] == pytest.approx(angle, abs=3)
    assert m["p_axis_deg"] == pytest.approx(60, abs=5)
    assert m["t_axis_deg"] == pytest.approx(50, abs=5)


def test_dicom_sample_within_targets_of_its_cart() -> None:
    rec = read_recording(project_root() / "sample_data" / "dicom" / "waveform_ecg.dcm")
    result = analyze(rec)
    ours, cart = result["measurements"], result["device_measurements"]
    assert result["format"] == "dicom" and cart == dict(rec.source.measurements)
    # Cart (Mortara ELI 250): PR 161, QRS 75, QT 368, QTc 370, axes P 74 / QRS 52 / T 57.
    assert abs(ours["pr_ms"] - cart["pr_ms"]) < 10
    assert abs(ours["qrs_ms"] - cart["qrs_ms"]) < 10
    assert abs(ours["qt_ms"] - cart["qt_ms"]) <= 15
    for axis in ("p_axis_deg", "qrs_axis_deg", "t_axis_deg"):
        assert abs(ours[axis] - cart[axis]) < 10
