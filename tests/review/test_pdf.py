"""The signed report PDF: read back with pypdf (text, embedded CJK font, the ECG drawn on its grid)."""

from __future__ import annotations

import io
import logging
import os
import re
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from pypdf import PdfReader

from factories import FS, LEADS, synthetic_ecg_uv
from telediag.ecg import Recording, read_recording
from telediag.review import pdf as report_pdf
from telediag.review.pdf import ReportDocument, find_cjk_font, render_report_pdf
from telediag.review.statements import statement

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
DIGEST = "3f" * 32
SIGNATURE = "q" * 86 + "=="
CONCLUSION = "窦性心律，下壁导联ST段抬高，建议立即转诊上级医院。"


def document(**changes: Any) -> ReportDocument:
    doc = ReportDocument(
        site_name="青山镇卫生院", center_name="东阳县心电诊断中心", case_id=42, exam_kind="ecg",
        received_at=datetime(2026, 12, 2, 13, 59, 1, tzinfo=timezone.utc), patient_key="P-000123",
        patient_name="张三", patient_sex="M", patient_birth_date="19700101",
        statements=tuple(statement(c) for c in ("SR", "AVB1", "STEMI_INF")), conclusion=CONCLUSION,
        measurements={"heart_rate_bpm": 61.1, "pr_ms": 212.0, "qrs_ms": 67.0, "qt_ms": 379.0, "qtc_ms": 382.3,
                      "p_axis_deg": 76.1, "qrs_axis_deg": 49.3, "t_axis_deg": None},
        version=1, replaces=None, signed_by="李医生", signed_at=datetime(2026, 12, 2, 14, 5, 9, tzinfo=timezone.utc),
        sha256=DIGEST, signature=SIGNATURE)
    return replace(doc, **changes)


def text_of(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def content_of(data: bytes) -> bytes:
    return PdfReader(io.BytesIO(data)).pages[0].get_contents().get_data()


def path_operators(data: bytes) -> int:
    """Line-to operators on page 1: grid lines and trace points."""
    return len(re.findall(rb"\s[lm]\s", content_of(data)))


def embedded_fonts(data: bytes) -> list[str]:
    """BaseFont names of page 1's fonts that carry an embedded font program."""
    names = []
    for font in PdfReader(io.BytesIO(data)).pages[0]["/Resources"]["/Font"].values():
        font = font.get_object()
        for part in [font] + [d.get_object() for d in font.get("/DescendantFonts", [])]:
            descriptor = part.get("/FontDescriptor")
            if descriptor is not None and any(k in descriptor.get_object() for k in ("/FontFile2", "/FontFile3")):
                names.append(str(font["/BaseFont"]))
    return names


@pytest.fixture(scope="module")
def cjk() -> None:
    """The CJK font must be there in CI (.ci/run installs fonts-wqy-microhei); elsewhere skip."""
    if find_cjk_font() is None:
        if os.environ.get("CI"):
            pytest.fail("no CJK font found: .ci/run must install fonts-wqy-microhei")
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-microhei)")


