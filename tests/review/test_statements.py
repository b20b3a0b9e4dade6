"""The statement catalogue and the proposals pre-filled from the automated analysis."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from telediag.ecg import read_recording
from telediag.ecg.analysis import analyze
from telediag.review.statements import CATEGORIES, STATEMENTS, propose, statement, unknown_codes

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
HAN = re.compile(r"[\u4e00-\u9fff]")


def stored(path: Path) -> dict[str, Any]:
    """The analysis of a sample file as the worker stores it (JSON round trip)."""
    return json.loads(json.dumps(analyze(read_recording(path))))


# --------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------

def test_codes_are_unique_and_well_formed() -> None:
    codes = [s.code for s in STATEMENTS]
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", c) for c in codes)
    assert 80 <= len(codes) <= 130


def test_every_category_is_known_and_used() -> None:
    keys = [c.key for c in CATEGORIES]
    assert len(keys) == len(set(keys)) == 14
    assert {s.category for s in STATEMENTS} == set(keys)
    assert [c.aha for c in CATEGORIES] == list("ABCDEFGHIJKLMN")
    assert all(HAN.search(c.zh) for c in CATEGORIES)


def test_texts_are_english_and_chinese() -> None:
    for s in STATEMENTS:
        assert s.en.strip() and s.en.isascii(), s
        assert s.zh.strip() and HAN.search(s.zh), s


def test_standard_chinese_terms() -> None:
    assert statement("SR").zh == "窦性心律"
    assert statement("AFIB").zh == "心房颤动"
    assert statement("AVB1").zh == "一度房室传导阻滞"
    assert statement("STEMI_INF").category == "infarction"


def test_unknown_code_raises_and_is_listed() -> None:
    with pytest.raises(KeyError):
        statement("NOPE")
    assert unknown_codes(["SR", "AFIB"]) == []
    assert unknown_codes(["SR", "NOPE", "NOPE", 5, "sr"]) == ["NOPE", "5", "sr"]


# --------------------------------------------------------------------------
# Proposals on real analysis results
# --------------------------------------------------------------------------

def test_propose_normal_twelve_lead() -> None:
    # Mortara 12-lead, sinus 61 /min, PR 158, QRS 67, QTc 382, axis 49: nothing but the rhythm.
    assert propose(stored(SAMPLE / "dicom" / "waveform_ecg.dcm")) == ["SR"]


def test_propose_inferior_stemi() -> None:
    # Philips 12-lead, sinus 41 /min with ST elevation in II, III, aVF (the cart: acute inferior MI).
    assert propose(stored(SAMPLE / "ecg-formats" / "philips-xml" / "129DYPRG.XML")) == ["SBRAD", "STEMI_INF", "ABN"]


def test_propose_ventricular_ectopy() -> None:
    # MIT-BIH 119 excerpt: sinus rhythm with trigeminal PVCs, two leads (no 12-lead measurements).
    assert propose(stored(SAMPLE / "wfdb" / "mitdb119_300s")) == ["SR", "PVC", "PVC_TRIGEMINY", "ABN"]


@pytest.mark.parametrize("findings", [{}, None, {"modality": "CT", "findings": []}, "not a dict",
                                      {"rhythm": "x", "alarms": {"a": 1}, "beats": 3, "measurements": [1],
                                       "quality": None},
                                      {"rhythm": [{"label": ["x"]}, 7], "alarms": [{"type": {}}, None]}])
def test_propose_without_ecg_findings(findings: Any) -> None:
    assert propose(findings) == []


# --------------------------------------------------------------------------
# Proposal rules (stored results built by hand)
# --------------------------------------------------------------------------

def episode(label: str, start: float, end: float, rate: float | None = None) -> dict[str, Any]:
    evidence = {"beats": 10} | ({"rate_bpm": rate} if rate is not None else {})
    return {"label": label, "start_s": start, "end_s": end, "evidence": evidence}


def sinus(rate: float = 72.0, **measurements: Any) -> dict[str, Any]:
    return {"rhythm": [episode("sinus", 0.0, 10.0, rate)], "measurements": measurements or None}


@pytest.mark.parametrize("rate, code", [(59.9, "SBRAD"), (60.0, "SR"), (100.0, "SR"), (100.1, "STACH")])
def test_sinus_rate_thresholds(rate: float, code: str) -> None:
    assert propose(sinus(rate))[0] == code


def test_sinus_family_is_one_statement_by_weighted_rate() -> None:
    findings = {"rhythm": [episode("sinus_bradycardia", 0, 2, 58.0), episode("sinus", 2, 10, 64.0)]}
    assert propose(findings) == ["SR"]
    # Without rates: the longest sinus label.
    findings = {"rhythm": [{"label": "sinus_tachycardia", "start_s": 0, "end_s": 8}, {"label": "sinus"}]}
    assert propose(findings) == ["STACH"]


@pytest.mark.parametrize("measurements, expected", [
    ({"pr_ms": 210.0}, ["AVB1"]), ({"pr_ms": 200.0}, []), ({"pr_ms": 110.0}, ["SHORT_PR"]),
    ({"qrs_ms": 120.0}, ["WIDE_QRS"]), ({"qrs_ms": 119.0}, []), ({"qrs_ms": 150.0, "paced": True}, ["PACED"]),
    ({"qtc_ms": 475.0}, ["LQT"]), ({"qtc_ms": 470.0}, []), ({"qtc_ms": 330.0}, ["SQT"]),
    ({"qrs_axis_deg": -30.0}, []), ({"qrs_axis_deg": -45.0}, ["LAD"]), ({"qrs_axis_deg": -90.0}, ["LAD"]),
    ({"qrs_axis_deg": 90.0}, []), ({"qrs_axis_deg": 120.0}, ["RAD"]), ({"qrs_axis_deg": 180.0}, ["RAD"]),
    ({"qrs_axis_deg": -120.0}, ["RSA"]), ({"pr_ms": None, "qrs_ms": "wide", "qtc_ms": float("nan")}, []),
])
def test_measurement_thresholds(measurements: dict[str, Any], expected: list[str]) -> None:
    assert propose(sinus(**measurements)) == ["SR", *expected] + (["ABN"] if expected else [])


def test_qtc_limit_by_sex() -> None:
    assert "LQT" in propose(sinus(qtc_ms=475.0), sex="M")
    assert "LQT" not in propose(sinus(qtc_ms=475.0), sex="F")
    assert "LQT" in propose(sinus(qtc_ms=481.0), sex="f")


def test_cart_measurements_when_ours_are_missing() -> None:
    findings = sinus() | {"device_measurements": {"pr_ms": 240.0}}
    assert propose(findings) == ["SR", "AVB1", "ABN"]


def test_rhythm_events_and_alarms() -> None:
    findings = {
        "rhythm": [episode("af", 0, 60, 130.0), episode("vt", 60, 65), episode("af", 65, 600),
                   episode("pause", 600, 603), episode("unreadable", 603, 610)],
        "beats": list("NNNNVNNNNNVVNNNN"),
        "alarms": [{"type": "af_rapid", "evidence": {"rate_bpm": 210.0}}, {"type": "extreme_tachycardia"},
                   {"type": "long_qtc_r_on_t", "evidence": {"qtc_ms": 560.0, "coupling_ms": 300.0}},
                   {"type": "future_alarm_type"}],
        "measurements": {"pr_ms": 250.0},      # no PR statement in AF
    }
    assert propose(findings) == ["AFIB_RVR", "PAUSE", "PVC", "PVC_COUPLET", "PVC_R_ON_T", "NSVT", "LQT", "ABN"]


def test_sustained_and_polymorphic_vt() -> None:
    assert propose({"rhythm": [episode("vt", 0, 35)]}) == ["VT", "ABN"]
    assert propose({"alarms": [{"type": "ventricular_tachycardia", "evidence": {"duration_s": 31.0}}],
                    "rhythm": [episode("vt", 0, 5)]}) == ["VT", "ABN"]
    assert propose({"alarms": [{"type": "polymorphic_vt"}], "rhythm": [episode("vt", 0, 40)]}) == ["VT_POLY", "ABN"]


def test_bigeminy_but_not_a_ventricular_rhythm() -> None:
    assert "PVC_BIGEMINY" in propose({"beats": list("NNVNVNVNN")})
    assert propose({"beats": list("VVVVVNV")}) == []


@pytest.mark.parametrize("leads, codes", [
    (["II", "III", "aVF"], ["STEMI_INF"]),
    (["V1", "V2", "V3"], ["STEMI_ANTSEP"]),
    (["V3", "V4"], ["STEMI_ANT"]),
    (["V1", "V2", "V3", "V4", "V5", "I", "aVL"], ["STEMI_EXTANT", "STEMI_LAT"]),
    (["V5", "V6"], ["STEMI_LAT"]),
    (["II", "III", "aVF", "V5", "V6"], ["STEMI_INF", "STEMI_LAT"]),
    ([], ["STEMI"]),
])
def test_stemi_location(leads: list[str], codes: list[str]) -> None:
    assert propose({"alarms": [{"type": "stemi", "evidence": {"leads": leads}}]}) == codes + ["ABN"]


def test_quality() -> None:
    assert propose(sinus() | {"quality": {"unreadable_fraction": 1.0}}) == ["UNINT"]
    assert propose(sinus() | {"quality": {"unreadable_fraction": 0.3}}) == ["SR", "POOR_QUALITY"]
    assert propose(sinus() | {"quality": {"unreadable_fraction": 0.1}}) == ["SR"]


def test_order_follows_the_report() -> None:
    findings = {"rhythm": [episode("sinus", 0, 10, 55.0)], "alarms": [{"type": "hyperkalaemia"}],
                "measurements": {"qrs_ms": 130.0, "pr_ms": 230.0, "qrs_axis_deg": 100.0, "qtc_ms": 500.0}}
    assert propose(findings) == ["SBRAD", "AVB1", "WIDE_QRS", "RAD", "LQT", "HYPERK", "ABN"]
