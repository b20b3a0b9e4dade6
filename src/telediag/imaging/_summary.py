"""What a viewer and a reader are told about one image before it is drawn."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._decode import decode_frames
from ._display import Window, modality_values, window_presets
from ._header import check_header
from ._source import ImageError, ImageSource, load_dataset

#: The auto window (an image without header presets): these percentiles of its values (robust to
#: hot pixels and padding), as the preview's own default.
_AUTO_WINDOW_PERCENTILES = (0.5, 99.5)


def describe(data: ImageSource, modality: str | None = None) -> dict[str, Any]:
    """What the case view says about an image: its size and frames, its series, the windows a
    viewer offers (the header's presets, or the auto window the preview uses when it has
    none) and the header check's findings; an image that cannot be read is described by its
    findings alone."""
    summary: dict[str, Any] = {"frames": 0, "rows": 0, "columns": 0, "modality": modality, "photometric": None,
                               "series_uid": None, "series_number": None, "series_description": None,
                               "instance_number": None, "windows": [], "findings": []}
    try:
        ds = load_dataset(data)
    except ImageError as exc:
        summary["findings"] = [{"code": "unreadable", "severity": "error", "text": str(exc)}]
        return summary
    summary["findings"] = [{"code": f.code, "severity": f.severity.value, "text": f.text}
                           for f in check_header(ds)]
    summary.update(modality=_header_text(ds, "Modality") or modality,
                   photometric=_header_text(ds, "PhotometricInterpretation"),
                   series_uid=_header_text(ds, "SeriesInstanceUID"),
                   series_description=_header_text(ds, "SeriesDescription"),
                   series_number=_header_int(ds, "SeriesNumber"), instance_number=_header_int(ds, "InstanceNumber"),
                   rows=_header_int(ds, "Rows") or 0, columns=_header_int(ds, "Columns") or 0,
                   frames=_header_int(ds, "NumberOfFrames") or 1)
    try:
        frames = decode_frames(ds)
        windows = [w for w in window_presets(frames) if isinstance(w, Window)]
        if not windows and not frames.is_color:
            values = modality_values(frames, 0)
            low, high = (float(v) for v in np.percentile(values, _AUTO_WINDOW_PERCENTILES))
            windows = [Window((low + high) / 2, max(high - low, 1.0), explanation="auto")]
    except ImageError:
        return summary  # the findings say why
    summary["windows"] = [{"center": round(w.center, 2), "width": round(w.width, 2), "explanation": w.explanation}
                          for w in windows]
    return summary


def _header_text(ds, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:  # pydicom converts raw elements on access and raises anything
        return None
    text = str(value).strip() if value is not None else ""
    return text or None


def _header_int(ds, keyword: str) -> int | None:
    try:
        return int(_header_text(ds, keyword) or "")
    except ValueError:
        return None
