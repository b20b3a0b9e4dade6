"""Commands that need no server: ``analyze``, ``demo`` and ``bench``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from telediag.cli.common import data_dir_option, port_options, settings_from

#: benchmark name -> module under telediag.bench with a ``main(argv)``
BENCHMARKS = {"ingest": "ingest", "qrs": "qrs", "measure": "measure", "rhythm": "rhythm", "alarms": "alarms",
              "imaging": "imaging", "push": "push", "review": "review", "dicomweb": "dicomweb"}


def cmd_analyze(args: argparse.Namespace) -> int:
    from telediag.ecg import WaveformError, read_recording
    from telediag.ecg.analysis import analyze
    from telediag.ecg.rules import RulesError

    try:
        result = analyze(read_recording(args.path), rules=args.rules)
    except (WaveformError, RulesError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        from telediag.ecg.summary import describe_analysis

        print(f"{args.path}: {describe_analysis(result)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from telediag.cli.demo import run_demo

    return run_demo(settings_from(args), Path(args.samples), serve=not args.no_serve)


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"telediag.bench.{BENCHMARKS[args.what]}")
    return module.main(args.rest)


def _default_samples() -> str:
    """``sample_data`` of the checkout (the package's source tree), or of the working folder."""
    checkout = Path(__file__).resolve().parents[3] / "sample_data"
    return str(checkout if checkout.is_dir() else Path("sample_data"))


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="play a township device sending sample_data/ to the system")
    data_dir_option(p), port_options(p)
    p.add_argument("--samples", default=_default_samples())
    p.add_argument("--no-serve", action="store_true",
                   help="stop at the end (by default a demo that started telediag itself keeps serving it)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("analyze", help="analyse one ECG file: WFDB, DICOM, SCP-ECG, HL7 aECG, GE MUSE or "
                                       "Philips XML (no server needed)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--rules", default="resting", help="critical-value rules: resting (default), holter, monitoring, "
                                                      "or a rules file (TOML)")
    p.set_defaults(func=cmd_analyze, quiet_logging=True)

    p = sub.add_parser("bench", help="benchmarks: " + ", ".join(BENCHMARKS))
    p.add_argument("what", choices=list(BENCHMARKS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (see telediag bench X --help)")
    p.set_defaults(func=cmd_bench)
