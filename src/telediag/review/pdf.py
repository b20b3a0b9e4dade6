"""The signed report as PDF: header, patient, measurements, the ECG on paper (an imaging study's
thumbnail), statements, findings, conclusion (impression), signature.

Why a PDF at all: township clinics print the report for the patient and file it,
and a county reader's signature must survive printing and forwarding. So the page
shows what was signed (statements, conclusion, measurements, version) together
with the digest and the reader's signature (Ed25519 or SM2), and the ECG as a cardiologist expects
it on paper: 25 mm/s, 10 mm/mV on a 1 mm / 5 mm grid with a 1 mV calibration pulse,
the 12 leads in the 3 x 4 layout of 2.5 s per column plus a 10-s lead II rhythm
strip; other lead sets as stacked strips of up to 10 s. An imaging report shows the study's
thumbnail where an ECG report has its grid, then the reader's free-text findings and impression.

Chinese text needs a CJK font embedded in the file (the PDF core fonts are
Latin-1 only). :func:`find_cjk_font` looks for one once per process: the file
named by ``TELEDIAG_CJK_FONT``, else a known CJK font in the usual font
folders (Debian's ``fonts-wqy-microhei`` first). Without one the report still
renders, in English with the core fonts, and one warning is logged: a missing
font must never keep a signed report from a clinic. Only the characters the
page uses are loaded and embedded (a subset), so a report stays small.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fontTools.ttLib import TTFont

from .statements import Statement

if TYPE_CHECKING:
    from telediag.ecg import Recording

__all__ = ["ReportDocument", "CjkFont", "render_report_pdf", "report_title", "find_cjk_font", "FONT_ENV"]

log = logging.getLogger(__name__)

FONT_ENV = "TELEDIAG_CJK_FONT"
CST = timezone(timedelta(hours=8), "CST")     # China Standard Time, the clinics' clock

# Paper ECG (mm on the page)
SPEED_MM_S = 25.0
GAIN_MM_MV = 10.0
MINOR_MM, MAJOR_MM = 1.0, 5.0
STRIP_S = 10.0              # seconds on one row
COLUMN_S = 2.5              # seconds per column of the 3 x 4 layout
CAL_MM = 10.0               # room at the left of each row for the calibration pulse
ROW_MM = 25.0               # row pitch of the 12-lead layout and of up to four strips
ECG_HEIGHT_MM = 100.0       # the whole ECG area (four rows)
MAX_STRIPS = 8              # leads shown as strips when the set is not the standard 12
TRACE_STEP_MM = 0.2         # drawing resolution: min and max of the samples in each 0.2 mm
TWELVE = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))

# Page (A4 landscape)
PAGE_W, MARGIN = 297.0, 10.0
GRID_X = (PAGE_W - CAL_MM - STRIP_S * SPEED_MM_S) / 2.0
ECG_TOP = 31.0
SIGN_COLUMN_MM = 88.0       # the signer's box on the right, beside the statements
IMAGE_HEIGHT_MM = ECG_HEIGHT_MM   # an imaging study's thumbnail takes the ECG's place

_MINOR_RGB, _MAJOR_RGB, _TRACE_RGB = (250, 205, 205), (238, 140, 140), (0, 0, 0)
_TEXT = "tx"                # font family name of the embedded CJK font

# Label texts (English, Chinese); with no CJK font only the English is printed.
_LABELS: dict[str, tuple[str, str]] = {
    "ecg": ("ECG report", "心电图诊断报告"),
    "imaging": ("Imaging report", "影像诊断报告"),
    "case": ("Case", "病例号"),
    "center": ("Reading center", "诊断中心"),
    "received": ("Received", "接收时间"),
    "patient": ("Patient ID", "患者ID"),
    "name": ("Name", "姓名"),
    "sex": ("Sex", "性别"),
    "born": ("Born", "出生日期"),
    "age": ("y", "岁"),
    "statements": ("Diagnosis", "诊断"),
    "conclusion": ("Conclusion", "结论"),
    "findings": ("Findings", "影像所见"),
    "impression": ("Impression", "诊断意见"),
    "signed_by": ("Signed by", "签名医师"),
    "signed_at": ("Signed", "签名时间"),
    "beijing": ("China Standard Time", "北京时间"),
    "version": ("Version", "版本"),
    "replaces": ("replaces version", "替代版本"),
    "algorithm": ("Algorithm", "签名算法"),
    "no_wave": ("Waveform not available", "波形不可用"),
    "verify": ("Electronically signed: verify the signature over the SHA-256 digest with the signer's public key.",
               "电子签名：可用签名医师的公钥验证SHA-256摘要的签名。"),
}
_SEX = {"M": ("Male", "男"), "F": ("Female", "女"), "O": ("Other", "其他")}
# Measurement keys (as analysis and drafts name them): label and unit, in print order.
_MEASURES: dict[str, tuple[str, str]] = {
    "heart_rate_bpm": ("HR", "/min"), "rr_ms": ("RR", "ms"), "p_ms": ("P", "ms"), "pr_ms": ("PR", "ms"),
    "qrs_ms": ("QRS", "ms"), "qt_ms": ("QT", "ms"), "qtc_ms": ("QTc", "ms"), "qtc_bazett_ms": ("QTcB", "ms"),
    "qtc_fridericia_ms": ("QTcF", "ms"), "p_axis_deg": ("P axis", "°"), "qrs_axis_deg": ("QRS axis", "°"),
    "t_axis_deg": ("T axis", "°"),
}


@dataclass(frozen=True)
class ReportDocument:
    """Everything the page shows about one signed report version (no I/O: the caller fills it).

    ``measurements`` are the signed ones (keys as the analysis names them:
    ``heart_rate_bpm``, ``pr_ms``, ``qrs_ms``, ``qt_ms``, ``qtc_ms``, ``p_axis_deg``,
    ``qrs_axis_deg``, ``t_axis_deg`` ...; unknown numeric keys print under their own name,
    None and non-numbers are left out). Naive datetimes are taken as UTC.
    """

    site_name: str
    center_name: str
    case_id: int
    exam_kind: str                      # "ecg" or "imaging"
    received_at: datetime
    patient_key: str | None
    patient_name: str | None
    patient_sex: str | None             # "M", "F", "O" or as recorded
    patient_birth_date: str | None      # YYYYMMDD (DICOM) or YYYY-MM-DD
    statements: tuple[Statement, ...]
    conclusion: str
    measurements: Mapping[str, float | None]
    version: int
    replaces: int | None
    signed_by: str                      # display name
    signed_at: datetime
    sha256: str                         # hex digest of the canonical JSON
    signature: str                      # base64
    algorithm: str = "ed25519"
    findings: str = ""                  # an imaging report's free text; its conclusion is the impression


@dataclass(frozen=True)
class CjkFont:
    """A font file with Chinese glyphs, and the face to use when it is a collection (.ttc)."""

    path: Path
    face: int = 0


# Known CJK fonts by file name (lower case), best first, with the Simplified Chinese face of a
# collection: Debian's fonts-wqy-microhei / -zenhei, fonts-noto-cjk, fonts-droid-fallback, and the
# system fonts of Windows and macOS.
_KNOWN_FONTS: tuple[tuple[str, int], ...] = (
    ("wqy-microhei.ttc", 0), ("wqy-zenhei.ttc", 0), ("notosanscjk-regular.ttc", 2),
    ("notosanscjksc-regular.otf", 0), ("notosanssc-regular.otf", 0), ("notosanssc-regular.ttf", 0),
    ("sourcehansanssc-regular.otf", 0), ("droidsansfallbackfull.ttf", 0), ("droidsansfallback.ttf", 0),
    ("msyh.ttc", 0), ("simhei.ttf", 0), ("simsun.ttc", 0), ("pingfang.ttc", 0), ("stheiti light.ttc", 0),
)


def _font_dirs() -> list[Path]:
    """The usual font folders of Linux, macOS and Windows, the user's own first."""
    home = os.path.expanduser   # leaves "~" as it is where there is no home, unlike Path.expanduser
    dirs = [Path(home(os.environ.get("XDG_DATA_HOME", "~/.local/share"))) / "fonts",
            Path(home("~/.fonts")), Path("/usr/local/share/fonts"), Path("/usr/share/fonts"),
            Path("/Library/Fonts"), Path("/System/Library/Fonts")]
    if os.environ.get("WINDIR"):
        dirs.append(Path(os.environ["WINDIR"]) / "Fonts")
    return dirs


