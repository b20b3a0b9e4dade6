"""DICOMweb (PS3.18) over a real socket, driven by the PyPI ``dicomweb-client`` where it can
be: QIDO-RS search, WADO-RS retrieve (instances, metadata, bulk data, frames, rendered
images, thumbnails), STOW-RS store with per-instance failures, the same scoping as the rest
of the API, and a large study streamed without the server holding it.

The world is ``review_world`` (two counties, their townships' carts and clinics, readers).
"""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pydicom
import pytest
import requests
from sqlalchemy import func, select
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import SAMPLE_DATA
from review_fixtures import ReviewWorld, review_world  # noqa: F401 - fixture
from services import wait_until
from telediag import imaging
from telediag.ingest.dicom import InvalidObject, inspect
from telediag.network import device_by_api_key
from telediag.store.tables import Job, JobState

SAMPLES = SAMPLE_DATA / "dicom"
CT, MR_RLE, TRUNCATED, ECG = (SAMPLES / n for n in ("CT_small.dcm", "MR_small_RLE.dcm", "MR_truncated.dcm",
                                                    "waveform_ecg.dcm"))
CANNOT_UNDERSTAND, SOP_CLASS_NOT_SUPPORTED, STUDY_MISMATCH = 0xC000, 0x0122, 0xC409


# -- helpers -----------------------------------------------------------------------------------
def client(world: ReviewWorld, user: str | None = None, key: str | None = None) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {world.token(user)}"} if user else {"X-API-Key": world.keys[key]}
    dw = DICOMwebClient(url=f"{world.base}/dicomweb", headers=headers)
    # dicomweb-client sends ``Host`` without the port, which means the scheme's default port
    # (RFC 9110 7.2): the RetrieveURLs and BulkDataURIs built from it would name port 80.
    dw.host = urlsplit(world.base).netloc
    return dw


def multipart(parts: list[bytes], boundary: str = "telediag-test-boundary") -> tuple[bytes, dict[str, str]]:
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return body + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}


def stow(world: ReviewWorld, parts: list[bytes], study: str | None = None, **who: Any) -> httpx.Response:
    body, headers = multipart(parts)
    return world.call("POST", "/dicomweb/studies" + (f"/{study}" if study else ""), content=body, headers=headers,
                      **who)


