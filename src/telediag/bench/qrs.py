"""``telediag bench qrs``: beat-by-beat QRS benchmark on MIT-BIH against the detectors users would otherwise pick.

Scoring follows WFDB bxb / ANSI-AAMI EC57 (see :mod:`telediag.bench.scoring`):
150 ms match window, first 5 minutes skipped, ventricular flutter/fibrillation
episodes excluded; the whole-record variant (no skip, VF counted) is printed
too. CPU time (``time.process_time``) covers detection only; reading files is
excluded. Runs sequentially on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from telediag.ecg.beats import classify_beats
from telediag.ecg.qrs import detect_qrs
from telediag.bench.refdata import shared_data_dir
from telediag.bench.scoring import BeatScore, score_record, sum_scores

__all__ = ["main"]


@dataclass
class RecordData:
    name: str
    fs: float
    physical: np.ndarray          # (n, n_leads) mV
    digital: np.ndarray           # (n, n_leads) ADC units
    adc_gain: list[float]
    adc_zero: list[int]
    ann_samples: np.ndarray
    ann_symbols: list[str]


@dataclass
class Result:
    name: str
    per_record: list[tuple[str, BeatScore, BeatScore]] = field(default_factory=list)
    cpu_s: float = 0.0
    signal_s: float = 0.0
    first_call_s: float | None = None
    record_xrt: list[float] = field(default_factory=list)
    classifies: bool = False


Detector = Callable[[RecordData], tuple[np.ndarray, list[str] | None]]


def _ours(rec: RecordData) -> tuple[np.ndarray, list[str] | None]:
    return detect_qrs(rec.physical, rec.fs).samples, None


def _gqrs(rec: RecordData) -> tuple[np.ndarray, list[str] | None]:
    from wfdb import processing

    # Fed the raw ADC values with gain and zero, as gqrs_detect's docstring asks.
    return np.asarray(processing.gqrs_detect(d_sig=rec.digital[:, 0], fs=rec.fs,
                                             adc_gain=rec.adc_gain[0], adc_zero=rec.adc_zero[0])), None


def _xqrs(rec: RecordData) -> tuple[np.ndarray, list[str] | None]:
    from wfdb import processing

    return np.asarray(processing.xqrs_detect(sig=rec.physical[:, 0], fs=rec.fs, verbose=False)), None


def _neurokit(method: str) -> Detector:
    def run(rec: RecordData) -> tuple[np.ndarray, list[str] | None]:
        import neurokit2 as nk

        clean = nk.ecg_clean(rec.physical[:, 0], sampling_rate=int(rec.fs), method=method)
        _, info = nk.ecg_peaks(clean, sampling_rate=int(rec.fs), method=method)
        return np.asarray(info["ECG_R_Peaks"], dtype=np.int64), None

    return run


def _pan_tompkins(rec: RecordData) -> tuple[np.ndarray, list[str] | None]:
    from ecgdetectors import Detectors

    return np.asarray(Detectors(rec.fs).pan_tompkins_detector(rec.physical[:, 0]), dtype=np.int64), None


PEERS: dict[str, Detector] = {
    "wfdb gqrs": _gqrs,
    "wfdb xqrs": _xqrs,
    "nk2 neurokit": _neurokit("neurokit"),
    "nk2 pantompkins1985": _neurokit("pantompkins1985"),
    "ecgdetectors pan_tompkins": _pan_tompkins,
}


def _load(directory: Path, name: str) -> RecordData:
    import wfdb

    base = str(directory / name)
    rec = wfdb.rdrecord(base, physical=False)
    ann = wfdb.rdann(base, "atr")
    digital = rec.d_signal.astype(np.int64)
    gain = [float(g) for g in rec.adc_gain]
    zero = [int(z) for z in rec.adc_zero]
    base_line = np.asarray(rec.baseline, dtype=np.float64)
    physical = (digital - base_line) / np.asarray(gain)
    return RecordData(name, float(rec.fs), physical, digital, gain, zero,
                      np.asarray(ann.sample), list(ann.symbol))


def _run(name: str, detector: Detector, records: list[RecordData], classify: bool) -> Result:
    res = Result(name, classifies=classify)
    for rec in records:
        t0 = time.process_time()
        samples, _ = detector(rec)
        dt = time.process_time() - t0
        if res.first_call_s is None:
            res.first_call_s = dt
        res.cpu_s += dt
        res.signal_s += rec.physical.shape[0] / rec.fs
        res.record_xrt.append(rec.physical.shape[0] / rec.fs / max(dt, 1e-9))
        labels = classify_beats(rec.physical, rec.fs, samples) if classify else None
        n = rec.physical.shape[0]
        ec57 = score_record(rec.ann_samples, rec.ann_symbols, samples, rec.fs, labels, n_samples=n)
        whole = score_record(rec.ann_samples, rec.ann_symbols, samples, rec.fs, labels,
                             skip_s=0.0, exclude_vf=False, n_samples=n)
        res.per_record.append((rec.name, ec57, whole))
    return res


def _pct(v: float | None) -> str:
    return f"{100 * v:7.2f}" if v is not None else "    n/a"


def _print_records(res: Result) -> None:
    print(f"\n== {res.name}: per record (EC57: first 5 min skipped, VF episodes excluded) ==")
    head = f"{'record':>6} {'TP':>6} {'FN':>5} {'FP':>5} {'Se%':>7} {'+P%':>7}"
    if res.classifies:
        head += f" {'V-TP':>5} {'V-FN':>5} {'V-FP':>5} {'VSe%':>7} {'V+P%':>7}"
    print(head)
    for name, s, _ in res.per_record:
        line = f"{name:>6} {s.tp:6d} {s.fn:5d} {s.fp:5d} {_pct(s.se)} {_pct(s.ppv)}"
        if res.classifies:
            line += f" {s.veb_tp:5d} {s.veb_fn:5d} {s.veb_fp:5d} {_pct(s.veb_se)} {_pct(s.veb_ppv)}"
        print(line)
    g = sum_scores([s for _, s, _ in res.per_record])
    w = sum_scores([s for _, _, s in res.per_record])
    print(f"{'gross':>6} {g.tp:6d} {g.fn:5d} {g.fp:5d} {_pct(g.se)} {_pct(g.ppv)}  F1 {_pct(g.f1)}")
    print(f"{'whole':>6} {w.tp:6d} {w.fn:5d} {w.fp:5d} {_pct(w.se)} {_pct(w.ppv)}  F1 {_pct(w.f1)}"
          "   (whole record: no skip, VF counted)")


def _print_summary(results: list[Result]) -> None:
    print("\n== Summary (gross, EC57 scoring; 'whole' = no skip, VF counted) ==")
    print(f"{'detector':<26} {'Se%':>7} {'+P%':>7} {'F1%':>7} | {'wSe%':>7} {'w+P%':>7} {'wF1%':>7} | "
          f"{'VEB Se%':>7} {'VEB +P%':>7} | {'CPU s':>7} {'x real-time':>11} {'median xRT':>10} {'1st rec s':>9}")
    for r in results:
        g = sum_scores([s for _, s, _ in r.per_record])
        w = sum_scores([s for _, _, s in r.per_record])
        xrt = r.signal_s / r.cpu_s if r.cpu_s > 0 else float("inf")
        veb = (_pct(g.veb_se), _pct(g.veb_ppv)) if r.classifies else ("    n/a", "    n/a")
        first = f"{r.first_call_s:9.3f}" if r.first_call_s is not None else "      n/a"
        print(f"{r.name:<26} {_pct(g.se)} {_pct(g.ppv)} {_pct(g.f1)} | {_pct(w.se)} {_pct(w.ppv)} {_pct(w.f1)} | "
              f"{veb[0]} {veb[1]} | {r.cpu_s:7.2f} {xrt:11.0f} {float(np.median(r.record_xrt)):10.0f} {first}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``telediag bench qrs``; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="telediag bench qrs", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="directory with MIT-BIH records (.hea/.dat/.atr); default <shared data>/mitdb")
    parser.add_argument("--records", nargs="+", default=None,
                        help="record names (default: all listed in RECORDS, else all .hea files)")
    parser.add_argument("--no-peers", action="store_true", help="benchmark only our detector")
    args = parser.parse_args(argv)

    shared = shared_data_dir()
    data = args.data or (shared / "mitdb" if shared else None)
    if data is None or not data.is_dir():
        print("MIT-BIH data directory not found; pass --data DIR or set TELEDIAG_SHARED_DATA",
              file=sys.stderr)
        return 2
    if args.records:
        names = args.records
    elif (data / "RECORDS").is_file():
        names = (data / "RECORDS").read_text().split()
    else:
        names = sorted(p.stem for p in data.glob("*.hea"))
    try:
        records = [_load(data, n) for n in names]
    except (OSError, ValueError) as exc:
        print(f"cannot read records: {exc}", file=sys.stderr)
        return 2
    total_s = sum(r.physical.shape[0] / r.fs for r in records)
    print(f"QRS benchmark: {len(records)} records, {total_s / 3600:.2f} h of signal, "
          f"{sum(r.physical.shape[1] for r in records) // max(len(records), 1)} leads each; "
          "ours fuses all leads, peers use lead 0")

    results = [_run("telediag (ours)", _ours, records, classify=True)]
    _print_records(results[0])
    if not args.no_peers:
        for name, det in PEERS.items():
            try:
                res = _run(name, det, records, classify=False)
            except ImportError as exc:
                print(f"\n== {name}: skipped ({exc}) ==")
                continue
            _print_records(res)
            results.append(res)
    _print_summary(results)
    print("\nCPU s = time.process_time() of detection only (ours includes signal quality and lead fusion; "
          "beat classification excluded). 'x real-time' = total signal / total CPU; 'median xRT' = "
          "per-record median. '1st rec s' = CPU of the first record, including one-off "
          "filter design/import cost (no JIT is used).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
