"""Imaging cases read and reported like ECG cases, over real HTTP: the imaging reader's queue,
previews in the header's or the viewer's window, the study thumbnail, header findings in the
case view, findings and impression signed and printed, and every signed report (ECG too) filed
back into its study as a DICOM Encapsulated PDF instance."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid
from pypdf import PdfReader

from alarm_fixtures import normal_ecg
from conftest import SAMPLE_DATA
from review_fixtures import ReviewWorld, rebuilt_digest, review_world  # noqa: F401 - fixture
from telediag.analysis import preview_keys
from telediag.domain import canonical_json
from telediag.network import verify_signature
from telediag.queue import ReceivingGate
from telediag.review import ReviewSweeper
from telediag.review.dicom_report import encapsulated_report

pytest_plugins = ["services"]

CT = SAMPLE_DATA / "dicom" / "CT_small.dcm"  # 128 x 128, rescale -1024, no window in its header
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
FINDINGS = "Right lower lobe consolidation, 3 cm. 右下肺实变。"
IMPRESSION = "Community-acquired pneumonia; follow-up CT in 4 weeks."


def in_queue(w: ReviewWorld, user: str) -> list[int]:
    return [i["case_id"] for i in w.call("GET", "/api/v1/queue", user=user).json()["items"]]


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def report_objects(w: ReviewWorld, case_id: int) -> list[dict]:
    view = w.call("GET", f"/api/v1/cases/{case_id}", user="admin").json()
    return [o for o in view["objects"] if o["sop_class_uid"] == ENCAPSULATED_PDF]


def test_an_imaging_case_reaches_the_imaging_reader_with_its_previews(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(CT.read_bytes())
    assert case_id in in_queue(w, "ri")
    assert case_id not in in_queue(w, "ra")  # an ECG reader of the same county is not shown it
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="ra").status_code == 403

    view = w.call("GET", f"/api/v1/cases/{case_id}", user="ri").json()
    assert view["kind"] == "imaging"
    (obj,) = view["objects"]
    facts = obj["analysis"]["imaging"]
    assert (facts["frames"], facts["rows"], facts["columns"], facts["modality"]) == (1, 128, 128, "CT")
    assert facts["findings"] == [] and facts["windows"][0]["explanation"] == "auto"
    base = f"/api/v1/cases/{case_id}/objects/{obj['object_id']}"

    default = png(w.call("GET", f"{base}/preview.png", user="ri"))
    assert default.shape == (128, 128) and default.dtype == np.uint8 and default.std() > 10
    assert png(w.call("GET", f"{base}/preview.png?size=256", user="ri")).shape == (256, 256)
    jpeg = w.call("GET", f"{base}/preview.jpg?size=64", user="ri")
    assert jpeg.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(jpeg.content)).size == (64, 64)

    # the viewer's window is applied to the full-depth pixels, in Hounsfield units
    ds = pydicom.dcmread(CT)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    for center, width in ((40, 400), (-600, 1500), (400, 1800)):
        shown = png(w.call("GET", f"{base}/preview.png?wc={center}&ww={width}", user="ri")).astype(int)
        expected = np.clip(np.rint(((hu - (center - 0.5)) / (width - 1) + 0.5) * 255), 0, 255)
        assert np.abs(shown - expected).max() <= 1, (center, width)
    soft = png(w.call("GET", f"{base}/preview.png?wc=40&ww=400", user="ri"))
    bone = png(w.call("GET", f"{base}/preview.png?wc=400&ww=1800", user="ri"))
    assert np.abs(soft.astype(int) - bone.astype(int)).mean() > 5

    thumb = w.call("GET", f"/api/v1/cases/{case_id}/thumbnail.png", user="c1")  # the clinic sees its own
    assert Image.open(io.BytesIO(thumb.content)).size == (128, 128)
    assert w.call("GET", f"{base}/preview.png?frame=1", user="ri").status_code == 404
    assert w.call("GET", f"{base}/preview.png?wc=40", user="ri").status_code == 422
    assert w.call("GET", f"{base}/preview.png", user="c2").status_code == 404  # another township
    assert w.call("GET", f"{base}/preview.png").status_code == 401


def _ct_instance(study: str, series: str, number: int) -> bytes:
    """The CT sample as instance ``number`` of ``series`` of ``study``."""
    ds = pydicom.dcmread(CT)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("review_world", [{"study_quiet_s": 2.0}], indirect=True)
def test_a_study_joins_the_queue_once_its_instances_stopped_arriving(review_world: ReviewWorld) -> None:
    """A modality sends a study instance by instance: the readers see it when it is whole
    (no instance for the quiet period); an ECG is ready at once."""
    w, study, series = review_world, generate_uid(), generate_uid()
    case_id = w.upload(_ct_instance(study, series, 1))
    ecg_case = w.upload(normal_ecg())
    assert ecg_case in in_queue(w, "ra")
    for number in (2, 3):
        time.sleep(1.0)
        assert w.upload(_ct_instance(study, series, number)) == case_id
        assert case_id not in in_queue(w, "ri"), "a study still arriving is in the queue"
    deadline = time.monotonic() + 10
    while case_id not in in_queue(w, "ri"):
        assert time.monotonic() < deadline, "the study never joined the queue"
        time.sleep(0.2)
    view = w.call("GET", f"/api/v1/cases/{case_id}", user="ri").json()
    assert len(view["objects"]) == 3  # it is whole when it is shown


def test_a_worker_renders_each_image_and_the_reader_gets_what_it_kept(review_world: ReviewWorld) -> None:
    """The image's job describes it and keeps its preview and thumbnail; the case view, the
    preview and the study thumbnail are then served from what it kept."""
    w = review_world
    case_id = w.upload(CT.read_bytes())
    view = w.analysed(case_id, user="ri")
    (obj,) = view["objects"]
    assert obj["analysis"]["preview"] is True and obj["analysis"]["imaging"]["rows"] == 128
    preview_key, thumb_key = preview_keys(obj["sha256"])
    kept = w.system.store.get(preview_key)
    base = f"/api/v1/cases/{case_id}/objects/{obj['object_id']}"
    assert w.call("GET", f"{base}/preview.png", user="ri").content == kept
    assert np.asarray(Image.open(io.BytesIO(kept))).shape == (128, 128)
    assert Image.open(io.BytesIO(w.system.store.get(thumb_key))).size == (128, 128)
    # what is served is what the worker kept, not a new drawing
    marker = io.BytesIO()
    Image.new("L", (8, 8), 77).save(marker, format="PNG")
    w.system.store.put(preview_key, marker.getvalue(), "image/png")
    w.system.store.put(thumb_key, marker.getvalue(), "image/png")
    assert w.call("GET", f"{base}/preview.png", user="ri").content == marker.getvalue()
    assert w.call("GET", f"/api/v1/cases/{case_id}/thumbnail.png", user="c1").content == marker.getvalue()
    # any other rendering is drawn on request
    assert png(w.call("GET", f"{base}/preview.png?size=64", user="ri")).shape == (64, 64)


def test_an_image_that_cannot_be_drawn_is_described_by_its_findings(review_world: ReviewWorld) -> None:
    w = review_world
    ds = pydicom.dcmread(CT)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.BitsStored = 20  # more bits stored than allocated: no decoder draws that
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    case_id = w.upload(out.getvalue())
    view = w.analysed(case_id, user="ri")
    (obj,) = view["objects"]
    assert view["status"] == "analysed" and obj["analysis"]["preview"] is False
    assert obj["analysis"]["imaging"]["findings"], "the finding says why there is no picture"


def test_ecg_objects_have_no_preview(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(normal_ecg())
    object_id = w.call("GET", f"/api/v1/cases/{case_id}", user="ra").json()["objects"][0]["object_id"]
    assert w.call("GET", f"/api/v1/cases/{case_id}/objects/{object_id}/preview.png", user="ra").status_code == 404
    assert w.call("GET", f"/api/v1/cases/{case_id}/thumbnail.png", user="ra").status_code == 404


def test_header_findings_come_back_in_the_case_view(review_world: ReviewWorld, tmp_path: Path) -> None:
    w = review_world
    wrong = pydicom.dcmread(CT)
    wrong.Modality = "MR"  # a CT Image Storage object that says MR
    wrong.StudyInstanceUID, wrong.SeriesInstanceUID = generate_uid(), generate_uid()
    wrong.SOPInstanceUID = wrong.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    wrong.save_as(tmp_path / "wrong.dcm")
    case_id = w.upload((tmp_path / "wrong.dcm").read_bytes())
    facts = w.call("GET", f"/api/v1/cases/{case_id}", user="ri").json()["objects"][0]["analysis"]["imaging"]
    assert [(f["code"], f["severity"]) for f in facts["findings"]] == [("modality_mismatch", "warning")]
    assert facts["rows"] == 128  # it still renders


def test_frames_of_a_multiframe_image_scroll(review_world: ReviewWorld, shared_dicom: Path) -> None:
    w = review_world
    case_id = w.upload((shared_dicom / "emri_small.dcm").read_bytes())  # enhanced MR, 10 frames of 64 x 64
    obj = w.call("GET", f"/api/v1/cases/{case_id}", user="ri").json()["objects"][0]
    assert obj["analysis"]["imaging"]["frames"] == 10
    base = f"/api/v1/cases/{case_id}/objects/{obj['object_id']}/preview.png"
    first, last = (png(w.call("GET", f"{base}?frame={i}&wc=500&ww=1000", user="ri")) for i in (0, 9))
    assert first.shape == last.shape == (64, 64) and not np.array_equal(first, last)
    assert w.call("GET", f"{base}?frame=10", user="ri").status_code == 404


def test_imaging_cases_of_a_county_without_imaging_readers_go_to_the_prefecture(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(CT.read_bytes(), cart="cart-b1")  # County B reads ECGs only
    ecg_case = w.upload(normal_ecg(), cart="cart-b1")
    assert case_id not in in_queue(w, "rb") + in_queue(w, "rp")
    assert w.system.review.escalate_overdue() == [case_id]  # the sweeper's round; the ECG stays
    assert w.system.review.escalate_overdue() == []
    assert case_id in in_queue(w, "rp") and ecg_case in in_queue(w, "rb")
    entry = w.call("GET", f"/api/v1/audit?case_id={case_id}", user="admin").json()["entries"][0]
    assert entry["action"] == "escalate" and entry["detail"]["reason"] == "no_qualified_reader"
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="rp").status_code == 200


def test_the_review_sweep_waits_behind_a_burst_being_received_but_not_for_long(review_world: ReviewWorld) -> None:
    """Embedded, moving cases up is a write transaction that would hold every C-STORE's commit."""
    w = review_world
    first = w.upload(CT.read_bytes(), cart="cart-b1")  # County B reads ECGs only: the case moves up
    gate = ReceivingGate(quiet_s=0.25, max_wait_s=0.6)
    sweeper = ReviewSweeper(w.system.review, 5, gate.wait)
    moved: list[list[int]] = []
    arriving = threading.Event()

    def burst() -> None:  # objects keep arriving, one every 50 ms
        while not arriving.wait(0.05):
            gate.received()

    gate.received()
    started = time.monotonic()
    threading.Thread(target=burst, daemon=True).start()
    round_ = threading.Thread(target=lambda: moved.append(sweeper.sweep()))
    round_.start()
    try:
        time.sleep(0.3)
        assert round_.is_alive() and first not in in_queue(w, "rp")
        round_.join(5)
    finally:
        arriving.set()
    assert moved == [[first]] and time.monotonic() - started >= 0.6  # but the round waited long enough
    second = w.upload(_ct_instance(generate_uid(), generate_uid(), 1), cart="cart-b1")
    gate.received()
    started = time.monotonic()
    assert sweeper.sweep() == [second]  # a pause in receiving: the round runs after it
    assert 0.2 < time.monotonic() - started < 0.55


