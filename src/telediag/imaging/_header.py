"""The imaging header check: what is missing or inconsistent in an image's attributes.

A worker records these findings as the imaging quality result of an instance rather than
failing its job, so a reader sees "no pixel data" or "SOP class CT but Modality MR" next to the
case. The decoder runs the same check and refuses (with the first error's text) what it could
not render faithfully, so the two never disagree about what is renderable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.pixels import get_decoder

from ._source import ImageError, ImageSource, load_dataset

__all__ = ["Finding", "Severity", "check_header", "known_int"]


class Severity(enum.StrEnum):
    """ERROR: the image cannot be rendered faithfully; WARNING: it renders, but a reader or the
    sender should know (a wrong Modality, a missing File Meta)."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One imaging quality finding: a stable machine code, its severity and a short text."""

    code: str
    severity: Severity
    text: str


MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
_ONE_SAMPLE = MONOCHROME | {"PALETTE COLOR"}
_THREE_SAMPLES = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"}
)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Storage SOP classes whose IOD fixes the Modality (PS3.3 "Modality" enumerated values per IOD):
# the modalities an IOD allows -> its SOP class UIDs, given below 1.2.840.10008.5.1.4.1.1 (PS3.4 B.5).
# Secondary Capture, VL and the like accept many modalities and are deliberately absent.
_SOP_MODALITIES: dict[str, frozenset[str]] = {
    f"1.2.840.10008.5.1.4.1.1.{suffix}": frozenset(modalities.split())
    for modalities, suffixes in {
        "CR": "1", "DX": "1.1 1.1.1", "MG": "1.2 1.2.1", "IO": "1.3 1.3.1", "CT": "2 2.1 2.2",
        "US IVUS": "3.1 6.1 6.2", "MR": "4 4.1 4.4", "XA": "12.1", "RF": "12.2", "NM": "20", "PT": "128 130",
        "RTIMAGE": "481.1", "RTDOSE": "481.2",
    }.items()
    for suffix in suffixes.split()
}


def known_int(ds: Dataset, keyword: str) -> int | None:
    """The element's value as an int, or None when absent, empty or not a number.

    pydicom keeps an invalid IS such as Number of Frames "1A" as a string (or raises, in its
    strict mode); this is the one place that tells the two apart from a real number.
    """
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        return int(str(value).strip())
    except (ValueError, TypeError, OverflowError):
        return None


def check_header(data: ImageSource) -> list[Finding]:
    """All findings about an image's header, errors first.

    Bytes that cannot be parsed at all give one ``unreadable`` error finding instead of an
    exception, so a worker can always record a result.
    """
    try:
        ds = load_dataset(data)
    except ImageError as exc:
        return [Finding("unreadable", Severity.ERROR, str(exc))]
    try:
        findings = [*_file_meta(ds), *_modality(ds), *_pixels(ds), *_display_values(ds)]
    except Exception as exc:  # pydicom converts raw elements on first access, raising anything
        return [Finding("header_malformed", Severity.ERROR, f"the image header cannot be read: {exc}")]
    return sorted(findings, key=lambda f: f.severity is not Severity.ERROR)


def _file_meta(ds: Dataset) -> list[Finding]:
    meta = getattr(ds, "file_meta", None) or Dataset()
    if "MediaStorageSOPClassUID" not in meta:
        return [Finding("no_file_meta", Severity.WARNING,
                        "not a DICOM Part 10 file: the File Meta Information is missing")]
    return []


def _modality(ds: Dataset) -> list[Finding]:
    modality = str(ds.get("Modality") or "").strip().upper()
    if not modality:
        return [Finding("modality_missing", Severity.WARNING, "the Modality (0008,0060) is missing")]
    expected = _SOP_MODALITIES.get(str(ds.get("SOPClassUID") or ""))
    if expected is not None and modality not in expected:
        sop_name = getattr(ds.SOPClassUID, "name", str(ds.SOPClassUID))
        return [Finding(
            "modality_mismatch", Severity.WARNING,
            f"the SOP class is {sop_name} but the Modality is {modality} "
            f"(expected {' or '.join(sorted(expected))})",
        )]
    return []


def _display_values(ds: Dataset) -> list[Finding]:
    """Rescale values that cannot be read stop a faithful rendering; window values that cannot be
    read only lose the preset (the auto window stands in)."""
    findings: list[Finding] = []
    for keyword, severity in (("RescaleSlope", Severity.ERROR), ("RescaleIntercept", Severity.ERROR),
                              ("WindowCenter", Severity.WARNING), ("WindowWidth", Severity.WARNING)):
        if keyword not in ds:
            continue
        try:
            values = ds[keyword].value
            for value in [values] if isinstance(values, (str, float, int)) else values or []:
                float(value)
        except Exception as exc:  # pydicom converts on access and raises anything
            findings.append(Finding(f"{_snake(keyword)}_invalid", severity, f"the {keyword} cannot be read: {exc}"))
    return findings


