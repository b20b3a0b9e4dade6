"""Image decoding and previews: DICOM pixel data to arrays, display values, PNG/JPEG.

Pure functions over bytes or a parsed data set, for the imaging workers and the DICOMweb
routes; no database, no web, no files. Failures are :class:`ImageError` (decoding) or
:class:`Finding` values (:func:`check_header`), never another exception type.

    frames = decode_frames(part10_bytes)      # lazy: frames[i] decodes frame i alone
    png = render_png(frames, 3, window=(40, 400), size=512)
    findings = check_header(part10_bytes)     # e.g. modality_mismatch, pixel_data_short
    facts = describe(part10_bytes)            # size, frames, series, windows, findings
"""

from __future__ import annotations

from ._decode import Frames, decode_frames
from ._display import VoiTable, Window, WindowChoice, modality_values, window_presets
from ._header import Finding, Severity, check_header
from ._render import render, render_jpeg, render_png, thumbnail
from ._source import ImageError, ImageSource, load_dataset
from ._summary import describe

__all__ = [
    "Finding",
    "Frames",
    "ImageError",
    "ImageSource",
    "Severity",
    "VoiTable",
    "Window",
    "WindowChoice",
    "check_header",
    "decode_frames",
    "describe",
    "load_dataset",
    "modality_values",
    "render",
    "render_jpeg",
    "render_png",
    "thumbnail",
    "window_presets",
]
