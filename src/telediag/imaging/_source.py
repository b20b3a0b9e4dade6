"""Turning what a caller holds (Part 10 bytes or a parsed data set) into a pydicom Dataset.

Every failure to read becomes an :class:`ImageError` whose message can go back to the sender
as it is. pydicom's own exceptions never escape this module, and a file that pydicom parses
"successfully" into an empty data set (a truncated one, with only a warning) is refused too.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

if TYPE_CHECKING:
    from ._header import Finding

__all__ = ["ImageError", "ImageSource", "load_dataset"]

ImageSource = bytes | bytearray | memoryview | Dataset
"""What the public functions accept: a DICOM file's bytes or an already parsed data set."""

_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split()
)


class ImageError(ValueError):
    """An image cannot be read or decoded; the message says why in words fit for the sender.

    ``findings`` holds the header findings behind the error when it came from the header check,
    so a worker can record them as the imaging quality result instead of a bare failure.
    """

    def __init__(self, message: str, findings: tuple[Finding, ...] = ()) -> None:
        super().__init__(message)
        self.findings = findings


def load_dataset(data: ImageSource) -> Dataset:
    """Parse ``data`` once (a Dataset is returned as it is).

    Accepts a DICOM Part 10 file and, because older carts and tools still write them, a bare
    little-endian data set without preamble and File Meta whose first element is readable; the
    transfer syntax of such a set is detected from that element and recorded in ``file_meta``
    (its missing Media Storage SOP Class UID is what the header check reports).
    """
    if isinstance(data, Dataset):
        return data
    raw = bytes(data)
    if len(raw) < 8:
        raise ImageError(f"not a DICOM file: only {len(raw)} bytes")
    try:
        ds: Dataset = dcmread(io.BytesIO(raw)) if raw[128:132] == b"DICM" else _read_bare_dataset(raw)
    except ImageError:
        raise
    except Exception as exc:  # pydicom lets struct, zlib, codec and index errors through
        raise ImageError(f"not a readable DICOM file: {exc}") from exc
    if len(ds) == 0:
        # pydicom only warns when a file ends inside an undefined-length item; what it returns
        # then is an empty data set. (Its warning is not captured: catch_warnings is process
        # global and the workers decode in threads.)
        raise ImageError("the DICOM data set could not be read: the file is truncated or malformed")
    return ds


def _read_bare_dataset(raw: bytes) -> Dataset:
    """Read a data set with no preamble and no File Meta, refusing anything that does not start
    like one: pydicom's ``force=True`` would otherwise "read" garbage without complaint."""
    if int.from_bytes(raw[0:2], "little") != 0x0008:  # an image's first group is 0008
        raise ImageError(
            "not a DICOM file: no 'DICM' prefix at byte 128 and the bytes do not start a data set"
        )
    explicit = raw[4:6] in _VRS
    ds = read_dataset(io.BytesIO(raw), is_implicit_VR=not explicit, is_little_endian=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    return ds
