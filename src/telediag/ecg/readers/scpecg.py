"""SCP-ECG files (EN 1064 / ISO 11073-91064 / ANSI/AAMI EC71), versions 1.x to 3.0, in mV.

An SCP-ECG file is a 6-byte file header (CRC-CCITT, length) followed by sections, each with
its own 16-byte header and CRC. Section 0 points to the others; this module reads

* 1 patient and acquisition tags, 2 Huffman tables, 3 lead definitions,
* 4 QRS locations (reference-beat subtraction and bimodal protected zones),
* 5 reference (median) beats, 6 rhythm data,
* 7 global measurements, 8 and 11 interpretation statements.

Sections 9 and 10 (manufacturer data, per-lead measurements) and the v3.0 sections 12-18
carry nothing the :class:`Recording` contract has a place for, so they are only CRC-checked.

Conformance policy: a file that looks conformant (1-based section pointers, as the standard
says) is checked strictly, because a wrong CRC or length there means the bytes were damaged
in transit and a damaged ECG must not be analysed. Some handheld devices write files that are
not conformant (0-based pointers, a meaningless file CRC/length, their own sample packing);
those are decoded by the device's own rules where we know them (Healforce handhelds: see
:func:`_packed_device_rhythm`), and what cannot be decoded is logged and left out, rather than
refusing a real patient's recording.

Bimodal compression keeps the QRS (section 4's protected zones) at full rate and one block mean
per ``rate`` samples elsewhere; it is undone by linear interpolation through the block centres,
then the reference beat is added back at every subtracted QRS.
"""

from __future__ import annotations

import binascii
import logging
import struct
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Callable, TypeVar

import numpy as np

from ..recording import Recording, RecordingSource, WaveformError
from .leads import SCP_LEADS

__all__ = ["read_scp_ecg", "looks_like_scp_ecg"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_FORMAT = "SCP-ECG"
_HEADER = 16  # every section starts with CRC(2) id(2) length(4) versions(2) reserved(6)
_DEFAULT_TABLES = 19999  # section 2 "number of tables" meaning "use the default table"
_MAX_PREFIX_BITS = 16  # longest Huffman prefix we index directly (2**16 table entries)
_UNDEFINED = frozenset({29999, 29998, 29997, 19999})  # "not computed", "rejected", ...

# EN 1064 default Huffman table: (prefix bits, total bits, mode switch, base value, base code).
# The last two codes are escapes followed by a raw 8- or 16-bit two's-complement value.
_DEFAULT_TABLE: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 1, 1, 0, 0), (3, 3, 1, 1, 1), (3, 3, 1, -1, 5), (4, 4, 1, 2, 3), (4, 4, 1, -2, 11),
    (5, 5, 1, 3, 7), (5, 5, 1, -3, 23), (6, 6, 1, 4, 15), (6, 6, 1, -4, 47),
    (7, 7, 1, 5, 31), (7, 7, 1, -5, 95), (8, 8, 1, 6, 63), (8, 8, 1, -6, 191),
    (9, 9, 1, 7, 127), (9, 9, 1, -7, 383), (10, 10, 1, 8, 255), (10, 10, 1, -8, 767),
    (10, 18, 1, 0, 511), (10, 26, 1, 0, 1023),
)

# Section 1 tag 14 manufacturer codes, used when the device does not spell its name.
_MANUFACTURERS = {
    1: "Burdick", 2: "Cambridge Heart", 3: "Compumed", 4: "Datamed", 5: "Fukuda", 6: "Hewlett-Packard",
    7: "Marquette", 8: "Mortara", 9: "Nihon Kohden", 10: "Okin", 11: "Quinton", 12: "Siemens",
    13: "Spacelabs", 14: "Telemed", 15: "Hellige", 16: "ESA-OTE", 17: "Schiller",
    18: "Picker-Schwarzer", 19: "Elettronica-Trentina", 20: "Zwonitz",
}

# Healforce handhelds (Prince 180D) store three leads without lead codes; on the sample the
# third channel is II - I to within quantisation, so they are the Einthoven leads.
_HEALFORCE_LEADS = ("I", "II", "III")


def _error(message: str, section: int | str | None = None) -> WaveformError:
    return WaveformError(message, format=_FORMAT, section=None if section is None else str(section))


# --------------------------------------------------------------------------
# Detection and section table (file header, section 0)
# --------------------------------------------------------------------------


def looks_like_scp_ecg(data: bytes) -> bool:
    """True when ``data`` starts like an SCP-ECG file: section 0's header right after the file header.

    Uses only the first 32 bytes: section id 0 at byte 8, a pointer-table length, and either
    the ``SCPECG`` marker or a first pointer that points back at section 0 itself (devices
    that leave the marker out still write that).
    """
    if len(data) < 32:
        return False
    sec_id, sec_len = struct.unpack_from("<HI", data, 8)
    if sec_id != 0 or not 26 <= sec_len <= 65536 or (sec_len - _HEADER) % 10:
        return False
    if data[16:22] == b"SCPECG":
        return True
    first_id, first_len, first_index = struct.unpack_from("<HII", data, 22)
    return first_id == 0 and first_len == sec_len and first_index in (6, 7)


