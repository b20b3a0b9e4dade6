"""SCP-ECG reader: every shared sample checked against independent decoding, synthetic files for
the encodings the samples do not use, and every bad-input kind.

The independent checks decode with a bit-string Huffman decoder and a plain section walker
written here, sharing nothing with the reader but the standard.
"""

from __future__ import annotations

import binascii
import logging
import random
import struct
import time
from datetime import datetime

import numpy as np
import pytest

from telediag.bench.refdata import project_root, shared_data_dir
from telediag.ecg.readers.scpecg import looks_like_scp_ecg, read_scp_ecg
from telediag.ecg.recording import MEASUREMENT_KEYS, WaveformError

SAMPLE = project_root() / "sample_data" / "ecg-formats" / "scp-ecg" / "Example.scp"
WA_2 = "ECG_20060620_112352_ANON000002.SCP"
WA_4 = "ECG_20070321_110542_ANON000004.SCP"
ALL_SHARED = ("Example.scp", "demo.scp", WA_2, WA_4, "healforce_62.SCP")


def _shared(name: str) -> bytes:
    base = shared_data_dir()
    path = base / "ecg-formats" / "scp-ecg" / name if base is not None else None
    if path is None or not path.is_file():
        pytest.skip("shared SCP-ECG samples (shared/data/ecg-formats/scp-ecg) not available")
    return path.read_bytes()


# ---------------------------------------------------------------- independent helpers

# The standard's default Huffman codes as bit strings (EN 1064 annex), and the two escapes.
_DEFAULT_CODES = {0: "0", 1: "100", -1: "101", 2: "1100", -2: "1101", 3: "11100", -3: "11101",
                  4: "111100", -4: "111101", 5: "1111100", -5: "1111101", 6: "11111100",
                  -6: "11111101", 7: "111111100", -7: "111111101", 8: "1111111100", -8: "1111111101"}
_ESCAPE8, _ESCAPE16 = "1111111110", "1111111111"


def _encode_default(values: list[int] | np.ndarray) -> bytes:
    bits = []
    for v in (int(x) for x in values):
        if v in _DEFAULT_CODES:
            bits.append(_DEFAULT_CODES[v])
        elif -128 <= v <= 127:
            bits.append(_ESCAPE8 + format(v & 0xFF, "08b"))
        else:
            bits.append(_ESCAPE16 + format(v & 0xFFFF, "016b"))
    return _pack_bits("".join(bits))