def test_findings_and_impression_are_signed_printed_and_filed_into_the_study(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(CT.read_bytes())
    base = f"/api/v1/cases/{case_id}"
    proposal = w.call("GET", f"{base}/report", user="ri").json()
    assert (proposal["statements"], proposal["findings"], proposal["conclusion"]) == ([], "", "")
    assert w.call("POST", f"{base}/claim", user="ri").status_code == 200
    body = {"findings": FINDINGS, "conclusion": IMPRESSION}
    assert w.call("PUT", f"{base}/report", user="ri", json={**body, "statements": ["SR"]}).status_code == 422
    draft = w.call("PUT", f"{base}/report", user="ri", json=body)
    assert draft.status_code == 200 and draft.json()["findings"] == FINDINGS
    signed = w.call("POST", f"{base}/report/sign", user="ri")
    assert signed.status_code == 200, signed.text
    s = signed.json()

    case = w.call("GET", base, user="c1").json()
    content = {"case_id": case_id, "version": 1, "replaces": None, "site_id": case["site_id"],
               "patient_key": case["patient"]["patient_key"], "statements": [], "findings": FINDINGS,
               "conclusion": IMPRESSION, "measurements": {}, "signed_by": "ri", "signed_at": s["signed_at"]}
    digest = hashlib.sha256(canonical_json(content)).digest()
    assert digest.hex() == s["sha256"]
    key = w.call("GET", "/api/v1/users/ri/public-key").json()["public_key"]
    assert verify_signature(key, digest, s["signature"])
    assert w.call("GET", f"{base}/report", user="c1").json()["findings"] == FINDINGS

    pdf = w.call("GET", f"{base}/report.pdf", user="c1").content
    page = PdfReader(io.BytesIO(pdf)).pages[0]
    text = page.extract_text().replace("\n", " ")
    assert "Right lower lobe consolidation" in text and "Community-acquired pneumonia" in text
    assert "Findings" in text and "Impression" in text
    assert text.index("Findings") < text.index("Impression")
    assert len(page.images) == 1  # the study thumbnail where an ECG report has its grid

    # the report is an instance of the study: Encapsulated PDF, its own series, no analysis job
    (doc,) = report_objects(w, case_id)
    assert doc["modality"] == "DOC" and doc["job"] is None
    stored = pydicom.dcmread(io.BytesIO(w.system.store.get(doc["key"])))
    source = pydicom.dcmread(CT)
    assert stored.EncapsulatedDocument[:stored.EncapsulatedDocumentLength] == pdf
    assert len(stored.EncapsulatedDocument) - len(pdf) in (0, 1)
    assert stored.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert (stored.StudyInstanceUID, stored.PatientID, str(stored.PatientName)) == \
        (source.StudyInstanceUID, source.PatientID, str(source.PatientName))
    assert stored.SeriesInstanceUID != source.SeriesInstanceUID
    assert (stored.Modality, stored.SeriesDescription, stored.InstanceNumber) == ("DOC", "telediag report", 1)
    assert "Imaging report" in stored.DocumentTitle
    assert source.TimezoneOffsetFromUTC == stored.TimezoneOffsetFromUTC == "-0500"  # the study's clock
    local = datetime.fromisoformat(s["signed_at"].replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=-5)))
    assert (stored.ContentDate, stored.ContentTime) == (f"{local:%Y%m%d}", f"{local:%H%M%S}")
    assert stored.SourceInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    # an amendment is the study's next report instance, in the same series
    assert w.call("POST", f"{base}/claim", user="ri").status_code == 200
    amended = w.call("POST", f"{base}/report/amend", user="ri",
                     json={**body, "conclusion": "Pneumonia.", "reason": "shorter"})
    assert amended.status_code == 200, amended.text
    docs = report_objects(w, case_id)
    assert len(docs) == 2
    second = pydicom.dcmread(io.BytesIO(w.system.store.get(docs[1]["key"])))
    assert second.SeriesInstanceUID == stored.SeriesInstanceUID and second.InstanceNumber == 2
    assert w.system.review.archive_report(case_id, 2) == docs[1]["object_id"]  # again: a re-send, nothing new
    assert len(report_objects(w, case_id)) == 2


