"""XML ECG readers (HL7 aECG, GE MUSE, Philips): decoded values against independent
decodings of the same bytes, the carts' own findings, format detection, and every kind of
hostile or broken document refused with a WaveformError, quickly and in bounded memory."""

from __future__ import annotations

import base64
import re
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from telediag.bench.refdata import project_root, shared_data_dir
from telediag.ecg.readers._xml import MAX_XML_BYTES, MAX_XML_ELEMENTS, parse, root_tag
from telediag.ecg.readers.aecg import read_hl7_aecg
from telediag.ecg.readers.muse import read_ge_muse
from telediag.ecg.readers.philips import read_philips_xml
from telediag.ecg.recording import MEASUREMENT_KEYS, Recording, WaveformError

SAMPLES = project_root() / "sample_data" / "ecg-formats"
MINIMUM_AECG = SAMPLES / "hl7-aecg" / "minimum_aecg.xml"
PHILIPS_103 = SAMPLES / "philips-xml" / "129DYPRG.XML"
PHILIPS_FILES = ("129DYPRG.XML", "2020-5-18_15-48-11.xml", "3191723_ZZDEMOPTONLY_1-04_orig.xml")
MUSE_FILES = ("example1.xml", "example2.xml", "example3.xml")
READERS: dict[str, tuple[Callable[[bytes], Recording], str, str]] = {
    "hl7-aecg": (read_hl7_aecg, "AnnotatedECG", "HL7 aECG"),
    "ge-muse": (read_ge_muse, "RestingECG", "GE MUSE XML"),
    "philips-xml": (read_philips_xml, "restingecgdata", "Philips XML"),
}


def _shared(fmt_dir: str, name: str) -> Path:
    root = shared_data_dir()
    path = root / "ecg-formats" / fmt_dir / name if root is not None else None
    if path is None or not path.is_file():
        pytest.skip(f"shared reference data ecg-formats/{fmt_dir}/{name} not available")
    return path


def _leads(rec: Recording) -> dict[str, np.ndarray]:
    return dict(zip(rec.leads, rec.signals.T))


def _qrs_peak_ok(rec: Recording) -> None:
    """Amplitude sanity: the largest deflection of lead II from its baseline is a QRS of 0.3-4 mV."""
    lead_ii = _leads(rec)["II"]
    peak = np.nanmax(np.abs(lead_ii - np.nanmedian(lead_ii)))
    assert 0.3 <= peak <= 4.0, peak


