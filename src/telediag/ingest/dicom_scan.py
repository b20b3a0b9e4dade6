"""A fast structural scan of little-endian DICOM data sets, for the C-STORE hot path.

pydicom builds a ``Dataset`` for every sequence item; a 12-lead ECG has dozens of them
(channel definitions with their code sequences), which costs several milliseconds per
object - more than the durable write itself. Ingest only needs to know that the object
is whole (every length fits, every undefined-length sequence is closed) and what each
waveform multiplex group declares, so this module walks the element headers and skips
the values. The same walk keeps the raw values of the few top-level elements an object is
filed by (``HEADER_VRS``), so the hot path needs no pydicom ``Dataset`` at all. It reads
Implicit and Explicit VR Little Endian only; for any other transfer syntax, and wherever
pydicom would read the bytes differently from this walk, it returns ``None`` and the caller
falls back to pydicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable

#: Explicit VR little endian VRs with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD

_WAVEFORM_SEQUENCE = 0x54000100
#: Tags read from each multiplex group, by the pydicom keyword the waveform checks use.
_GROUP_TAGS = {
    0x003A0005: "NumberOfWaveformChannels",
    0x003A0010: "NumberOfWaveformSamples",
    0x003A001A: "SamplingFrequency",
    0x003A0200: "ChannelDefinitionSequence",
    0x54001004: "WaveformBitsAllocated",
    0x54001006: "WaveformSampleInterpretation",
    0x54001010: "WaveformData",
}
#: Top-level elements an object is filed and catalogued by, with the VR pydicom decodes each as:
#: SpecificCharacterSet, SOPClassUID, SOPInstanceUID, StudyDate, StudyTime, AccessionNumber,
#: Modality, ReferringPhysicianName, StudyDescription, SeriesDescription, PatientName,
#: PatientID, PatientBirthDate, PatientSex, StudyInstanceUID, SeriesInstanceUID, StudyID,
#: SeriesNumber, InstanceNumber.
HEADER_VRS: dict[int, bytes] = {
    0x00080005: b"CS", 0x00080016: b"UI", 0x00080018: b"UI", 0x00080020: b"DA", 0x00080030: b"TM",
    0x00080050: b"SH", 0x00080060: b"CS", 0x00080090: b"PN", 0x00081030: b"LO", 0x0008103E: b"LO",
    0x00100010: b"PN", 0x00100020: b"LO", 0x00100030: b"DA", 0x00100040: b"CS",
    0x0020000D: b"UI", 0x0020000E: b"UI", 0x00200010: b"SH", 0x00200011: b"IS", 0x00200013: b"IS",
}
#: The reference for those values is pydicom's ``read_partial`` up to the end of group 0020,
#: so only elements before the first one past it count.
_HEADER_END = 0x0020FFFF
#: File meta elements kept, with their VR: MediaStorageSOPClassUID, MediaStorageSOPInstanceUID,
#: TransferSyntaxUID.
META_VRS: dict[int, bytes] = {0x00020002: b"UI", 0x00020003: b"UI", 0x00020010: b"UI"}
_META_START = 132
_META_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"
_IMPLICIT_LE, _EXPLICIT_LE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
_U16, _U32 = struct.Struct("<H"), struct.Struct("<L")
#: group, element, VR, 2-byte length: an explicit-VR short header (other layouts re-read bytes 4-8).
_EXPLICIT_HEADER = struct.Struct("<HH2sH")


class MalformedDataSet(ValueError):
    """The byte stream is not a well-formed data set (a length overruns, a delimiter is missing)."""


@dataclass(frozen=True)
class FileMeta:
    """The File Meta Information group, as far as ingest needs it."""

    data_offset: int  #: where the data set starts
    values: dict[int, bytes]  #: raw values of the ``META_VRS`` elements present


@dataclass(frozen=True)
class ScanResult:
    """What one walk over a well-formed data set found."""

    groups: list[dict[str, Any]]  #: waveform multiplex groups, keyed like pydicom keywords
    values: dict[int, bytes]  #: raw values of the ``HEADER_VRS`` elements present


class _Scanner:
    def __init__(self, buf: memoryview, explicit: bool) -> None:
        self.buf = buf
        self.explicit = explicit

    def header(self, pos: int) -> tuple[int, int, int]:
        """(tag, value length, value offset) of the element at ``pos``."""
        buf = self.buf
        if pos + 8 > len(buf):
            raise MalformedDataSet(f"element header at byte {pos} runs past the end")
        group, element, vr, short = _EXPLICIT_HEADER.unpack_from(buf, pos)
        tag = group << 16 | element
        if group == 0xFFFE or not self.explicit:
            return tag, _U32.unpack_from(buf, pos + 4)[0], pos + 8
        if vr in _LONG_VRS:
            if pos + 12 > len(buf):
                raise MalformedDataSet(f"element header at byte {pos} runs past the end")
            return tag, _U32.unpack_from(buf, pos + 8)[0], pos + 12
        if not b"AA" <= vr <= b"ZZ":  # not a VR: pydicom reads the element as implicit VR
            return tag, _U32.unpack_from(buf, pos + 4)[0], pos + 8
        return tag, short, pos + 8

    def after(self, tag: int, length: int, value: int, limit: int) -> int:
        """Offset just past an element's value (walking it if its length is undefined)."""
        if length == _UNDEFINED:
            return self.items(value, None)
        if value + length > limit:
            raise MalformedDataSet(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) of {length} bytes "
                                   f"runs past the end of its container")
        return value + length

    def items(self, pos: int, end: int | None,
              on_item: Callable[[int, int], None] | None = None) -> int:
        """Walk a sequence's items (or encapsulated fragments), to ``end`` or to the sequence
        delimiter; call ``on_item(content start, content end)`` for each; return the next offset."""
        while True:
            if end is not None and pos >= end:
                return pos
            tag, length, value = self.header(pos)
            if tag == _SEQ_END and end is None:
                return value
            if tag != _ITEM:
                raise MalformedDataSet(f"expected an item at byte {pos}, found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            if length == _UNDEFINED:
                content_end, pos = self.elements(value, None)
            else:
                content_end = pos = self.after(tag, length, value, len(self.buf) if end is None else end)
            if on_item is not None:
                on_item(value, content_end)

    def elements(self, pos: int, end: int | None) -> tuple[int, int]:
        """Walk the elements of an item to ``end`` or to its item delimiter; return
        (end of its content, next offset)."""
        while end is None or pos < end:
            tag, length, value = self.header(pos)
            if tag == _ITEM_END and end is None:
                return pos, value
            pos = self.after(tag, length, value, len(self.buf) if end is None else end)
        return pos, pos

    def top_level(self, pos: int) -> ScanResult | None:
        """Walk the data set from ``pos``; None when a header element is encoded so that
        pydicom would decode it differently (another explicit VR, an undefined length)."""
        buf = self.buf
        groups: list[dict[str, Any]] = []
        values: dict[int, bytes] = {}
        in_header = True
        while pos < len(buf):
            tag, length, value = self.header(pos)
            in_header = in_header and tag <= _HEADER_END
            if tag == _WAVEFORM_SEQUENCE:
                end = None if length == _UNDEFINED else self.after(tag, length, value, len(buf))
                pos = self.items(value, end, lambda start, stop: groups.append(self.group(start, stop)))
                continue
            nxt = self.after(tag, length, value, len(buf))
            if in_header and tag in HEADER_VRS:
                if length == _UNDEFINED or (self.explicit and buf[pos + 4:pos + 6] != HEADER_VRS[tag]):
                    return None
                values[tag] = bytes(buf[value:nxt])
            pos = nxt
        return ScanResult(groups, values)

    def group(self, pos: int, end: int) -> dict[str, Any]:
        """The multiplex-group attributes the waveform checks need, from one item's elements."""
        out: dict[str, Any] = {}
        buf = self.buf
        while pos < end:
            tag, length, value = self.header(pos)
            name = _GROUP_TAGS.get(tag)
            if name == "ChannelDefinitionSequence":
                count = [0]
                defined_end = None if length == _UNDEFINED else self.after(tag, length, value, end)
                pos = self.items(value, defined_end, lambda *_: count.__setitem__(0, count[0] + 1))
                out[name] = [None] * count[0]  # only len() is used
                continue
            nxt = self.after(tag, length, value, end)
            if name == "WaveformData":
                out[name] = buf[value:nxt]
            elif name in ("NumberOfWaveformChannels", "WaveformBitsAllocated") and length == 2:
                out[name] = _U16.unpack_from(buf, value)[0]
            elif name == "NumberOfWaveformSamples" and length == 4:
                out[name] = _U32.unpack_from(buf, value)[0]
            elif name in ("SamplingFrequency", "WaveformSampleInterpretation"):
                out[name] = bytes(buf[value:nxt]).decode("ascii", "replace").strip(" \0")
            pos = nxt
        return out


def read_file_meta(data: bytes) -> FileMeta | None:
    """The file meta group of a Part 10 file (explicit VR little endian from byte 132).

    None when the group does not start with its group length, is malformed, does not end
    where that length says (pydicom reads the group by group number, so the two could
    disagree) or encodes a kept element with another VR: the caller then uses pydicom.
    """
    if len(data) < _META_START + 12 or data[_META_START:_META_START + 8] != _META_GROUP_LENGTH:
        return None
    end = _META_START + 12 + _U32.unpack_from(data, _META_START + 8)[0]
    scanner = _Scanner(memoryview(data), explicit=True)
    values: dict[int, bytes] = {}
    pos = _META_START
    try:
        while pos + 2 <= len(data) and _U16.unpack_from(data, pos)[0] == 0x0002:
            tag, length, value = scanner.header(pos)
            nxt = scanner.after(tag, length, value, len(data))
            if tag in META_VRS:
                if data[pos + 4:pos + 6] != META_VRS[tag] or length == _UNDEFINED:
                    return None
                values[tag] = data[value:nxt]
            pos = nxt
    except MalformedDataSet:
        return None
    return FileMeta(pos, values) if pos == end else None


def _read_as_declared(buf: memoryview, pos: int, explicit: bool) -> bool:
    """Whether pydicom would read the data set at ``pos`` as the transfer syntax declares.

    pydicom reads leading group 0000 (command) elements as implicit VR, and trusts the
    first element's look over the transfer syntax, with a warning that ``read_partial``
    on the C-STORE path turns into a refusal; such objects are left to pydicom.
    """
    if pos + 6 > len(buf):
        return True
    if _U16.unpack_from(buf, pos)[0] == 0x0000:
        return False
    looks_explicit = 0x40 < buf[pos + 4] < 0x5B and 0x40 < buf[pos + 5] < 0x5B
    return looks_explicit == explicit


def scan(data: bytes, data_offset: int, transfer_syntax: str) -> ScanResult | None:
    """Check that the data set starting at ``data_offset`` is well formed (raising
    ``MalformedDataSet`` if not) and return its waveform groups and header values in one
    walk; ``None`` when the transfer syntax is not little endian or pydicom would read the
    data set differently from this walk (the caller then uses pydicom)."""
    if transfer_syntax not in (_IMPLICIT_LE, _EXPLICIT_LE):
        return None
    explicit = transfer_syntax == _EXPLICIT_LE
    buf = memoryview(data)
    if not _read_as_declared(buf, data_offset, explicit):
        return None
    return _Scanner(buf, explicit).top_level(data_offset)
