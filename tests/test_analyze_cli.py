"""``telediag analyze FILE --json [--rules SET]``: any format, the cart's values, rhythm and alarms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import wfdb

from conftest import SAMPLE_DATA


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telediag.cli", "analyze", *args], capture_output=True, text=True,
                          timeout=120)


def _record_with_pause(folder: Path, pause_s: float) -> Path:
    """Two leads of regular beats at 60 /min with one beat-free gap of ``pause_s`` seconds."""
    fs, seconds = 250, 30
    t = np.arange(fs * seconds) / fs
    beats = [b for b in np.arange(1.0, seconds - 1, 1.0) if not 12.0 < b < 12.0 + pause_s]
    signal = np.zeros_like(t)
    for b in beats:
        signal += 1.2 * np.exp(-0.5 * ((t - b) / 0.012) ** 2) + 0.25 * np.exp(-0.5 * ((t - b - 0.25) / 0.05) ** 2)
    signal += 0.01 * np.random.default_rng(1).standard_normal(t.size)
    wfdb.wrsamp("pause", fs=fs, units=["mV", "mV"], sig_name=["II", "V1"],
                p_signal=np.column_stack([signal, 0.6 * signal]),
                fmt=["16", "16"], write_dir=str(folder))
    return folder / "pause"


def test_every_format_and_the_carts_values(tmp_path: Path) -> None:
    out = _analyze(str(SAMPLE_DATA / "ecg-formats" / "philips-xml" / "129DYPRG.XML"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["format"] == "philips-xml" and len(result["leads"]) == 12
    assert set(result["device_measurements"]) >= {"pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "qrs_axis_deg"}
    assert set(result["measurements"]) >= set(result["device_measurements"])
    assert isinstance(result["rhythm"], list) and isinstance(result["alarms"], list)


def test_a_pause_is_a_critical_alarm_and_rules_are_chosen_by_name(tmp_path: Path) -> None:
    record = _record_with_pause(tmp_path, 4.0)
    resting = json.loads(_analyze(str(record), "--json").stdout)
    pauses = [a for a in resting["alarms"] if a["type"] in ("pause", "asystole")]
    assert pauses and pauses[0]["severity"] == "critical" and pauses[0]["text_zh"]
    assert 12.0 <= pauses[0]["start_s"] <= 13.5
    # The monitoring set calls for 4 s without a QRS (asystole); the holter set for one pause >= 4.0 s.
    holter = json.loads(_analyze(str(record), "--json", "--rules", "holter").stdout)
    assert [a["type"] for a in holter["alarms"]] and holter["alarms"][0]["evidence"]


def test_an_unknown_rule_set_is_a_clear_error(tmp_path: Path) -> None:
    out = _analyze(str(SAMPLE_DATA / "wfdb" / "mitdb119_300s"), "--rules", "nosuch")
    assert out.returncode == 2 and "nosuch" in out.stderr