def _refused(fn: Callable[[], object], *, seconds: float = 10.0, megabytes: float = 50.0) -> WaveformError:
    """Run ``fn``, expect a WaveformError, within ``megabytes`` of peak allocation and ``seconds``:
    a bound that tells "refused" from "expanding without end" on a loaded machine (an entity
    expansion takes minutes); how fast a file decodes is ``telediag bench measure``'s to print."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(WaveformError) as info:
            fn()
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < megabytes * 1e6, f"peak {peak / 1e6:.1f} MB"
    return info.value


# ---------------------------------------------------------------- root_tag


def test_root_tag_of_every_shared_sample() -> None:
    expected = {"hl7-aecg": "AnnotatedECG", "ge-muse-xml": "RestingECG", "philips-sierra-xml": "restingecgdata"}
    for fmt_dir, root in expected.items():
        folder = _shared(fmt_dir, "README.md").parent
        for path in folder.iterdir():
            if path.suffix.lower() == ".xml":
                assert root_tag(path.read_bytes()) == root, path.name
    for path in _shared("scp-ecg", "README.md").parent.iterdir():
        assert root_tag(path.read_bytes()) is None or path.suffix == ".md"


def test_root_tag_encodings_and_prologs() -> None:
    doc = '<?xml version="1.0" encoding="UTF-16"?>\n<!-- made by a cart -->\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n<RestingECG/>'
    assert root_tag(b"\xff\xfe" + doc.encode("utf-16-le")) == "RestingECG"
    assert root_tag(b"\xfe\xff" + doc.encode("utf-16-be")) == "RestingECG"
    assert root_tag(doc.encode("utf-16-le")) == "RestingECG"
    assert root_tag(doc.encode("utf-16-be")) == "RestingECG"
    assert root_tag(b"\xef\xbb\xbf" + doc.replace("UTF-16", "UTF-8").encode()) == "RestingECG"
    assert root_tag(b'<!DOCTYPE x [<!ELEMENT a ANY>]><?pi x?><v3:AnnotatedECG xmlns:v3="urn:hl7-org:v3">') == "AnnotatedECG"
    assert root_tag(b"  \r\n<restingecgdata>") == "restingecgdata"
    for not_xml in (b"", b"\x00\x01\x02", b"hello", b"DICM" * 40, b"<!-- only a comment", b"<1bad>"):
        assert root_tag(not_xml) is None


def test_root_tag_is_cheap_on_huge_and_pathological_input() -> None:
    huge = b"<RestingECG>" + b"A" * (20 * 1024 * 1024)
    hostile = b"<!DOCTYPE a [" + b"]" * 10_000
    t0 = time.perf_counter()
    for _ in range(100):
        assert root_tag(huge) == "RestingECG"
        assert root_tag(hostile) is None
    assert time.perf_counter() - t0 < 0.5


def test_dispatcher_detects_and_reads_each_format() -> None:
    pytest.importorskip("telediag.ecg.readers.scpecg", reason="the SCP-ECG reader the dispatcher imports is absent")
    from telediag.ecg.readers import read_bytes

    fmt, rec = read_bytes(MINIMUM_AECG.read_bytes())
    assert fmt == "hl7-aecg" and rec.source.format == "hl7-aecg"
    fmt, rec = read_bytes(PHILIPS_103.read_bytes())
    assert fmt == "philips-xml" and rec.source.format == "philips-xml"
    fmt, rec = read_bytes(_shared("ge-muse-xml", "example1.xml").read_bytes())
    assert fmt == "ge-muse" and rec.source.format == "ge-muse"


# ---------------------------------------------------------------- HL7 aECG


def _aecg_sequences(text: str) -> list[tuple[str, float, str, float, str, np.ndarray]]:
    """Independent regex decoding: (lead code, origin, origin unit, scale, scale unit, digits) in file order."""
    pattern = re.compile(
        r'<code code="MDC_ECG_LEAD_(\w+)"[^>]*/>\s*<value xsi:type="SLIST_PQ">(?:\s*<!--.*?-->)*\s*'
        r'<origin value="([-\d.]+)" unit="(\w+)"/>\s*<scale value="([-\d.]+)" unit="(\w+)"/>(?:\s*<!--.*?-->)*\s*'
        r"<digits>([^<]*)</digits>", re.S)
    return [(m[0], float(m[1]), m[2], float(m[3]), m[4], np.array(m[5].split(), dtype=int))
            for m in pattern.findall(text)]


def test_aecg_reference_example() -> None:
    path = _shared("hl7-aecg", "Example_aECG.xml")
    rec = read_hl7_aecg(path.read_bytes())
    assert rec.fs == 500.0 and rec.signals.shape == (5000, 12)
    assert rec.leads == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    assert rec.start_time is not None and rec.start_time.isoformat() == "2002-11-22T09:10:00"
    sequences = _aecg_sequences(path.read_text())
    assert len(sequences) == 24  # 12 rhythm + 12 representative-beat leads
    rhythm, beat = sequences[:12], sequences[12:]
    leads = _leads(rec)
    for code, origin, o_unit, scale, s_unit, digits in rhythm:
        assert (o_unit, s_unit) == ("uV", "uV")
        name = {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}.get(code, code)
        for i in (0, 1, 777, 2500, 4999):  # hand-picked samples: digit * scale + origin, uV -> mV
            assert leads[name][i] == pytest.approx((digits[i] * scale + origin) / 1000.0, abs=1e-12)
    _qrs_peak_ok(rec)
    # the cart stored all 12 leads; they obey Einthoven to the 2.5 uV quantum
    assert np.max(np.abs(leads["III"] - (leads["II"] - leads["I"]))) <= 0.0025 + 1e-9
    fs, names, beats = rec.source.median_beats
    assert fs == 500.0 and beats.shape == (599, 12) and set(names) == set(rec.leads)
    first_beat = dict(zip(names, beats.T))
    assert first_beat["II"][0] == pytest.approx(beat[1][5][0] * 2.5 / 1000.0)
    src = rec.source
    assert src.format == "hl7-aecg"
    assert dict(src.measurements) == {"pr_ms": 148.0, "qrs_ms": 120.0, "qt_ms": 420.0, "qtc_ms": 443.0,
                                      "p_axis_deg": 44.0, "qrs_axis_deg": -61.0, "t_axis_deg": 86.0}
    assert (src.patient_id, src.patient_name, src.patient_sex, src.patient_birth_date) == ("SBJ-123", "Clark", "M", "19530508")
    assert (src.manufacturer, src.model) == ("Mortara Instrument, Inc.", "ELI250")


def test_aecg_minimum_sample() -> None:
    rec = read_hl7_aecg(MINIMUM_AECG.read_bytes())
    assert rec.leads == ("II",) and rec.fs == 500.0 and rec.n_samples == 13
    digits = [-2, -2, -2, -2, -3, -4, -3, -5, -5, -4, -6, -9, -9]
    np.testing.assert_allclose(rec.signals[:, 0], np.array(digits) * 2.5e-3, atol=1e-12)
    assert rec.source.median_beats is None and rec.source.measurements == {}


def test_aecg_empty_document_is_refused() -> None:
    err = _refused(lambda: read_hl7_aecg(_shared("hl7-aecg", "empty.xml").read_bytes()))
    assert err.format == "HL7 aECG" and "no waveform series" in err.reason


def _minimum_variant(edit: Callable[[str], str]) -> bytes:
    return edit(MINIMUM_AECG.read_text()).encode()


@pytest.mark.parametrize("name, edit", [
    ("no namespace", lambda s: s.replace(' xmlns="urn:hl7-org:v3"', "")),
    ("prefixed namespace", lambda s: re.sub(r"<(/?)(?=[A-Za-z])", r"<\1v3:", s).replace('xmlns="urn', 'xmlns:v3="urn')),
    ("case variations", lambda s: s.replace("sequenceSet", "SequenceSet").replace("<digits>", "<Digits>")
     .replace("</digits>", "</Digits>").replace("<component>", "<Component>").replace("</component>", "</Component>")),
    ("extra whitespace", lambda s: s.replace("<digits>", "<digits>\n\t  ").replace(" -4 -6", "\r\n -4\t\t-6  ")),
    ("missing origin", lambda s: s.replace('<origin value="0" unit="uV"/>', "")),
    ("increment in ms", lambda s: s.replace('<increment value="0.002" unit="s"/>', '<increment value="2" unit="ms"/>')),
    ("SLIST_INT with units", lambda s: s.replace("SLIST_PQ", "SLIST_INT")),
    ("UTF-16 declared, UTF-8 bytes", lambda s: '<?xml version="1.0" encoding="utf-16"?>\n' + s),
])
def test_aecg_generator_variants_read_the_same(name: str, edit: Callable[[str], str]) -> None:
    reference = read_hl7_aecg(MINIMUM_AECG.read_bytes())
    rec = read_hl7_aecg(_minimum_variant(edit))
    assert rec.leads == reference.leads and rec.fs == reference.fs
    np.testing.assert_allclose(rec.signals, reference.signals, atol=1e-12)


@pytest.mark.parametrize("codec, bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-16-le", b"")])
def test_aecg_utf16(codec: str, bom: bytes) -> None:
    text = '<?xml version="1.0" encoding="UTF-16"?>\n' + MINIMUM_AECG.read_text()
    data = bom + text.encode(codec)
    assert root_tag(data) == "AnnotatedECG"
    np.testing.assert_array_equal(read_hl7_aecg(data).signals, read_hl7_aecg(MINIMUM_AECG.read_bytes()).signals)


_AECG_ANNOTATIONS = """
    <subjectOf><annotationSet>
      <component><annotation><code code="MDC_ECG_INTERPRETATION" codeSystem="2.16.840.1.113883.6.24"/>
        <component><annotation><code code="MDC_ECG_INTERPRETATION_STATEMENT"/><value xsi:type="ST">Sinus rhythm</value>
        </annotation></component>
        <component><annotation><code code="MDC_ECG_INTERPRETATION_STATEMENT"/><value xsi:type="ST">Normal ECG</value>
        </annotation></component>
      </annotation></component>
      <component><annotation><code code="MDC_ECG_HEART_RATE"/><value xsi:type="PQ" value="72" unit="bpm"/>
      </annotation></component>
      <component><annotation><code code="MDC_ECG_TIME_PD_QRS"/><value xsi:type="PQ" value="0.096" unit="s"/>
      </annotation></component>
      <component><annotation><code code="MDC_ECG_BEAT"/>
        <component><annotation><code code="MDC_ECG_TIME_PD_PR"/><value xsi:type="PQ" value="150" unit="ms"/>
        </annotation></component>
      </annotation></component>
    </annotationSet></subjectOf>