def _snake(keyword: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in keyword).lstrip("_")


def _pixels(ds: Dataset) -> list[Finding]:
    """Findings about the Image Pixel module and whether the pixel data fits it."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        return [Finding("no_pixel_data", Severity.ERROR,
                        "the object has no Pixel Data (not an image, or the file is truncated)")]
    errors: list[Finding] = []

    def error(code: str, text: str) -> None:
        errors.append(Finding(code, Severity.ERROR, text))

    rows, columns = known_int(ds, "Rows"), known_int(ds, "Columns")
    if not rows or not columns or rows < 0 or columns < 0:
        error("zero_dimensions", f"the image has {rows or 0} rows and {columns or 0} columns")
    allocated, stored = known_int(ds, "BitsAllocated"), known_int(ds, "BitsStored")
    if not allocated or allocated not in (1, 8, 16, 32, 64):
        error("bits_allocated_invalid", f"Bits Allocated is {ds.get('BitsAllocated')!r}")
    elif not stored or stored > allocated:
        error("bits_stored_invalid",
              f"Bits Stored ({ds.get('BitsStored')!r}) must be between 1 and Bits Allocated ({allocated})")
    frames = 1 if "NumberOfFrames" not in ds else known_int(ds, "NumberOfFrames")
    if frames is None or frames < 1:
        error("frames_invalid", f"the Number of Frames {ds.get('NumberOfFrames')!r} is not a positive integer")
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    samples = known_int(ds, "SamplesPerPixel")
    if photometric not in _ONE_SAMPLE | _THREE_SAMPLES:
        error("photometric_unknown", f"the Photometric Interpretation {photometric or '(missing)'} is unknown")
    elif samples != (1 if photometric in _ONE_SAMPLE else 3):
        error("samples_inconsistent",
              f"{photometric} needs {1 if photometric in _ONE_SAMPLE else 3} samples per pixel, "
              f"the header says {ds.get('SamplesPerPixel')!r}")
    elif photometric == "PALETTE COLOR" and "RedPaletteColorLookupTableDescriptor" not in ds:
        error("palette_missing", "PALETTE COLOR without a Red/Green/Blue Palette Color Lookup Table")
    if errors:
        return errors
    assert rows and columns and allocated and samples and frames  # established above
    return _pixel_data_length(ds, rows * columns, samples, allocated, frames, photometric)


def _pixel_data_length(
    ds: Dataset, pixels: int, samples: int, allocated: int, frames: int, photometric: str
) -> list[Finding]:
    """Whether the Pixel Data holds Number of Frames frames: by byte length when native, by the
    offset table or the fragment count when encapsulated."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
    if syntax is None:
        return [Finding("transfer_syntax_missing", Severity.ERROR, "the Transfer Syntax UID is missing")]
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return [Finding("transfer_syntax_unsupported", Severity.ERROR,
                        f"no decoder for the transfer syntax {getattr(syntax, 'name', syntax)}")]
    if not decoder.is_available:
        return [Finding("decoder_missing", Severity.ERROR,
                        f"no installed decoder for {syntax.name}; the server needs pylibjpeg and its plugins")]
    if "PixelData" not in ds:
        return []
    value = ds.PixelData
    if not syntax.is_encapsulated:
        if photometric == "YBR_FULL_422":
            samples = 2  # two luminance and one pair of chrominance values per two pixels
        expected = (pixels * samples * allocated * frames + 7) // 8
        actual = len(value)
        if actual < expected:
            return [Finding("pixel_data_short", Severity.ERROR,
                            f"the Pixel Data holds {actual} bytes, {expected} are needed for "
                            f"{frames} frame(s) (truncated file or wrong Rows/Columns/Number of Frames)")]
        if actual > expected + 1:
            return [Finding("pixel_data_long", Severity.WARNING,
                            f"the Pixel Data holds {actual} bytes, {expected} are needed for {frames} "
                            f"frame(s); Number of Frames may be too small")]
        return []
    try:
        offsets = parse_basic_offsets(value)
        fragments, _ = parse_fragments(value)
    except Exception as exc:  # struct.error and friends on a cut item header
        return [Finding("pixel_data_malformed", Severity.ERROR, f"the encapsulated Pixel Data is malformed: {exc}")]
    if offsets and len(offsets) != frames and "ExtendedOffsetTable" not in ds:
        return [Finding("frames_inconsistent", Severity.ERROR,
                        f"the Basic Offset Table lists {len(offsets)} frames, Number of Frames is {frames}")]
    if fragments < frames:
        return [Finding("frames_inconsistent", Severity.ERROR,
                        f"the Pixel Data holds {fragments} fragment(s) for {frames} frame(s)")]
    return []