def split_multipart(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, bytes) of each part of a multipart/related answer."""
    boundary = re.search(r'boundary="?([^";]+)', response.headers["content-type"]).group(1).encode()
    out = []
    for chunk in response.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        media = re.search(rb"Content-Type: ([^\r]+)", head).group(1).decode()
        assert data.endswith(b"\r\n")
        out.append((media, data[:-2]))
    return out


def value(item: dict[str, Any], keyword: str) -> Any:
    """The first value of a DICOM JSON attribute (a PN's alphabetic group)."""
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    first = item[tag]["Value"][0]
    return first["Alphabetic"] if isinstance(first, dict) and "Alphabetic" in first else first


def uids(results: list[dict[str, Any]], keyword: str = "StudyInstanceUID") -> set[str]:
    return {value(r, keyword) for r in results}


@pytest.fixture
def stored(review_world: ReviewWorld) -> dict[str, pydicom.Dataset]:
    """The CT, the RLE MR and the 12-lead ECG samples sent by Township A1's cart (routed to County A)."""
    r = stow(review_world, [p.read_bytes() for p in (CT, MR_RLE, ECG)], key=review_world.keys["cart-a1"])
    assert r.status_code == 200, r.text
    return {p.name: pydicom.dcmread(p) for p in (CT, MR_RLE, ECG)}


# -- QIDO-RS -----------------------------------------------------------------------------------
def test_search_studies_series_and_instances(review_world: ReviewWorld, stored: dict[str, pydicom.Dataset]) -> None:
    ct, mr, ecg = stored["CT_small.dcm"], stored["MR_small_RLE.dcm"], stored["waveform_ecg.dcm"]
    dw = client(review_world, user="ra")
    everything = dw.search_for_studies()
    assert uids(everything) == {ct.StudyInstanceUID, mr.StudyInstanceUID, ecg.StudyInstanceUID}
    by_id = dw.search_for_studies(search_filters={"PatientID": str(ct.PatientID)})
    assert uids(by_id) == {ct.StudyInstanceUID}
    assert value(by_id[0], "ModalitiesInStudy") == "CT" and value(by_id[0], "NumberOfStudyRelatedInstances") == 1
    assert value(by_id[0], "PatientName") == str(ct.PatientName)

    # PatientName: wildcard, case-insensitive; fuzzy: words in any order, each a component's prefix
    assert uids(dw.search_for_studies(search_filters={"PatientName": "compressedsamples^*"})) == {
        ct.StudyInstanceUID, mr.StudyInstanceUID}
    assert uids(dw.search_for_studies(search_filters={"PatientName": "mr1 compressed"}, fuzzymatching=True)) == {
        mr.StudyInstanceUID}
    assert dw.search_for_studies(search_filters={"PatientName": "mr1 compressed"}) == []
    # StudyDate: a range, open ranges, a single date
    assert uids(dw.search_for_studies(search_filters={"StudyDate": "20040101-20040131"})) == {ct.StudyInstanceUID}
    assert uids(dw.search_for_studies(search_filters={"StudyDate": "20040801-"})) == {
        mr.StudyInstanceUID, ecg.StudyInstanceUID}
    assert uids(dw.search_for_studies(search_filters={"StudyDate": "-20040826"})) == {
        ct.StudyInstanceUID, mr.StudyInstanceUID}
    assert uids(dw.search_for_studies(search_filters={"StudyDate": str(ecg.StudyDate)})) == {ecg.StudyInstanceUID}
    # ModalitiesInStudy (a list too), StudyInstanceUID lists, AccessionNumber
    assert uids(dw.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})) == {mr.StudyInstanceUID}
    assert uids(dw.search_for_studies(search_filters={"ModalitiesInStudy": "CT,ECG"})) == {
        ct.StudyInstanceUID, ecg.StudyInstanceUID}
    assert uids(dw.search_for_studies(search_filters={
        "StudyInstanceUID": f"{ct.StudyInstanceUID},{mr.StudyInstanceUID}"})) == {ct.StudyInstanceUID,
                                                                                  mr.StudyInstanceUID}
    assert uids(dw.search_for_studies(search_filters={"AccessionNumber": str(ecg.AccessionNumber)})) == {
        ecg.StudyInstanceUID}
    assert uids(dw.search_for_studies(search_filters={"0020000D": ct.StudyInstanceUID})) == {ct.StudyInstanceUID}

    series = dw.search_for_series(mr.StudyInstanceUID)
    assert [(value(s, "SeriesInstanceUID"), value(s, "Modality")) for s in series] == [
        (mr.SeriesInstanceUID, "MR")]
    assert uids(dw.search_for_series(search_filters={"Modality": "EC?"}), "SeriesInstanceUID") == {
        ecg.SeriesInstanceUID}
    instances = dw.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert [value(i, "SOPInstanceUID") for i in instances] == [ct.SOPInstanceUID]
    assert value(instances[0], "Rows") == 128 and value(instances[0], "SOPClassUID") == ct.SOPClassUID
    assert value(instances[0], "RetrieveURL").endswith(f"/instances/{ct.SOPInstanceUID}")
    assert uids(dw.search_for_instances(search_filters={"SOPClassUID": str(ecg.SOPClassUID)}), "SOPInstanceUID") == {
        ecg.SOPInstanceUID}