def _sections(data: bytes) -> tuple[dict[int, bytes], bool]:
    """Walk section 0's pointer table; returns section bodies (after their 16-byte headers) by id
    and whether the file is conformant.

    Conformant files have every section header, length and CRC checked; device files with
    0-based pointers get their sections cut out by the section's own header, unchecked.
    """
    if len(data) < 6 + _HEADER + 10:
        raise _error(f"file is {len(data)} bytes, too short for the file header and section 0", 0)
    file_crc, file_len = struct.unpack_from("<HI", data, 0)
    _crc, sec_id, s0_len = struct.unpack_from("<HHI", data, 6)
    if sec_id != 0:
        raise _error("section 0 (pointer table) not found after the file header", 0)
    if s0_len < _HEADER + 10 or 6 + s0_len > len(data):
        raise _error(f"section 0 length {s0_len} does not fit a {len(data)}-byte file", 0)
    pointers = [struct.unpack_from("<HII", data, off) for off in range(6 + _HEADER, 6 + s0_len - 9, 10)]
    own = next((p for p in pointers if p[0] == 0), None)
    if own is None or own[2] not in (6, 7):
        raise _error("section 0 pointer table does not point to section 0 itself", 0)
    conformant = own[2] == 7
    found: dict[int, bytes] = {}
    for sid, length, index in pointers:
        if length == 0 or sid in found:
            continue
        start = index - 1 if conformant else index
        if conformant:
            found[sid] = _checked_section(data, sid, start, length)
        else:
            section = _lenient_section(data, sid, start, length)
            if section is not None:
                found[sid] = section
    if conformant:
        if file_len != len(data):
            raise _error(f"file length field says {file_len} bytes but the file has {len(data)}")
        if binascii.crc_hqx(data[2:], 0xFFFF) != file_crc:
            raise _error("file CRC-CCITT mismatch (the file was altered after it was written)")
    else:
        _log.warning("SCP-ECG file is not EN 1064 conformant (0-based section pointers); "
                     "CRCs and lengths not checked, decoded by device rules")
    return found, conformant


def _checked_section(data: bytes, sid: int, start: int, length: int) -> bytes:
    """A conformant file's section body, after checking its bounds, its header against section 0, its CRC."""
    if start < 6 or length < _HEADER or start + length > len(data):
        raise _error(f"section is {length} bytes at byte {start} of a {len(data)}-byte file "
                     "(truncated file or bad pointer)", sid)
    crc, hdr_id, hdr_len = struct.unpack_from("<HHI", data, start)
    if hdr_id != sid or hdr_len != length:
        raise _error(f"section header (id {hdr_id}, {hdr_len} bytes) disagrees with section 0's pointer "
                     f"({length} bytes)", sid)
    if binascii.crc_hqx(data[start + 2:start + length], 0xFFFF) != crc:
        raise _error("section CRC-CCITT mismatch (damaged data)", sid)
    return data[start + _HEADER:start + length]


def _lenient_section(data: bytes, sid: int, start: int, length: int) -> bytes | None:
    """A non-conformant device's section: trust its own header's length when it fits."""
    if start < 0 or start + _HEADER > len(data):
        if sid in (3, 6):
            raise _error(f"section starts at byte {start}, past the end of the {len(data)}-byte file", sid)
        _log.warning("SCP-ECG section %d points past the end of the file; ignored", sid)
        return None
    _crc, hdr_id, hdr_len = struct.unpack_from("<HHI", data, start)
    end = start + (hdr_len if hdr_id == sid and _HEADER <= hdr_len <= length else length)
    return data[start + _HEADER:min(end, len(data))]


# --------------------------------------------------------------------------
# Section 1: patient and acquisition tags
# --------------------------------------------------------------------------


def _text(raw: bytes) -> str | None:
    """A null-terminated string in UTF-8 (v3) or Latin-1 (older carts), stripped; None if empty."""
    raw = raw.split(b"\0", 1)[0]
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        value = raw.decode("latin-1")
    value = "".join(c for c in value if c.isprintable()).strip()
    return value if value and value.lower() != "unknown" else None


def _year(raw: bytes) -> int:
    """A 2-byte year; some handhelds write it big-endian, which no plausible date is."""
    year = int.from_bytes(raw[:2], "little")
    return year if 1800 <= year <= 2200 else int.from_bytes(raw[:2], "big")


def _section1(body: bytes) -> dict:
    """Patient and device fields from the tag list (tag, 2-byte length, value; ends at tag 255)."""
    tags: dict[int, bytes] = {}
    pos = 0
    while pos + 3 <= len(body):
        tag, length = body[pos], int.from_bytes(body[pos + 1:pos + 3], "little")
        if tag == 255:
            break
        tags.setdefault(tag, body[pos + 3:pos + 3 + length])
        pos += 3 + length
    out: dict = {"patient_id": _text(tags.get(2, b""))}
    names = [_text(tags.get(t, b"")) for t in (0, 1)]
    if any(names):
        out["patient_name"] = "^".join(n or "" for n in names).rstrip("^")
    dob = tags.get(5, b"")
    if len(dob) >= 4 and 1800 <= _year(dob) <= 2200 and 1 <= dob[2] <= 12 and 1 <= dob[3] <= 31:
        out["patient_birth_date"] = f"{_year(dob):04d}{dob[2]:02d}{dob[3]:02d}"
    sex = tags.get(8, b"")
    if sex:
        out["patient_sex"] = {1: "M", 2: "F"}.get(sex[0])
    out |= _device(tags.get(14, b""))
    out["start_time"] = _acquisition_time(tags.get(25, b""), tags.get(26, b""))
    return out


