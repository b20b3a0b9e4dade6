"""Encoding display arrays as PNG or JPEG with Pillow: previews, frames on request, thumbnails."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ._decode import Frames, decode_frames
from ._display import WindowChoice, display_array
from ._source import ImageError, ImageSource

__all__ = ["render", "render_jpeg", "render_png", "thumbnail"]

Size = int | tuple[int, int] | None
"""The box a rendered image is fitted into, keeping its aspect ratio: a side or (width, height)."""

_JPEG_QUALITY = 90


def render(data: ImageSource | Frames, frame: int = 0, *, window: WindowChoice = None) -> np.ndarray:
    """Frame ``frame`` as 8-bit display values (see :func:`telediag.imaging.display_array`).

    Accepts the result of :func:`decode_frames` too, so a caller rendering several frames or
    windows of one object parses it once.
    """
    frames = data if isinstance(data, Frames) else decode_frames(data)
    return display_array(frames, frame, window)


def render_png(data: ImageSource | Frames, frame: int = 0, *, window: WindowChoice = None,
               size: Size = None) -> bytes:
    """Frame ``frame`` rendered as a PNG (8-bit gray or RGB), fitted into ``size`` if given."""
    return _encode(render(data, frame, window=window), size, "PNG")


def render_jpeg(data: ImageSource | Frames, frame: int = 0, *, window: WindowChoice = None,
                size: Size = None, quality: int = _JPEG_QUALITY) -> bytes:
    """Frame ``frame`` rendered as a baseline JPEG, fitted into ``size`` if given."""
    return _encode(render(data, frame, window=window), size, "JPEG", quality=quality)


def thumbnail(data: ImageSource | Frames, max_side: int = 128, *, frame: int | None = None,
              fmt: str = "png") -> bytes:
    """A thumbnail fitted into ``max_side`` squared, of the middle frame unless ``frame`` is
    given; a study thumbnail is this applied to the instance the caller picks (its middle one)."""
    frames = data if isinstance(data, Frames) else decode_frames(data)
    index = len(frames) // 2 if frame is None else frame
    fmt = fmt.lower()
    if fmt not in ("png", "jpeg"):
        raise ImageError(f"unknown thumbnail format {fmt!r}: png or jpeg")
    return _encode(display_array(frames, index), max_side, fmt.upper())


def _encode(pixels: np.ndarray, size: Size, fmt: str, quality: int = _JPEG_QUALITY) -> bytes:
    image = Image.fromarray(pixels)
    if size is not None:
        image = _fit(image, size)
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, format="JPEG", quality=quality)
    else:
        image.save(out, format="PNG", compress_level=1)  # fastest: a preview is served, not archived
    return out.getvalue()


def _fit(image: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Scale up or down to fit the box; a viewer asking for 512 wants 512 even of a 64x64 MR."""
    box_w, box_h = (size, size) if isinstance(size, int) else size
    if box_w < 1 or box_h < 1:
        raise ImageError(f"invalid image size {size!r}")
    scale = min(box_w / image.width, box_h / image.height)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if target == image.size:
        return image
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return image.resize(target, resample=resample)