"""


def test_aecg_rhythm_annotations_global_findings_only() -> None:
    rec = read_hl7_aecg(_minimum_variant(lambda s: s.replace("</series>", _AECG_ANNOTATIONS + "</series>")))
    # the PR interval of a single beat is not a global measurement
    assert dict(rec.source.measurements) == {"heart_rate_bpm": 72.0, "qrs_ms": 96.0}
    assert rec.source.statements == ("Sinus rhythm", "Normal ECG")


def test_aecg_units_are_applied_per_term() -> None:
    data = _minimum_variant(lambda s: s.replace('<origin value="0" unit="uV"/>', '<origin value="100" unit="uV"/>')
                            .replace('<scale value="2.5" unit="uV"/>', '<scale value="0.0025" unit="mV"/>'))
    rec = read_hl7_aecg(data)
    assert rec.signals[0, 0] == pytest.approx(0.1 + 0.0025 * -2)


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.replace('<scale value="2.5" unit="uV"/>', ""), "no scale"),
    (lambda s: s.replace('unit="uV"', 'unit="mm[Hg]"'), "not a voltage"),
    (lambda s: s.replace('unit="uV"', 'unit="furlong"'), "unknown signal units"),
    (lambda s: s.replace("-2 -2 -2", "-2 x -2"), "non-numeric"),
    (lambda s: s.replace('<increment value="0.002" unit="s"/>', '<increment value="0" unit="s"/>'), "increment"),
    (lambda s: s.replace('<code code="MDC_ECG_LEAD_II" codeSystem="2.16.840.1.113883.6.24"/>', ""), "no code"),
])
def test_aecg_broken_values_are_refused(edit: Callable[[str], str], words: str) -> None:
    err = _refused(lambda: read_hl7_aecg(_minimum_variant(edit)))
    assert words in str(err) and err.format == "HL7 aECG"


# ---------------------------------------------------------------- GE MUSE


def _muse_rhythm_leads(text: str) -> dict[str, tuple[np.ndarray, float, int, int]]:
    """Independent decoding of the Rhythm LeadData: id -> (int16 samples, uV/bit, byte count, CRC)."""
    rhythm = text[text.index("<WaveformType>Rhythm</WaveformType>"):]
    out = {}
    for block in re.findall(r"<LeadData>(.*?)</LeadData>", rhythm, re.S):
        field = {k: v.strip() for k, v in re.findall(r"<(\w+)>([^<]*)</\1>", block)}
        raw = base64.b64decode("".join(field["WaveFormData"].split()))
        out[field["LeadID"]] = (np.frombuffer(raw, "<i2"), float(field["LeadAmplitudeUnitsPerBit"]),
                                int(field["LeadByteCountTotal"]), int(field["LeadDataCRC32"]), raw)
    return out


@pytest.mark.parametrize("name", MUSE_FILES)
def test_muse_samples(name: str) -> None:
    path = _shared("ge-muse-xml", name)
    text = path.read_text(encoding="latin-1")
    rec = read_ge_muse(path.read_bytes())
    assert rec.fs == 500.0 and rec.signals.shape == (5000, 12)
    assert rec.leads == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    stored = _muse_rhythm_leads(text)
    assert sorted(stored) == sorted(["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"])
    leads = _leads(rec)
    for lead, (samples, per_bit, n_bytes, crc, raw) in stored.items():
        assert len(raw) == n_bytes and zlib.crc32(raw) == crc  # what the reader verifies
        np.testing.assert_allclose(leads[lead], samples * per_bit / 1000.0, rtol=1e-12)
    lead_i, lead_ii = leads["I"], leads["II"]
    np.testing.assert_array_equal(leads["III"], lead_ii - lead_i)
    np.testing.assert_array_equal(leads["aVR"], -(lead_i + lead_ii) / 2)
    np.testing.assert_array_equal(leads["aVL"], lead_i - lead_ii / 2)
    np.testing.assert_array_equal(leads["aVF"], lead_ii - lead_i / 2)
    # Einthoven/Goldberger: the augmented leads sum to zero
    np.testing.assert_allclose(leads["aVR"] + leads["aVL"] + leads["aVF"], 0.0, atol=1e-12)
    _qrs_peak_ok(rec)
    fs, names, median = rec.source.median_beats
    assert fs == 500.0 and median.shape == (600, 12) and names == rec.leads
    assert set(rec.source.measurements) == set(MEASUREMENT_KEYS)
    assert rec.source.format == "ge-muse" and rec.source.serial and rec.source.serial.startswith("SKJ")


def test_muse_measurements_example1() -> None:
    rec = read_ge_muse(_shared("ge-muse-xml", "example1.xml").read_bytes())
    assert dict(rec.source.measurements) == {"heart_rate_bpm": 48.0, "pr_ms": 138.0, "qrs_ms": 96.0, "qt_ms": 452.0,
                                             "qtc_ms": 403.0, "p_axis_deg": 51.0, "qrs_axis_deg": 20.0,
                                             "t_axis_deg": 40.0}


_MUSE_PATIENT = """
   <PatientDemographics><PatientID>PID-4711</PatientID><PatientLastName>MOKOENA</PatientLastName>
      <PatientFirstName>THANDI</PatientFirstName><Gender>FEMALE</Gender><DateofBirth>03-07-1961</DateofBirth>
   </PatientDemographics>
   <TestDemographics><AcquisitionDevice>MAC55</AcquisitionDevice><AcquisitionDate>11-12-2018</AcquisitionDate>
      <AcquisitionTime>15:21:27</AcquisitionTime><CartNumber>7</CartNumber></TestDemographics>
   <Diagnosis><Modality>RESTING</Modality>
      <DiagnosisStatement><StmtFlag>USERINSERT</StmtFlag><StmtText>Sinus bradycardia</StmtText></DiagnosisStatement>
      <DiagnosisStatement><StmtFlag>ENDSLINE</StmtFlag><StmtText>with sinus arrhythmia</StmtText></DiagnosisStatement>
      <DiagnosisStatement><StmtFlag>ENDSLINE</StmtFlag><StmtText>Normal ECG</StmtText></DiagnosisStatement>
   </Diagnosis>
   <OriginalDiagnosis><DiagnosisStatement><StmtFlag>ENDSLINE</StmtFlag><StmtText>Unconfirmed</StmtText>
      </DiagnosisStatement></OriginalDiagnosis>