def _device(raw: bytes) -> dict:
    """Tag 14 (acquiring device): fixed 35-byte part, then five null-terminated strings."""
    if len(raw) < 36:
        return {}
    out = {"model": _text(bytes(b for b in raw[8:14] if 32 <= b < 127))}
    # after the revision-length byte: revision, serial, device software, SCP software, manufacturer
    strings = raw[36:].split(b"\0")
    if len(strings) >= 5:
        out["serial"] = _text(strings[1])
        out["manufacturer"] = _text(strings[4])
    if not out.get("manufacturer"):
        out["manufacturer"] = _MANUFACTURERS.get(raw[7])
    return out


def _acquisition_time(date: bytes, time: bytes) -> datetime | None:
    """Tags 25 and 26 (date, time of acquisition); None when absent or not a real date."""
    if len(date) < 4:
        return None
    hms = tuple(time[:3]) if len(time) >= 3 else (0, 0, 0)
    try:
        return datetime(_year(date), date[2], date[3], *hms)
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Section 2: Huffman tables, and the table-driven decoder
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _HuffmanTable:
    """One code table as flat lookups indexed by the next ``bits`` stream bits (MSB first).

    ``kind`` is 0 for a bit pattern no code starts with, 1 for a value code, 2 for a switch to
    table ``value``; ``extra`` raw two's-complement bits follow the prefix of escape codes.
    """

    bits: int
    kind: np.ndarray
    prefix: np.ndarray
    extra: np.ndarray
    value: np.ndarray


def _build_table(codes: list[tuple[int, int, int, int, int]], n_tables: int, number: int) -> _HuffmanTable:
    """Expand a section 2 code list into lookups, refusing tables a decoder could misread."""
    width = max((c[0] for c in codes), default=0)
    if not codes or width > _MAX_PREFIX_BITS:
        raise _error(f"Huffman table {number} has no codes or prefixes longer than {_MAX_PREFIX_BITS} bits", 2)
    size = 1 << width
    kind = np.zeros(size, np.int8)
    prefix = np.ones(size, np.int64)
    extra = np.zeros(size, np.int64)
    value = np.zeros(size, np.int64)
    for prefix_bits, total_bits, switch, base_value, base_code in codes:
        if not (1 <= prefix_bits <= total_bits <= prefix_bits + 32):
            raise _error(f"Huffman table {number}: code of {prefix_bits} prefix / {total_bits} total bits", 2)
        if switch == 0 and not 1 <= base_value <= n_tables:
            raise _error(f"Huffman table {number} switches to table {base_value} of {n_tables}", 2)
        # Base codes are stored with the first transmitted bit in the least significant place.
        code = int(f"{base_code & ((1 << prefix_bits) - 1):0{prefix_bits}b}"[::-1], 2)
        lo = code << (width - prefix_bits)
        hi = lo + (1 << (width - prefix_bits))
        if kind[lo:hi].any():
            raise _error(f"Huffman table {number} is not prefix-free", 2)
        kind[lo:hi] = 1 if switch else 2
        prefix[lo:hi] = prefix_bits
        extra[lo:hi] = total_bits - prefix_bits
        value[lo:hi] = base_value if switch else base_value - 1
    return _HuffmanTable(width, kind, prefix, extra, value)


@lru_cache(maxsize=1)
def _default_tables() -> tuple[_HuffmanTable, ...]:
    return (_build_table(list(_DEFAULT_TABLE), 1, 1),)


def _section2(body: bytes) -> tuple[_HuffmanTable, ...]:
    """Section 2: 19999 means the standard's default table, else the file's own tables."""
    if len(body) < 2:
        raise _error("Huffman table section is empty", 2)
    n_tables = int.from_bytes(body[:2], "little")
    if n_tables == _DEFAULT_TABLES:
        return _default_tables()
    if n_tables == 0:
        raise _error("Huffman table section declares no tables", 2)
    tables, pos = [], 2
    for number in range(1, n_tables + 1):
        if pos + 2 > len(body):
            raise _error(f"Huffman table {number} of {n_tables} is missing (section too short)", 2)
        n_codes = int.from_bytes(body[pos:pos + 2], "little")
        pos += 2
        if pos + 9 * n_codes > len(body):
            raise _error(f"Huffman table {number} declares {n_codes} codes but the section ends", 2)
        codes = [struct.unpack_from("<BBBhI", body, pos + 9 * i) for i in range(n_codes)]
        pos += 9 * n_codes
        tables.append(_build_table(codes, n_tables, number))
    return tuple(tables)


def _bit_windows(stream: bytes) -> np.ndarray:
    """For every bit position p, the 64 stream bits starting at p (zero past the end), MSB first.

    Computing all windows at once lets every per-position lookup below be one numpy gather.
    """
    n_bytes = len(stream)
    padded = np.frombuffer(stream + bytes(8), np.uint8).astype(np.uint64)
    words = np.zeros(n_bytes + 1, np.uint64)
    for j in range(8):
        words |= padded[j:j + n_bytes + 1] << np.uint64(56 - 8 * j)
    shifts = np.tile(np.arange(8, dtype=np.uint64), n_bytes + 1)
    return np.repeat(words, 8) << shifts


