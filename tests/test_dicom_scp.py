"""The DICOM storage SCP against a real dcmtk client over real sockets.

What "stored as received" can mean here: DICOM networking carries the data set only
(the file meta of the sender's file never travels), and dcmtk's storescu re-encodes the
data set it read (drops trailing padding, writes explicit-length sequences). So:

* the stored object is Part 10 = the SCP's file meta + the data set bytes off the wire,
  and object store bytes, recorded sha256 and a read-back all agree;
* the stored data set decodes to the sent file's data set, in the same transfer syntax,
  with the pixel / waveform bytes (compressed fragments included) unchanged;
* for files storescu sends unchanged, and for a raw-streaming sender, the stored data set
  bytes are byte-for-byte the file's.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filereader import read_preamble
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from sqlalchemy import func, select

from telediag.store.tables import AnalysisResult, Case, CaseKind, Job, JobState, QuarantinedObject, StoredObject
from telediag.domain import JobKind
from telediag.network import add_device
from telediag.store.objects import sha256_hex

from conftest import Network, wait_for
from scp_fixtures import SCP_AE, RunningSCP, dcmtk_tools, running_scp  # noqa: F401  (fixtures)

#: storescu option that proposes a file's own transfer syntax (plus the uncompressed ones).
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}

ECG_FILES = ["waveform_ecg.dcm", "test_ecg.dcm"]
IMAGE_FILES = [
    "CT_small.dcm",                 # explicit VR LE
    "MR_small_implicit.dcm",        # implicit VR LE
    "MR_small_bigendian.dcm",       # explicit VR BE
    "image_dfl.dcm",                # deflated
    "JPEG2000.dcm",                 # JPEG 2000 (lossy)
    "MR_small_jp2klossless.dcm",    # JPEG 2000 lossless
    "MR_small_RLE.dcm",             # RLE
    "examples_ybr_color.dcm",       # JPEG baseline, 30 frames
    "JPGExtended.dcm",              # JPEG extended 12 bit
    "JPEG-LL.dcm",                  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "emri_small.dcm",               # Enhanced MR, 10 frames
]
#: Files storescu puts on the wire without changing a byte of their data set.
SENT_UNCHANGED = {"SC_rgb_jpeg_dcmtk.dcm", "emri_small.dcm", "dicomdirtests_77654033_CR1_6154.dcm"}


# -- helpers -------------------------------------------------------------------------------------
def dataset_bytes(part10: bytes) -> bytes:
    """The data set part of a Part 10 byte string (everything after the file meta)."""
    fp = io.BytesIO(part10)
    read_preamble(fp, False)
    meta_start = fp.tell()
    pydicom.filereader._read_file_meta_info(fp)
    assert fp.tell() > meta_start
    return part10[fp.tell():]


def transfer_syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def unique_copy(path: Path, out_dir: Path) -> Path:
    """``path`` rewritten (same transfer syntax) under a new SOP Instance UID: several sample
    files are one data set in different encodings and would collide on their UID."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = out_dir / path.name
    ds.save_as(out)
    return out


def send(scp: RunningSCP, path: Path, *extra: str, calling: str | None = None):
    return scp.storescu("-R", PROPOSE[transfer_syntax(path)], "-v", *extra, path, calling=calling)


def count(network: Network, model, *where) -> int:
    with network.system.db.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model).where(*where))


def stored_row(network: Network, sop_instance_uid: str) -> StoredObject | None:
    with network.system.db.uow() as uow:
        return uow.session.scalar(select(StoredObject).where(StoredObject.sop_instance_uid == sop_instance_uid))


