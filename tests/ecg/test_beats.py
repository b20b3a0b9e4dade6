"""Beat classification against the patient's own dominant beat: synthetic PVCs, noise, MIT-BIH excerpts."""

from __future__ import annotations

import numpy as np
import pytest

from telediag.ecg import Recording, read_wfdb
from telediag.ecg.analysis import analyze
from telediag.ecg.beats import classify_beats
from telediag.ecg.qrs import detect_qrs
from telediag.bench.refdata import shared_data_dir
from telediag.bench.scoring import score_record

FS = 360.0
NORMAL = [(-0.20, 0.025, 0.15), (-0.03, 0.008, -0.12), (0.0, 0.010, 1.2), (0.03, 0.008, -0.25),
          (0.28, 0.050, 0.30)]
# Wide, differently shaped (deep S in lead 1 where the normal beat is upright) ventricular beat, discordant T.
PVC = [(0.0, 0.030, 1.0), (0.07, 0.035, -1.1), (0.30, 0.07, -0.45)]


def _ecg(rr_s: float, n_beats: int, pvc_every: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-lead sinus rhythm with premature (65 % coupling) PVCs and a full compensatory pause."""
    times, is_pvc = [], []
    t = 1.0
    for k in range(n_beats):
        pvc = pvc_every > 0 and k % pvc_every == pvc_every - 1
        times.append(t - (0.35 * rr_s if pvc else 0.0))
        is_pvc.append(pvc)
        t += rr_s
    times_a = np.asarray(times)
    n = int((t + 1.0) * FS)
    tt_all = np.arange(n) / FS
    x = np.zeros((n, 2))
    lead_gain = {False: np.array([1.0, 0.5]), True: np.array([1.0, -0.8])}  # PVC axis differs
    for bt, pvc in zip(times_a, is_pvc):
        lo, hi = np.searchsorted(tt_all, [bt - 0.5, bt + 0.7])
        tt = tt_all[lo:hi] - bt
        beat = sum(a * np.exp(-0.5 * ((tt - c) / w) ** 2) for c, w, a in (PVC if pvc else NORMAL))
        x[lo:hi] += beat[:, None] * lead_gain[pvc][None, :]
    x += np.random.default_rng(seed).normal(0, 0.02, x.shape)
    return x, times_a, np.asarray(is_pvc)


def _labels_at_truth(x: np.ndarray, times: np.ndarray) -> np.ndarray:
    det = detect_qrs(x, FS).samples
    labels = np.asarray(classify_beats(x, FS, det))
    ref = np.round(times * FS).astype(int)
    nearest = np.abs(det[None, :] - ref[:, None]).argmin(axis=1)
    assert np.all(np.abs(det[nearest] - ref) <= 0.06 * FS), "beats not all detected"
    return labels[nearest]


@pytest.mark.parametrize("rr_s,pvc_every", [(0.8, 2), (0.8, 7), (0.65, 4)])
def test_synthetic_pvcs_are_v_normals_are_n(rr_s: float, pvc_every: int) -> None:
    """Bigeminy (PVCs half of all beats) included: the dominant beat is the majority morphology."""
    x, times, is_pvc = _ecg(rr_s, 120, pvc_every, seed=pvc_every)
    got = _labels_at_truth(x, times)
    inner = slice(1, -1)  # first/last beat may run off the record -> Q
    assert np.all(got[inner][is_pvc[inner]] == "V")
    assert np.all(got[inner][~is_pvc[inner]] == "N")


def test_no_pvcs_no_v() -> None:
    x, times, _ = _ecg(0.75, 150, 0, seed=11)
    got = _labels_at_truth(x, times)
    assert "V" not in set(got)


def test_noisy_window_is_q_not_v() -> None:
    """Beats inside a noise burst (quality: no usable lead) are unclassifiable, never called PVCs."""
    x, times, is_pvc = _ecg(0.8, 100, 6, seed=3)
    a, b = int(30 * FS), int(42 * FS)
    x[a:b] += np.random.default_rng(5).normal(0, 0.6, (b - a, 2))   # EMG/motion burst on both leads
    qrs = np.round(times * FS).astype(np.int64)                       # e.g. beats from another detector
    labels = np.asarray(classify_beats(x, FS, qrs))
    block = int(2.0 * FS)
    in_noise = (qrs // block >= -(-a // block)) & (qrs // block < b // block)   # blocks fully inside the burst
    assert in_noise.sum() >= 10 and set(labels[in_noise]) == {"Q"}
    clean = (qrs < a - 2 * FS) | (qrs > b + 2 * FS)
    clean[[0, -1]] = False
    assert np.all(labels[clean] == np.where(is_pvc[clean], "V", "N"))
    # analyze() keeps its contract (one label per QRS) and calls no PVC inside the burst.
    result = analyze(Recording(fs=FS, leads=("II", "V1"), signals=x))
    det, beats = np.asarray(result["qrs"]), np.asarray(result["beats"])
    assert len(det) == len(beats) and set(beats) <= {"N", "V", "Q"}
    assert "V" not in set(beats[(det > a) & (det < b)])


@pytest.mark.parametrize("record,minutes,se_min,ppv_min", [
    ("119", (5, 10), 0.99, 0.99),    # ventricular bigeminy/trigeminy
    ("208", (10, 15), 0.97, 0.97),   # frequent uniform and multiform PVCs, couplets
    ("106", (12, 17), 0.75, 0.85),    # multiform PVCs, changing normal morphology (measured 0.82 / 0.92)
])
def test_mitdb_excerpt_veb(record: str, minutes: tuple[int, int], se_min: float, ppv_min: float) -> None:
    import wfdb

    shared = shared_data_dir()
    if shared is None or not (shared / "mitdb" / f"{record}.hea").is_file():
        pytest.skip("MIT-BIH reference data not available")
    base = str(shared / "mitdb" / record)
    rec = read_wfdb(base)
    a, b = (int(m * 60 * rec.fs) for m in minutes)
    x = rec.signals[a:b]
    ann = wfdb.rdann(base, "atr", sampfrom=a, sampto=b, shift_samps=True)
    result = analyze(Recording(fs=rec.fs, leads=rec.leads, signals=x))
    s = score_record(ann.sample, ann.symbol, np.asarray(result["qrs"]), rec.fs, result["beats"],
                     skip_s=0, n_samples=len(x))
    assert s.veb_tp + s.veb_fn >= 20
    assert s.veb_se >= se_min and s.veb_ppv >= ppv_min, s.as_dict()
