"""The grayscale display pipeline of PS3.4 N.2: Modality LUT, VOI LUT, Presentation (MONOCHROME1
inversion), and the last step to 8-bit display values.

Pure array code: a decoded frame and its data set in, a ``uint8`` array out. Enhanced
(multi-frame) objects keep rescale and window per frame in functional groups, so every lookup
goes through :func:`frame_attributes` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

from ._decode import Frames
from ._source import ImageError

__all__ = ["VoiTable", "Window", "WindowChoice", "auto_window", "display_array", "modality_values",
           "window_presets"]

_AUTO_LOW, _AUTO_HIGH = 0.5, 99.5
"""Percentiles of the auto window: robust to a few hot pixels and to large padding areas."""
_AUTO_SAMPLE = 1 << 18
"""Pixels looked at for the auto window; a stride keeps it cheap on a 3000x3000 radiograph."""


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window in modality units (e.g. HU for CT) per PS3.3 C.11.2.1.2.

    ``function`` is LINEAR, LINEAR_EXACT or SIGMOID as in VOI LUT Function (0028,1056);
    ``explanation`` is the header's name for a preset ("BRAIN", "LUNG") or "auto".
    """

    center: float
    width: float
    function: str = "LINEAR"
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class VoiTable:
    """An item of the VOI LUT Sequence: a table instead of a window."""

    item: Dataset
    explanation: str


WindowChoice = Window | tuple[float, float] | int | str | None
"""How a caller picks the VOI: None for the header's first preset (auto when there is none),
an int for the header preset of that index (see :func:`window_presets`), a Window or a
(center, width) pair to override, or "auto" for the percentile window. Colour images have no
VOI and ignore it."""


_MODALITY_KEYWORDS = ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
                      "PixelRepresentation", "BitsStored")
_VOI_KEYWORDS = ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction",
                 "VOILUTSequence")


def frame_attributes(ds: Dataset, index: int) -> Dataset:
    """The Modality LUT and VOI attributes in force for frame ``index``.

    Top-level attributes, overridden by the Shared and then the Per-frame Functional Groups'
    Pixel Value Transformation and Frame VOI LUT macros, which is where enhanced CT/MR keep them.
    """
    view = Dataset()
    try:
        sources = [ds, *_functional_groups(ds, index)]
    except Exception as exc:  # a malformed functional group sequence
        raise ImageError(f"the functional groups cannot be read: {exc}") from exc
    for source in sources:
        for keyword in _MODALITY_KEYWORDS + _VOI_KEYWORDS:
            if keyword not in source:
                continue
            try:
                element = source[keyword]  # converted on first access: an unknown VR raises here
            except Exception as exc:
                if keyword in _VOI_KEYWORDS:
                    continue  # a broken window is dropped: the auto window stands in for it
                raise ImageError(f"the {keyword} cannot be read: {exc}") from exc
            # The element itself, not its value: a new element would re-validate an invalid DS
            # such as "1o00" and raise; the consumers below report it in their own words.
            view.add(element)
    return view


def _functional_groups(ds: Dataset, index: int) -> list[Dataset]:
    groups: list[Dataset] = []
    for sequence, item_index in (("SharedFunctionalGroupsSequence", 0),
                                 ("PerFrameFunctionalGroupsSequence", index)):
        items = ds.get(sequence)
        if not items or item_index >= len(items):
            continue
        for macro in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if items[item_index].get(macro):
                groups.append(items[item_index].get(macro)[0])
    return groups


def window_presets(frames: Frames, index: int = 0) -> list[Window | VoiTable]:
    """The header's VOI presets of frame ``index``, in the order an int window choice indexes
    them: its windows, then its VOI LUT tables. Empty for colour images, which have no VOI."""
    if frames.is_color:
        return []
    return _presets(frame_attributes(frames.dataset, index % frames.count))