"""


def _muse_with_patient() -> str:
    text = _shared("ge-muse-xml", "example1.xml").read_text(encoding="latin-1")
    return text.replace("<RestingECG>", "<RestingECG>" + _MUSE_PATIENT, 1)


def test_muse_patient_device_and_statements() -> None:
    rec = read_ge_muse(_muse_with_patient().encode("latin-1"))
    src = rec.source
    assert (src.patient_id, src.patient_name, src.patient_sex, src.patient_birth_date) == (
        "PID-4711", "MOKOENA^THANDI", "F", "19610307")
    assert (src.model, src.serial) == ("MAC55", "7")
    assert src.statements == ("Sinus bradycardia with sinus arrhythmia", "Normal ECG")
    assert rec.start_time is not None and rec.start_time.isoformat() == "2018-11-12T15:21:27"
    assert "MOKOENA" not in repr(src)


def _in_rhythm_lead(text: str, lead: str, edit: Callable[[str], str]) -> str:
    """``text`` with ``edit`` applied to one Rhythm LeadData block."""
    start = text.index("<WaveformType>Rhythm</WaveformType>")
    m = re.compile(rf"<LeadData>(?:(?!</LeadData>).)*<LeadID>{lead}</LeadID>.*?</LeadData>", re.S).search(text, start)
    assert m is not None
    return text[: m.start()] + edit(m.group(0)) + text[m.end():]


def _flip_base64_char(block: str) -> str:
    m = re.search(r"<WaveFormData>\s*(\S)", block)
    i = m.start(1) + 40
    return block[:i] + ("B" if block[i] != "B" else "C") + block[i + 1:]


def test_muse_crc_mismatch_names_the_lead_and_no_patient_data() -> None:
    damaged = _in_rhythm_lead(_muse_with_patient(), "V3", _flip_base64_char)
    err = _refused(lambda: read_ge_muse(damaged.encode("latin-1")))
    assert "V3" in str(err) and "CRC" in str(err) and err.format == "GE MUSE XML"
    assert "Rhythm" in (err.section or "")
    for phi in ("MOKOENA", "THANDI", "PID-4711", "1961"):
        assert phi not in str(err)


def test_muse_byte_count_mismatch() -> None:
    text = _shared("ge-muse-xml", "example2.xml").read_text(encoding="latin-1")
    damaged = _in_rhythm_lead(text, "I", lambda b: b.replace("<LeadByteCountTotal>10000<", "<LeadByteCountTotal>10002<"))
    err = _refused(lambda: read_ge_muse(damaged.encode("latin-1")))
    assert "LeadByteCountTotal" in str(err) and "lead I" in str(err)


def test_muse_bad_base64() -> None:
    text = _shared("ge-muse-xml", "example3.xml").read_text(encoding="latin-1")
    damaged = _in_rhythm_lead(text, "V1", lambda b: re.sub(r"<WaveFormData>[^<]*", "<WaveFormData>AA!!==", b))
    err = _refused(lambda: read_ge_muse(damaged.encode("latin-1")))
    assert "base64" in str(err) and "V1" in (err.section or "")


def test_muse_without_rhythm_is_refused() -> None:
    text = _shared("ge-muse-xml", "example1.xml").read_text(encoding="latin-1")
    err = _refused(lambda: read_ge_muse(text.replace("<WaveformType>Rhythm<", "<WaveformType>Other<").encode("latin-1")))
    assert "no Rhythm waveform" in str(err)


# ---------------------------------------------------------------- Philips


def test_philips_103_sample_in_tree() -> None:
    rec = read_philips_xml(PHILIPS_103.read_bytes())
    assert rec.fs == 500.0 and rec.leads == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    # 11 s stored; the trailing 1 mV calibration pulse (identical on every lead) is cut off
    assert 5000 <= rec.n_samples < 5500
    _qrs_peak_ok(rec)
    leads = _leads(rec)
    # III is rebuilt as II - I - (stored residual); the residuals are rounding (<= 2 quanta of 5 uV)
    assert np.max(np.abs(leads["III"] - (leads["II"] - leads["I"]))) <= 0.010 + 1e-9
    assert np.max(np.abs(leads["aVR"] + (leads["I"] + leads["II"]) / 2)) <= 0.010 + 1e-9
    src = rec.source
    assert dict(src.measurements) == {"heart_rate_bpm": 41.0, "pr_ms": 151.0, "qrs_ms": 135.0, "qt_ms": 476.0,
                                      "qtc_ms": 393.0, "p_axis_deg": 66.0, "qrs_axis_deg": -21.0, "t_axis_deg": 59.0}
    assert src.statements == ("Sinus bradycardia", "Nonspecific intraventricular conduction delay",
                              "Inferior infarct, acute (LCx)", ">>> Acute MI <<<", "ABNORMAL ECG")
    assert (src.patient_name, src.patient_sex, src.model, src.serial) == (None, "M", "HeartstartMRx", "0001")
    assert rec.start_time is not None and rec.start_time.isoformat() == "2011-12-01T07:27:34"


@pytest.mark.parametrize("name", PHILIPS_FILES)
def test_philips_equals_sierraecg(name: str) -> None:
    sierraecg = pytest.importorskip("sierraecg", reason="sierraecg (test cross-check) not installed")
    path = _shared("philips-sierra-xml", name)
    rec = read_philips_xml(path.read_bytes())
    ref = sierraecg.read_file(str(path), include_repbeats=True)
    assert [lead.label for lead in ref.leads] == list(rec.leads)
    n = rec.n_samples
    for j, lead in enumerate(ref.leads):
        assert len(lead.samples) == 5500
        digital = np.round(rec.signals[:, j] * 1000.0 / 5.0).astype(np.int64)
        np.testing.assert_array_equal(digital, lead.samples[:n].astype(np.int64))
        assert set(np.unique(lead.samples[n:])) <= {0, 200}  # only the calibration pulse was cut
    _qrs_peak_ok(rec)
    if ref.repbeats:
        fs, names, beats = rec.source.median_beats
        for label, beat in ref.repbeats.items():
            assert fs == beat.sampling_freq
            k = beats.shape[0]
            np.testing.assert_allclose(beats[:, names.index(label)], beat.samples[:k] * beat.resolution / 1000.0)
            assert np.all(beat.samples[k:] == 32767)  # padding past the beat


@pytest.mark.parametrize("name", PHILIPS_FILES[1:])
def test_philips_104_utf16(name: str) -> None:
    data = _shared("philips-sierra-xml", name).read_bytes()
    assert data[:2] == b"\xff\xfe" and root_tag(data) == "restingecgdata"
    rec = read_philips_xml(data)
    assert rec.signals.shape == (5300, 12) and rec.fs == 500.0
    assert set(rec.source.measurements) == set(MEASUREMENT_KEYS)
    assert rec.source.statements and rec.source.manufacturer == "Philips Medical Products"
    assert rec.source.median_beats is not None and rec.source.median_beats[2].shape[1] == 12


def test_philips_unsupported_version_is_refused_by_name() -> None:
    err = _refused(lambda: read_philips_xml(_shared("philips-sierra-xml", "invalid-doc-version.xml").read_bytes()))
    assert err.format == "Philips XML"
    assert err.reason == "document version 1.05 is not supported (1.03, 1.04, 1.04.01)"
    assert str(err) == "Philips XML: document version 1.05 is not supported (1.03, 1.04, 1.04.01)"


def _philips_with_block(edit: Callable[[bytes], bytes]) -> bytes:
    text = PHILIPS_103.read_text()
    m = re.search(r"(<parsedwaveforms[^>]*>)([^<]*)(</parsedwaveforms>)", text)
    block = edit(base64.b64decode("".join(m.group(2).split())))
    return (text[: m.start(2)] + base64.b64encode(block).decode() + text[m.end(2):]).encode()


@pytest.mark.parametrize("edit, words", [
    (lambda b: b[:700], "truncated"),
    (lambda b: b[:4], "truncated"),
    (lambda b: b[:8] + bytes([0x40, 0x00]) + b[10:], "corrupt"),  # first code 256: not yet in the table
    (lambda b: b[:8] + bytes([0xFF, 0xC0]) + b[10:], "fewer than"),  # first code 1023 ends the lead at once
])
def test_philips_broken_xli_is_refused(edit: Callable[[bytes], bytes], words: str) -> None:
    err = _refused(lambda: read_philips_xml(_philips_with_block(edit)))
    assert err.format == "Philips XML" and words in str(err)


def test_philips_bad_base64() -> None:
    text = PHILIPS_103.read_text()
    broken = re.sub(r"(<parsedwaveforms[^>]*>)[^<]{10}", r"\1%%%%%%%%%%", text, count=1)
    err = _refused(lambda: read_philips_xml(broken.encode()))
    assert "base64" in str(err) and err.section == "waveforms/parsedwaveforms"


def test_philips_declared_duration_is_bounded() -> None:
    text = PHILIPS_103.read_text().replace('durationperchannel="11000"', 'durationperchannel="99999999"')
    err = _refused(lambda: read_philips_xml(text.encode()))
    assert "sample limit" in str(err)


# ---------------------------------------------------------------- attacks, for every reader


def _billion_laughs(root: str) -> bytes:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    return f'<?xml version="1.0"?><!DOCTYPE {root} [{entities}]><{root}>&lol9;</{root}>'.encode()


def _quadratic_blowup(root: str) -> bytes:
    return (f'<?xml version="1.0"?><!DOCTYPE {root} [<!ENTITY a "{"x" * 100_000}">]>'
            f'<{root}>{"&a;" * 20_000}</{root}>').encode()


def _xxe(root: str) -> bytes:
    return (f'<?xml version="1.0"?><!DOCTYPE {root} [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            f"<{root}>&x;</{root}>").encode()


def _xxe_parameter(root: str) -> bytes:
    return (f'<?xml version="1.0"?><!DOCTYPE {root} [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
            f"<{root}/>").encode()


def _external_dtd(root: str) -> bytes:
    return f'<?xml version="1.0"?><!DOCTYPE {root} SYSTEM "file:///etc/passwd"><{root}/>'.encode()


def _too_large(root: str) -> bytes:
    return f"<{root}>".encode() + b" " * MAX_XML_BYTES + f"</{root}>".encode()


def _too_many_elements(root: str) -> bytes:
    return f"<{root}>".encode() + b"<a/>" * (MAX_XML_ELEMENTS + 10) + f"</{root}>".encode()


def _truncated(root: str) -> bytes:
    return f'<?xml version="1.0"?><{root}><a><b>12 13'.encode()


def _not_xml(root: str) -> bytes:
    return bytes(range(256)) * 8


@pytest.mark.parametrize("fmt", sorted(READERS))
@pytest.mark.parametrize("attack", [_billion_laughs, _quadratic_blowup, _xxe, _xxe_parameter, _external_dtd,
                                    _too_large, _too_many_elements, _truncated, _not_xml])
def test_attacks_are_refused_quickly_in_bounded_memory(fmt: str, attack: Callable[[str], bytes]) -> None:
    reader, root, name = READERS[fmt]
    data = attack(root)
    err = _refused(lambda: reader(data))
    assert err.format == name
    assert "root:" not in str(err)  # nothing of /etc/passwd leaks into the message


