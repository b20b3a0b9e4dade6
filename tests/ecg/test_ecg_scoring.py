"""bxb-style scoring: matching window, 5-minute skip, VF exclusion, VEB counting."""

from __future__ import annotations

import numpy as np

from telediag.bench.scoring import match_beats, score_record, sum_scores, vf_episodes

FS = 360.0
W = int(0.15 * FS)  # 54 samples


def test_match_window_and_one_to_one() -> None:
    ref = np.array([1000, 2000, 3000])
    det = np.array([1000 + W, 2000 - W - 1, 3000, 3005])  # edge-in, edge-out, exact, double
    mr, md = match_beats(ref, det, W)
    pairs = sorted(zip(mr.tolist(), det[md].tolist()))
    assert pairs == [(0, 1000 + W), (2, 3000)]


def test_closest_pair_wins() -> None:
    mr, md = match_beats(np.array([100, 150]), np.array([140]), W)
    assert mr.tolist() == [1] and md.tolist() == [0]


def test_counts_skip_and_labels() -> None:
    start = int(300 * FS)
    ref = np.array([10, start + 100, start + 500, start + 900, start + 1300])
    sym = ["N", "N", "V", "+", "N"]  # "+" is a rhythm annotation, not a beat
    det = np.array([12, start + 110, start + 505, start + 2000])
    labels = ["N", "N", "V", "V"]
    s = score_record(ref, sym, det, FS, labels, n_samples=start + 5000)
    assert (s.tp, s.fn, s.fp) == (2, 1, 1)           # beat before 5 min ignored
    assert (s.veb_tp, s.veb_fn, s.veb_fp) == (1, 0, 1)  # V on a false detection is a VEB FP
    whole = score_record(ref, sym, det, FS, labels, skip_s=0, n_samples=start + 5000)
    assert (whole.tp, whole.fn, whole.fp) == (3, 1, 1)
    assert abs(s.se - 2 / 3) < 1e-12 and abs(s.ppv - 2 / 3) < 1e-12


def test_vf_episode_excluded() -> None:
    ref = np.array([1000, 2000, 2500, 3000, 5000])
    sym = ["N", "[", "!", "]", "N"]
    det = np.array([1000, 2200, 2600, 5000])
    assert vf_episodes(ref, sym, 6000) == [(2000, 3001)]
    s = score_record(ref, sym, det, FS, skip_s=0, n_samples=6000)
    assert (s.tp, s.fn, s.fp) == (2, 0, 0)
    counted = score_record(ref, sym, det, FS, skip_s=0, exclude_vf=False, n_samples=6000)
    assert counted.fp == 2


def test_fusion_labelled_v_is_not_a_veb_false_positive() -> None:
    ref = np.array([100, 500, 900])
    s = score_record(ref, ["F", "N", "E"], ref, FS, ["V", "V", "V"], skip_s=0, n_samples=1000)
    assert (s.veb_tp, s.veb_fp, s.veb_fn) == (1, 1, 0)


def test_gross_totals() -> None:
    a = score_record(np.array([100]), ["N"], np.array([100]), FS, skip_s=0, n_samples=200)
    b = score_record(np.array([100]), ["N"], np.array([]), FS, skip_s=0, n_samples=200)
    g = sum_scores([a, b])
    assert (g.tp, g.fn, g.fp) == (1, 1, 0) and g.f1 == 2 / 3