def _huffman_decode(stream: bytes, n: int, tables: tuple[_HuffmanTable, ...], section: int,
                    lead: int) -> np.ndarray:
    """Decode ``n`` values from one lead's bit stream.

    Every bit position's code (length, kind) is looked up with numpy first, so what is left
    is the one inherently sequential part: hopping from code start to code start, which
    :func:`_walk` does 64 codes per Python step. Each hop consumes at least one bit and the
    walks are bounded by ``n``, so no loop can outrun the input.
    """
    n_bits = 8 * len(stream)
    if n > n_bits:
        raise _error(f"lead {lead}: {len(stream)} bytes cannot hold {n} Huffman-coded samples", section)
    windows = _bit_windows(stream)
    positions = np.arange(n_bits)
    kinds, hops, lookups = [], [], []
    for table in tables:
        idx = (windows[:n_bits] >> np.uint64(64 - table.bits)).astype(np.intp)
        hop = positions + table.prefix[idx] + table.extra[idx]
        kind = np.where(hop <= n_bits, table.kind[idx], 0)
        # Past the data, and after an invalid code, the walk stays at n_bits (kind 0 there).
        kinds.append(np.append(kind, 0))
        hops.append(np.append(np.where(kind > 0, hop, n_bits), n_bits))
        lookups.append(idx)
    if (kinds[0] == 2).any():
        starts, used = _walk_switching(kinds, hops, [t.value for t in tables], lookups, n, n_bits)
    else:
        starts, used = _walk(hops[0], n), np.zeros(n, np.intp)
    bad = np.flatnonzero(np.asarray(kinds)[used, starts] != 1)
    if len(bad):
        at = int(starts[bad[0]])
        if at >= n_bits:
            raise _error(f"lead {lead}: Huffman data ends after {bad[0]} of {n} samples", section)
        raise _error(f"lead {lead}: invalid or incomplete Huffman code at bit {at}", section)
    return _code_values(starts, used, tables, lookups, windows)