def test_search_paging_includefield_and_bad_queries(review_world: ReviewWorld,
                                                    stored: dict[str, pydicom.Dataset]) -> None:
    dw = client(review_world, user="ra")
    pages = [dw.search_for_studies(limit=1, offset=n) for n in range(4)]
    assert [len(p) for p in pages] == [1, 1, 1, 0]
    assert len(uids(pages[0] + pages[1] + pages[2])) == 3
    first = review_world.call("GET", "/dicomweb/studies?limit=2", user="ra")
    assert first.headers["content-type"] == "application/dicom+json"
    assert "additional results" in first.headers["warning"]
    described = dw.search_for_studies(search_filters={"StudyDescription": "ECG"}, fields=["StudyDescription"])
    assert value(described[0], "StudyDescription") == "ECG"
    assert "00081030" not in dw.search_for_studies(search_filters={"PatientID": "1CT1"})[0]  # not a default
    every = dw.search_for_studies(search_filters={"PatientID": "1CT1"}, fields=["all"])[0]
    assert "00081030" in every and "00200010" in every
    ignored = review_world.call("GET", "/dicomweb/studies?InstitutionName=X", user="ra")
    assert ignored.status_code == 200 and "InstitutionName" in ignored.headers["warning"]
    for bad in ("StudyDate=2004", "StudyDate=20040101-2005", "SeriesNumber=x", "limit=0", "offset=-1"):
        r = review_world.call("GET", f"/dicomweb/{'series' if 'Series' in bad else 'studies'}?{bad}", user="ra")
        assert r.status_code == 400, bad
    assert review_world.call("GET", "/dicomweb/studies").status_code == 401


