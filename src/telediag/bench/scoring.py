"""Beat-by-beat comparison of detections against reference annotations (WFDB bxb / ANSI-AAMI EC57 rules).

Pure functions on sample-index arrays, so the benchmark, the tests and any
future database can share exactly one definition of Se and +P.

Rules implemented (as bxb applies them for EC57):
* reference beats are annotations with a beat label (``N L R B A a J S V r F e j n E / f Q ?``);
* a detection matches a reference beat if within ``window_s`` (150 ms); each
  annotation is matched at most once, closest pairs first;
* the first ``skip_s`` seconds (5 min) are not scored;
* inside ventricular flutter/fibrillation episodes (between ``[`` and ``]``)
  reference beats are not required and detections are not counted as false.
VEB statistics use the AAMI classes: reference V = {V, E, r}; VEB +P ignores
fusion (F) and unclassifiable (Q class) reference beats labelled V, as EC57 does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "BEAT_SYMBOLS",
    "VEB_SYMBOLS",
    "BeatScore",
    "match_beats",
    "vf_episodes",
    "score_record",
    "sum_scores",
]

BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
VEB_SYMBOLS = frozenset("VEr")
_VEB_PP_IGNORED = frozenset("F/fQ?")  # reference classes whose "V" label is not a VEB false positive


@dataclass
class BeatScore:
    """Counts for one record (or a sum of records); ratios are derived, never stored."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    veb_tp: int = 0  # reference V detected and labelled V
    veb_fn: int = 0  # reference V missed or labelled non-V
    veb_fp: int = 0  # V label on a non-VEB reference beat (N/S class) or on a false detection

    @staticmethod
    def _ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    @property
    def se(self) -> float | None:
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def ppv(self) -> float | None:
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float | None:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fn + self.fp)

    @property
    def veb_se(self) -> float | None:
        return self._vebs.se

    @property
    def veb_ppv(self) -> float | None:
        return self._vebs.ppv

    @property
    def _vebs(self) -> BeatScore:
        """The VEB counts as a score of their own: VEB Se and +P are Se and +P of those counts."""
        return BeatScore(self.veb_tp, self.veb_fn, self.veb_fp)

    def as_dict(self) -> dict[str, float | int | None]:
        d: dict[str, float | int | None] = dict(asdict(self))
        d |= dict(se=self.se, ppv=self.ppv, f1=self.f1, veb_se=self.veb_se, veb_ppv=self.veb_ppv)
        return d


def sum_scores(scores: Sequence[BeatScore]) -> BeatScore:
    """Gross statistics: counts summed over records (EC57 'gross' totals)."""
    total = BeatScore()
    for s in scores:
        for field in ("tp", "fn", "fp", "veb_tp", "veb_fn", "veb_fp"):
            setattr(total, field, getattr(total, field) + getattr(s, field))
    return total


def match_beats(ref: np.ndarray, det: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair reference and detected sample indices within ``window`` samples.

    Returns ``(ref_idx, det_idx)`` of matched pairs. Closest pairs are taken
    first, each annotation used once, so a double detection yields one TP and
    one FP, like bxb.
    """
    ref = np.asarray(ref, dtype=np.int64)
    det = np.asarray(det, dtype=np.int64)
    if ref.size == 0 or det.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.argsort(det, kind="stable")
    det_sorted = det[order]
    lo = np.searchsorted(det_sorted, ref - window, side="left")
    hi = np.searchsorted(det_sorted, ref + window, side="right")
    counts = hi - lo
    ri = np.repeat(np.arange(ref.size), counts)
    # position of each candidate inside its [lo, hi) run
    offs = np.arange(ri.size) - np.repeat(np.cumsum(counts) - counts, counts)
    di = np.repeat(lo, counts) + offs
    dist = np.abs(det_sorted[di] - ref[ri])
    by_dist = np.lexsort((ri, dist))
    used_r = np.zeros(ref.size, bool)
    used_d = np.zeros(det.size, bool)
    out_r, out_d = [], []
    for k in by_dist:  # candidates are few (about one per beat); a loop is clearest
        r, d = ri[k], di[k]
        if not used_r[r] and not used_d[d]:
            used_r[r] = used_d[d] = True
            out_r.append(r)
            out_d.append(order[d])
    return np.asarray(out_r, np.int64), np.asarray(out_d, np.int64)


def vf_episodes(ann_samples: np.ndarray, ann_symbols: Sequence[str], n_samples: int) -> list[tuple[int, int]]:
    """Ventricular flutter/fibrillation intervals [start, end) from ``[`` / ``]`` annotations."""
    episodes: list[tuple[int, int]] = []
    start: int | None = None
    for s, sym in zip(np.asarray(ann_samples), ann_symbols):
        if sym == "[" and start is None:
            start = int(s)
        elif sym == "]" and start is not None:
            episodes.append((start, int(s) + 1))
            start = None
    if start is not None:
        episodes.append((start, n_samples))
    return episodes


def _inside(samples: np.ndarray, intervals: Sequence[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(samples.shape, bool)
    for a, b in intervals:
        mask |= (samples >= a) & (samples < b)
    return mask


def score_record(
    ann_samples: np.ndarray,
    ann_symbols: Sequence[str],
    det_samples: np.ndarray,
    fs: float,
    det_labels: Sequence[str] | None = None,
    *,
    window_s: float = 0.15,
    skip_s: float = 300.0,
    exclude_vf: bool = True,
    n_samples: int | None = None,
) -> BeatScore:
    """Score one record's detections (and optionally their N/V labels) against the reference."""
    ann_samples = np.asarray(ann_samples, dtype=np.int64)
    symbols = np.asarray(list(ann_symbols))
    det = np.asarray(det_samples, dtype=np.int64)
    beat = np.isin(symbols, list(BEAT_SYMBOLS)) if symbols.size else np.zeros(0, bool)
    ref, ref_sym = ann_samples[beat], symbols[beat]
    end = int(n_samples) if n_samples is not None else int(max(ann_samples.max(initial=0), det.max(initial=0)) + 1)
    excluded = vf_episodes(ann_samples, list(symbols), end) if exclude_vf else []
    start = int(round(skip_s * fs))

    ref_scored = (ref >= start) & ~_inside(ref, excluded)
    det_scored = (det >= start) & ~_inside(det, excluded)
    mr, md = match_beats(ref, det, int(round(window_s * fs)))
    matched_r = np.zeros(ref.size, bool)
    matched_r[mr] = True
    matched_d = np.zeros(det.size, bool)
    matched_d[md] = True
    # A pair counts where its reference beat is scored; an unmatched annotation where it lies.
    keep = ref_scored[mr]
    score = BeatScore(
        tp=int(keep.sum()),
        fn=int((ref_scored & ~matched_r).sum()),
        fp=int((det_scored & ~matched_d).sum()),
    )
    if det_labels is not None:
        labels = np.asarray(list(det_labels))
        is_v_det = labels == "V"
        ref_is_v = np.isin(ref_sym, list(VEB_SYMBOLS))
        pr, pd = mr[keep], md[keep]
        score.veb_tp = int((ref_is_v[pr] & is_v_det[pd]).sum())
        score.veb_fn = int((ref_scored & ref_is_v).sum()) - score.veb_tp
        counted = ~np.isin(ref_sym[pr], list(_VEB_PP_IGNORED)) & ~ref_is_v[pr]
        score.veb_fp = int((counted & is_v_det[pd]).sum()) + int((det_scored & ~matched_d & is_v_det).sum())
    return score