def _pack_bits(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def _decode_default(stream: bytes, n: int) -> np.ndarray:
    """Bit-by-bit reference decoder (slow, obviously correct)."""
    inverse = {code: v for v, code in _DEFAULT_CODES.items()}
    bits = "".join(f"{b:08b}" for b in stream)
    out, pos = [], 0
    while len(out) < n:
        for length in range(1, 11):
            code = bits[pos:pos + length]
            if code in inverse:
                out.append(inverse[code])
                pos += length
                break
            if code in (_ESCAPE8, _ESCAPE16):
                width = 8 if code == _ESCAPE8 else 16
                raw = int(bits[pos + 10:pos + 10 + width], 2)
                out.append(raw - (1 << width) if raw >= 1 << (width - 1) else raw)
                pos += 10 + width
                break
        else:
            raise AssertionError(f"no code at bit {pos}")
    return np.array(out, dtype=np.int64)


def _raw_sections(data: bytes) -> dict[int, bytes]:
    """Section bodies by id via section 0's 1-based pointers (conformant files only)."""
    s0_len = struct.unpack_from("<I", data, 10)[0]
    out = {}
    for off in range(22, 6 + s0_len, 10):
        sid, length, index = struct.unpack_from("<HII", data, off)
        if length:
            out[sid] = data[index - 1 + 16:index - 1 + length]
    return out


def _rhythm_streams(body: bytes, n_leads: int) -> tuple[int, int, list[bytes]]:
    avm, _interval, diff, _bimodal = struct.unpack_from("<HHBB", body, 0)
    lengths = struct.unpack_from(f"<{n_leads}H", body, 6)
    pos, streams = 6 + 2 * n_leads, []
    for length in lengths:
        streams.append(body[pos:pos + length])
        pos += length
    return avm, diff, streams


def _section(sid: int, body: bytes, version: int = 20) -> bytes:
    body += b"\0" * (len(body) % 2)
    content = struct.pack("<HIBB6s", sid, 16 + len(body), version, version,
                          b"SCPECG" if sid == 0 else bytes(6)) + body
    return struct.pack("<H", binascii.crc_hqx(content, 0xFFFF)) + content


def _scp_file(bodies: dict[int, bytes], version: int = 20) -> bytes:
    """A conformant file: section 0 with pointers for ids 0-11 (and any others), CRCs everywhere."""
    ids = sorted(set(range(12)) | set(bodies))
    s0_len = 16 + 10 * len(ids)
    layout, offset = {}, 6 + s0_len
    for sid in sorted(bodies):
        if sid:
            section = _section(sid, bodies[sid], version)
            layout[sid] = (section, offset)
            offset += len(section)
    pointers = b"".join(struct.pack("<HII", sid, *(
        (s0_len, 7) if sid == 0 else (len(layout[sid][0]), layout[sid][1] + 1) if sid in layout else (0, 0)))
        for sid in ids)
    body = _section(0, pointers, version) + b"".join(section for section, _ in layout.values())
    head = struct.pack("<I", 6 + len(body))
    return struct.pack("<H", binascii.crc_hqx(head + body, 0xFFFF)) + head + body


def _fix_crcs(data: bytearray) -> bytes:
    """Recompute every section CRC and the file CRC after an edit (to test the decoding behind them)."""
    s0_len = struct.unpack_from("<I", data, 10)[0]
    for off in range(22, min(6 + s0_len, len(data)) - 9, 10):
        sid, length, index = struct.unpack_from("<HII", data, off)
        if length and sid and index and index - 1 + length <= len(data):
            start = index - 1
            crc = binascii.crc_hqx(bytes(data[start + 2:start + length]), 0xFFFF)
            data[start:start + 2] = struct.pack("<H", crc)
    if 6 + s0_len <= len(data):
        data[6:8] = struct.pack("<H", binascii.crc_hqx(bytes(data[8:6 + s0_len]), 0xFFFF))
    data[0:2] = struct.pack("<H", binascii.crc_hqx(bytes(data[2:]), 0xFFFF))
    return bytes(data)


def _leads_body(leads: list[tuple[int, int, int]], flags: int = 0x04) -> bytes:
    """Section 3: (code, first sample, last sample) per lead."""
    return struct.pack("<BB", len(leads), flags) + b"".join(struct.pack("<IIB", s, e, c) for c, s, e in leads)


def _coded_body(streams: list[bytes], avm: int, interval: int, diff: int, bimodal: int = 0) -> bytes:
    """Sections 5/6: header, per-lead lengths, data."""
    return (struct.pack("<HHBB", avm, interval, diff, bimodal)
            + b"".join(struct.pack("<H", len(s)) for s in streams) + b"".join(streams))


def _synthetic_ecg(n: int, fs: float, seed: int = 0) -> np.ndarray:
    """Integer ECG-like samples (units of 5 uV): beats every 0.8 s on a slow baseline wander."""
    t = np.arange(n) / fs
    beats = sum(np.exp(-((t - c) / 0.012) ** 2) for c in np.arange(0.3, t[-1], 0.8))
    x = 200 * beats + 30 * np.sin(2 * np.pi * 0.3 * t) + np.random.default_rng(seed).normal(0, 2, n)
    return np.round(x).astype(np.int64)


# ---------------------------------------------------------------- detection


def test_detects_every_sample() -> None:
    assert looks_like_scp_ecg(SAMPLE.read_bytes()[:64])
    for name in ALL_SHARED:  # including the non-conformant Healforce export
        assert looks_like_scp_ecg(_shared(name)[:64]), name


def test_detects_nothing_else() -> None:
    root = project_root() / "sample_data"
    assert not looks_like_scp_ecg((root / "dicom" / "waveform_ecg.dcm").read_bytes())
    assert not looks_like_scp_ecg((root / "wfdb" / "mitdb119_300s.dat").read_bytes())
    assert not looks_like_scp_ecg(b'<?xml version="1.0"?><AnnotatedECG xmlns="urn:hl7-org:v3"></AnnotatedECG>')
    assert not looks_like_scp_ecg(b"")
    assert not looks_like_scp_ecg(bytes(200))
    rng = random.Random(7)
    assert not any(looks_like_scp_ecg(rng.randbytes(64)) for _ in range(2000))


# ---------------------------------------------------------------- the samples


def _check_common(rec, n: int, fs: float, leads: tuple[str, ...]) -> None:
    assert rec.fs == fs and rec.leads == leads and rec.signals.shape == (n, len(leads))
    assert rec.signals.dtype == np.float64 and np.isfinite(rec.signals).all()
    ii = rec.signals[:, rec.leads.index("II")]
    assert 0.3 <= np.abs(ii - np.median(ii)).max() <= 4.0
    assert rec.source.format == "scp-ecg"
    assert set(rec.source.measurements) <= set(MEASUREMENT_KEYS)


def _check_einthoven(rec, derived: tuple[str, ...]) -> None:
    lead = dict(zip(rec.leads, rec.signals.T))
    i, ii = lead["I"], lead["II"]
    expected = {"III": ii - i, "aVR": -(i + ii) / 2, "aVL": i - ii / 2, "aVF": ii - i / 2}
    for name in derived:
        np.testing.assert_array_equal(lead[name], expected[name])


def test_example_sample_matches_reference_decoding() -> None:
    data = SAMPLE.read_bytes()
    rec = read_scp_ecg(data)
    _check_common(rec, 5000, 500.0, ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"))
    # Independent decoding of three leads (file order I, II, V1, ..., V6, III, aVR, aVL, aVF).
    sections = _raw_sections(data)
    avm, diff, streams = _rhythm_streams(sections[6], 12)
    assert (avm, diff) == (2500, 2)
    for file_index, name in ((0, "I"), (1, "II"), (9, "aVR")):
        d = _decode_default(streams[file_index], 5000)
        x = np.empty(5000, np.int64)
        x[:2] = d[:2]
        for k in range(2, 5000):
            x[k] = d[k] + 2 * x[k - 1] - x[k - 2]
        np.testing.assert_allclose(rec.signals[:, rec.leads.index(name)], x * 2500e-6, atol=1e-12)
    # All 12 leads are stored: the cart's III and augmented leads obey Einthoven/Goldberger to
    # within rounding of one unit (2.5 uV), which only a correct decoding of all leads gives.
    lead = dict(zip(rec.leads, rec.signals.T))
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=2.6e-3)
    np.testing.assert_allclose(lead["aVF"], lead["II"] - lead["I"] / 2, atol=2.6e-3)
    assert dict(rec.source.measurements) == {"pr_ms": 148, "qrs_ms": 120, "qt_ms": 420, "qtc_ms": 443,
                                             "p_axis_deg": 44, "qrs_axis_deg": -61, "t_axis_deg": 86}
    assert rec.start_time == datetime(2002, 11, 22, 9, 10, 0)
    src = rec.source
    assert (src.patient_id, src.patient_name, src.patient_sex, src.patient_birth_date) == (
        "SBJ-123", "Clark", "M", "19530508")
    assert src.model == "ELI250" and src.serial is None
    fs, names, beats = src.median_beats
    assert fs == 500.0 and len(names) == 12 and beats.shape == (599, 12)  # 1198 ms at 500 Hz
    assert 0.3 < np.ptp(beats[:, names.index("II")]) < 4


def test_welch_allyn_samples() -> None:
    expected = {
        WA_2: (("I", "II", "III", "aVR", "aVL", "aVF", "V3R", "V1", "V2", "V4", "V6", "V7"),
               {"pr_ms": 177, "qrs_ms": 100, "qt_ms": 343, "qtc_ms": 401, "p_axis_deg": 64,
                "qrs_axis_deg": 49, "t_axis_deg": 25, "heart_rate_bpm": 82}, "AV-block I (begränsad)", 433),
        WA_4: (("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
               {"pr_ms": 157, "qrs_ms": 88, "qt_ms": 360, "qtc_ms": 402, "p_axis_deg": 29,
                "qrs_axis_deg": 53, "t_axis_deg": 56, "heart_rate_bpm": 75}, "VK-hypertrofi", 430),
    }
    for name, (leads, measurements, statement, median_n) in expected.items():
        data = _shared(name)
        rec = read_scp_ecg(data)
        # 1667 us is the closest whole-microsecond interval to 600 Hz
        _check_common(rec, 6000, 600.0, leads)
        _check_einthoven(rec, ("III", "aVR", "aVL", "aVF"))
        assert dict(rec.source.measurements) == measurements
        assert "sinusrytm" in rec.source.statements and statement in rec.source.statements
        assert rec.source.manufacturer == "Welch Allyn Cardio Control" and rec.source.model == "MDW14"
        stored = [n for n in leads if n not in ("III", "aVR", "aVL", "aVF")]
        assert rec.source.median_beats[1] == tuple(stored)
        assert rec.source.median_beats[2].shape == (median_n, 8)
        # Independent decoding of lead V1 (first differences).
        avm, diff, streams = _rhythm_streams(_raw_sections(data)[6], 8)
        assert (avm, diff) == (3750, 1)
        v1 = np.cumsum(_decode_default(streams[stored.index("V1")], 6000)) * 3750e-6
        np.testing.assert_allclose(rec.signals[:, rec.leads.index("V1")], v1, atol=1e-12)


def test_demo_sample_raw_data_hand_decoded() -> None:
    data = _shared("demo.scp")
    rec = read_scp_ecg(data)
    _check_common(rec, 10000, 1000.0, ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"))
    _check_einthoven(rec, ("III", "aVR", "aVL", "aVF"))
    # Section 6 sits at byte 386 (pointer 387): 16-byte header, AVM 183 nV, 1000 us, then
    # 8 lengths of 20000 bytes; lead II's raw 16-bit samples start 20000 bytes after lead I's.
    assert struct.unpack_from("<HHBB8H", data, 386 + 16)[:5] == (183, 1000, 0, 0, 20000)
    ii_at = 386 + 16 + 6 + 16 + 20000
    for k in (0, 1, 2, 4321, 9999):
        raw = struct.unpack_from("<h", data, ii_at + 2 * k)[0]
        assert rec.signals[k, rec.leads.index("II")] == pytest.approx(raw * 183e-6)
    assert rec.start_time == datetime(2004, 6, 24, 16, 52, 16)
    assert rec.source.patient_name == "Patient^Demo" and rec.source.median_beats is None
    assert not rec.source.measurements and not rec.source.statements


def test_healforce_non_conformant_export_is_decoded(caplog: pytest.LogCaptureFixture) -> None:
    data = _shared("healforce_62.SCP")
    with caplog.at_level(logging.WARNING):
        rec = read_scp_ecg(data)
    assert "not EN 1064 conformant" in caplog.text
    _check_common(rec, 4500, 150.0, ("I", "II", "III", "aVR", "aVL", "aVF"))
    _check_einthoven(rec, ("aVR", "aVL", "aVF"))
    lead = dict(zip(rec.leads, rec.signals.T))
    # The device's three channels are I, II and III: III follows Einthoven's law closely.
    assert np.corrcoef(lead["III"], lead["II"] - lead["I"])[0, 1] > 0.98
    # Hand decoding of the first frame: section 6 at byte 488 (0-based pointer); its data start
    # after the 16-byte header, 6-byte rhythm header and one 2-byte length. Three 16-bit words
    # give samples 0-2 in their low 10 bits (offset binary), sample 3 from bits 10-13 of each.
    w = struct.unpack_from("<3H", data, 488 + 16 + 8)
    fourth = ((w[0] >> 10 & 0xF) << 8) | ((w[1] >> 10 & 0xF) << 4) | (w[2] >> 10 & 0xF)
    frame = [(x & 0x3FF) - 512 for x in (*w, fourth)]
    assert rec.signals[0, :3] * 1e6 / 9524 == pytest.approx(frame[:3])
    assert rec.signals[1, 0] * 1e6 / 9524 == pytest.approx(frame[3])
    assert rec.start_time == datetime(2019, 8, 8, 0, 4, 10)


@pytest.mark.parametrize("name", ("sample", *ALL_SHARED))
def test_decoding_is_fast(name: str) -> None:
    data = SAMPLE.read_bytes() if name == "sample" else _shared(name)
    assert min(_timed(data) for _ in range(3)) < 0.05


def _timed(data: bytes) -> float:
    start = time.perf_counter()
    read_scp_ecg(data)
    return time.perf_counter() - start


# ---------------------------------------------------------------- encodings the samples do not use


def _lead_set(n: int) -> list[tuple[int, int, int]]:
    return [(1, 1, n), (2, 1, n)]


def test_custom_huffman_table_and_table_switching() -> None:
    # Table 1: 0 -> 0, 10 -> +1, 110 -> -1, 1110 -> switch to table 2, 1111 + 16 bits raw.
    # Table 2: 0 -> +50, 1 -> switch back to table 1. Base codes are stored bit-reversed.
    def code(bits: str) -> int:
        return int(bits[::-1], 2)

    table1 = [(1, 1, 1, 0, code("0")), (2, 2, 1, 1, code("10")), (3, 3, 1, -1, code("110")),
              (4, 4, 0, 2, code("1110")), (4, 20, 1, 0, code("1111"))]
    table2 = [(1, 1, 1, 50, code("0")), (1, 1, 0, 1, code("1"))]
    section2 = struct.pack("<H", 2) + b"".join(
        struct.pack("<H", len(t)) + b"".join(struct.pack("<BBBhI", *c) for c in t) for t in (table1, table2))
    lead1 = "0" + "10" + "110" + "1111" + format(-300 & 0xFFFF, "016b") + "1110" + "0" + "0" + "1" + "10"
    values1 = [0, 1, -1, -300, 50, 50, 1]
    lead2 = "10" * 7  # no switch: plain table-1 codes
    data = _scp_file({
        2: section2, 3: _leads_body(_lead_set(7)),
        6: _coded_body([_pack_bits(lead1), _pack_bits(lead2)], avm=1000, interval=2000, diff=0)})
    rec = read_scp_ecg(data)
    np.testing.assert_allclose(rec.signals[:, 0], np.array(values1) * 1e-3)
    np.testing.assert_allclose(rec.signals[:, 1], np.full(7, 1e-3))


def test_first_difference_raw_data_and_leads_at_different_times() -> None:
    x = np.array([10, 12, 15, 11, -4, 0], np.int64)
    diffs = np.concatenate(([x[0]], np.diff(x)))
    late = np.array([7, 8, 9], np.int64)
    late_diffs = np.concatenate(([late[0]], np.diff(late)))
    data = _scp_file({3: _leads_body([(1, 1, 6), (3, 4, 6)]),
                      6: _coded_body([diffs.astype("<i2").tobytes(), late_diffs.astype("<i2").tobytes()],
                                     avm=5000, interval=4000, diff=1)})
    rec = read_scp_ecg(data)
    assert rec.fs == 250.0 and rec.leads == ("I", "V1")
    np.testing.assert_allclose(rec.signals[:, 0], x * 5e-3)
    assert np.isnan(rec.signals[:3, 1]).all()
    np.testing.assert_allclose(rec.signals[3:, 1], late * 5e-3)


def _beat_files(bimodal: bool) -> tuple[bytes, np.ndarray, list[tuple[int, int]]]:
    """A 2-lead 500 Hz rhythm with reference beats subtracted at its 5 QRS (and decimated by 4
    between them when ``bimodal``); returns the file, the original samples and the zones."""
    n, fs, rate = 2000, 500.0, 4
    original = np.column_stack([_synthetic_ecg(n, fs, 1), -_synthetic_ecg(n, fs, 2) // 2])
    fiducials = [151, 551, 951, 1351, 1751]  # sample numbers (1-based) of the peaks: 0.3 s + k * 0.8 s
    beat_fiducial = 40  # in the 100-sample (200 ms) reference beat
    # The cart's reference beat: the QRS template without baseline, as carts store medians.
    template = np.round(200 * np.exp(-((np.arange(100) - (beat_fiducial - 1)) / fs / 0.012) ** 2))
    beat = np.column_stack([template, -template // 2]).astype(np.int64)
    zones = [(f - beat_fiducial + 1, f - beat_fiducial + 100) for f in fiducials]
    residual = original.copy()
    for start, end in zones:
        residual[start - 1:end] -= beat
    streams = []
    for k in range(2):
        if bimodal:
            stored, t = [], 1
            for start, end in zones + [(n + 1, n)]:
                for block in range(t, start, rate):
                    stored.append(int(np.round(residual[block - 1:min(block + rate, start) - 1, k].mean())))
                stored.extend(residual[start - 1:end, k].tolist())
                t = end + 1
            values = np.array(stored)
        else:
            values = residual[:, k]
        streams.append(_encode_default(np.concatenate(([values[0]], np.diff(values)))))
    section4 = (struct.pack("<HHH", 200, beat_fiducial, len(zones))
                + b"".join(struct.pack("<HIII", 0, s, f, e) for (s, e), f in zip(zones, fiducials))
                + b"".join(struct.pack("<II", s, e) for s, e in zones))
    beat_streams = [_encode_default(beat[:, k]) for k in range(2)]
    data = _scp_file({
        2: struct.pack("<H", 19999), 3: _leads_body(_lead_set(n), flags=0x05),
        4: section4, 5: _coded_body(beat_streams, avm=5000, interval=2000, diff=0),
        6: _coded_body(streams, avm=5000, interval=2000 * (rate if bimodal else 1), diff=1, bimodal=int(bimodal))})
    return data, original, zones


def test_reference_beat_subtraction_is_undone_exactly() -> None:
    data, original, _zones = _beat_files(bimodal=False)
    rec = read_scp_ecg(data)
    assert rec.fs == 500.0
    np.testing.assert_allclose(rec.signals[:, :2], original * 5e-3, atol=1e-9)
    assert rec.source.median_beats[2].shape == (100, 2)


def test_bimodal_compression_rebuilds_the_full_rate_signal() -> None:
    data, original, zones = _beat_files(bimodal=True)
    rec = read_scp_ecg(data)
    assert rec.fs == 500.0 and rec.signals.shape[0] == 2000
    got, want = rec.signals[:, :2], original * 5e-3
    for start, end in zones:  # full rate inside the protected zones: exact
        np.testing.assert_allclose(got[start - 1:end], want[start - 1:end], atol=1e-9)
    # Between them, 1-in-4 block means linearly interpolated: within noise plus the wander's curvature.
    assert np.abs(got - want).max() < 0.06 and np.abs(got - want).mean() < 0.012


def test_statements_measurements_and_patient_tags() -> None:
    tags = (b"\x00" + struct.pack("<H", 4) + b"Doe\0" + b"\x01" + struct.pack("<H", 5) + b"Jane\0"
            + b"\x02" + struct.pack("<H", 4) + b"P-1\0" + b"\x05" + struct.pack("<HHBB", 4, 1980, 2, 29)
            + b"\x08" + struct.pack("<HB", 1, 2) + b"\x19" + struct.pack("<HHBB", 4, 2024, 3, 1)
            + b"\x1a" + struct.pack("<HBBB", 3, 8, 30, 5) + b"\xff\x00\x00")
    measurements = (struct.pack("<BBHH", 1, 0, 1000, 29999)
                    + struct.pack("<5H3h", 100, 200, 260, 352, 660, 29999, -30, 45)
                    + struct.pack("<H", 0) + struct.pack("<HHHBH", 62, 29999, 410, 1, 0))
    text = b"Sinus rhythm\0"
    section8 = struct.pack("<BHBBBBBB", 1, 2024, 3, 1, 8, 31, 0, 1) + struct.pack("<BH", 1, len(text)) + text
    coded = b"\x01SR\0normal ECG\0"
    section11 = struct.pack("<BHBBBBBB", 1, 2024, 3, 1, 8, 31, 0, 2) + struct.pack("<BH", 1, len(coded)) + coded
    section11 += struct.pack("<BH", 2, 3) + b"\x03\x01\x02"  # statement logic: no text
    data = _scp_file({1: tags, 3: _leads_body(_lead_set(3)),
                      6: _coded_body([struct.pack("<3h", 1, 2, 3)] * 2, avm=1000, interval=1000, diff=0),
                      7: measurements, 8: section8, 11: section11})
    rec = read_scp_ecg(data)
    src = rec.source
    assert (src.patient_name, src.patient_id, src.patient_birth_date, src.patient_sex) == (
        "Doe^Jane", "P-1", "19800229", "F")
    assert rec.start_time == datetime(2024, 3, 1, 8, 30, 5)
    assert dict(src.measurements) == {"pr_ms": 160, "qrs_ms": 92, "qt_ms": 400, "qtc_ms": 410,
                                      "qrs_axis_deg": -30, "t_axis_deg": 45, "heart_rate_bpm": 62}
    assert src.statements == ("Sinus rhythm", "SR normal ECG")


def test_faulty_optional_section_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    data = _scp_file({3: _leads_body(_lead_set(3)), 7: b"\x01",
                      6: _coded_body([struct.pack("<3h", 1, 2, 3)] * 2, avm=1000, interval=1000, diff=0)})
    with caplog.at_level(logging.WARNING):
        rec = read_scp_ecg(data)
    assert not rec.source.measurements and "section 7 not decoded" in caplog.text


# ---------------------------------------------------------------- bad input


def _fails(data: bytes, section: str | None, *words: str) -> WaveformError:
    with pytest.raises(WaveformError) as info:
        read_scp_ecg(data)
    err = info.value
    assert err.section == section, str(err)
    assert err.format == "SCP-ECG"
    for word in words:
        assert word in str(err), str(err)
    return err


def test_empty_and_tiny_input() -> None:
    _fails(b"", "0", "too short")
    _fails(bytes(40), "0", "does not fit")


def test_truncated_files_name_the_cut_section() -> None:
    data = SAMPLE.read_bytes()
    sections = {7: 33902, 6: 3818, 5: 476, 1: 142}  # 0-based starts (pointer minus one)
    _fails(data[:30], "0", "too short")
    _fails(data[:100], "0", "does not fit")
    for sid, start in sections.items():
        _fails(data[:start + 20], str(sid), "truncated")
    _fails(data[:-1], "7", "truncated")


def test_damaged_bytes_fail_the_section_crc() -> None:
    data = bytearray(SAMPLE.read_bytes())
    for sid, offset in ((6, 10000), (1, 160), (5, 1000), (7, 33950)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        _fails(bytes(damaged), str(sid), "CRC")
    damaged = bytearray(data)
    damaged[0] ^= 1
    _fails(bytes(damaged), None, "file CRC")
    damaged = bytearray(data)
    damaged[2] ^= 1
    _fails(bytes(damaged), None, "length field")


def test_bad_pointer_and_wrong_lengths() -> None:
    data = bytearray(SAMPLE.read_bytes())
    entry = 22 + 10 * 7  # section 7's pointer
    assert struct.unpack_from("<H", data, entry)[0] == 7
    data[entry + 6:entry + 10] = struct.pack("<I", 10 ** 6)
    _fails(_fix_crcs(data), "7", "truncated file or bad pointer")
    data = bytearray(SAMPLE.read_bytes())
    data[entry + 2:entry + 6] = struct.pack("<I", 240)  # header says 242
    _fails(_fix_crcs(data), "7", "disagrees")


def test_bad_huffman_data() -> None:
    def code(bits: str) -> int:
        return int(bits[::-1], 2)

    incomplete = struct.pack("<HH", 1, 2) + struct.pack("<BBBhI", 1, 1, 1, 0, code("0")) + struct.pack(
        "<BBBhI", 2, 2, 1, 1, code("10"))  # "11" starts no code
    leads = _leads_body([(1, 1, 8)])
    _fails(_scp_file({2: incomplete, 3: leads, 6: _coded_body([_pack_bits("0" * 5 + "11000")], 1000, 1000, 0)}),
           "6", "invalid or incomplete Huffman code at bit 5")
    _fails(_scp_file({2: struct.pack("<H", 19999), 3: leads, 6: _coded_body([b""], 1000, 1000, 0)}),
           "6", "8 samples declared but only 0 bytes")
    _fails(_scp_file({2: struct.pack("<H", 19999), 3: _leads_body([(1, 1, 5)]),
                      6: _coded_body([_pack_bits("1111111111" + "0101")], 1000, 1000, 0)}),
           "6", "invalid or incomplete Huffman code at bit 0")
    ambiguous = struct.pack("<HH", 1, 2) + struct.pack("<BBBhI", 1, 1, 1, 0, 0) * 2
    _fails(_scp_file({2: ambiguous, 3: leads, 6: _coded_body([b"\x00"], 1000, 1000, 0)}), "2", "prefix-free")


def test_structural_faults_name_their_section() -> None:
    rhythm = _coded_body([struct.pack("<3h", 1, 2, 3)], avm=1000, interval=1000, diff=0)
    _fails(_scp_file({3: _leads_body([(1, 1, 3)])}), "6", "no rhythm data")
    _fails(_scp_file({6: rhythm}), "3", "no lead definition")
    _fails(_scp_file({3: _leads_body([(1, 1, 3)])[:-2], 6: rhythm}), "3", "needs")
    _fails(_scp_file({3: _leads_body([(1, 1, 4)]), 6: rhythm}), "6", "raw data")
    _fails(_scp_file({3: _leads_body([(1, 1, 3)]), 6: rhythm[:4]}), "6", "header")
    _fails(_scp_file({3: _leads_body([(1, 1, 3)]), 6: _coded_body([b"\0" * 6], 0, 1000, 0)}), "6", "zero")
    _fails(_scp_file({3: _leads_body([(1, 1, 3)]), 6: _coded_body([struct.pack("<3h", 1, 2, 3)], 1, 1, 7)}),
           "6", "difference encoding")
    _fails(_scp_file({3: _leads_body([(1, 1, 3)], flags=0x05), 6: rhythm}), "6", "reference beat subtraction")
    # A huge declared lead is refused from the sizes, before any work (no hang, no memory blow-up:
    # decoding 2**32 samples would take minutes and gigabytes, so 10 s tells the two apart under load).
    start = time.perf_counter()
    _fails(_scp_file({2: struct.pack("<H", 19999), 3: _leads_body([(1, 1, 2 ** 32 - 1)]), 6: rhythm}), "6")
    assert time.perf_counter() - start < 10


def test_random_damage_behind_valid_crcs_never_escapes_as_another_error() -> None:
    rng = random.Random(1064)
    data = SAMPLE.read_bytes()
    for _ in range(150):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(6, len(damaged))] = rng.randrange(256)
        try:
            rec = read_scp_ecg(_fix_crcs(damaged))
        except WaveformError as err:
            assert err.format == "SCP-ECG" and "malformed" not in str(err)
        else:
            assert rec.signals.ndim == 2


def test_error_messages_carry_no_patient_data() -> None:
    tags = b"\x00" + struct.pack("<H", 9) + b"Sensitive" + b"\x02" + struct.pack("<H", 6) + b"ID-999" + b"\xff\0\0"
    err = _fails(_scp_file({1: tags, 3: _leads_body([(1, 1, 9)]),
                            6: _coded_body([b"\0\0"], 1000, 1000, 0)}), "6")
    assert "Sensitive" not in str(err) and "ID-999" not in str(err)


def test_independent_helpers_agree_with_the_standard_tables() -> None:
    """The test's own encoder/decoder round-trip (so the cross-checks above check something)."""
    values = [0, 1, -1, 8, -8, 9, -100, 127, -128, 128, 30000, -32768]
    assert _decode_default(_encode_default(values), len(values)).tolist() == values