def _presets(attrs: Dataset) -> list[Window | VoiTable]:
    presets: list[Window | VoiTable] = []
    centers, widths = _as_list(attrs.get("WindowCenter")), _as_list(attrs.get("WindowWidth"))
    names = [str(n) for n in _as_list(attrs.get("WindowCenterWidthExplanation"))]
    function = str(attrs.get("VOILUTFunction") or "LINEAR").upper()
    for i, (center, width) in enumerate(zip(centers, widths)):
        try:
            c, w = float(center), float(width)
        except (TypeError, ValueError):
            continue  # an unparsable preset is skipped, not fatal for the image
        if w >= 1 or (w > 0 and function != "LINEAR"):  # LINEAR is defined for w >= 1 only
            presets.append(Window(c, w, function, names[i] if i < len(names) else ""))
    for item in attrs.get("VOILUTSequence") or []:
        presets.append(VoiTable(item, str(item.get("LUTExplanation") or "")))
    return presets


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def display_array(frames: Frames, index: int, window: WindowChoice = None) -> np.ndarray:
    """Frame ``index`` as 8-bit display values: ``(rows, columns)`` gray or ``(rows, columns, 3)`` RGB.

    Integer pixels of up to 16 bits go through one lookup table built over the frame's value
    range (modality, VOI and presentation composed), which costs a table of at most 65,536
    entries instead of several float copies of a 3000x3000 radiograph.
    """
    pixels = frames[index]
    if frames.is_color:
        return _to_uint8(pixels, frames.color_bits)
    attrs = frame_attributes(frames.dataset, index % frames.count)
    sample = pixels.reshape(-1)[:: max(1, pixels.size // _AUTO_SAMPLE)]
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2:
        low = int(pixels.min())
        domain = np.arange(low, int(pixels.max()) + 1, dtype=np.int32)
        values = _modality(domain, attrs)
        lut = _apply_voi(values, attrs, window, values[sample.astype(np.int32) - low])
        out = lut[np.subtract(pixels, low, dtype=np.int32)]
    else:
        out = _apply_voi(_modality(pixels, attrs), attrs, window, _modality(sample, attrs))
    if frames.photometric == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1: the lowest value is displayed white
    return out


def modality_values(frames: Frames, index: int = 0) -> np.ndarray:
    """Frame ``index`` in modality units (HU for CT) as float64: what a reader's ROI or
    pixel probe reports. Colour images have no modality values."""
    if frames.is_color:
        raise ImageError(f"a {frames.photometric} image has no modality values")
    return _modality(frames[index], frame_attributes(frames.dataset, index % frames.count))


def _modality(pixels: np.ndarray, attrs: Dataset) -> np.ndarray:
    """The Modality LUT or Rescale Slope/Intercept (PS3.3 C.11.1), as float64."""
    try:
        return np.asarray(apply_modality_lut(pixels, attrs), dtype=np.float64)
    except (ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise ImageError(f"the Modality LUT / rescale cannot be applied: {exc}") from exc


def _apply_voi(values: np.ndarray, attrs: Dataset, choice: WindowChoice,
               distribution: np.ndarray) -> np.ndarray:
    """VOI of ``values``; ``distribution`` is a sample of the frame's modality values, which is
    what an auto window is computed from when ``values`` is a lookup table's domain."""
    preset: Window | VoiTable
    if isinstance(choice, Window):
        preset = choice
    elif isinstance(choice, tuple):
        preset = Window(float(choice[0]), float(choice[1]))
    elif isinstance(choice, bool) or (isinstance(choice, str) and choice != "auto"):
        raise ImageError(f"unknown window choice {choice!r}")
    elif isinstance(choice, int):
        presets = _presets(attrs)
        if not 0 <= choice < len(presets):
            raise ImageError(f"window preset {choice} does not exist: the image has {len(presets)}")
        preset = presets[choice]
    else:
        presets = _presets(attrs) if choice is None else []
        preset = presets[0] if presets else auto_window(distribution)
    if isinstance(preset, VoiTable):
        return _apply_lut(values, preset.item, attrs.get("PixelRepresentation") == 1)
    if preset.width <= 0:
        raise ImageError(f"window width must be positive, not {preset.width}")
    return _apply_window(values, preset)


def auto_window(values: np.ndarray) -> Window:
    """A window spanning the 0.5th to 99.5th percentile of the values (min to max if flat)."""
    flat = values.reshape(-1)
    if flat.size == 0:
        raise ImageError("the frame has no pixels")
    sample = flat[:: max(1, flat.size // _AUTO_SAMPLE)]
    low, high = (float(v) for v in np.percentile(sample, [_AUTO_LOW, _AUTO_HIGH]))
    if high <= low:
        low, high = float(flat.min()), float(flat.max())
    width = max(high - low, 1.0)
    return Window((low + high) / 2, width, "LINEAR_EXACT", "auto")


def _apply_window(x: np.ndarray, w: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID),
    with output range 0..255."""
    c, width = w.center, w.width
    function = w.function.upper()
    if function == "SIGMOID":
        with np.errstate(over="ignore"):  # exp() overflowing to inf gives the right 0
            y = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / width))
    elif function == "LINEAR_EXACT":
        y = ((x - c) / width + 0.5) * 255.0
    else:
        if width < 1:
            raise ImageError(f"a LINEAR window needs a width of at least 1, not {width}")
        y = ((x - (c - 0.5)) / max(width - 1, 1e-9) + 0.5) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _apply_lut(x: np.ndarray, item: Dataset, signed: bool) -> np.ndarray:
    """A VOI LUT table (PS3.3 C.11.2.1.1): inputs below the first mapped value take the first
    entry, above the last the last; outputs are scaled from the table's bit depth to 8 bits."""
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        raw = item.LUTData
        # OW data holds one 16-bit word per entry whatever the bit depth (PS3.3 C.11.2.1.1)
        lut = np.frombuffer(raw, "<u2") if isinstance(raw, bytes) else np.atleast_1d(np.asarray(raw))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageError(f"the VOI LUT is invalid: {exc}") from exc
    if signed and first >= 1 << 15:
        first -= 1 << 16  # the descriptor's first value is SS for signed pixel data
    lut = lut[: entries or 1 << 16].astype(np.float64)  # 0 entries means 2^16 (PS3.3)
    if lut.size == 0 or not 1 <= bits <= 16:
        raise ImageError(f"the VOI LUT is invalid: {lut.size} entries of {bits} bits")
    idx = np.clip(np.rint(x) - first, 0, lut.size - 1).astype(np.intp)
    return np.clip(np.rint(lut[idx] * 255.0 / ((1 << bits) - 1)), 0, 255).astype(np.uint8)


def _to_uint8(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8 and bits <= 8:
        return rgb
    top = float((1 << bits) - 1)
    return np.clip(np.rint(rgb.astype(np.float64) * 255.0 / top), 0, 255).astype(np.uint8)