def _has_chinese(font: CjkFont) -> bool:
    """True when the face maps common Chinese characters (a file that fails to open is no font)."""
    try:
        with TTFont(font.path, fontNumber=font.face, lazy=True) as face:
            cmap = face["cmap"].getBestCmap()
    except Exception:     # any unreadable or non-font file: skip it, as a font picker would
        return False
    return all(ord(c) in cmap for c in "心电图窦性律")


@functools.lru_cache(maxsize=1)
def find_cjk_font() -> CjkFont | None:
    """The CJK font to embed: ``$TELEDIAG_CJK_FONT``, else the best known font found; None (warned once) if none.

    The variable names a TTF/OTF/TTC file (face 0 of a collection). Looked up once per
    process: the fonts do not change while it runs, and a missing font is warned about once,
    not on every report.
    """
    named = os.environ.get(FONT_ENV)
    if named:
        font = CjkFont(Path(os.path.expanduser(named)))
        if font.path.is_file() and _has_chinese(font):
            return font
        log.warning("%s=%s is not a readable font with Chinese glyphs; searching the font folders", FONT_ENV, named)
    known = {name for name, _ in _KNOWN_FONTS}
    found: dict[str, Path] = {}
    for folder in _font_dirs():
        if folder.is_dir():
            for root, _, files in os.walk(folder):
                for name in files:
                    if name.lower() in known:
                        found.setdefault(name.lower(), Path(root) / name)
    for name, face in _KNOWN_FONTS:
        if name in found and _has_chinese(CjkFont(found[name], face)):
            return CjkFont(found[name], face)
    log.warning("no CJK font found (install fonts-wqy-microhei or set %s): report PDFs are rendered "
                "without their Chinese text", FONT_ENV)
    return None


