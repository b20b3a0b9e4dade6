"""``telediag bench qrs``: beat-by-beat QRS benchmark on MIT-BIH against the detectors users would otherwise pick.

Scoring follows WFDB bxb / ANSI-AAMI EC57 (see :mod:`telediag.ecg.scoring`):
150 ms match window, first 5 minutes skipped, ventricular flutter/fibrillation
episodes excluded; the whole-record variant (no skip, VF counted) is printed
too. CPU time (``time.process_time``) covers detection only; reading files is
excluded. Runs sequentially on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from telediag.ecg.beats import classify_beats
from telediag.ecg.qrs import detect_qrs
from telediag.ecg.refdata import shared_data_dir
from telediag.ecg.scoring import BeatScore, score_record, sum_scores

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


def _cart_values(ds: object) -> dict[str, float]:
    """The cart's own numeric measurements from a DICOM WaveformAnnotationSequence."""
    wanted = {"RR Interval": "rr_ms", "PR Interval": "pr_ms", "QRS Duration": "qrs_ms",
              "QT Interval": "qt_ms", "QTc Interval": "qtc_ms", "QRS Axis": "qrs_axis_deg"}
    out: dict[str, float] = {}
    for item in getattr(ds, "WaveformAnnotationSequence", []) or []:
        code = item.get("ConceptNameCodeSequence")
        if code and item.get("NumericValue") is not None:
            key = wanted.get(str(code[0].get("CodeMeaning", "")))
            if key and key not in out:
                out[key] = float(item.NumericValue)
    return out


NK2_LEAD = "II"