def object_files(network: Network) -> list[Path]:
    root = Path(network.system.store.root)
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_stored_as_sent(network: Network, path: Path) -> StoredObject:
    """The object from ``path`` is stored, intact, with its case at the device's site."""
    system = network.system
    original = pydicom.dcmread(path)
    row = stored_row(network, original.SOPInstanceUID)
    assert row is not None, f"{path.name} not stored"
    data = system.store.get(row.key)
    on_disk = (Path(system.store.root) / row.key).read_bytes()
    assert sha256_hex(data) == row.sha256 == sha256_hex(on_disk) and row.size == len(data)
    stored = pydicom.dcmread(io.BytesIO(data))
    ts = str(original.file_meta.TransferSyntaxUID)
    assert str(stored.file_meta.TransferSyntaxUID) == ts == row.transfer_syntax_uid  # never transcoded
    assert stored.file_meta.SourceApplicationEntityTitle == network.ae_title
    # the data set decodes to the one sent (storescu drops trailing padding and writes
    # encapsulated Pixel Data as OB where a file says OW; the pixel bytes are compared below)
    drop = {pydicom.tag.Tag(0xFFFC, 0xFFFC), pydicom.tag.Tag(0x7FE0, 0x0010)}
    assert [e for e in stored if e.tag not in drop] == [e for e in original if e.tag not in drop]
    if "PixelData" in original:
        if pydicom.uid.UID(ts).is_encapsulated:
            frames = int(original.get("NumberOfFrames", 1) or 1)
            assert list(generate_frames(stored.PixelData, number_of_frames=frames)) == \
                list(generate_frames(original.PixelData, number_of_frames=frames))
        else:
            assert stored.PixelData == original.PixelData
    if path.name in SENT_UNCHANGED:
        assert dataset_bytes(data) == dataset_bytes(path.read_bytes())
    with system.db.uow() as uow:
        case = uow.session.get(Case, row.case_id)
        assert case.site_id == network.site_id
        assert case.kind is (CaseKind.ECG if row.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.9.")
                             else CaseKind.IMAGING)
    return row


def raw_send(scp: RunningSCP, path: Path) -> pydicom.Dataset:
    """Send ``path`` with pynetdicom streaming the file's data set bytes unparsed (what a
    sender that does not re-encode puts on the wire); return the C-STORE response status."""
    meta = pydicom.filereader.read_file_meta_info(path)
    ae = AE(ae_title=scp.network.ae_title)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=SCP_AE)
    assert assoc.is_established
    old, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()
    return status


# -- association -----------------------------------------------------------------------------------
def test_echo_from_registered_device(running_scp: RunningSCP) -> None:
    result = running_scp.echoscu(running_scp.network.ae_title)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_calling_ae_is_rejected_at_association(running_scp: RunningSCP, shared_dicom: Path) -> None:
    echo = running_scp.echoscu("INTRUDER")
    assert echo.returncode != 0
    assert "Calling AE Title Not Recognized" in echo.stdout + echo.stderr

    store = send(running_scp, shared_dicom / "waveform_ecg.dcm", calling="INTRUDER")
    out = store.stdout + store.stderr
    assert store.returncode != 0
    assert "Association Rejected" in out and "Rejected Permanent" in out and "Calling AE Title Not Recognized" in out
    assert count(running_scp.network, StoredObject) == 0
    assert object_files(running_scp.network) == []


def test_wrong_called_ae_is_rejected(running_scp: RunningSCP) -> None:
    echo = running_scp.echoscu(running_scp.network.ae_title, called="SOMEONEELSE")
    assert echo.returncode != 0
    assert "Called AE Title Not Recognized" in echo.stdout + echo.stderr


def test_device_registered_while_running_is_accepted(running_scp: RunningSCP) -> None:
    assert running_scp.echoscu("LATECART").returncode != 0
    add_device(running_scp.network.system.db, "late-cart", "Township A1", "LATECART")
    result = running_scp.echoscu("LATECART")
    assert result.returncode == 0, result.stdout + result.stderr


