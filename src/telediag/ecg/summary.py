"""One-line, human-readable summaries of an ECG analysis (for the shell and the demo)."""

from __future__ import annotations

from collections import Counter
from typing import Any


def describe_analysis(result: dict[str, Any]) -> str:
    """E.g. ``12 leads at 500 Hz, 10.0 s, 11 QRS (N 10, V 1), HR 66/min, findings: none``."""
    hr = result.get("heart_rate_bpm")
    classes = Counter(result.get("beats") or [])
    beats = ", ".join(f"{label} {count}" for label, count in sorted(classes.items()))
    findings = ", ".join(str(f.get("code", f)) for f in result.get("findings") or []) or "none"
    text = (f"{len(result.get('leads', []))} leads at {result.get('fs', 0):g} Hz, {result.get('duration_s', 0):.1f} s, "
            f"{len(result.get('qrs', []))} QRS{f' ({beats})' if beats else ''}, "
            f"HR {'-' if hr is None else f'{hr:.0f}/min'}")
    m = result.get("measurements")
    if m:
        parts = [f"{name.split('_')[0].upper()} {m[name]:.0f}" for name in ("pr_ms", "qrs_ms", "qt_ms")
                 if m.get(name) is not None]
        if m.get("qtc_bazett_ms") is not None:
            parts.append(f"QTc {m['qtc_bazett_ms']:.0f}")
        if parts:
            text += ", " + " ".join(parts) + " ms"
    return f"{text}, findings: {findings}"