def _nk2_measurements(rec: object) -> tuple[dict[str, float | None], str, str]:
    """Global 12-lead measurements from neurokit2's DWT delineation of one lead.

    Per beat: PR = P onset -> QRS onset, QRS = QRS onset -> offset (nk2's
    ``ECG_R_Onsets``/``ECG_R_Offsets``), QT = QRS onset -> T offset; medians over
    the beats where both ends were found, RR = median R-R of nk2's R peaks; QTc from
    the medians. Axis from the median net QRS amplitude (max + min, baseline taken in
    the PR segment) of I and aVF within +-60 ms of nk2's R peaks. Returns the values,
    the lead used and a one-line note (beat counts, inconsistencies).
    """
    import neurokit2 as nk

    leads = [str(n) for n in rec.leads]
    upper = [n.upper() for n in leads]
    j = upper.index(NK2_LEAD.upper()) if NK2_LEAD.upper() in upper else 0
    fs = int(round(rec.fs))
    ms = 1000.0 / rec.fs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = nk.ecg_clean(rec.signals[:, j], sampling_rate=fs)
        _, info = nk.ecg_peaks(clean, sampling_rate=fs)
        rpeaks = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
        if rpeaks.size < 2:
            raise ValueError(f"only {rpeaks.size} R peak(s) found in lead {leads[j]}")
        _, waves = nk.ecg_delineate(clean, rpeaks, sampling_rate=fs, method="dwt")

    def pts(key: str) -> np.ndarray:
        v = np.asarray(waves.get(key, [np.nan] * rpeaks.size), dtype=np.float64)
        if v.size != rpeaks.size:
            raise ValueError(f"{key} has {v.size} entries for {rpeaks.size} R peaks")
        return v

    p_on, p_off = pts("ECG_P_Onsets"), pts("ECG_P_Offsets")
    q_on, q_off, t_off = pts("ECG_R_Onsets"), pts("ECG_R_Offsets"), pts("ECG_T_Offsets")

    def med(a: np.ndarray, b: np.ndarray) -> tuple[float | None, int]:
        d = (b - a) * ms
        d = d[np.isfinite(d) & (d > 0)]
        return (float(np.median(d)) if d.size else None), int(d.size)

    pr, n_pr = med(p_on, q_on)
    qrs, n_qrs = med(q_on, q_off)
    qt, n_qt = med(q_on, t_off)
    rr_s = float(np.median(np.diff(rpeaks))) / rec.fs
    out: dict[str, float | None] = {
        "rr_ms": rr_s * 1000.0, "pr_ms": pr, "qrs_ms": qrs, "qt_ms": qt,
        "qtc_bazett_ms": qt / np.sqrt(rr_s) if qt else None,
        "qtc_fridericia_ms": qt / rr_s ** (1.0 / 3.0) if qt else None,
        "qrs_axis_deg": None,
    }
    if "I" in upper and "AVF" in upper:
        half, b0, b1 = int(0.06 * rec.fs), int(0.10 * rec.fs), int(0.06 * rec.fs)
        keep = rpeaks[(rpeaks - b0 >= 0) & (rpeaks + half < rec.signals.shape[0])]
        if keep.size:
            net = []
            for name in ("I", "AVF"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    x = nk.ecg_clean(rec.signals[:, upper.index(name)], sampling_rate=fs)
                per_beat = []
                for r in keep:
                    y = x[r - half:r + half + 1] - np.median(x[r - b0:r - b1])
                    per_beat.append(y.max() + y.min())
                net.append(float(np.median(per_beat)))
            out["qrs_axis_deg"] = float(np.degrees(np.arctan2(net[1], net[0])))
    n = rpeaks.size
    overlap = int(np.sum(np.isfinite(p_off) & np.isfinite(q_on) & (q_on < p_off)))
    note = f"nk2 lead {leads[j]}: {n} R peaks; beats used PR {n_pr}/{n}, QRS {n_qrs}/{n}, QT {n_qt}/{n}"
    if overlap:
        note += f"; QRS onset before P offset in {overlap}/{n} beats"
    rounded = {k: (round(float(v), 1) if v is not None else None) for k, v in out.items()}
    return rounded, leads[j], note


def _print_twelve_lead(dicom_dir: Path) -> None:
    import pydicom

    from telediag.ecg.analysis import analyze
    from telediag.ecg.io import read_dicom_waveform

    files = sorted(dicom_dir.glob("*.dcm"))
    shown = False
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
        except Exception:  # broken/non-DICOM samples live in the same folder
            continue
        if "WaveformSequence" not in ds:
            continue
        rec = read_dicom_waveform(ds)
        result = analyze(rec)
        ours = result["measurements"] or {}
        cart = _cart_values(ds)
        try:
            nk2, nk2_lead, nk2_note = _nk2_measurements(rec)
        except Exception as exc:  # report, never abort the benchmark
            nk2, nk2_lead = {}, NK2_LEAD
            nk2_note = f"neurokit2 failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not shown:
            print("\n== 12-lead measurements: ours vs the cart's own (DICOM WaveformAnnotationSequence) "
                  "and neurokit2's delineation ==")
            shown = True
        nk2_head = f"neurokit2 (dwt, lead {nk2_lead})"
        print(f"{path.name}:")
        print(f"  {'':<18} {'ours':>8} {'cart':>8} {nk2_head:>24}")
        rows = [("rr_ms", "rr_ms"), ("pr_ms", "pr_ms"), ("qrs_ms", "qrs_ms"), ("qt_ms", "qt_ms"),
                ("qtc_bazett_ms", "qtc_ms"), ("qtc_fridericia_ms", None), ("qrs_axis_deg", "qrs_axis_deg")]
        for ours_key, cart_key in rows:
            o = ours.get(ours_key)
            c = cart.get(cart_key) if cart_key else None
            k = nk2.get(ours_key)
            print(f"  {ours_key:<18} {o if o is not None else 'n/a':>8} {c if c is not None else 'n/a':>8} "
                  f"{k if k is not None else 'n/a':>24}")
        if not cart:
            print("  (no cart measurements in this object)")
        print(f"  ({nk2_note})")
    if shown:
        print("\nneurokit2 column: nk.ecg_clean + ecg_peaks + ecg_delineate(method='dwt') on one lead; "
              "medians of per-beat intervals (QRS onset/offset = ECG_R_Onsets/ECG_R_Offsets); its axis = "
              "net QRS amplitude in I and aVF within +-60 ms of its R peaks.")


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
    if shared and (shared / "dicom").is_dir():
        _print_twelve_lead(shared / "dicom")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
