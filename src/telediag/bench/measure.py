"""``telediag bench measure``: 12-lead global measurements, ours beside the cart's own and neurokit2's.

Every 12-lead file in the shared data that carries the cart's own measurements
(DICOM waveform annotations, GE MUSE XML, Philips XML, SCP-ECG section 7, HL7
aECG annotations) is read through :func:`telediag.ecg.readers.read_bytes`, as
ingest reads it, and analysed with :func:`telediag.ecg.analysis.analyze`. The
cart is the reference: a resting-ECG cart's program is what a cardiologist
compares telediag with. neurokit2's wavelet delineation of one lead is printed
as the open-source program a developer would otherwise reach for. Per interval
the mean difference, its standard deviation and the mean absolute difference
(MAD) to the cart are printed beside the IEC 60601-2-25 limits and this
project's targets. Read time per file is printed too (target: < 50 ms for a
10-s 12-lead file). Runs sequentially on one core; wall-clock times.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from telediag.bench.refdata import shared_data_dir
from telediag.ecg.recording import MEASUREMENT_KEYS, Recording, WaveformError

__all__ = ["main"]

#: Folders of the shared data holding 12-lead files with the cart's measurements.
FOLDERS: tuple[str, ...] = ("dicom", "ecg-formats/ge-muse-xml", "ecg-formats/philips-sierra-xml",
                            "ecg-formats/scp-ecg", "ecg-formats/hl7-aecg")
#: Compared keys (every key ours and the cart's share); axes are compared on the circle.
KEYS: tuple[str, ...] = ("heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms",
                         "p_axis_deg", "qrs_axis_deg", "t_axis_deg")
#: This project's targets for the mean absolute difference to the carts (issue 7).
TARGET_MAD: dict[str, float] = {"pr_ms": 10.0, "qrs_ms": 10.0, "qt_ms": 15.0, "p_axis_deg": 10.0,
                                "qrs_axis_deg": 10.0, "t_axis_deg": 10.0}
#: IEC 60601-2-25:2011 (requirements carried over from IEC 60601-2-51:2003): accuracy of the global
#: durations and intervals of an analysing electrocardiograph on biological ECGs, i.e. against the
#: referee values of the CSE measurement database: (limit on |mean difference|, limit on its SD), ms.
IEC_LIMITS: dict[str, tuple[float, float]] = {"p_ms": (10.0, 15.0), "pr_ms": (10.0, 10.0),
                                              "qrs_ms": (6.0, 10.0), "qt_ms": (12.0, 30.0)}
IEC_SOURCE = ("IEC 60601-2-25:2011 (from IEC 60601-2-51:2003), global interval accuracy on the CSE "
              "measurement database: |mean difference| / SD limits as recalled from the standard. The search "
              "tool found manufacturer manuals describing this test (e.g. the Gima/Contec ECG-300G manual, "
              "'accuracy of interval measurements on biological ECGs', CSE database: P duration, PR, QRS, QT) but "
              "not the table of limits itself: check the figures against a copy of the standard before quoting.")
ANNOTATED_DATA_NOTE = ("Annotated public data (QT database, LUDB): no PyPI or Debian package found that ships "
                       "them (checked: wfdb, neurokit2, ecg-gudb-database (R peaks only), the PyPI/Debian "
                       "package lists for qtdb/ludb/physionet); nothing downloaded from other hosts.")
NK2_LEAD = "II"
WORST = 3   # files listed per interval as the largest differences


@dataclass
class FileResult:
    name: str
    fmt: str
    cart: dict[str, float]
    ours: dict[str, float | None]
    nk2: dict[str, float | None]
    nk2_note: str
    read_ms: float
    first_read_ms: float
    analyze_ms: float
    duration_s: float
    notes: list[str] = field(default_factory=list)


def _nk2_measurements(rec: Recording) -> tuple[dict[str, float | None], str]:
    """Global measurements from neurokit2's DWT delineation of one lead (II).

    Per beat: PR = P onset -> QRS onset, QRS = QRS onset -> offset (nk2's
    ``ECG_R_Onsets``/``ECG_R_Offsets``), QT = QRS onset -> T offset; medians over the
    beats where both ends were found; rate from nk2's R peaks, QTc (Bazett) from the
    medians. Axis from the median net QRS amplitude (max + min, baseline taken in the
    PR segment) of I and aVF within +-60 ms of nk2's R peaks. Returns the values and a
    one-line note (lead, beat counts, inconsistencies).
    """
    import neurokit2 as nk

    leads = [str(n) for n in rec.leads]
    upper = [n.upper() for n in leads]
    j = upper.index(NK2_LEAD) if NK2_LEAD in upper else 0
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
        "heart_rate_bpm": 60.0 / float(np.mean(np.diff(rpeaks)) / rec.fs), "pr_ms": pr, "qrs_ms": qrs,
        "qt_ms": qt, "qtc_ms": qt / np.sqrt(rr_s) if qt else None, "qrs_axis_deg": None,
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
                per_beat = [float((y := x[r - half:r + half + 1] - np.median(x[r - b0:r - b1])).max() + y.min())
                            for r in keep]
                net.append(float(np.median(per_beat)))
            out["qrs_axis_deg"] = float(np.degrees(np.arctan2(net[1], net[0])))
    n = rpeaks.size
    overlap = int(np.sum(np.isfinite(p_off) & np.isfinite(q_on) & (q_on < p_off)))
    note = f"nk2 lead {leads[j]}: {n} R peaks; beats used PR {n_pr}/{n}, QRS {n_qrs}/{n}, QT {n_qt}/{n}"
    if overlap:
        note += f"; QRS onset before P offset in {overlap}/{n} beats"
    return {k: (round(float(v), 1) if v is not None else None) for k, v in out.items()}, note


def _candidates(shared: Path) -> list[Path]:
    files = []
    for folder in FOLDERS:
        d = shared / folder
        if d.is_dir():
            files += sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() != ".md")
    return files


def _read(data: bytes) -> tuple[str, Recording, float, float]:
    """(format, recording, best-of-3 read ms, first read ms); reader errors propagate."""
    from telediag.ecg.readers import read_bytes

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fmt, rec = read_bytes(data)
        times.append((time.perf_counter() - t0) * 1000.0)
    return fmt, rec, min(times), times[0]


def _reader_missing(exc: BaseException) -> bool:
    """A reader module or function not written yet (other formats' readers land during development)."""
    return isinstance(exc, (ImportError, AttributeError, NotImplementedError))


def _diff(key: str, a: float, b: float) -> float:
    d = a - b
    return (d + 180.0) % 360.0 - 180.0 if key.endswith("_deg") else d


def _fmt(v: object) -> str:
    return "n/a" if v is None else (f"{v:.0f}" if isinstance(v, float) else str(v))


def _run_file(path: Path, with_nk2: bool) -> tuple[FileResult | None, str | None]:
    """Benchmark one file; returns (result, None) or (None, the reason it was skipped)."""
    from telediag.ecg.analysis import analyze

    data = path.read_bytes()
    try:
        fmt, rec, read_ms, first_ms = _read(data)
    except WaveformError as exc:
        return None, f"not read ({exc})"
    except Exception as exc:  # a reader still being written: say so, never abort the benchmark
        if _reader_missing(exc):
            return None, f"reader not available yet ({type(exc).__name__}: {exc})"
        raise
    cart = {k: v for k, v in rec.source.measurements.items() if k in MEASUREMENT_KEYS}
    if not cart:
        return None, f"{fmt}: no cart measurements in the file"
    if len(rec.leads) < 12:
        return None, f"{fmt}: {len(rec.leads)} lead(s), not a 12-lead ECG"
    t0 = time.perf_counter()
    result = analyze(rec)
    analyze_ms = (time.perf_counter() - t0) * 1000.0
    ours = result.get("measurements") or {}
    nk2: dict[str, float | None] = {}
    nk2_note = "neurokit2 not run"
    if with_nk2:
        try:
            nk2, nk2_note = _nk2_measurements(rec)
        except ImportError as exc:
            nk2_note = f"neurokit2 not installed ({exc})"
        except Exception as exc:  # report, never abort the benchmark
            first = str(exc).splitlines()[0] if str(exc) else ""
            nk2_note = f"neurokit2 failed: {type(exc).__name__}: {first}"
    notes = []
    if ours.get("paced"):
        notes.append("paced: pacemaker spikes removed before delineation")
    return FileResult(path.name, fmt, cart, ours, nk2, nk2_note, read_ms, first_ms, analyze_ms,
                      rec.duration_s, notes), None


def _print_file(r: FileResult) -> None:
    print(f"\n{r.name} ({r.fmt}, {r.duration_s:.1f} s): read {r.read_ms:.1f} ms (first read {r.first_read_ms:.1f} "
          f"ms), analyze {r.analyze_ms:.0f} ms")
    print(f"  {'':<16} {'ours':>7} {'cart':>7} {'ours-cart':>9} {'nk2':>7} {'nk2-cart':>9}")
    for key in KEYS:
        o, c, k = r.ours.get(key), r.cart.get(key), r.nk2.get(key)
        do = _diff(key, o, c) if o is not None and c is not None else None
        dk = _diff(key, k, c) if k is not None and c is not None else None
        print(f"  {key:<16} {_fmt(o):>7} {_fmt(c):>7} {_fmt(do):>9} {_fmt(k):>7} {_fmt(dk):>9}")
    extra = {k: r.ours.get(k) for k in ("rr_ms", "p_ms", "qtc_fridericia_ms") if r.ours.get(k) is not None}
    if extra:
        print("  ours also: " + ", ".join(f"{k} {v:.0f}" for k, v in extra.items()))
    for note in r.notes + [r.nk2_note]:
        print(f"  ({note})")


def _stats(results: list[FileResult], source: str, key: str) -> tuple[int, float, float, float] | None:
    """(n, mean difference, SD of the difference, mean absolute difference) to the cart."""
    d = []
    for r in results:
        v, c = getattr(r, source).get(key), r.cart.get(key)
        if v is not None and c is not None:
            d.append(_diff(key, float(v), float(c)))
    if not d:
        return None
    a = np.asarray(d)
    return a.size, float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, float(np.abs(a).mean())


def _print_summary(results: list[FileResult]) -> None:
    print(f"\n== Difference to the cart over {len(results)} files (n = files where both have the value) ==")
    print(f"{'':<16} | {'ours: n':>7} {'mean':>6} {'SD':>6} {'MAD':>6} | {'nk2: n':>6} {'mean':>6} {'SD':>6} "
          f"{'MAD':>6} | {'target MAD':>10} | {'IEC |mean|/SD':>13}")
    for key in KEYS:
        row = f"{key:<16} |"
        for source, width in (("ours", 7), ("nk2", 6)):
            st = _stats(results, source, key)
            row += (f" {st[0]:>{width}} {st[1]:6.1f} {st[2]:6.1f} {st[3]:6.1f} |" if st
                    else f" {'-':>{width}} {'':>20} |")
        target, iec, mad = TARGET_MAD.get(key), IEC_LIMITS.get(key), _stats(results, "ours", key)
        verdict = "" if target is None or mad is None else ("ok" if mad[3] < target else "MISS")
        row += f" {'< %.0f' % target if target else '':>5} {verdict:<4} |"
        row += f" {'%.0f / %.0f' % iec if iec else '':>13}"
        print(row)
    worst = []
    for key in ("pr_ms", "qrs_ms", "qt_ms", "qrs_axis_deg"):
        d = sorted(((abs(_diff(key, float(o), r.cart[key])), r.name) for r in results
                    if (o := r.ours.get(key)) is not None and key in r.cart), reverse=True)[:WORST]
        if d:
            worst.append(f"{key}: " + ", ".join(f"{n} {v:.0f}" for v, n in d))
    if worst:
        print("largest |ours - cart|: " + "; ".join(worst))
    missing = [(r.name, k) for r in results for k in ("pr_ms", "qrs_ms", "qt_ms")
               if r.cart.get(k) is not None and r.ours.get(k) is None]
    if missing:
        print("cart has a value, ours none: " + ", ".join(f"{n} {k}" for n, k in missing))
    reads = [r.read_ms * 10.0 / max(r.duration_s, 1e-9) for r in results]
    print(f"read time per 10 s of 12-lead (best of 3): median {np.median(reads):.1f} ms, max {max(reads):.1f} ms "
          "(target < 50 ms)")
    print(f"\nIEC column: {IEC_SOURCE}")
    print("The IEC limits apply to differences from CSE referee values on its 125 reference ECGs; here the "
          "reference is another cart's program on a handful of files, so they show the order of agreement "
          "expected, not a compliance test. 'MAD' = mean absolute difference; axes compared on the circle.")
    print("neurokit2 column: nk.ecg_clean + ecg_peaks + ecg_delineate(method='dwt') on lead II; medians of "
          "per-beat intervals (QRS onset/offset = ECG_R_Onsets/ECG_R_Offsets); its axis = net QRS amplitude in "
          "I and aVF within +-60 ms of its R peaks; it gives no P or T axis.")
    print(ANNOTATED_DATA_NOTE)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``telediag bench measure``; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="telediag bench measure", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="shared data directory (default: TELEDIAG_SHARED_DATA or ../shared/data)")
    parser.add_argument("--no-nk2", action="store_true", help="skip neurokit2's delineation")
    parser.add_argument("files", nargs="*", type=Path, help="ECG files (default: every sample in the shared data)")
    args = parser.parse_args(argv)

    shared = args.data or shared_data_dir()
    files = list(args.files) or (_candidates(shared) if shared and shared.is_dir() else [])
    if not files:
        print("no ECG files found; pass files, --data DIR or set TELEDIAG_SHARED_DATA", file=sys.stderr)
        return 2
    try:
        importlib.import_module("telediag.ecg.readers")
    except ImportError as exc:
        print(f"readers not importable: {exc}", file=sys.stderr)
        return 2
    print(f"12-lead measurement benchmark: {len(files)} candidate files; ours = telediag analyze(), "
          "reference = the cart's own measurements in the file")
    results: list[FileResult] = []
    skipped: list[str] = []
    for path in files:
        res, why = _run_file(path, not args.no_nk2)
        if res is None:
            skipped.append(f"{path.parent.name}/{path.name}: {why}")
            continue
        results.append(res)
        _print_file(res)
    if skipped:
        print("\nskipped:")
        for line in skipped:
            print(f"  {line}")
    if not results:
        print("no file with cart measurements could be read", file=sys.stderr)
        return 1
    _print_summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
