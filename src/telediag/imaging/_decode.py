"""Pixel data to arrays, one frame at a time, through pydicom's pixel-data plugins.

pydicom picks the plugin per transfer syntax: its own code for uncompressed and deflated data,
pylibjpeg-libjpeg (or Pillow) for JPEG and JPEG-LS, pylibjpeg-openjpeg for JPEG 2000, and
pylibjpeg-rle for RLE (ten times faster than pydicom's own RLE decoder, its fallback). Asking it for one ``index`` decodes only that frame's fragments, which is what
keeps a preview of a 500-frame cine from decoding 500 frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, get_decoder

from ._header import MONOCHROME, Severity, check_header, known_int
from ._source import ImageError, ImageSource, load_dataset

__all__ = ["Frames", "decode_frames"]


@dataclass(frozen=True, slots=True, eq=False)
class Frames:
    """The frames of one image, decoded lazily: ``frames[i]`` decodes frame ``i`` alone.

    A frame is ``(rows, columns)`` stored values for MONOCHROME images (the Modality LUT is not
    applied yet; see :func:`telediag.imaging.render`) and ``(rows, columns, 3)`` RGB for every
    colour image: YBR is converted and PALETTE COLOR looked up, so callers see one colour model.
    ``color_bits`` is the bit depth of the RGB values (8, or e.g. 16 for a 16-bit palette).
    """

    dataset: Dataset
    count: int
    rows: int
    columns: int
    photometric: str
    color_bits: int

    @property
    def is_color(self) -> bool:
        return self.photometric not in MONOCHROME

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        """One decoded frame at a time; a caller that keeps none holds one frame in memory."""
        return (self[i] for i in range(self.count))

    def __getitem__(self, index: int) -> np.ndarray:
        if not -self.count <= index < self.count:
            raise ImageError(f"frame {index} does not exist: the image has {self.count} frame(s)")
        index %= self.count
        ds = self.dataset
        try:
            arr, meta = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=index)
        except Exception as exc:  # every plugin raises its own types; the sender gets one
            raise ImageError(f"frame {index} could not be decoded: {exc}") from exc
        except BaseException as exc:
            # pylibjpeg-rle (Rust) reports some corrupt RLE segments as a pyo3 PanicException,
            # which derives from BaseException; it is bad data, not a reason to stop the worker.
            if type(exc).__name__ != "PanicException":
                raise
            raise ImageError(f"frame {index} could not be decoded: corrupt data ({exc})") from exc
        if self.photometric == "PALETTE COLOR":
            try:
                arr = apply_color_lut(arr, ds)
            except (ValueError, KeyError, AttributeError, IndexError) as exc:
                raise ImageError(f"the palette color lookup table is invalid: {exc}") from exc
        elif self.is_color and str(meta.get("photometric_interpretation")) != "RGB":
            raise ImageError(
                f"frame {index} decoded as {meta.get('photometric_interpretation')}, "
                "which cannot be converted to RGB"
            )
        return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def decode_frames(data: ImageSource) -> Frames:
    """Validate the header and return the lazily decoded frames of an image.

    Raises :class:`ImageError` (carrying the header findings) when the header check finds an
    error, so nothing is decoded from pixel data that does not match its description.
    """
    ds = load_dataset(data)
    findings = check_header(ds)
    errors = tuple(f for f in findings if f.severity is Severity.ERROR)
    if errors:
        raise ImageError(errors[0].text, findings=tuple(findings))
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    return Frames(
        dataset=ds,
        count=known_int(ds, "NumberOfFrames") or 1,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        photometric=photometric,
        color_bits=_color_bits(ds, photometric),
    )


def _color_bits(ds: Dataset, photometric: str) -> int:
    """Bits per RGB value after decoding: the palette's entry size, or Bits Stored."""
    if photometric == "PALETTE COLOR":
        return int(ds.RedPaletteColorLookupTableDescriptor[2])
    return int(ds.BitsStored)