@pytest.fixture
def no_cjk_font(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine without a CJK font: nothing in the font folders, the variable naming a missing file."""
    monkeypatch.setattr(report_pdf, "_font_dirs", lambda: [])
    monkeypatch.setenv(report_pdf.FONT_ENV, "/nonexistent/font.ttf")
    find_cjk_font.cache_clear()
    yield
    find_cjk_font.cache_clear()


def twelve_lead() -> Recording:
    return read_recording(SAMPLE / "dicom" / "waveform_ecg.dcm")


def test_twelve_lead_report(cjk: None) -> None:
    rec = twelve_lead()
    doc = document()
    render_report_pdf(doc, rec)                 # the first render of a process also loads fpdf2's modules
    start = time.perf_counter()
    data = render_report_pdf(doc, rec)
    elapsed = time.perf_counter() - start
    print(f"\n12-lead report: rendered in {elapsed:.3f} s, {len(data) / 1024:.0f} KiB")
    assert data.startswith(b"%PDF-")
    text = text_of(data)
    for expected in ("P-000123", "张三", "窦性心律", "一度房室传导阻滞", "急性下壁ST段抬高型心肌梗死", "Sinus rhythm",
                     CONCLUSION, DIGEST, SIGNATURE, "李医生", "东阳县心电诊断中心", "青山镇卫生院", "心电图诊断报告"):
        assert expected in text, expected
    # UTC and China Standard Time; measurements present (T axis None is left out); age at the exam.
    assert "2026-12-02 14:05:09 UTC" in text and "2026-12-02 22:05:09 CST" in text
    assert "PR 212 ms" in text and "QTc 382 ms" in text and "QRS axis 49°" in text and "T axis" not in text
    assert "1970-01-01 (56" in text
    assert "replaces" not in text
    # The ECG: 12 leads plus the rhythm strip labelled, the paper settings, grid and traces drawn.
    for lead in LEADS:
        assert re.search(rf"^{lead}$", text, re.M), lead
    assert "25 mm/s" in text and "10 mm/mV" in text
    assert path_operators(data) > 3000
    assert any("WenQuanYi" in name or "CJK" in name or "Hei" in name for name in embedded_fonts(data))
    assert len(data) < 250_000                  # the font is a subset


def test_rendering_is_repeatable(cjk: None) -> None:
    rec = twelve_lead()
    assert render_report_pdf(document(), rec) == render_report_pdf(document(), rec)


def test_amendment_names_the_version_it_replaces(cjk: None) -> None:
    text = text_of(render_report_pdf(document(version=3, replaces=2), twelve_lead()))
    assert "3" in text and "替代版本 replaces version 2" in text


def test_three_lead_strips_with_a_gap(cjk: None) -> None:
    uv = synthetic_ecg_uv(seconds=60.0)[:, [1, 6, 10]]
    signals = uv.astype(np.float64) / 1000.0
    signals[2000:2600, 0] = np.nan                  # a lead-off stretch stays a gap
    rec = Recording(FS, ("II", "V1", "V5"), signals)
    data = render_report_pdf(document(), rec)
    text = text_of(data)
    assert all(re.search(rf"^{lead}$", text, re.M) for lead in ("II", "V1", "V5"))
    assert "0-10.0 s of 60.0 s" in text
    assert path_operators(data) > 1500


def test_many_nonstandard_leads_are_capped(cjk: None) -> None:
    names = tuple(f"C{k}" for k in range(10))
    rec = Recording(FS, names, np.zeros((2500, 10)))
    text = text_of(render_report_pdf(document(), rec))
    assert "8 of 10 leads" in text and "C7" in text and "C8" not in text


def test_extra_leads_beside_the_twelve(cjk: None) -> None:
    uv = synthetic_ecg_uv()
    rec = Recording(FS, LEADS + ("V7",), np.column_stack([uv, uv[:, -1]]).astype(np.float64) / 1000.0)
    text = text_of(render_report_pdf(document(), rec))
    assert "12 of 13 leads" in text and "V6" in text and "V7" not in text


def test_imaging_report_without_recording(cjk: None) -> None:
    doc = document(exam_kind="imaging", statements=(), measurements={}, conclusion="右下肺野斑片影，建议复查。")
    data = render_report_pdf(doc, None)
    text = text_of(data)
    assert "影像诊断报告" in text and "右下肺野斑片影，建议复查。" in text and DIGEST in text
    assert "mm/s" not in text


def test_ecg_case_without_waveform(cjk: None) -> None:
    text = text_of(render_report_pdf(document(), None))
    assert "波形不可用 Waveform not available" in text and "窦性心律" in text


def test_long_conclusion_continues_on_a_second_page(cjk: None) -> None:
    data = render_report_pdf(document(conclusion="心电图改变需结合临床。" * 200), twelve_lead())
    assert len(PdfReader(io.BytesIO(data)).pages) >= 2
    assert DIGEST in text_of(data)


def test_font_named_by_the_variable(cjk: None, monkeypatch: pytest.MonkeyPatch) -> None:
    found = find_cjk_font()
    monkeypatch.setenv(report_pdf.FONT_ENV, str(found.path))
    monkeypatch.setattr(report_pdf, "_font_dirs", lambda: [])
    find_cjk_font.cache_clear()
    try:
        assert find_cjk_font() == report_pdf.CjkFont(found.path)
    finally:
        find_cjk_font.cache_clear()


def test_without_cjk_font_english_only(no_cjk_font: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="telediag.review.pdf"):
        first = render_report_pdf(document(), twelve_lead())
        render_report_pdf(document(exam_kind="imaging"), None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2                       # the variable's file, then no font: once per process
    assert "no CJK font found" in warnings[1].getMessage()
    text = text_of(first)
    assert "Sinus rhythm" in text and "First-degree AV block" in text and "P-000123" in text
    assert DIGEST in text and SIGNATURE in text and "ECG report" in text
    assert not re.search(r"[\u4e00-\u9fff]", text)
    assert embedded_fonts(first) == []
    assert path_operators(first) > 3000
