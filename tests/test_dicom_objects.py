"""``inspect``: the scanned C-STORE path must agree exactly with pydicom's reading.

ECG objects in little-endian transfer syntaxes are identified from one structural walk
without pydicom Datasets; these tests hold that path to pydicom's answers (for real files
and for Chinese patient names in every character set carts send) and to the refusals.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from telediag.ingest import dicom as dicom_objects
from telediag.ingest.dicom import DicomInfo, InvalidObject, inspect
from telediag.ingest.dicom_scan import read_file_meta, scan

from conftest import SAMPLE_DATA, SHARED_DATA
from factories import ecg_dataset, synthetic_ecg_uv

LITTLE_ENDIAN = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _files() -> list[Any]:
    """Every sample DICOM file, and every one in ../shared/data/dicom when present."""
    files = sorted((SAMPLE_DATA / "dicom").glob("*.dcm")) + sorted((SHARED_DATA / "dicom").glob("*.dcm"))
    return [pytest.param(f, id=f"{f.parent.parent.name}/{f.name}") for f in files]


def _outcome(data: bytes, thorough: bool) -> dict[str, Any] | type[InvalidObject]:
    try:
        return dataclasses.asdict(inspect(data, thorough=thorough))
    except InvalidObject:
        return InvalidObject


def _is_ecg(data: bytes) -> bool:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ds.get("SOPClassUID") in dicom_objects.ECG_SOP_CLASSES


@pytest.fixture
def no_pydicom_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if ``inspect`` parses the object with pydicom."""
    def refuse(data: bytes) -> Dataset:
        raise AssertionError("the scanned path used pydicom's reader")

    monkeypatch.setattr(dicom_objects, "_header", refuse)
    monkeypatch.setattr(dicom_objects, "read_part10", refuse)


@pytest.fixture
def ecg() -> Dataset:
    """A small valid 12-lead ECG (1 s of samples keeps the tests quick)."""
    return ecg_dataset(synthetic_ecg_uv()[:500])


def _part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _data_offset(data: bytes) -> int:
    """Where the data set starts, from the file meta group length."""
    return 144 + int.from_bytes(data[140:144], "little")


# -- agreement with pydicom ------------------------------------------------------------------
@pytest.mark.parametrize("path", _files())
def test_inspect_agrees_with_pydicom_on_every_file(path: Path) -> None:
    data = path.read_bytes()
    fast, reference = _outcome(data, thorough=False), _outcome(data, thorough=True)
    assert fast == reference
    if data[128:132] == b"DICM" and _is_ecg(data):
        assert fast is not InvalidObject


@pytest.mark.parametrize("name", ["test_ecg.dcm", "waveform_ecg.dcm"])
def test_real_ecgs_take_the_scanned_path(name: str, no_pydicom_reader: None) -> None:
    data = (SAMPLE_DATA / "dicom" / name).read_bytes()
    assert isinstance(inspect(data), DicomInfo)


@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
def test_bench_object_matches_pydicom(ecg: Dataset, transfer_syntax: str) -> None:
    data = _part10(ecg, transfer_syntax)
    assert dataclasses.asdict(inspect(data)) == dataclasses.asdict(inspect(data, thorough=True))