def test_ecg_reports_sign_empty_findings_and_go_into_their_study(review_world: ReviewWorld) -> None:
    w = review_world
    data = normal_ecg()
    case_id = w.upload(data)
    w.analysed(case_id)
    base = f"/api/v1/cases/{case_id}"
    proposal = w.call("GET", f"{base}/report", user="ra").json()
    w.call("POST", f"{base}/claim", user="ra")
    body = {"statements": proposal["statements"], "conclusion": "窦性心律。"}
    assert w.call("PUT", f"{base}/report", user="ra", json={**body, "findings": "x"}).status_code == 422
    assert w.call("PUT", f"{base}/report", user="ra", json=body).status_code == 200
    s = w.call("POST", f"{base}/report/sign", user="ra").json()
    case = w.call("GET", base, user="ra").json()
    assert rebuilt_digest(case, body["statements"], body["conclusion"], proposal["measurements"], s).hex() \
        == s["sha256"]

    pdf = w.call("GET", f"{base}/report.pdf", user="c1").content
    assert "Findings:" not in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    (doc,) = report_objects(w, case_id)
    stored = pydicom.dcmread(io.BytesIO(w.system.store.get(doc["key"])))
    assert stored.StudyInstanceUID == pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
    assert stored.EncapsulatedDocument[:stored.EncapsulatedDocumentLength] == pdf
    assert "ECG report" in stored.DocumentTitle
    objects = w.call("GET", base, user="ra").json()["objects"]
    assert [o["job"] is None for o in objects] == [False, True]  # the ECG's job; the report has none