# -- storing -------------------------------------------------------------------------------------
def test_ecgs_are_stored_as_sent_and_analysed(running_scp: RunningSCP, shared_dicom: Path) -> None:
    network = running_scp.network
    rows = []
    for name in ECG_FILES:
        result = send(running_scp, shared_dicom / name)
        assert result.returncode == 0, result.stdout + result.stderr
        rows.append(assert_stored_as_sent(network, shared_dicom / name))
    for row in rows:
        def done(object_id=row.id):
            with network.system.db.uow() as uow:
                job = uow.session.scalar(select(Job).where(Job.object_id == object_id))
                result = uow.session.scalar(select(AnalysisResult).where(AnalysisResult.object_id == object_id))
                return job is not None and job.state is JobState.DONE and result is not None

        wait_for(done, timeout=30)
        with network.system.db.uow() as uow:
            result = uow.session.scalar(select(AnalysisResult).where(AnalysisResult.object_id == row.id))
            assert result.lead_count >= 12


def test_images_in_every_transfer_syntax_are_stored_unchanged(running_scp: RunningSCP, shared_dicom: Path,
                                                               tmp_path: Path) -> None:
    network = running_scp.network
    for name in IMAGE_FILES + sorted(SENT_UNCHANGED - set(IMAGE_FILES)):
        path = shared_dicom / name
        if name.startswith("MR_small_"):
            path = unique_copy(path, tmp_path)
        result = send(running_scp, path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        row = assert_stored_as_sent(network, path)
        assert row.transfer_syntax_uid == transfer_syntax(path)
    # each image is queued for its preview, none for an ECG analysis
    assert count(network, Job, Job.kind == JobKind.ANALYZE_ECG) == 0
    assert count(network, Job, Job.kind == JobKind.RENDER_PREVIEW) == count(network, StoredObject)


def test_raw_sender_bytes_are_kept_byte_for_byte(running_scp: RunningSCP, shared_dicom: Path) -> None:
    for name in ("waveform_ecg.dcm", "US1_J2KI.dcm"):
        path = shared_dicom / name
        status = raw_send(running_scp, path)
        assert status.Status == 0x0000
        row = stored_row(running_scp.network, pydicom.dcmread(path).SOPInstanceUID)
        data = running_scp.network.system.store.get(row.key, row.sha256)
        assert dataset_bytes(data) == dataset_bytes(path.read_bytes())


# -- refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"])
def test_truncated_reference_files_are_refused(running_scp: RunningSCP, shared_dicom: Path, name: str) -> None:
    """dcmtk will not even read these files, so their bytes go out raw through pynetdicom."""
    path = shared_dicom / name
    status = raw_send(running_scp, path)
    assert 0xC000 <= status.Status <= 0xCFFF
    assert status.ErrorComment and len(status.ErrorComment) <= 64
    assert count(running_scp.network, StoredObject) == 0
    assert object_files(running_scp.network) == []


def test_short_objects_sent_by_storescu_get_a_failure_status(running_scp: RunningSCP, shared_dicom: Path,
                                                               tmp_path: Path) -> None:
    # Well-formed encodings whose content is short: pixel data 200 bytes short, and an
    # encapsulated multi-frame image holding half its frames.
    mr = pydicom.dcmread(shared_dicom / "MR_small.dcm")
    mr.PixelData = mr.PixelData[:-200]
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    mr.save_as(tmp_path / "mr_short.dcm")
    emri = pydicom.dcmread(shared_dicom / "emri_small.dcm")
    jp2k = pydicom.dcmread(shared_dicom / "MR_small_jp2klossless.dcm")
    frame = next(generate_frames(jp2k.PixelData, number_of_frames=1))
    emri.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
    emri.PixelData = encapsulate([frame] * 5)  # NumberOfFrames stays 10
    emri["PixelData"].VR = "OB"
    emri.SOPInstanceUID = emri.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    emri.save_as(tmp_path / "emri_short.dcm")

    for path in (tmp_path / "mr_short.dcm", tmp_path / "emri_short.dcm"):
        result = send(running_scp, path)
        assert result.returncode == 0xC0, result.stdout + result.stderr  # storescu exits with the status class
        assert "Error: CannotUnderstand" in result.stdout + result.stderr or "0xc000" in (result.stdout + result.stderr).lower()
    assert count(running_scp.network, StoredObject) == 0
    assert object_files(running_scp.network) == []


def test_object_over_the_size_limit_is_refused(running_scp: RunningSCP, shared_dicom: Path) -> None:
    running_scp.scp.max_object_bytes = 100_000
    result = send(running_scp, shared_dicom / "waveform_ecg.dcm")  # 291 KB
    assert result.returncode == 0xC0
    assert count(running_scp.network, StoredObject) == 0


# -- re-sends, conflicts, outages -------------------------------------------------------------------
def test_resend_is_success_without_a_second_row(running_scp: RunningSCP, shared_dicom: Path) -> None:
    path = shared_dicom / "test_ecg.dcm"
    for _ in range(2):
        result = send(running_scp, path)
        assert result.returncode == 0, result.stdout + result.stderr
    uid = pydicom.dcmread(path).SOPInstanceUID
    assert count(running_scp.network, StoredObject, StoredObject.sop_instance_uid == uid) == 1
    assert count(running_scp.network, QuarantinedObject) == 0


def test_different_object_under_a_known_uid_is_quarantined(running_scp: RunningSCP, shared_dicom: Path,
                                                            tmp_path: Path) -> None:
    network = running_scp.network
    path = shared_dicom / "test_ecg.dcm"
    assert send(running_scp, path).returncode == 0
    original_row = stored_row(network, pydicom.dcmread(path).SOPInstanceUID)
    original_bytes = network.system.store.get(original_row.key, original_row.sha256)

    ds = pydicom.dcmread(path)
    ds.StudyDescription = "edited at the township"  # same SOP Instance UID, other content
    ds.save_as(tmp_path / "conflict.dcm")
    result = send(running_scp, tmp_path / "conflict.dcm")
    assert result.returncode == 0, result.stdout + result.stderr

    with network.system.db.uow() as uow:
        q = uow.session.scalars(select(QuarantinedObject)).all()
        assert len(q) == 1 and q[0].sop_instance_uid == ds.SOPInstanceUID
        assert q[0].sha256 != original_row.sha256
        assert network.system.store.get(q[0].key, q[0].sha256)
    assert count(network, StoredObject) == 1
    row = stored_row(network, ds.SOPInstanceUID)
    assert (row.id, row.sha256) == (original_row.id, original_row.sha256)
    assert network.system.store.get(row.key, row.sha256) == original_bytes


def test_object_store_outage_gives_out_of_resources_then_resend_succeeds(running_scp: RunningSCP,
                                                                         shared_dicom: Path,
                                                                         tmp_path: Path) -> None:
    network = running_scp.network
    store = network.system.store
    path = shared_dicom / "waveform_ecg.dcm"
    real_root = store.root
    blocked = tmp_path / "store-gone"
    blocked.write_bytes(b"")  # a file where the folder should be: every write fails with ENOTDIR
    store.root = blocked
    try:
        result = send(running_scp, path)
    finally:
        store.root = real_root
    assert result.returncode == 0xA7, result.stdout + result.stderr
    assert "OutOfResources" in result.stdout + result.stderr or "a700" in (result.stdout + result.stderr).lower()
    assert count(network, StoredObject) == 0 and count(network, Job) == 0
    assert object_files(network) == []  # no half-written file (nor temp file) left

    result = send(running_scp, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_stored_as_sent(network, path)
    (stored,) = object_files(network)
    assert stored.name.startswith(pydicom.dcmread(path).SOPInstanceUID + ".") and stored.suffix == ".dcm"


@pytest.mark.parametrize("uid, ae", [("1.2.3.45", "CART1"), ("1.2.3.456", "CART12"), ("1.2.3", None)])
def test_part10_prefix_matches_pydicoms_file_meta_encoding(uid: str, ae: str | None) -> None:
    """The hand-encoded file meta group is byte-for-byte what pydicom writes for the same values."""
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    from telediag.ingest.scp import part10_prefix

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    if ae:
        meta.SourceApplicationEntityTitle = ae
    expected = BytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(expected, meta, enforce_standard=True)
    assert part10_prefix("1.2.840.10008.5.1.4.1.1.9.1.1", uid, "1.2.840.10008.1.2", ae) == expected.getvalue()