@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
@pytest.mark.parametrize("charset, name", [
    ("GB18030", "张^三"),
    ("GBK", "张^三"),
    ("ISO_IR 192", "张^三"),
    (["", "ISO 2022 IR 58"], b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\xd0\xa1\xb6\xab="),  # PS3.5 Annex K style
    ("ISO_IR 192", "Zhang^San=张^三=zhang^san"),
    ("GB18030", "张^三=="),  # empty trailing components
])
def test_chinese_patient_names_decode_as_pydicom_does(ecg: Dataset, charset: str | list[str], name: str | bytes,
                                                      transfer_syntax: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ecg.SpecificCharacterSet = charset
    ecg.PatientName = name
    ecg.PatientID = "病人001" if charset != ["", "ISO 2022 IR 58"] else "P001"
    data = _part10(ecg, transfer_syntax)
    reference = pydicom.dcmread(io.BytesIO(data))
    expected = inspect(data, thorough=True)

    with monkeypatch.context() as m:
        m.setattr(dicom_objects, "_header", lambda data: pytest.fail("used pydicom's reader"))
        info = inspect(data)

    assert info.patient_name == str(reference.PatientName).strip()
    assert info.patient_id == str(reference.PatientID).strip()
    assert dataclasses.asdict(info) == dataclasses.asdict(expected)


def test_gb18030_name_is_the_characters_sent(ecg: Dataset) -> None:
    ecg.SpecificCharacterSet = "GB18030"
    ecg.PatientName = "张^三"
    assert inspect(_part10(ecg)).patient_name == "张^三"


@pytest.mark.parametrize("change", [
    pytest.param(lambda ds: setattr(ds, "PatientID", "A\\B"), id="multi-valued-id"),
    pytest.param(lambda ds: setattr(ds, "PatientName", "DOE^JOHN\\ROE^JANE"), id="multi-valued-name"),
    pytest.param(lambda ds: setattr(ds, "PatientName", ""), id="empty-name"),
    pytest.param(lambda ds: setattr(ds, "PatientSex", "  "), id="blank-sex"),
    pytest.param(lambda ds: delattr(ds, "PatientBirthDate"), id="no-birth-date"),
    pytest.param(lambda ds: delattr(ds, "Modality"), id="no-modality"),
    pytest.param(lambda ds: setattr(ds, "SpecificCharacterSet", ""), id="empty-charset"),
    pytest.param(lambda ds: setattr(ds, "SpecificCharacterSet", ["ISO 2022 IR 6", "ISO 2022 IR 100"]),
                 id="code-extensions"),
    pytest.param(lambda ds: delattr(ds, "SOPClassUID"), id="class-from-meta"),
    pytest.param(lambda ds: delattr(ds, "SOPInstanceUID"), id="instance-from-meta"),
    pytest.param(lambda ds: ds.add_new(0x00100010, "LO", "DOE^JOHN"), id="name-with-another-vr"),
])
@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
def test_odd_header_values_match_pydicom(ecg: Dataset, change: Any, transfer_syntax: str) -> None:
    change(ecg)
    data = _part10(ecg, transfer_syntax)
    assert dataclasses.asdict(inspect(data)) == dataclasses.asdict(inspect(data, thorough=True))


def test_scan_returns_groups_and_raw_header_values(ecg: Dataset) -> None:
    data = _part10(ecg)
    meta = read_file_meta(data)
    assert meta is not None and meta.data_offset == _data_offset(data)
    assert meta.values[0x00020010].rstrip(b"\0") == ExplicitVRLittleEndian.encode()
    result = scan(data, meta.data_offset, ExplicitVRLittleEndian)
    assert result is not None and len(result.groups) == 1
    assert result.values[0x00100010] == b"BENCH^SYNTHETIC "
    assert result.values[0x00080060] == b"ECG "
    assert scan(data, meta.data_offset, ExplicitVRBigEndian) is None


# -- refusals --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*(code extension|Unknown encoding)")  # pydicom, writing and reading
@pytest.mark.parametrize("charset", [["ISO_IR 100", "ISO_IR 192"], "NOT A CHARSET", "GB 18030"])
def test_misused_character_set_is_accepted_and_decoded_as_pydicom_does(ecg: Dataset,
                                                                      charset: str | list[str]) -> None:
    """A cart with a misconfigured character set still gets its ECG in; the name decodes
    as pydicom's fallback decodes it (the bytes are stored as sent either way)."""
    ecg.SpecificCharacterSet = charset
    ecg.PatientName = "ZHANG^SAN"
    data = _part10(ecg)
    fast, reference = _outcome(data, thorough=False), _outcome(data, thorough=True)
    assert fast is not InvalidObject and fast == reference
    assert fast["patient_name"] == "ZHANG^SAN"


@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
def test_truncated_inside_the_header_is_refused(ecg: Dataset, transfer_syntax: str) -> None:
    data = _part10(ecg, transfer_syntax)
    cut = data.index(b"BENCH^SYNTHETIC") + 5
    with pytest.raises(InvalidObject, match="^malformed DICOM: ") as exc:
        inspect(data[:cut])
    assert "BENCH" not in str(exc.value)  # no PHI in what goes back to the sender and the log


@pytest.mark.parametrize("cut", [140, 150, 200])
def test_truncated_inside_the_file_meta_is_refused(ecg: Dataset, cut: int) -> None:
    with pytest.raises(InvalidObject):
        inspect(_part10(ecg)[:cut])


def test_truncated_inside_the_waveform_is_refused(ecg: Dataset) -> None:
    data = _part10(ecg)
    with pytest.raises(InvalidObject, match="^malformed DICOM: "):
        inspect(data[:-100])


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID"])
@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
def test_missing_study_or_series_is_refused(ecg: Dataset, keyword: str, transfer_syntax: str) -> None:
    delattr(ecg, keyword)
    with pytest.raises(InvalidObject, match="^object has no Study or Series Instance UID$"):
        inspect(_part10(ecg, transfer_syntax))


def test_missing_sop_instance_is_refused(ecg: Dataset) -> None:
    del ecg.SOPInstanceUID
    data = _part10(ecg)  # pydicom will not write an empty Media Storage SOP Instance UID: blank it
    uid = ecg.file_meta.MediaStorageSOPInstanceUID.encode()
    data = data.replace(uid, b" " * len(uid), 1)
    with pytest.raises(InvalidObject, match="^object has no SOP Class UID or SOP Instance UID$"):
        inspect(data)


def test_unaccepted_sop_class_in_the_data_set_is_refused(ecg: Dataset) -> None:
    ecg.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR, under an ECG file meta
    with pytest.raises(InvalidObject, match="^SOP class 1.2.840.10008.5.1.4.1.1.88.11 is not accepted"):
        inspect(_part10(ecg))


def test_waveform_mismatch_is_refused(ecg: Dataset) -> None:
    ecg.WaveformSequence[0].NumberOfWaveformSamples = 501
    with pytest.raises(InvalidObject, match="^ECG waveform is invalid: waveform group 1: data length"):
        inspect(_part10(ecg))


def test_element_without_a_valid_vr_is_read_as_pydicom_reads_it(ecg: Dataset) -> None:
    data = _part10(ecg)
    manufacturer = data.index(b"\x08\x00\x70\x00LO")  # pydicom reads it as implicit VR: a bogus length
    data = data[:manufacturer + 4] + b"\x01\x02" + data[manufacturer + 6:]
    with pytest.raises(InvalidObject):
        inspect(data, thorough=True)
    with pytest.raises(InvalidObject, match="^malformed DICOM: element \\(0008,0070\\)"):
        inspect(data)


def test_implicit_data_set_declared_explicit_is_refused_as_pydicom_does(ecg: Dataset) -> None:
    explicit, implicit = _part10(ecg, ExplicitVRLittleEndian), _part10(ecg, ImplicitVRLittleEndian)
    data = explicit[:_data_offset(explicit)] + implicit[_data_offset(implicit):]
    with pytest.raises(InvalidObject, match="Expected explicit VR, but found implicit VR"):
        inspect(data)