# -- WADO-RS -----------------------------------------------------------------------------------
def test_retrieve_instances_metadata_and_bulk_data(review_world: ReviewWorld,
                                                   stored: dict[str, pydicom.Dataset]) -> None:
    ct, ecg = stored["CT_small.dcm"], stored["waveform_ecg.dcm"]
    dw = client(review_world, user="ra")
    got = dw.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert got.SOPInstanceUID == ct.SOPInstanceUID and got.PixelData == ct.PixelData
    # the bytes are the file as it was sent, not a re-encoding
    for path, ds in ((CT, ct), (ECG, ecg)):
        r = review_world.call("GET", f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                                     f"/instances/{ds.SOPInstanceUID}", user="ra")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
        [(media, data)] = split_multipart(r)
        assert data == path.read_bytes() and f"transfer-syntax={ds.file_meta.TransferSyntaxUID}" in media
    study = dw.retrieve_study(ct.StudyInstanceUID)
    assert [d.SOPInstanceUID for d in study] == [ct.SOPInstanceUID]
    assert len(dw.retrieve_series(ecg.StudyInstanceUID, ecg.SeriesInstanceUID)) == 1

    meta = dw.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert meta["00100020"]["Value"] == [ct.PatientID] and "Value" not in meta["7FE00010"]
    pixels = dw.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    assert pixels == [ct.PixelData]
    [ecg_meta] = dw.retrieve_study_metadata(ecg.StudyInstanceUID)
    group = ecg_meta["54000100"]["Value"][0]
    waveform = dw.retrieve_bulkdata(group["54001010"]["BulkDataURI"])
    assert waveform == [ecg.WaveformSequence[0].WaveformData]
    assert pydicom.Dataset.from_json(ecg_meta, lambda *_: b"").SOPInstanceUID == ecg.SOPInstanceUID
    missing = review_world.call("GET", f"/dicomweb/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
                                       f"/instances/{ct.SOPInstanceUID}/bulk/00100010", user="ra")
    assert missing.status_code == 404
    wrong_ts = review_world.call("GET", f"/dicomweb/studies/{ct.StudyInstanceUID}", user="ra", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert wrong_ts.status_code == 406


def test_a_compressed_instance_is_decompressed_for_a_client_that_asks_for_explicit_little_endian(
        review_world: ReviewWorld, stored: dict[str, pydicom.Dataset]) -> None:
    mr = stored["MR_small_RLE.dcm"]
    url = f"/dicomweb/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}/instances/{mr.SOPInstanceUID}"
    r = review_world.call("GET", url, user="ra", headers={
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'})
    assert r.status_code == 200, r.text
    [(media, data)] = split_multipart(r)
    assert f"transfer-syntax={ExplicitVRLittleEndian}" in media
    got = pydicom.dcmread(io.BytesIO(data))
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and got.SOPInstanceUID == mr.SOPInstanceUID
    assert np.array_equal(got.pixel_array, mr.pixel_array)  # lossless: the same pixels
    # without a transfer syntax, or with the stored one, it goes as stored
    [(_, as_stored)] = split_multipart(review_world.call("GET", url, user="ra"))
    assert as_stored == MR_RLE.read_bytes()
    # telediag does not re-compress
    jpeg = review_world.call("GET", url, user="ra", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert jpeg.status_code == 406


def test_searches_and_reads_are_audited(review_world: ReviewWorld, stored: dict[str, pydicom.Dataset]) -> None:
    """Who searched for what and who read which study, from where, is in the audit trail."""
    w, ct = review_world, stored["CT_small.dcm"]
    dw = client(w, user="ra")
    assert len(dw.search_for_studies(search_filters={"PatientID": ct.PatientID})) == 1
    dw.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    dw.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    dw.retrieve_instance_rendered(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                  media_types=("image/png",))
    def trail(user: str) -> list[dict[str, Any]]:  # reads are appended in batches: this round's first
        w.system.db.read_audit.sweep()
        return [e for e in w.call("GET", "/api/v1/audit", user="admin").json()["entries"] if e["username"] == user]

    entries = trail("ra")
    assert [e["action"] for e in entries][:4] == ["rendered", "metadata", "retrieve", "search"]
    search, reads = entries[3], entries[:3]
    assert search["case_id"] is None and search["detail"]["keys"] == ["PatientID"]
    assert search["detail"]["results"] == 1 and search["detail"]["level"] == "study"
    assert len({e["case_id"] for e in reads}) == 1 and reads[0]["case_id"] is not None
    assert all(e["address"] == "127.0.0.1" and e["detail"]["instance"] == ct.SOPInstanceUID for e in reads)
    # a read that finds nothing the caller may see is no access: nothing recorded
    assert w.call("GET", f"/dicomweb/studies/{ct.StudyInstanceUID}", user="rb").status_code == 404
    assert [e["action"] for e in trail("rb")] == ["login"]


def test_frames_rendered_and_thumbnails(review_world: ReviewWorld, stored: dict[str, pydicom.Dataset]) -> None:
    ct, mr, ecg = stored["CT_small.dcm"], stored["MR_small_RLE.dcm"], stored["waveform_ecg.dcm"]
    dw = client(review_world, user="ra")
    assert dw.retrieve_instance_frames(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1]) == [
        ct.PixelData]
    where = (mr.StudyInstanceUID, mr.SeriesInstanceUID, mr.SOPInstanceUID)
    # RLE: as stored when the client takes any type, decoded when it asks for uncompressed
    assert dw.retrieve_instance_frames(*where, [1]) == [get_frame(mr.PixelData, 0, number_of_frames=1)]
    [raw] = dw.retrieve_instance_frames(*where, [1], media_types=("application/octet-stream",))
    assert np.array_equal(np.frombuffer(raw, "<i2").reshape(64, 64), mr.pixel_array)
    assert review_world.call("GET", "/dicomweb/studies/{}/series/{}/instances/{}/frames/2".format(*where),
                             user="ra").status_code == 400

    png = dw.retrieve_instance_frames_rendered(*where, [1], media_types=("image/png",))
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (64, 64)
        shown = np.asarray(image)
    assert shown.std() > 10  # an image, not a blank
    jpeg = dw.retrieve_instance_rendered(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                         media_types=("image/jpeg",), params={"viewport": "256,256",
                                                                              "window": "40,400,linear"})
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG" and image.size == (256, 256)
    for path in (f"/dicomweb/studies/{ct.StudyInstanceUID}/thumbnail",
                 f"/dicomweb/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}/thumbnail"):
        r = review_world.call("GET", path, user="ra", headers={"Accept": "image/png"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(r.content)) as image:
            assert max(image.size) == 128
    ecg_path = f"/dicomweb/studies/{ecg.StudyInstanceUID}/thumbnail"
    assert review_world.call("GET", ecg_path, user="ra").status_code == 406
    assert review_world.call("GET", f"/dicomweb/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
                                    f"/instances/{ct.SOPInstanceUID}/rendered?window=40", user="ra").status_code == 400


# -- STOW-RS -----------------------------------------------------------------------------------
def _instance(study: str | None = None, sop_class: str = "1.2.840.10008.5.1.4.1.1.7", rows: int = 16) -> Dataset:
    """A small Secondary Capture image with new UIDs (in ``study`` if given)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality, ds.StudyDate = "STOW1", "王^小明=王^小明", "OT", "20240601"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(rows * rows, dtype="<u2") % 4096).tobytes()
    return ds


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _files(world: ReviewWorld, uid: str) -> list[Path]:
    return [p for p in (world.system.settings.data_dir).rglob(f"*{uid}*") if p.is_file()]


def test_store_instances(review_world: ReviewWorld) -> None:
    world = review_world
    study = generate_uid()
    first, second = _instance(study), _instance(study)
    result = client(world, user="c1").store_instances([first, second])
    referenced = result.ReferencedSOPSequence
    assert {i.ReferencedSOPInstanceUID for i in referenced} == {first.SOPInstanceUID, second.SOPInstanceUID}
    assert result.RetrieveURL.endswith(f"/dicomweb/studies/{study}") and "FailedSOPSequence" not in result
    # stored before acknowledged: the instance is in the catalog and retrievable now
    found = client(world, user="ra").search_for_studies(search_filters={"PatientName": "王*"})
    assert uids(found) == {study} and value(found[0], "NumberOfStudyRelatedInstances") == 2
    assert found[0]["00100010"]["Value"][0] == {"Alphabetic": "王^小明", "Ideographic": "王^小明"}

    # one good part, one truncated (pixel data short), one not DICOM at all: 202, the good one stored only
    good, truncated = _instance(study), TRUNCATED.read_bytes()
    r = stow(world, [_part10(good), truncated, b"not a DICOM file"], study, key=world.keys["cart-a1"])
    assert r.status_code == 202 and r.headers["content-type"] == "application/dicom+json"
    answer = pydicom.Dataset.from_json(r.json())
    assert [i.ReferencedSOPInstanceUID for i in answer.ReferencedSOPSequence] == [good.SOPInstanceUID]
    failed = answer.FailedSOPSequence
    assert [i.FailureReason for i in failed] == [CANNOT_UNDERSTAND, CANNOT_UNDERSTAND]
    truncated_uid = pydicom.dcmread(TRUNCATED, force=True).SOPInstanceUID
    assert failed[0].ReferencedSOPInstanceUID == truncated_uid and failed[0].ErrorComment.startswith("Pixel Data is")
    # nothing half-stored: no row, no file
    assert client(world, user="ra").search_for_instances(search_filters={"SOPInstanceUID": truncated_uid}) == []
    assert _files(world, truncated_uid) == []
    assert len(client(world, user="ra").search_for_instances(study)) == 3

    # none stored: 409 (another study than the URL's, a SOP class telediag does not keep)
    r = stow(world, [_part10(_instance()), _part10(_instance(sop_class="1.2.840.10008.5.1.4.1.1.481.5"))],
             study, key=world.keys["cart-a1"])
    assert r.status_code == 409
    reasons = [i.FailureReason for i in pydicom.Dataset.from_json(r.json()).FailedSOPSequence]
    assert reasons == [STUDY_MISMATCH, SOP_CLASS_NOT_SUPPORTED]
    with pytest.raises(requests.HTTPError) as refused:
        client(world, key="cart-a1").store_instances([_instance()], study_instance_uid=study)
    assert refused.value.response.status_code == 409
    # only a clinic's staff and devices store; a body that is not multipart/related is refused whole
    assert stow(world, [_part10(_instance())], user="ra").status_code == 403
    assert world.call("POST", "/dicomweb/studies", key=world.keys["cart-a1"], content=b"x",
                      headers={"Content-Type": "application/dicom"}).status_code == 415


# -- scoping -----------------------------------------------------------------------------------
def test_scoping(review_world: ReviewWorld, stored: dict[str, pydicom.Dataset]) -> None:
    ct = stored["CT_small.dcm"]
    everything = {d.StudyInstanceUID for d in stored.values()}
    assert uids(client(review_world, key="cart-a1").search_for_studies()) == everything
    assert uids(client(review_world, user="c1").search_for_studies()) == everything
    assert uids(client(review_world, user="rp").search_for_studies()) == everything  # the prefecture: all
    for outsider in (dict(key="cart-b1"), dict(key="cart-a2"), dict(user="rb"), dict(user="c2")):
        dw = client(review_world, **outsider)
        who = {"key": review_world.keys[outsider["key"]]} if "key" in outsider else outsider
        assert dw.search_for_studies() == [] and dw.search_for_instances() == []
        assert dw.search_for_series(ct.StudyInstanceUID) == []
        for path in (f"/studies/{ct.StudyInstanceUID}", f"/studies/{ct.StudyInstanceUID}/metadata",
                     f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}"
                     f"/rendered", f"/studies/{ct.StudyInstanceUID}/thumbnail"):
            assert review_world.call("GET", "/dicomweb" + path, **who).status_code == 404, (outsider, path)


# -- every image sample of the shared reference data ------------------------------------------------
def test_shared_samples(review_world: ReviewWorld, shared_dicom: Path) -> None:
    """Each sample is stored or refused as ``inspect`` judges it, comes back byte-identical, and
    its first frame renders to a PNG whose size is the image's."""
    seen: set[str] = set()
    for path in sorted(shared_dicom.glob("*.dcm")):
        data = path.read_bytes()
        r = stow(review_world, [data], key=review_world.keys["cart-a1"])
        try:
            info = inspect(data, thorough=True)
        except InvalidObject:
            assert r.status_code == 409, path.name
            continue
        if info.sop_instance_uid in seen:  # another file under a stored SOP Instance UID: quarantined
            assert r.status_code == 409, path.name
            continue
        seen.add(info.sop_instance_uid)
        assert r.status_code == 200, (path.name, r.text)
        where = (info.study_instance_uid, info.series_instance_uid, info.sop_instance_uid)
        got = review_world.call("GET", "/dicomweb/studies/{}/series/{}/instances/{}".format(*where), user="rp")
        assert split_multipart(got)[0][1] == data, path.name
        if info.is_ecg:
            continue
        rendered = review_world.call("GET", "/dicomweb/studies/{}/series/{}/instances/{}/frames/1/rendered".format(
            *where), user="rp", headers={"Accept": "image/png"})
        try:
            imaging.decode_frames(data)[0]
        except imaging.ImageError:  # e.g. 12-bit JPEG Extended without the GPL decoder: said, not crashed
            assert rendered.status_code == 422, path.name
            continue
        with Image.open(io.BytesIO(rendered.content)) as image:
            assert image.size == (info.instance.columns, info.instance.rows), path.name


# -- memory --------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def test_large_study_is_streamed(review_world: ReviewWorld) -> None:
    """A 200 MB study (40 instances of 5 MB) goes out without the server holding it: the
    process (server and the streaming client both) grows by a fraction of the study."""
    world = review_world
    device = device_by_api_key(world.system.db, world.keys["cart-a1"])
    study, count, side = generate_uid(), 40, 1600
    template = _instance(study, rows=side)
    template.PixelData = np.random.default_rng(9).integers(0, 4096, side * side, dtype="<u2").tobytes()
    total = 0
    for n in range(count):
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = n + 1
        data = _part10(template)
        total += len(data)
        world.system.ingest.store_received(device, world.system.ingest.prepare_dicom(device, data))
    del data, template

    def previews_rendered() -> bool:  # the worker renders each image; measure the retrieve alone
        with world.system.db.uow() as uow:
            return not uow.session.scalar(select(func.count()).select_from(Job).where(Job.state != JobState.DONE))

    wait_until(previews_rendered, 120, "the previews rendered")
    peak, done = [_rss_mb()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(_rss_mb())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    headers = {"Authorization": f"Bearer {world.token('ra')}"}  # logged in first: Argon2 takes 64 MB
    before = _rss_mb()
    sampler.start()
    received = 0
    try:
        with httpx.stream("GET", f"{world.base}/dicomweb/studies/{study}", timeout=120, headers=headers) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw(1 << 16):
                received += len(chunk)
    finally:
        done.set()
        sampler.join()
    assert received > total > 200_000_000
    growth = max(peak) - before
    print(f"retrieved {received / 2**20:.0f} MB; RSS {before:.0f} MB before, growth {growth:.1f} MB")
    assert growth < 40, f"RSS grew {growth:.0f} MB while streaming a {total / 2**20:.0f} MB study"