def _gb2312_level1() -> set[str]:
    """The 3,755 most common Chinese characters (GB 2312 level 1, rows 16-55)."""
    return {bytes((hi, lo)).decode("gb2312") for hi in range(0xB0, 0xD8) for lo in range(0xA1, 0xFF)
            if (hi, lo) < (0xD7, 0xFA)}


@functools.lru_cache(maxsize=1)
def _common_font(font: CjkFont) -> tuple[CjkFont, frozenset[int]] | None:
    """A copy of ``font`` cut down to ASCII, the labels, the statements and the common Chinese
    characters: reading the whole 5 MB collection for every report cost nine tenths of the
    rendering. The copy is made once (a few seconds) and kept in the temporary folder under a
    name derived from the font file, so later processes reuse it. A report with a rarer
    character uses the whole font; None when no copy can be made (the whole font is used)."""
    from fontTools import subset

    from telediag.review.statements import STATEMENTS

    wanted = {chr(c) for c in range(0x20, 0x7F)} | _gb2312_level1()
    wanted |= {c for table in (_LABELS, _SEX) for en, zh in table.values() for c in en + zh} | {"°", "µ"}
    wanted |= {c for st in STATEMENTS for c in st.en + st.zh}
    stat = font.path.stat()
    tag = hashlib.sha256(f"{font.path}|{font.face}|{stat.st_size}|{stat.st_mtime_ns}|{''.join(sorted(wanted))}"
                         .encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"telediag-cjk-{tag}.ttf"
    try:
        if not path.is_file():
            face = TTFont(font.path, fontNumber=font.face)
            cmap = face.getBestCmap()
            options = subset.Options()
            options.name_IDs = ["*"]
            subsetter = subset.Subsetter(options)
            subsetter.populate(unicodes={ord(c) for c in wanted if ord(c) in cmap})
            subsetter.subset(face)
            fd, partial = tempfile.mkstemp(prefix="telediag-cjk-", suffix=".part")
            with os.fdopen(fd, "wb") as out:
                face.save(out)
            os.replace(partial, path)  # whole or not at all, even with two processes at once
        with TTFont(path, lazy=True) as cut:
            codes = frozenset(cut.getBestCmap())
    except Exception:  # a font fontTools cannot cut: the whole one still renders
        log.warning("could not cut the CJK font down; reports use the whole font", exc_info=True)
        return None
    return CjkFont(path), codes


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

def render_report_pdf(doc: ReportDocument, recording: Recording | None, image: bytes | None = None) -> bytes:
    """The report as PDF bytes (A4 landscape); ``recording`` (mV) is drawn for an ECG, ``image``
    (PNG, the study thumbnail) for imaging, where the ECG grid would be.

    The bytes depend only on the arguments and the font found (the PDF's creation date is
    the signing time), so rendering a signed version twice gives the same document.
    """
    font = find_cjk_font()
    charset = _charset(doc, recording)
    common = _common_font(font) if font is not None else None
    if common is not None and charset <= common[1]:
        font = common[0]
    page = _Page(font, charset)
    pdf = page.pdf
    pdf.set_title(f"{_LABELS[_title(doc)][0]} - case {doc.case_id}")
    pdf.set_creation_date(_utc(doc.signed_at))
    pdf.add_page()
    _header(page, doc)
    y = ECG_TOP
    if doc.exam_kind == "ecg":
        if recording is not None:
            y = _ecg(pdf, recording, ECG_TOP) + 2.0
            page.write(GRID_X, y, _legend(recording), 7.0)
            y += 5.0
        else:
            page.write(MARGIN, y + 4.0, page.label("no_wave"), 9.0)
            y += 8.0
    elif image is not None:
        y = _image(pdf, image, ECG_TOP) + 4.0
    _body(page, doc, y)
    return bytes(pdf.output())


class _Page:
    """An A4 landscape FPDF with the text helpers that pick the CJK or the core font."""

    def __init__(self, font: CjkFont | None, charset: set[int]) -> None:
        self.cjk = font is not None
        pdf = FPDF(orientation="L", unit="mm", format="A4")
        pdf.set_margins(MARGIN, 8.0, MARGIN)
        pdf.set_auto_page_break(True, margin=8.0)
        pdf.set_creator("telediag")
        if font is not None:
            # Only the characters this page prints: the widths of all 30,000 characters of a CJK
            # font would cost more to build than the rest of the page.
            pdf.add_font(_TEXT, "", str(font.path), collection_font_number=font.face, unicode_range=sorted(charset))
            pdf.set_lang("zh-CN")
        self.pdf = pdf

    def font(self, size: float, bold: bool = False) -> None:
        if self.cjk:
            self.pdf.set_font(_TEXT, "", size)
        else:
            self.pdf.set_font("Helvetica", "B" if bold else "", size)

    def label(self, key: str) -> str:
        """A label in both languages (Chinese first, as the clinics read it), English alone without the font."""
        en, zh = _LABELS[key]
        return f"{zh} {en}" if self.cjk else en

    def text(self, value: str) -> str:
        """Free text as printable: unchanged with the CJK font, else Latin-1 with '?' for the rest."""
        return value if self.cjk else value.encode("latin-1", "replace").decode("latin-1")

    def write(self, x: float, y: float, value: str, size: float, bold: bool = False) -> None:
        """One line of text with its top at (x, y) (nothing for an empty one)."""
        if not value:
            return
        self.font(size, bold)
        self.pdf.set_xy(x, y)
        self.pdf.cell(text=self.text(value), h=size * 0.45)

    def paragraph(self, x: float, width: float, value: str, size: float) -> None:
        """Wrapped text from the current y at x (page breaks as needed)."""
        self.font(size)
        self.pdf.set_x(x)
        self.pdf.multi_cell(width, size * 0.5, self.text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _header(page: _Page, doc: ReportDocument) -> None:
    """Site and exam, case and times, the patient line and the measurements, above the ECG."""
    pdf = page.pdf
    title = page.label(_title(doc))
    page.write(MARGIN, 8.0, f"{doc.site_name}  {title}", 13.0, bold=True)
    case = f"{page.label('case')}: {doc.case_id}"
    page.font(10.0)
    page.write(PAGE_W - MARGIN - pdf.get_string_width(page.text(case)), 9.0, case, 10.0)
    page.write(MARGIN, 15.0, f"{page.label('center')}: {doc.center_name}    "
                             f"{page.label('received')}: {_times(doc.received_at)}", 8.5)
    patient = [f"{page.label('patient')}: {doc.patient_key or '-'}", f"{page.label('name')}: {doc.patient_name or '-'}",
               f"{page.label('sex')}: {_sex(page, doc.patient_sex)}", f"{page.label('born')}: {_born(page, doc)}"]
    page.write(MARGIN, 20.0, "    ".join(patient), 9.5)
    page.write(MARGIN, 25.5, _measure_line(doc.measurements), 9.0)


def _body(page: _Page, doc: ReportDocument, top: float) -> None:
    """Statements and conclusion on the left, the signer on the right, digest and signature below."""
    pdf = page.pdf
    right = PAGE_W - MARGIN - SIGN_COLUMN_MM
    signer = [f"{page.label('signed_by')}: {doc.signed_by}", f"{page.label('center')}: {doc.center_name}",
              f"{page.label('signed_at')}: {_utc(doc.signed_at):%Y-%m-%d %H:%M:%S} UTC",
              f"{page.label('beijing')}: {_utc(doc.signed_at).astimezone(CST):%Y-%m-%d %H:%M:%S} CST",
              f"{page.label('version')}: {doc.version}"
              + (f", {page.label('replaces')} {doc.replaces}" if doc.replaces is not None else ""),
              f"{page.label('algorithm')}: {doc.algorithm}"]
    for i, line in enumerate(signer):
        page.write(right, top + i * 4.6, line, 8.5)
    signer_bottom = top + len(signer) * 4.6

    width = right - MARGIN - 4.0
    pdf.set_y(top)
    if doc.statements:
        page.write(MARGIN, top, page.label("statements") + ":", 10.0, bold=True)
        pdf.set_y(top + 5.0)
    for i, s in enumerate(doc.statements, 1):
        page.paragraph(MARGIN + 2.0, width, f"{i}. {s.zh}  {s.en}" if page.cjk else f"{i}. {s.en}", 10.0)
    pdf.set_y(pdf.get_y() + 1.5)
    imaging = doc.exam_kind == "imaging"
    if imaging or doc.findings:
        page.paragraph(MARGIN, width, f"{page.label('findings')}:", 10.0)
        page.paragraph(MARGIN + 2.0, width, doc.findings or "-", 10.0)
        pdf.set_y(pdf.get_y() + 1.5)
    page.paragraph(MARGIN, width, f"{page.label('impression' if imaging else 'conclusion')}:", 10.0)
    page.paragraph(MARGIN + 2.0, width, doc.conclusion or "-", 10.0)

    y = max(pdf.get_y(), signer_bottom if pdf.page == 1 else 0.0) + 2.0
    pdf.set_y(y)
    pdf.set_draw_color(160, 160, 160)
    pdf.set_line_width(0.2)
    pdf.line(MARGIN, y, PAGE_W - MARGIN, y)
    pdf.set_y(y + 1.5)
    pdf.set_font("Courier", "", 7.0)
    for line in (f"SHA-256: {doc.sha256}", f"{doc.algorithm} signature: {doc.signature}"):
        pdf.multi_cell(PAGE_W - 2 * MARGIN, 3.4, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    page.paragraph(MARGIN, PAGE_W - 2 * MARGIN, page.label("verify"), 7.0)


def _ecg(pdf: FPDF, rec: Recording, top: float) -> float:
    """Grid, calibration pulses and traces from ``top``; returns the bottom of the grid (mm).

    Each trace is centred on its median over the part shown, so a baseline offset
    does not push it into the next row; traces may overlap a neighbouring row as on
    paper but never leave the grid.
    """
    index = {name: j for j, name in enumerate(rec.leads)}
    twelve = _is_twelve(rec)
    if twelve:
        rows = 4
        height = ECG_HEIGHT_MM
    else:
        rows = min(len(rec.leads), MAX_STRIPS)
        height = ROW_MM * rows if rows <= 4 else ECG_HEIGHT_MM
    pitch = height / rows
    width = CAL_MM + STRIP_S * SPEED_MM_S
    _grid(pdf, GRID_X, top, width, height)
    x0 = GRID_X + CAL_MM
    baselines = [top + pitch * (r + 0.6) for r in range(rows)]
    pdf.set_draw_color(*_TRACE_RGB)
    pdf.set_line_width(0.25)
    pdf.set_font("Helvetica", "", 7.0)
    with pdf.rect_clip(GRID_X, top, width, height):
        for y in baselines:
            _calibration(pdf, GRID_X + 2.0, y)
        if twelve:
            for c, column in enumerate(TWELVE):
                x = x0 + c * COLUMN_S * SPEED_MM_S
                for r, name in enumerate(column):
                    _trace(pdf, rec, index[name], c * COLUMN_S, COLUMN_S, x, baselines[r], name)
                    if c:
                        pdf.line(x, baselines[r] - 2.5, x, baselines[r] + 2.5)   # column boundary mark
            _trace(pdf, rec, index["II"], 0.0, STRIP_S, x0, baselines[3], "II")
        else:
            for r in range(rows):
                _trace(pdf, rec, r, 0.0, STRIP_S, x0, baselines[r], rec.leads[r])
    return top + height


def _image(pdf: FPDF, png: bytes, top: float) -> float:
    """The study thumbnail fitted into the ECG's area, centred; returns its bottom (mm)."""
    with Image.open(io.BytesIO(png)) as probe:
        width_px, height_px = probe.size
    box_w = PAGE_W - 2 * MARGIN
    scale = min(box_w / width_px, IMAGE_HEIGHT_MM / height_px)
    width, height = width_px * scale, height_px * scale
    x = (PAGE_W - width) / 2.0
    pdf.image(io.BytesIO(png), x=x, y=top, w=width, h=height)
    return top + height


def _is_twelve(rec: Recording) -> bool:
    """The standard 12 leads are all there (extra ones, V7 or V4R, are not drawn)."""
    return all(name in rec.leads for column in TWELVE for name in column)


def _grid(pdf: FPDF, x: float, y: float, width: float, height: float) -> None:
    """The 1 mm / 5 mm pink paper grid, minor lines first so the major ones stay on top."""
    for step, rgb, line_width in ((MINOR_MM, _MINOR_RGB, 0.08), (MAJOR_MM, _MAJOR_RGB, 0.22)):
        pdf.set_draw_color(*rgb)
        pdf.set_line_width(line_width)
        major = int(round(MAJOR_MM / MINOR_MM))
        for k in range(int(round(width / step)) + 1):
            if step == MINOR_MM and k % major == 0:
                continue
            pdf.line(x + k * step, y, x + k * step, y + height)
        for k in range(int(round(height / step)) + 1):
            if step == MINOR_MM and k % major == 0:
                continue
            pdf.line(x, y + k * step, x + width, y + k * step)


def _calibration(pdf: FPDF, x: float, baseline: float) -> None:
    """The 1 mV, 200 ms standardisation pulse (10 mm high, 5 mm wide at 25 mm/s, 10 mm/mV)."""
    top = baseline - GAIN_MM_MV
    width = 0.2 * SPEED_MM_S
    pdf.polyline([(x, baseline), (x + 1.5, baseline), (x + 1.5, top), (x + 1.5 + width, top),
                  (x + 1.5 + width, baseline), (x + 3.0 + width, baseline)])


def _trace(pdf: FPDF, rec: Recording, lead: int, start_s: float, seconds: float, x: float, baseline: float,
           name: str) -> None:
    """One lead from ``start_s`` for ``seconds`` at (x, baseline), labelled; gaps (NaN) stay gaps."""
    a = int(round(start_s * rec.fs))
    b = min(int(round((start_s + seconds) * rec.fs)), rec.n_samples)
    pdf.text(x + 1.0, baseline - 7.0, name.encode("latin-1", "replace").decode("latin-1"))
    if b - a < 2:
        return
    values = rec.signals[a:b, lead]
    finite = np.isfinite(values)
    if not finite.any():
        return
    level = float(np.median(values[finite]))
    step = max(int(TRACE_STEP_MM / SPEED_MM_S * rec.fs), 1)
    for run_a, run_b in _runs(finite):
        idx = _envelope(values[run_a:run_b], step) + run_a
        xs = x + idx / rec.fs * SPEED_MM_S
        ys = baseline - (values[idx] - level) * GAIN_MM_MV
        if idx.size >= 2:
            pdf.polyline(list(zip(np.round(xs, 2).tolist(), np.round(ys, 2).tolist())))


def _envelope(values: np.ndarray, step: int) -> np.ndarray:
    """Sample indices keeping the min and the max of every ``step`` samples, in time order.

    Drawing every sample of a 1000-Hz ECG wastes file size below the printer's
    resolution; keeping both extremes of each 0.2-mm bin loses no QRS peak or pacing spike.
    """
    n = values.size
    if step <= 1 or n < 2 * step:
        return np.arange(n)
    m = n // step * step
    blocks = values[:m].reshape(-1, step)
    lo, hi = blocks.argmin(axis=1), blocks.argmax(axis=1)
    base = np.arange(0, m, step)
    pairs = np.stack([base + np.minimum(lo, hi), base + np.maximum(lo, hi)], axis=1).ravel()
    return np.concatenate([pairs, np.arange(m, n)])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _legend(rec: Recording) -> str:
    """The paper settings and what of the recording the page shows (a Holter: its first 10 s)."""
    shown = min(rec.duration_s, STRIP_S)
    leads = len(rec.leads)
    drawn = len(TWELVE) * len(TWELVE[0]) if _is_twelve(rec) else min(leads, MAX_STRIPS)
    parts = [f"{SPEED_MM_S:g} mm/s", f"{GAIN_MM_MV:g} mm/mV", f"{rec.fs:g} Hz",
             f"0-{shown:.1f} s of {rec.duration_s:.1f} s"]
    if drawn < leads:
        parts.append(f"{drawn} of {leads} leads")
    return "   ".join(parts)


# --------------------------------------------------------------------------
# Text pieces
# --------------------------------------------------------------------------

def _title(doc: ReportDocument) -> str:
    return "imaging" if doc.exam_kind == "imaging" else "ecg"


def report_title(exam_kind: str) -> str:
    """The report's title in both languages, as its page and its DICOM copy's Document Title say it."""
    en, zh = _LABELS["imaging" if exam_kind == "imaging" else "ecg"]
    return f"{zh} {en}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _times(moment: datetime) -> str:
    """UTC and China Standard Time: the server keeps UTC, the clinic reads its wall clock."""
    utc = _utc(moment)
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC ({utc.astimezone(CST):%Y-%m-%d %H:%M} CST)"


def _sex(page: _Page, sex: str | None) -> str:
    if not sex:
        return "-"
    en, zh = _SEX.get(sex.upper(), (sex, sex))
    return f"{zh} {en}" if page.cjk and zh != en else en


def _born(page: _Page, doc: ReportDocument) -> str:
    """The birth date as YYYY-MM-DD with the age at the exam (China Standard Time date)."""
    raw = doc.patient_birth_date
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", (raw or "").strip())
    if not m:
        return raw or "-"
    try:
        born = date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return raw or "-"
    exam = _utc(doc.received_at).astimezone(CST).date()
    age = exam.year - born.year - ((exam.month, exam.day) < (born.month, born.day))
    unit = _LABELS["age"][1] if page.cjk else _LABELS["age"][0]
    return f"{born.isoformat()} ({age} {unit})" if age >= 0 else born.isoformat()


def _measure_line(measurements: Mapping[str, float | None]) -> str:
    """The measurements present, known ones first in the cart's order, others under their own name."""
    parts = []
    ordered = [k for k in _MEASURES if k in measurements] + sorted(k for k in measurements if k not in _MEASURES)
    for key in ordered:
        value = measurements[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        name, unit = _MEASURES.get(key, (key, ""))
        parts.append(f"{name} {value:.0f}{unit if unit == '°' else ' ' + unit if unit else ''}")
    return "   ".join(parts)


def _charset(doc: ReportDocument, recording: Recording | None) -> set[int]:
    """Every character the page may print with the CJK font: its labels, the document's texts, ASCII."""
    texts = [doc.site_name, doc.center_name, doc.patient_key or "", doc.patient_name or "", doc.patient_sex or "",
             doc.patient_birth_date or "", doc.findings, doc.conclusion, doc.signed_by, doc.algorithm, "°"]
    texts += [s.zh + s.en for s in doc.statements]
    texts += [en + zh for en, zh in _LABELS.values()] + [en + zh for en, zh in _SEX.values()]
    texts += list(_MEASURES) + list(doc.measurements)
    if recording is not None:
        texts += list(recording.leads)
    return {ord(c) for c in "".join(texts)} | set(range(0x20, 0x7F))