def test_the_encapsulated_report_is_a_faithful_deterministic_instance_of_its_study(tmp_path: Path) -> None:
    source = pydicom.dcmread(CT, stop_before_pixels=True)
    del source.TimezoneOffsetFromUTC
    source.SpecificCharacterSet = "GB18030"
    source.PatientName = "张^三"
    pdf = b"%PDF-1.4 a signed report. %%EOF"  # odd length: padded, its length recorded
    signed_at = datetime(2026, 12, 2, 14, 5, 9, tzinfo=timezone.utc)

    def build(version: int) -> bytes:
        return encapsulated_report(source, pdf, case_id=7, version=version, signed_at=signed_at,
                                   title="影像诊断报告 Imaging report", exam_kind="imaging")

    data = build(1)
    assert build(1) == data  # a re-send, never a second report
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == ENCAPSULATED_PDF
    assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "张^三"
    assert ds.DocumentTitle == "影像诊断报告 Imaging report"
    assert (ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC) == ("20261202", "220509", "+0800")
    assert ds.EncapsulatedDocumentLength == len(pdf) and ds.EncapsulatedDocument == pdf + b"\0"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "18748-4" and ds.ConversionType == "WSD"
    amended = pydicom.dcmread(io.BytesIO(build(2)))
    assert amended.SeriesInstanceUID == ds.SeriesInstanceUID and amended.SOPInstanceUID != ds.SOPInstanceUID
    if shutil.which("dcm2pdf"):  # dcmtk reads it back as the PDF it holds
        (tmp_path / "report.dcm").write_bytes(data)
        subprocess.run(["dcm2pdf", str(tmp_path / "report.dcm"), str(tmp_path / "out.pdf")], check=True)
        assert (tmp_path / "out.pdf").read_bytes() == pdf