def _walk(hop: np.ndarray, n: int, stride: int = 64) -> np.ndarray:
    """The first ``n`` code starts of a single-table stream (bit ``len(hop) - 1`` once it ends).

    Python hops ``stride`` codes at a time through the composed hop table; the starts in
    between are then filled in with ``stride`` numpy gathers.
    """
    jump = hop
    for _ in range(stride.bit_length() - 1):
        jump = jump[jump]
    coarse = [0] * -(-n // stride)
    p = 0
    for i in range(len(coarse)):
        coarse[i] = p
        p = int(jump[p])
    starts = np.empty(len(coarse) * stride, np.intp)
    current = np.asarray(coarse, np.intp)
    for r in range(stride):
        starts[r::stride] = current
        current = hop[current]
    return starts[:n]


def _walk_switching(kinds: list[np.ndarray], hops: list[np.ndarray], switch_to: list[np.ndarray],
                    lookups: list[np.ndarray], n: int, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Code starts and their tables for streams whose codes switch tables (section 2 mode 0)."""
    kind_lists = [k.tolist() for k in kinds]
    hop_lists = [h.tolist() for h in hops]
    starts: list[int] = []
    used: list[int] = []
    p = t = 0
    while len(starts) < n:
        k = kind_lists[t][p]
        if k == 2:
            p, t = hop_lists[t][p], int(switch_to[t][lookups[t][p]])
            continue
        starts.append(p)  # a value code, or where the walk stopped (reported by the caller)
        used.append(t)
        if k != 1:
            break
        p = hop_lists[t][p]
    starts += [n_bits] * (n - len(starts))
    used += [t] * (n - len(used))
    return np.asarray(starts, np.intp), np.asarray(used, np.intp)


def _code_values(starts: np.ndarray, used: np.ndarray, tables: tuple[_HuffmanTable, ...],
                 lookups: list[np.ndarray], windows: np.ndarray) -> np.ndarray:
    """The values of the codes starting at ``starts``: base values, or the raw bits after escapes."""
    out = np.empty(len(starts), np.int64)
    for number, table in enumerate(tables):
        chosen = used == number
        at = starts[chosen]
        idx = lookups[number][at]
        values = table.value[idx]
        extra = table.extra[idx]
        escaped = extra > 0
        if escaped.any():
            width = extra[escaped]
            raw = (windows[at[escaped] + table.prefix[idx[escaped]]]
                   >> (np.uint64(64) - width.astype(np.uint64))).astype(np.int64)
            values[escaped] = np.where(raw >= 1 << (width - 1), raw - (1 << width), raw)
        out[chosen] = values
    return out


def _undifference(values: np.ndarray, mode: int, section: int) -> np.ndarray:
    """Undo the encoder's first (1) or second (2) differences; the first 1 or 2 values are samples."""
    if mode == 0 or len(values) == 0:
        return values
    if mode == 1:
        return np.cumsum(values)
    if mode == 2:
        if len(values) < 2:
            return values
        # x[i] - x[i-1] accumulates the second differences; x[1] - x[0] starts it.
        steps = np.concatenate(([values[1] - values[0]], values[2:]))
        return values[0] + np.concatenate(([0], np.cumsum(np.cumsum(steps))))
    raise _error(f"unknown difference encoding {mode}", section)


# --------------------------------------------------------------------------
# Sections 3 and 4: leads, QRS locations
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lead:
    """A stored lead: SCP lead code and its first/last sample number (1-based, inclusive)."""

    code: int
    start: int
    end: int

    @property
    def n(self) -> int:
        return self.end - self.start + 1

    @property
    def name(self) -> str:
        return SCP_LEADS.get(self.code, f"SCP lead {self.code}")


@dataclass(frozen=True)
class _LeadTable:
    leads: tuple[_Lead, ...]
    reference_beat_subtracted: bool


def _section3(body: bytes) -> _LeadTable:
    """Lead count, flags (bit 0: reference beats subtracted) and each lead's code and sample range."""
    if len(body) < 2 or body[0] == 0:
        raise _error("lead definition declares no leads", 3)
    n, flags = body[0], body[1]
    if len(body) < 2 + 9 * n:
        raise _error(f"lead definition for {n} leads needs {2 + 9 * n} bytes, section has {len(body)}", 3)
    leads = []
    for i in range(n):
        start, end, code = struct.unpack_from("<IIB", body, 2 + 9 * i)
        start = max(start, 1)  # some writers count from 0 and give the last sample number
        if start > end:
            raise _error(f"lead {i + 1}: sample range {start}..{end} is empty or invalid", 3)
        leads.append(_Lead(code, start, end))
    return _LeadTable(tuple(leads), bool(flags & 0x01))


@dataclass(frozen=True)
class _QrsLocations:
    """Section 4: the reference beat's length and fiducial, and where each QRS sits in the rhythm."""

    median_ms: int
    fiducial: int  # sample number (1-based) of the fiducial in the reference beat
    subtraction: tuple[tuple[int, int, int, int], ...]  # (beat type, start, fiducial, end), 1-based
    protected: tuple[tuple[int, int], ...]  # bimodal compression: full-rate (start, end), 1-based


def _section4(body: bytes) -> _QrsLocations:
    """Header, then 14-byte subtraction zones, then (when present) 8-byte protected zones per QRS."""
    if len(body) < 6:
        raise _error("QRS location section is shorter than its 6-byte header", 4)
    median_ms, fiducial, n_qrs = struct.unpack_from("<HHH", body, 0)
    if len(body) < 6 + 14 * n_qrs:
        raise _error(f"{n_qrs} QRS subtraction zones declared but the section ends", 4)
    subtraction = tuple(struct.unpack_from("<HIII", body, 6 + 14 * i) for i in range(n_qrs))
    zones_at = 6 + 14 * n_qrs
    protected = ()
    if len(body) >= zones_at + 8 * n_qrs:
        protected = tuple(struct.unpack_from("<II", body, zones_at + 8 * i) for i in range(n_qrs))
    return _QrsLocations(median_ms, fiducial, subtraction, protected)


# --------------------------------------------------------------------------
# Sections 5 and 6: reference beats and rhythm data
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """The common header of sections 5 and 6 and each lead's byte stream."""

    avm_nv: int  # amplitude value multiplier, nV per unit
    interval_us: int  # sample interval
    difference: int
    bimodal: bool  # section 6 only; reserved in section 5
    streams: tuple[bytes, ...]


def _encoded(body: bytes, n_streams: int, section: int) -> _Encoded:
    """Split a section 5/6 body into its header fields and per-lead streams, checking every length."""
    head = 6 + 2 * n_streams
    if len(body) < head:
        raise _error(f"header for {n_streams} leads needs {head} bytes, section has {len(body)}", section)
    avm, interval, difference, bimodal = struct.unpack_from("<HHBB", body, 0)
    if avm == 0 or interval == 0:
        raise _error(f"amplitude multiplier ({avm} nV) or sample interval ({interval} us) is zero", section)
    lengths = struct.unpack_from(f"<{n_streams}H", body, 6)
    if head + sum(lengths) > len(body):
        raise _error(f"lead data of {sum(lengths)} bytes runs past the section's {len(body)} bytes", section)
    offsets = np.concatenate(([head], head + np.cumsum(lengths))).tolist()
    streams = tuple(body[a:b] for a, b in zip(offsets, offsets[1:]))
    return _Encoded(avm, interval, difference, bool(bimodal) and section == 6, streams)


def _decode_stream(stream: bytes, n: int, tables: tuple[_HuffmanTable, ...] | None, difference: int,
                   section: int, lead: int) -> np.ndarray:
    """One lead's ``n`` sample values: Huffman-coded, or 16-bit little-endian without section 2."""
    if tables is None:
        if len(stream) < 2 * n:
            raise _error(f"lead {lead}: {len(stream)} bytes of raw data, {n} samples need {2 * n}", section)
        values = np.frombuffer(stream, "<i2", count=n).astype(np.int64)
    else:
        values = _huffman_decode(stream, n, tables, section, lead)
    return _undifference(values, difference, section)


def _sampling_rate(interval_us: int) -> float:
    """Hz from a whole-microsecond interval; 1667 us is 600 Hz, not 599.88 (the field cannot say 1666.67)."""
    fs = 1e6 / interval_us
    return float(round(fs)) if abs(fs - round(fs)) < 1e-3 * fs else fs


@dataclass(frozen=True)
class _Medians:
    """Section 5 reference beats in mV, one column per stored lead."""

    interval_us: int
    signals_mv: np.ndarray

    @property
    def fs(self) -> float:
        return _sampling_rate(self.interval_us)


def _section5(body: bytes, leads: _LeadTable, tables: tuple[_HuffmanTable, ...] | None,
              qrs: _QrsLocations | None) -> _Medians:
    """Reference beats; their length is section 4's, in ms (raw data may also say it by size)."""
    enc = _encoded(body, len(leads.leads), 5)
    if qrs is not None and qrs.median_ms:
        n = qrs.median_ms * 1000 // enc.interval_us
    elif tables is None:
        n = min(len(s) for s in enc.streams) // 2
    else:
        raise _error("reference beats are Huffman coded but section 4 gives no beat length", 5)
    if n == 0:
        raise _error("reference beat has no samples", 5)
    beats = np.column_stack([_decode_stream(s, n, tables, enc.difference, 5, i + 1)
                             for i, s in enumerate(enc.streams)])
    return _Medians(enc.interval_us, beats * (enc.avm_nv * 1e-6))


def _bimodal_anchors(lead: _Lead, protected: tuple[tuple[int, int], ...], rate: int) -> np.ndarray:
    """Where each stored value of a bimodally compressed lead sits, in samples from the lead start.

    Inside the protected zones (the QRS complexes) every sample is stored; between them one
    value per ``rate`` samples, the block mean, which is placed at the block's centre so that
    linear interpolation through all anchors rebuilds the full-rate signal.
    """
    anchors: list[np.ndarray] = []
    t = lead.start
    clipped = ((max(a, lead.start), min(b, lead.end)) for a, b in protected)
    zones = sorted((a, b) for a, b in clipped if b >= a)
    for zone_start, zone_end in zones + [(lead.end + 1, lead.end)]:
        if zone_start > t:
            block_starts = np.arange(t, zone_start, rate)
            block_ends = np.minimum(block_starts + rate - 1, zone_start - 1)
            anchors.append((block_starts + block_ends) / 2.0)
        if zone_end >= max(zone_start, t):
            anchors.append(np.arange(max(zone_start, t), zone_end + 1, dtype=np.float64))
        t = max(t, zone_end + 1)
    return np.concatenate(anchors) - lead.start if anchors else np.zeros(0)


def _add_reference_beats(signal: np.ndarray, lead: _Lead, qrs: _QrsLocations, beat: np.ndarray) -> None:
    """Add the type-0 reference beat back at every subtracted QRS, aligned on the fiducials."""
    for beat_type, start, fiducial, end in qrs.subtraction:
        if beat_type != 0:
            continue
        # sample number t of the rhythm <-> index t - fiducial + qrs.fiducial - 1 of the beat
        offset = qrs.fiducial - 1 - fiducial
        first = max(start, lead.start, -offset)
        last = min(end, lead.end, len(beat) - 1 - offset)
        if last >= first:
            signal[first - lead.start:last - lead.start + 1] += beat[first + offset:last + offset + 1]


def _section6(body: bytes, leads: _LeadTable, tables: tuple[_HuffmanTable, ...] | None,
              qrs: _QrsLocations | None, medians: _Medians | None) -> tuple[float, list[np.ndarray]]:
    """Rhythm data in mV per stored lead: decode, undo differences, undo bimodal decimation, add beats."""
    enc = _encoded(body, len(leads.leads), 6)
    interval = enc.interval_us
    rate = 1
    if enc.bimodal or leads.reference_beat_subtracted:
        what = "bimodal compression" if enc.bimodal else "reference beat subtraction"
        if qrs is None or medians is None:
            raise _error(f"rhythm uses {what} but sections 4 and 5 are not both readable", 6)
        rate, remainder = divmod(enc.interval_us, medians.interval_us)
        if remainder or not 1 <= rate <= 16 or (rate > 1 and not enc.bimodal):
            raise _error(f"rhythm sample interval {enc.interval_us} us does not fit the reference beats' "
                         f"{medians.interval_us} us", 6)
        interval = medians.interval_us
    signals = []
    for i, (lead, stream) in enumerate(zip(leads.leads, enc.streams)):
        if lead.n > 8 * len(stream) * rate:
            raise _error(f"lead {i + 1}: {lead.n} samples declared but only {len(stream)} bytes stored", 6)
        anchors = _bimodal_anchors(lead, qrs.protected, rate) if enc.bimodal else None
        n_stored = lead.n if anchors is None else len(anchors)
        values = _decode_stream(stream, n_stored, tables, enc.difference, 6, i + 1) * (enc.avm_nv * 1e-6)
        if anchors is not None:
            values = np.interp(np.arange(lead.n), anchors, values)
        if leads.reference_beat_subtracted:
            _add_reference_beats(values, lead, qrs, medians.signals_mv[:, i])
        signals.append(values)
    return _sampling_rate(interval), signals


def _packed_device_rhythm(body: bytes, n_leads: int) -> tuple[float, np.ndarray]:
    """Healforce handhelds: one stream of all leads interleaved, four 12-bit samples in three
    16-bit words (the fourth made of bits 10-13 of the three), 10-bit offset-binary values with
    two beat-marker bits on top, and the sample *rate* in Hz where the interval belongs."""
    enc = _encoded(body, 1, 6)
    stream = enc.streams[0]
    words = np.frombuffer(stream, "<u2", count=len(stream) // 6 * 3).reshape(-1, 3).astype(np.int64)
    fourth = ((words[:, 0] & 0x3C00) >> 2) | ((words[:, 1] & 0x3C00) >> 6) | ((words[:, 2] & 0x3C00) >> 10)
    samples = (np.column_stack([words, fourth]).ravel() & 0x3FF) - 512
    n = len(samples) // n_leads
    if n == 0:
        raise _error("packed rhythm stream holds no complete sample frame", 6)
    return float(enc.interval_us), samples[:n * n_leads].reshape(n, n_leads) * (enc.avm_nv * 1e-6)


# --------------------------------------------------------------------------
# Sections 7, 8 and 11: the cart's measurements and interpretation
# --------------------------------------------------------------------------


def _defined(value: int, low: int, high: int) -> float | None:
    return float(value) if value not in _UNDEFINED and low <= value <= high else None


def _section7(body: bytes) -> dict[str, float]:
    """Global measurements of the dominant beat type (block 0) and the extra block's rate and QTc."""
    if len(body) < 6:
        raise _error("global measurement section is shorter than its 6-byte header", 7)
    n_blocks, n_spikes, rr_ms, _pp_ms = struct.unpack_from("<BBHH", body, 0)
    out: dict[str, float | None] = {}
    if n_blocks and len(body) >= 22:
        p_on, p_off, qrs_on, qrs_off, t_off, p_axis, qrs_axis, t_axis = struct.unpack_from("<5H3h", body, 6)
        onsets = {k: _defined(v, 0, 20000) for k, v in
                  (("p_on", p_on), ("p_off", p_off), ("qrs_on", qrs_on), ("qrs_off", qrs_off), ("t_off", t_off))}

        def interval(a: str, b: str) -> float | None:
            first, last = onsets[a], onsets[b]
            return last - first if first is not None and last is not None and last > first else None

        out |= {"pr_ms": interval("p_on", "qrs_on"), "qrs_ms": interval("qrs_on", "qrs_off"),
                "qt_ms": interval("qrs_on", "t_off"), "p_axis_deg": _defined(p_axis, -180, 360),
                "qrs_axis_deg": _defined(qrs_axis, -180, 360), "t_axis_deg": _defined(t_axis, -180, 360)}
    rr = _defined(rr_ms, 150, 6000)
    if rr is not None:
        out["heart_rate_bpm"] = round(60000.0 / rr, 1)
    # After the blocks: spikes (4 bytes each), spike info (6 each), QRS types, then the extra block.
    pos = 6 + 16 * n_blocks + 10 * n_spikes
    if pos + 2 <= len(body):
        pos += 2 + int.from_bytes(body[pos:pos + 2], "little")
        if pos + 6 <= len(body):
            vent_rate, _atrial_rate, qtc = struct.unpack_from("<HHH", body, pos)
            out["heart_rate_bpm"] = _defined(vent_rate, 10, 400) or out.get("heart_rate_bpm")
            out["qtc_ms"] = _defined(qtc, 100, 1000)
    return {k: v for k, v in out.items() if v is not None}


def _statements(body: bytes, section: int) -> list[bytes]:
    """The statements of section 8 or 11. Both start with confirmation, date, time and the number
    of statements (9 bytes), then each statement is a sequence number, a 2-byte length and that
    many bytes; a statement cut off by the end of the section ends the list."""
    if len(body) < 9:
        raise _error("interpretation section is shorter than its 9-byte header", section)
    out: list[bytes] = []
    pos = 9
    for _ in range(body[8]):
        if pos + 3 > len(body):
            break
        length = int.from_bytes(body[pos + 1:pos + 3], "little")
        out.append(body[pos + 3:pos + 3 + length])
        pos += 3 + length
    return out


def _section8(body: bytes) -> list[str]:
    """Free-text statements: each one null-terminated text."""
    return [text for text in map(_text, _statements(body, 8)) if text]


def _section11(body: bytes) -> list[str]:
    """Universal statement codes: each statement's text fields (v2+: after a type byte; logic skipped)."""
    out: list[str] = []
    for field in _statements(body, 11):
        if field and field[0] in (1, 2, 3):  # 1 coded statement, 2 full text, 3 statement logic
            field = field[1:] if field[0] != 3 else b""
        words = [w for w in (_text(part) for part in field.split(b"\0")) if w]
        if words:
            out.append(" ".join(words))
    return out


# --------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------

_LIMB_DERIVATIONS = {  # from I and II (Einthoven's law and Goldberger's augmented leads)
    "III": lambda i, ii: ii - i,
    "aVR": lambda i, ii: -(i + ii) / 2.0,
    "aVL": lambda i, ii: i - ii / 2.0,
    "aVF": lambda i, ii: ii - i / 2.0,
}


def _with_limb_leads(names: list[str], columns: list[np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """Where I and II are stored, give all six limb leads (deriving the missing ones) in the usual
    order I, II, III, aVR, aVL, aVF at the place of the first of them; other leads keep file order."""
    if "I" not in names or "II" not in names:
        return names, columns
    stored = dict(zip(names, columns))
    i, ii = stored["I"], stored["II"]
    limb = ["I", "II", *_LIMB_DERIVATIONS]
    limb_columns = [stored[name] if name in stored else _LIMB_DERIVATIONS[name](i, ii) for name in limb]
    at = min(names.index("I"), names.index("II"))
    rest = [(n, c) for n, c in zip(names, columns) if n not in limb]
    before = [(n, c) for n, c in zip(names[:at], columns[:at]) if n not in limb]
    after = rest[len(before):]
    ordered = before + list(zip(limb, limb_columns)) + after
    return [n for n, _ in ordered], [c for _, c in ordered]


def _on_common_timebase(leads: tuple[_Lead, ...], signals: list[np.ndarray]) -> list[np.ndarray]:
    """Leads recorded at different times share one time axis; NaN where a lead has no sample."""
    first, last = min(lead.start for lead in leads), max(lead.end for lead in leads)
    if all(lead.start == first and lead.end == last for lead in leads):
        return signals
    out = []
    for lead, signal in zip(leads, signals):
        column = np.full(last - first + 1, np.nan)
        column[lead.start - first:lead.end - first + 1] = signal
        out.append(column)
    return out


def _optional(sections: dict[int, bytes], sid: int, parse: Callable[..., _T], *args: object) -> _T | None:
    """Parse a section the recording can do without; a fault is logged and the section left out."""
    if sid not in sections:
        return None
    try:
        return parse(sections[sid], *args)
    except WaveformError as exc:
        _log.warning("SCP-ECG section %d not decoded: %s", sid, exc.reason)
        return None


def _is_packed_device_layout(sections: dict[int, bytes], conformant: bool) -> bool:
    """A non-conformant file whose lead table is too short for its lead count: the Healforce layout."""
    body = sections[3]
    return not conformant and len(body) >= 1 and len(body) < 2 + 9 * body[0]


def _standard_rhythm(sections: dict[int, bytes]) -> tuple[float, list[str], list[np.ndarray], _Medians | None]:
    """Sections 2-6 as the standard lays them out: (fs, stored lead names, columns in mV, medians)."""
    leads = _section3(sections[3])
    tables = _section2(sections[2]) if 2 in sections else None
    rhythm = sections[6]
    if leads.reference_beat_subtracted or (len(rhythm) > 5 and rhythm[5] == 1):
        # The rhythm cannot be rebuilt without the beats: their faults are the rhythm's faults.
        qrs = _section4(sections[4]) if 4 in sections else None
        medians = _section5(sections[5], leads, tables, qrs) if 5 in sections else None
    else:
        qrs = _optional(sections, 4, _section4)
        medians = _optional(sections, 5, _section5, leads, tables, qrs)
    fs, stored = _section6(rhythm, leads, tables, qrs, medians)
    names = [lead.name for lead in leads.leads]
    return fs, names, _on_common_timebase(leads.leads, stored), medians


def read_scp_ecg(data: bytes) -> Recording:
    """Read an SCP-ECG file into a :class:`Recording` in mV.

    Raises :class:`WaveformError` naming the section for anything that prevents reading the
    rhythm; faults in sections the rhythm does not need (patient tags, measurements,
    statements, reference beats of a file that did not subtract them) are logged and those
    parts left out, so a cart's odd statement section never costs the patient the ECG.
    """
    try:
        return _read(bytes(data))
    except (struct.error, IndexError, OverflowError) as exc:  # a check we missed; never leak these
        raise _error(f"malformed file ({type(exc).__name__})") from exc


def _read(data: bytes) -> Recording:
    sections, conformant = _sections(data)
    for sid, what in ((3, "lead definition"), (6, "rhythm data")):
        if sid not in sections:
            raise _error(f"file has no {what} section", sid)
    if _is_packed_device_layout(sections, conformant):
        fs, signals = _packed_device_rhythm(sections[6], sections[3][0])
        stored = list(_HEALFORCE_LEADS if signals.shape[1] == 3 else
                      (f"SCP lead {i + 1}" for i in range(signals.shape[1])))
        columns, medians = list(signals.T), None
    else:
        fs, stored, columns, medians = _standard_rhythm(sections)
    names, columns = _with_limb_leads(stored, columns)
    info = _optional(sections, 1, _section1) or {}
    statements = (_optional(sections, 8, _section8) or []) + (_optional(sections, 11, _section11) or [])
    source = RecordingSource(
        format="scp-ecg",
        patient_id=info.get("patient_id"), patient_name=info.get("patient_name"),
        patient_sex=info.get("patient_sex"), patient_birth_date=info.get("patient_birth_date"),
        manufacturer=info.get("manufacturer"), model=info.get("model"), serial=info.get("serial"),
        measurements=_optional(sections, 7, _section7) or {},
        statements=tuple(dict.fromkeys(statements)),
        median_beats=None if medians is None else (medians.fs, tuple(stored), medians.signals_mv),
    )
    return Recording(fs=fs, leads=tuple(names), signals=np.column_stack(columns),
                     start_time=info.get("start_time"), source=source)
