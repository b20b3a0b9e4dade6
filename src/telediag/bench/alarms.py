"""``telediag bench alarms``: ICU false-alarm benchmark on the PhysioNet/CinC 2015 challenge records.

Each record holds a bedside-monitor alarm at 300 s, judged true or false by
experts. We run the whole ``analyze`` with the ``monitoring`` rules (ECG plus
the ABP/PLETH channels the reader keeps) on the signal up to the alarm
(real-time variant: nothing after 300 s is used) and call the alarm true
when one of our alarms of the same type overlaps the judging window
``[300 - WINDOW_S, 300]`` s, as the challenge does. Score per type and
overall: (TP + TN) / (TP + TN + FP + 5 FN).

The 240 records are split by alphabetical position into a design half (even
positions) and a held-out half (odd positions); both are printed. Global
settings only; the thresholds of the rhythm stage were set on MIT-BIH DS1 and
on the design half of these records, from definitions and physiology (VT rate
and ectopic-timing bounds, the VF band); the ``monitoring`` rule set confirms
bradycardia, tachycardia and VT with the margins of the MIT-LCP reference
false-alarm algorithm (see ``ecg/rules/monitoring.toml``), not with values
fitted here.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from telediag.bench.refdata import shared_data_dir
from telediag.ecg import read_recording
from telediag.ecg.analysis import analyze
from telediag.ecg.recording import Recording

__all__ = ["main"]

ALARM_AT_S = 300.0
WINDOW_S = 16.0
TYPES = {  # challenge alarm type -> our alarm type
    "Asystole": "asystole",
    "Bradycardia": "extreme_bradycardia",
    "Tachycardia": "extreme_tachycardia",
    "Ventricular_Tachycardia": "ventricular_tachycardia",
    "Ventricular_Flutter_Fib": "ventricular_fibrillation",
}
PUBLISHED = [("bedside monitor (every alarm true)", None), ("challenge winner, real-time (event 1)", 81.39),
             ("challenge winner, retrospective (event 2)", 85.04)]


@dataclass
class Outcome:
    record: str
    kind: str
    truth: bool
    ours: bool
    cpu_s: float
    seconds: float


def _truncate(rec: Recording, end_s: float) -> Recording:
    n = min(int(round(end_s * rec.fs)), rec.n_samples)
    pulsatile = {k: (pfs, x[:int(round(end_s * pfs))]) for k, (pfs, x) in rec.pulsatile.items()}
    return Recording(fs=rec.fs, leads=rec.leads, signals=rec.signals[:n], start_time=rec.start_time,
                     source=rec.source, pulsatile=pulsatile)


def _judge(directory: Path, name: str, kind: str, truth: bool, rules: str) -> Outcome:
    rec = _truncate(read_recording(directory / name), ALARM_AT_S)
    t0 = time.process_time()
    result = analyze(rec, rules=rules)
    cpu = time.process_time() - t0
    ours = any(a["type"] == TYPES[kind] and a["end_s"] >= ALARM_AT_S - WINDOW_S and a["start_s"] <= ALARM_AT_S
               for a in result["alarms"])
    return Outcome(name, kind, truth, ours, cpu, rec.duration_s)


def _score(rows: list[Outcome], every_true: bool = False) -> tuple[float | None, int, int, int, int]:
    tp = sum(r.truth and (every_true or r.ours) for r in rows)
    fn = sum(r.truth and not (every_true or r.ours) for r in rows)
    fp = sum((not r.truth) and (every_true or r.ours) for r in rows)
    tn = sum((not r.truth) and not (every_true or r.ours) for r in rows)
    den = tp + tn + fp + 5 * fn
    return (100.0 * (tp + tn) / den if den else None), tp, fn, fp, tn


def _fmt(v: float | None) -> str:
    return f"{v:6.2f}" if v is not None else "   n/a"


def _row(label: str, rows: list[Outcome]) -> None:
    """One line of the table: counts, true-alarm sensitivity, our score and the monitor's."""
    score, tp, fn, fp, tn = _score(rows)
    base = _score(rows, every_true=True)[0]
    se = f"{100.0 * tp / (tp + fn):14.1f}" if tp + fn else f"{'n/a':>14}"
    print(f"{label:<25} {len(rows):4d} {tp + fn:5d} {tp:4d} {fn:4d} {fp:4d} {tn:4d} {se} {_fmt(score)} "
          f"{_fmt(base):>8}")


def _table(title: str, rows: list[Outcome]) -> None:
    print(f"\n== {title}: {len(rows)} records ==")
    print(f"{'alarm type':<25} {'n':>4} {'true':>5} {'TP':>4} {'FN':>4} {'FP':>4} {'TN':>4} "
          f"{'true-alarm Se%':>14} {'score':>6} {'monitor':>8}")
    for kind in TYPES:
        sub = [r for r in rows if r.kind == kind]
        if sub:
            _row(kind, sub)
    _row("overall", rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``telediag bench alarms``; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="telediag bench alarms", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="challenge directory (.hea/.mat, ALARMS); default <shared data>/alarms/challenge-2015")
    parser.add_argument("--rules", default="monitoring", help="rule set name or rules file (default monitoring)")
    parser.add_argument("--show", action="store_true", help="list every misjudged record")
    args = parser.parse_args(argv)
    shared = shared_data_dir()
    data = args.data or (shared / "alarms" / "challenge-2015" if shared else None)
    if data is None or not (data / "ALARMS").is_file():
        print("challenge data not found; pass --data DIR or set TELEDIAG_SHARED_DATA", file=sys.stderr)
        return 2
    entries = []
    for line in (data / "ALARMS").read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1] in TYPES and parts[2] in ("0", "1"):
            entries.append((parts[0], parts[1], parts[2] == "1"))
    entries.sort()
    try:
        rows = [_judge(data, name, kind, truth, args.rules) for name, kind, truth in entries]
    except (OSError, ValueError) as exc:
        print(f"cannot read records: {exc}", file=sys.stderr)
        return 2
    design = [r for i, r in enumerate(rows) if i % 2 == 0]
    held = [r for i, r in enumerate(rows) if i % 2 == 1]
    print(f"Alarm benchmark: PhysioNet/CinC 2015 training subset, rules {args.rules!r}, judged on "
          f"[{ALARM_AT_S - WINDOW_S:.0f}, {ALARM_AT_S:.0f}] s with signal up to the alarm only (real-time)")
    _table("all records", rows)
    _table("design half (even alphabetical positions; looked at while designing)", design)
    _table("held-out half (odd positions)", held)
    print(f"\n{'reference':<45} {'score':>6}")
    for name, value in PUBLISHED:
        print(f"{name:<45} {_fmt(value if value is not None else _score(rows, every_true=True)[0])}")
    print(f"{'telediag (ours), all 240':<45} {_fmt(_score(rows)[0])}")
    cpu = sum(r.cpu_s for r in rows)
    sig = sum(r.seconds for r in rows)
    print(f"\nCPU {cpu:.2f} s for {sig / 3600:.1f} h of records: {sig / max(cpu, 1e-9):.0f}x real time; "
          f"per 5-min record {1000 * cpu / max(len(rows), 1):.0f} ms")
    if args.show:
        print("\nmisjudged: " + ", ".join(f"{r.record}({'T' if r.truth else 'F'})" for r in rows
                                           if r.truth != r.ours))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
