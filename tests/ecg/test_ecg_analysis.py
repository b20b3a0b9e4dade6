"""analyze(): the JSON contract shared by the CLI and the worker, and 12-lead measurements vs the cart."""

from __future__ import annotations

import json

import pytest

from telediag.ecg import read_recording
from telediag.ecg.analysis import analyze
from telediag.bench.refdata import project_root, shared_data_dir

KEYS = {"analyzer_version", "fs", "leads", "duration_s", "start_time", "qrs", "beats", "heart_rate_bpm",
        "rr_ms", "quality", "measurements", "findings"}


def test_contract_on_sample_record() -> None:
    result = analyze(read_recording(project_root() / "sample_data" / "wfdb" / "mitdb101_600s"))
    assert KEYS <= set(result)
    json.loads(json.dumps(result))  # JSON-serialisable, no numpy scalars
    assert result["fs"] == 360.0 and result["leads"] == ["MLII", "V1"]
    assert len(result["qrs"]) == len(result["beats"]) == 59
    assert set(result["beats"]) <= {"N", "V", "Q"}
    assert result["measurements"] is None  # not a 12-lead record
    assert result["findings"] == []
    assert 57 <= result["heart_rate_bpm"] <= 62
    assert result["quality"]["unreadable_windows"] == []


def test_twelve_lead_measurements_near_cart() -> None:
    shared = shared_data_dir()
    path = shared / "dicom" / "waveform_ecg.dcm" if shared else None
    if path is None or not path.is_file():
        pytest.skip("DICOM reference data not available")
    result = analyze(read_recording(path))
    json.dumps(result)
    m = result["measurements"]
    # The cart's own values (WaveformAnnotationSequence): RR 982, PR 161, QRS 75, QT 368, QTc 370, axis 52.
    assert m["rr_ms"] == pytest.approx(982, abs=10)
    assert m["pr_ms"] == pytest.approx(161, abs=20)
    assert m["qrs_ms"] == pytest.approx(75, abs=15)
    assert m["qt_ms"] == pytest.approx(368, abs=25)
    assert m["qtc_bazett_ms"] == pytest.approx(370, abs=25)
    assert m["qrs_axis_deg"] == pytest.approx(52, abs=15)
    assert len(result["qrs"]) == 10 and set(result["beats"]) == {"N"}
