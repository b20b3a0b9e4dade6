"""``telediag bench rhythm``: rhythm episodes and critical alarms on MIT-BIH (DS1) against its rhythm annotations.

Scored, from the reference ``.atr`` (rhythm changes ``+`` with aux notes, VF
brackets ``[`` ``]``, beat labels):

* AF duration Se / +P: overlap of our ``af`` time with reference ``(AFIB``
  time. Our ``af`` time inside reference ``(AFL`` is neither credited nor
  counted false (flutter not locked to the QRS, like 203's, stays ``af``; the
  strict variant, counting it false, is printed too).
* AFL duration Se / +P: overlap of our ``afl`` time with reference ``(AFL``
  time (n/a where either is empty).
* AV block: our ``av_block`` episodes (by degree) outside reference AV-block
  rhythms (``(BII``, ``(BIII``; none in DS1), as false episodes per 24 h.
* VT episode Se: a reference ``(VT`` episode is found when one of our ``vt``
  or ``vf`` episodes overlaps it (1 s tolerance); VF episode Se likewise for
  ``(VFL`` / ``[ ]`` episodes and our ``vf``. MIT-BIH marks runs of 3 PVCs as
  ``(VT`` whatever their rate, while our ``vt`` (and the critical-value
  definitions) need a rate above 100 /min, so Se is printed for all reference
  episodes and for those whose reference beats run faster than 100 /min.
* False critical alarms per 24 h of event-free signal: the same rule set is
  evaluated on the *reference* beats (labels mapped to N/V/Q) and reference
  VF episodes; an alarm of ours is false when no reference alarm of any type
  lies within 10 s of it. Event-free signal = record time outside the
  reference alarms (+-10 s).

Speed: CPU time (``time.process_time``) of the whole ``analyze`` (quality,
QRS, beat classes, rhythm, rules); reading files excluded; one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from telediag.bench.refdata import shared_data_dir
from telediag.ecg import read_recording
from telediag.ecg.analysis import analyze
from telediag.ecg.rhythm import detect_rhythm
from telediag.ecg.rules import evaluate, load_rules

__all__ = ["main"]

BEATS = frozenset("NLRBAaJSVrFejnE/fQ?")
V_SYMBOLS = frozenset("VE")        # ventricular ectopic beats for the reference VT runs (AAMI V class minus r)
TOLERANCE_S = 1.0
ALARM_MARGIN_S = 10.0
PUBLISHED = [
    ("RR-interval AF methods, MIT-BIH AFDB (as the literature reports)", "~97", "~98 (Sp)"),
    ("e.g. Petrenas et al. 2015, low-complexity RR method, AFDB", "97.1", "98.3 (Sp)"),
]


@dataclass
class RecordScore:
    name: str
    hours: float
    cpu_s: float
    af_ref: float
    af_det: float
    af_hit: float
    af_in_afl: float
    afl_ref: float
    afl_det: float
    afl_hit: float
    av_false: int
    av_false_3: int
    vt_ref: int
    vt_found: int
    vt_fast_ref: int
    vt_fast_found: int
    vf_ref: int
    vf_found: int
    critical: int
    false_critical: int
    event_free_h: float


def _intervals(ann_s: np.ndarray, sym: list[str], aux: list[str], fs: float, end_s: float) -> dict[str, list]:
    """Reference rhythm intervals by aux label, plus VF bracket episodes."""
    rh = [(s / fs, a.strip("\x00").strip()) for s, y, a in zip(ann_s, sym, aux) if y == "+"]
    out: dict[str, list[tuple[float, float]]] = {}
    for i, (a, lab) in enumerate(rh):
        b = rh[i + 1][0] if i + 1 < len(rh) else end_s
        out.setdefault(lab, []).append((a, b))
    opens = [s / fs for s, y in zip(ann_s, sym) if y == "["]
    closes = [s / fs for s, y in zip(ann_s, sym) if y == "]"]
    brackets = [(a, min([c for c in closes if c > a], default=end_s)) for a in opens]
    out["VF"] = _union(out.get("(VFL", []) + brackets)
    return out


def _union(iv: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _overlap(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in x for c, d in y)


def _found(ref: list[tuple[float, float]], det: list[tuple[float, float]]) -> int:
    return sum(any(c < b + TOLERANCE_S and d > a - TOLERANCE_S for c, d in det) for a, b in ref)


def _ref_rate(ann_s: np.ndarray, sym: list[str], fs: float, iv: tuple[float, float]) -> float:
    """Mean rate (/min) of the reference beats inside a rhythm episode."""
    t = np.asarray([s / fs for s, y in zip(ann_s, sym) if y in BEATS])
    t = t[(t >= iv[0]) & (t < iv[1])]
    return 60.0 * (t.size - 1) / (t[-1] - t[0]) if t.size >= 2 and t[-1] > t[0] else 0.0


def _reference_alarms(rules_name: str, ann_s: np.ndarray, sym: list[str], fs: float, n: int,
                      vf: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Spans of the alarms the rule set raises on the reference beats and reference VF."""
    keep = [i for i, y in enumerate(sym) if y in BEATS]
    beats = np.asarray(ann_s)[keep]
    labels = ["V" if sym[i] in V_SYMBOLS else ("Q" if sym[i] in "Q?" else "N") for i in keep]
    block_s = 2.0
    nb = -(-n // int(block_s * fs))
    vf_blocks = np.zeros(nb, bool)
    for a, b in vf:
        vf_blocks[int(a // block_s):max(int(b // block_s) - 1, int(a // block_s) + 1)] = True
    rh = detect_rhythm(beats, labels, fs, n, np.zeros(nb, bool), block_s, vf_blocks)
    return [(al.start_s, al.end_s) for al in evaluate(load_rules(rules_name), rh) if al.severity == "critical"]


def _score(directory: Path, name: str, rules_name: str) -> RecordScore:
    import wfdb

    rec = read_recording(directory / name)
    ann = wfdb.rdann(str(directory / name), "atr")
    t0 = time.process_time()
    result = analyze(rec, rules=rules_name)
    cpu = time.process_time() - t0
    dur = rec.duration_s
    ref = _intervals(np.asarray(ann.sample), list(ann.symbol), list(ann.aux_note), rec.fs, dur)
    det: dict[str, list[tuple[float, float]]] = {}
    for e in result["rhythm"]:
        det.setdefault(e["label"], []).append((e["start_s"], e["end_s"]))
    af_ref, afl_ref = ref.get("(AFIB", []), ref.get("(AFL", [])
    af_det = det.get("af", [])
    in_afl = _overlap(af_det, afl_ref)
    afl_det = det.get("afl", [])
    av_ref = ref.get("(BII", []) + ref.get("(BIII", [])
    av_false = [e for e in result["rhythm"] if e["label"] == "av_block"
                and not any(c < e["end_s"] and d > e["start_s"] for c, d in av_ref)]
    vt_det = det.get("vt", []) + det.get("vf", [])
    vt_ref = ref.get("(VT", [])
    fast = [iv for iv in vt_ref if _ref_rate(np.asarray(ann.sample), list(ann.symbol), rec.fs, iv) > 100.0]
    ref_alarms = _reference_alarms(rules_name, np.asarray(ann.sample), list(ann.symbol), rec.fs, rec.n_samples,
                                   ref["VF"])
    critical = [a for a in result["alarms"] if a["severity"] == "critical"]
    false = [a for a in critical if not any(c - ALARM_MARGIN_S < a["end_s"] and d + ALARM_MARGIN_S > a["start_s"]
                                            for c, d in ref_alarms)]
    event_s = sum(b - a for a, b in _union([(max(a - ALARM_MARGIN_S, 0), min(b + ALARM_MARGIN_S, dur))
                                            for a, b in ref_alarms]))
    return RecordScore(name, dur / 3600, cpu, sum(b - a for a, b in af_ref), sum(b - a for a, b in af_det),
                       _overlap(af_det, af_ref), in_afl, sum(b - a for a, b in afl_ref),
                       sum(b - a for a, b in afl_det), _overlap(afl_det, afl_ref), len(av_false),
                       sum(1 for e in av_false if e["evidence"].get("degree") == 3), len(vt_ref),
                       _found(vt_ref, vt_det), len(fast), _found(fast, vt_det),
                       len(ref["VF"]), _found(ref["VF"], det.get("vf", [])), len(critical), len(false),
                       (dur - event_s) / 3600)


class _Int16File:
    """A 16-bit sample file read slice by slice (mV on access), like a streaming Holter reader:
    no signal-sized array and no memory map, so the resident set is the analysis's own."""

    def __init__(self, path: Path, n: int, n_leads: int, gain: float) -> None:
        self.path, self.shape, self.gain = path, (n, n_leads), gain

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        with open(self.path, "rb") as f:
            f.seek(start * self.shape[1] * 2)
            raw = np.fromfile(f, dtype="<i2", count=(stop - start) * self.shape[1])
        return raw.reshape(-1, self.shape[1]) / self.gain


def _holter_source(directory: Path, names: list[str], n: int, fs: float, n_leads: int):
    """Yield (start, samples) of a Holter of ``n`` samples built from the records end to end,
    resampled to ``fs``; a third lead (when asked) is lead 2 - lead 1."""
    from telediag.ecg.filters import resample

    total, i = 0, 0
    while total < n:
        x = resample(read_recording(directory / names[i % len(names)]).signals, 360.0, fs)
        x = x[:n - total]
        if n_leads == 3:
            x = np.column_stack([x, x[:, 1] - x[:, 0]])
        yield total, x
        total += x.shape[0]
        i += 1


def _holter(directory: Path, names: list[str], hours: float, fs: float, n_leads: int, stream: bool) -> int:
    """Time the whole analysis of a long Holter built from the records end to end, and its peak memory.

    Peak memory is the process's maximum resident set (``ru_maxrss``). Without ``stream`` it
    includes the recording itself (float64, as ``Recording`` holds it); with ``stream`` the
    signal stays in a 16-bit file read chunk by chunk (what a streaming reader does), through
    ``analyze_stream``.
    """
    import resource
    import tempfile

    from telediag.ecg.analysis import analyze_stream
    from telediag.ecg.recording import Recording

    n = int(hours * 3600 * fs)
    label = f"Holter {hours:.0f} h, {n_leads} leads at {fs:.0f} Hz ({n * n_leads * 8 / 2**20:.0f} MiB as float64)"
    if not stream:
        sig = np.empty((n, n_leads))          # filled in place: the build costs no second copy
        for start, x in _holter_source(directory, names, n, fs, n_leads):
            sig[start:start + x.shape[0]] = x
        rec = Recording(fs=fs, leads=("MLII", "V1", "V1-MLII")[:n_leads], signals=sig)
        del sig
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.process_time()
        result = analyze(rec, rules="holter")
        cpu = time.process_time() - t0
        where = "in memory (Recording, float64)"
    else:
        with tempfile.TemporaryDirectory(prefix="telediag-holter-") as tmp:
            path = Path(tmp) / "holter.i16"
            with open(path, "wb") as f:
                for _, x in _holter_source(directory, names, n, fs, n_leads):
                    np.clip(np.round(x * 200.0), -32768, 32767).astype("<i2").tofile(f)
            del x
            source = _Int16File(path, n, n_leads, 200.0)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            t0 = time.process_time()
            result = analyze_stream(source, fs, ("MLII", "V1", "V1-MLII")[:n_leads], rules="holter")
            cpu = time.process_time() - t0
        where = "streamed from a 16-bit file (analyze_stream)"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label}, {where}: {len(result['qrs'])} beats, {len(result['rhythm'])} episodes, "
          f"{len(result['alarms'])} alarms")
    print(f"  CPU {cpu:.1f} s = {hours * 3600 / cpu:.0f}x real time (one core); peak RSS {peak:.0f} MiB "
          f"(before the analysis {before:.0f} MiB)")
    return 0


def _pct(num: float, den: float) -> str:
    return f"{100 * num / den:7.2f}" if den > 0 else "    n/a"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``telediag bench rhythm``; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="telediag bench rhythm", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="directory with MIT-BIH records (.hea/.dat/.atr); default <shared data>/mitdb")
    parser.add_argument("--records", nargs="+", default=None, help="record names (default: RECORDS)")
    parser.add_argument("--holter-hours", type=float, default=None,
                        help="instead: time a Holter of this many hours built from the records end to end")
    parser.add_argument("--fs", type=float, default=250.0, help="sampling rate of that Holter (default 250)")
    parser.add_argument("--leads", type=int, choices=(2, 3), default=2, help="leads of that Holter")
    parser.add_argument("--stream", action="store_true",
                        help="read that Holter chunk by chunk from a 16-bit file instead of holding it in memory")
    parser.add_argument("--rules", nargs="+", default=["holter", "resting", "monitoring"],
                        help="rule sets whose false critical alarms are counted (the first also gives the table)")
    args = parser.parse_args(argv)
    shared = shared_data_dir()
    data = args.data or (shared / "mitdb" if shared else None)
    if data is None or not data.is_dir():
        print("MIT-BIH data directory not found; pass --data DIR or set TELEDIAG_SHARED_DATA", file=sys.stderr)
        return 2
    names = args.records or ((data / "RECORDS").read_text().split() if (data / "RECORDS").is_file()
                             else sorted(p.stem for p in data.glob("*.hea")))
    if args.holter_hours:
        return _holter(data, names, args.holter_hours, args.fs, args.leads, args.stream)
    try:
        by_rules = {r: [_score(data, n, r) for n in names] for r in args.rules}
    except (OSError, ValueError) as exc:
        print(f"cannot read records: {exc}", file=sys.stderr)
        return 2
    first = by_rules[args.rules[0]]
    total_h = sum(s.hours for s in first)
    print(f"Rhythm benchmark: {len(first)} MIT-BIH records, {total_h:.2f} h; settings global (chosen on these "
          "same DS1 records: AF on 201/203 vs the other 20, VF on 207) - this is a development-set result")
    print(f"\n== per record (rules {args.rules[0]!r}) ==")
    print(f"{'record':>6} {'AF ref s':>8} {'AF det s':>8} {'AF hit s':>8} {'in AFL s':>8} {'VT':>6} {'VF':>6} "
          f"{'AFL ref':>7} {'AFL det':>7} {'AVB':>4} {'crit':>5} {'false':>5} {'xRT':>7}")
    for s in first:
        print(f"{s.name:>6} {s.af_ref:8.0f} {s.af_det:8.0f} {s.af_hit:8.0f} {s.af_in_afl:8.0f} "
              f"{s.vt_found:>3}/{s.vt_ref:<2} {s.vf_found:>3}/{s.vf_ref:<2} {s.afl_ref:7.0f} {s.afl_det:7.0f} "
              f"{s.av_false:4d} {s.critical:5d} {s.false_critical:5d} "
              f"{s.hours * 3600 / max(s.cpu_s, 1e-9):7.0f}")
    af_ref = sum(s.af_ref for s in first)
    af_det = sum(s.af_det for s in first)
    af_hit = sum(s.af_hit for s in first)
    in_afl = sum(s.af_in_afl for s in first)
    non_af = sum(s.hours * 3600 for s in first) - af_ref - sum(s.af_in_afl for s in first)
    fp_time = af_det - af_hit - in_afl
    print("\n== Summary ==")
    print(f"{'measure':<58} {'ours':>8} {'target':>8}")
    print(f"{'AF duration Se %':<58} {_pct(af_hit, af_ref):>8} {'>= 95':>8}")
    print(f"{'AF duration +P % (AF time inside AFL not counted)':<58} {_pct(af_hit, af_det - in_afl):>8} {'>= 95':>8}")
    print(f"{'AF duration +P % (strict: AF inside AFL counted false)':<58} {_pct(af_hit, af_det):>8} {'':>8}")
    print(f"{'AF duration Sp % (non-AF time not labelled AF)':<58} {_pct(non_af - fp_time, non_af):>8} {'':>8}")
    afl_ref, afl_det, afl_hit = (sum(getattr(s, k) for s in first) for k in ("afl_ref", "afl_det", "afl_hit"))
    print(f"{f'AFL duration Se % (ref {afl_ref:.0f} s, ours {afl_det:.0f} s)':<58} {_pct(afl_hit, afl_ref):>8} {'':>8}")
    print(f"{'AFL duration +P %':<58} {_pct(afl_hit, afl_det):>8} {'':>8}")
    av_false, av_false_3 = sum(s.av_false for s in first), sum(s.av_false_3 for s in first)
    label = f"false AV-block episodes / 24 h ({av_false}, third-degree {av_false_3}, in {total_h:.1f} h)"
    print(f"{label:<58} {24 * av_false / max(total_h, 1e-9):8.2f} {'':>8}")
    vt_ref, vt_found = sum(s.vt_ref for s in first), sum(s.vt_found for s in first)
    vf_ref, vf_found = sum(s.vf_ref for s in first), sum(s.vf_found for s in first)
    fast_ref, fast_found = sum(s.vt_fast_ref for s in first), sum(s.vt_fast_found for s in first)
    print(f"{f'VT episode Se %, all reference (VT ({vt_found}/{vt_ref})':<58} {_pct(vt_found, vt_ref):>8} {'>= 90':>8}")
    print(f"{f'VT episode Se %, reference rate > 100 /min ({fast_found}/{fast_ref})':<58} "
          f"{_pct(fast_found, fast_ref):>8} {'>= 90':>8}")
    print(f"{f'VF/VFL episode Se % ({vf_found}/{vf_ref})':<58} {_pct(vf_found, vf_ref):>8} {'>= 90':>8}")
    for r, scores in by_rules.items():
        free = sum(s.event_free_h for s in scores)
        nfalse = sum(s.false_critical for s in scores)
        label = f"false critical alarms / 24 h event-free ({r}: {nfalse} in {free:.1f} h)"
        print(f"{label:<58} {24 * nfalse / max(free, 1e-9):8.2f} {'< 1':>8}")
    cpu = sum(s.cpu_s for s in first)
    print(f"{'whole analysis, x real time (one core)':<58} {total_h * 3600 / max(cpu, 1e-9):8.0f} {'>= 5000':>8}")
    print("\n== Published anchors (not measured here; different database) ==")
    print(f"{'method':<66} {'Se %':>6} {'Sp/+P %':>10}")
    for name, se, sp in PUBLISHED:
        print(f"{name:<66} {se:>6} {sp:>10}")
    print("ours above is on MIT-BIH DS1 (AF in 2 records only, 201 and 203), not on the AF database.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
