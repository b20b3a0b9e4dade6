"""Distributed mode end to end: ``telediag api``, ``telediag scp`` and ``telediag worker`` as
separate processes over PostgreSQL, a real broker (Redis, and RabbitMQ) and SeaweedFS S3.

A township is registered with the ``telediag site add`` / ``device add`` CLI, a cart sends a
12-lead ECG with dcmtk ``storescu`` to the SCP process and a WFDB record plus a DICOM ECG over
HTTP to the API process; every object must be in S3 byte for byte, recorded in PostgreSQL, and
analysed by the worker process.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select

from services import (
    SAMPLE_DATA,
    SHARED_DATA,
    Registered,
    S3Server,
    register_network_cli,
    sha256_bytes,
    storescu,
    telediag_env,
    wait_until,
)
from telediag.store import Database
from telediag.ecg.readers import read_dicom_waveform, read_wfdb
from telediag.store.tables import AnalysisResult, Case, CaseKind, CaseStatus, Device, Job, JobState, Site, StoredObject

pytest_plugins = ["services"]
pytestmark = pytest.mark.services

JOB_TIMEOUT_S = 90


def _data(name: str) -> Path:
    """A reference file: ../shared/data/dicom/NAME, else the repository's sample_data/dicom/NAME."""
    for folder in (SHARED_DATA / "dicom", SAMPLE_DATA / "dicom"):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"reference file {name} is not present")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """A real broker with nothing of any other test on it."""
    if request.param == "redis":
        return request.getfixturevalue("redis_db").url
    return request.getfixturevalue("rabbit_vhost")


def _case_json(port: int, key: str, case_id: int) -> dict:
    r = httpx.get(f"http://127.0.0.1:{port}/api/v1/cases/{case_id}", headers={"X-API-Key": key}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _finished(port: int, key: str, case_id: int) -> dict | None:
    """The case once every analysis job of it reached an end state (done or dead) and the case
    says so too (the API reads case and jobs in separate statements, so one answer can show a
    finished job with the case status of an instant before)."""
    case = _case_json(port, key, case_id)
    jobs = [o["job"] for o in case["objects"] if o["job"] is not None]
    finished = jobs and all(j["state"] in ("done", "dead") for j in jobs) and case["status"] != "received"
    return case if finished else None


def _assert_analysis(result: dict, recording, hr_range: tuple[float, float]) -> None:
    assert result["fs"] == pytest.approx(recording.fs)
    assert result["duration_s"] == pytest.approx(recording.duration_s, rel=0.02)
    assert len(result["leads"]) == len(recording.leads)
    hr = result.get("heart_rate_bpm")
    assert hr is None or hr_range[0] <= hr <= hr_range[1], f"implausible heart rate {hr}"


def test_distributed_ingest_and_analysis(broker_url: str, fresh_postgres_url: str, seaweed: S3Server,
                                         s3_bucket: str, procs, tmp_path: Path) -> None:
    env = telediag_env(database_url=fresh_postgres_url, object_store_url=seaweed.url(s3_bucket),
                       broker_url=broker_url, data_dir=tmp_path / "data")
    net: Registered = register_network_cli(env)

    api, http_port = procs.api(env, wait=False)
    scp, dicom_port = procs.scp(env, wait=False)
    worker = procs.worker(env, wait=False)
    api.wait_http(http_port)
    scp.wait_port(dicom_port)
    worker.wait_log(r"worker consuming")

    # 1. a WFDB record over HTTP to the API process
    record = "mitdb119_300s" if broker_url.startswith("redis") else "mitdb101_600s"
    wfdb_files = {p.name: p.read_bytes() for p in sorted((SAMPLE_DATA / "wfdb").glob(f"{record}.*"))}
    assert len(wfdb_files) == 3
    r = httpx.post(f"http://127.0.0.1:{http_port}/api/v1/ecg/wfdb", headers={"X-API-Key": net.api_key},
                   files=[("files", (n, d, "application/octet-stream")) for n, d in wfdb_files.items()],
                   data={"patient_id": "P-0001", "site": net.site}, timeout=60)
    assert r.status_code == 201, r.text
    wfdb_case = r.json()
    assert wfdb_case["status"] == "stored" and wfdb_case["job_id"]

    # 2. a DICOM ECG over HTTP to the API process
    http_dicom = _data("test_ecg.dcm")
    r = httpx.post(f"http://127.0.0.1:{http_port}/api/v1/dicom", headers={"X-API-Key": net.api_key},
                   files=[("files", (http_dicom.name, http_dicom.read_bytes(), "application/dicom"))], timeout=60)
    assert r.status_code == 201, r.text
    [http_obj] = r.json()["objects"]
    assert http_obj["status"] == "stored" and http_obj["job_id"]

    # 3. a DICOM ECG with dcmtk storescu to the SCP process (C-STORE success = durable + recorded)
    scu_dicom = _data("waveform_ecg.dcm")
    sent = storescu(dicom_port, net.ae_title, [scu_dicom])
    assert sent.returncode == 0, f"storescu failed:\n{sent.stdout}\n{sent.stderr}"
    scu_uid = str(pydicom.dcmread(scu_dicom, stop_before_pixels=True).SOPInstanceUID)
    db = Database(fresh_postgres_url)
    try:
        with db.uow() as uow:
            scu_row = uow.session.scalar(select(StoredObject).where(StoredObject.sop_instance_uid == scu_uid))
            assert scu_row is not None, "C-STORE succeeded but no row was committed"
            scu_case_id = scu_row.case_id

        # every job of the three cases reaches its end state, through the worker process
        cases = {}
        for case_id in (wfdb_case["case_id"], http_obj["case_id"], scu_case_id):
            cases[case_id] = wait_until(lambda: _finished(http_port, net.api_key, case_id), JOB_TIMEOUT_S,
                                        f"the analysis of case {case_id}", interval=0.5)
        for case in cases.values():
            for obj in case["objects"]:
                if obj["job"] is not None:
                    assert obj["job"]["state"] == "done", f"job failed: {obj['job']}"
            assert case["status"] == "analysed"

        # the API reports the analysis, consistent with the source recordings
        wfdb_json = cases[wfdb_case["case_id"]]
        assert {o["key"].rsplit("/", 1)[-1] for o in wfdb_json["objects"]} == set(wfdb_files)
        [header] = [o for o in wfdb_json["objects"] if o["job"] is not None]
        src_wfdb = tmp_path / "src"
        src_wfdb.mkdir()
        for name, data in wfdb_files.items():
            (src_wfdb / name).write_bytes(data)
        _assert_analysis(header["analysis"], read_wfdb(src_wfdb / record), (40, 120))
        [http_json] = cases[http_obj["case_id"]]["objects"]
        _assert_analysis(http_json["analysis"], read_dicom_waveform(http_dicom.read_bytes()), (30, 220))
        [scu_json] = cases[scu_case_id]["objects"]
        _assert_analysis(scu_json["analysis"], read_dicom_waveform(scu_dicom.read_bytes()), (30, 220))

        # PostgreSQL holds exactly what was sent, for the right site and device
        with db.uow() as uow:
            s = uow.session
            township = s.scalar(select(Site).where(Site.name == net.site))
            device = s.scalar(select(Device).where(Device.name == net.device))
            all_cases = list(s.scalars(select(Case).order_by(Case.id)))
            assert len(all_cases) == 3
            assert {c.site_id for c in all_cases} == {township.id}
            assert {c.device_id for c in all_cases} == {device.id}
            assert {c.kind for c in all_cases} == {CaseKind.ECG}
            assert {c.status for c in all_cases} == {CaseStatus.ANALYSED}
            objects = list(s.scalars(select(StoredObject).order_by(StoredObject.id)))
            assert len(objects) == 5  # .hea .dat .atr + 2 DICOM
            jobs = list(s.scalars(select(Job)))
            assert len(jobs) == 3
            assert all(j.state is JobState.DONE and j.attempts == 1 and j.last_error is None for j in jobs)
            results = list(s.scalars(select(AnalysisResult)))
            assert sorted(r.object_id for r in results) == sorted(j.object_id for j in jobs)

        # S3 holds every object byte for byte (read back with the minio client, not S3Store)
        for obj in objects:
            stored = seaweed.object_bytes(s3_bucket, obj.key)
            assert sha256_bytes(stored) == obj.sha256 and len(stored) == obj.size, obj.key
            if obj.sop_instance_uid == scu_uid:
                # The SCP stores the data set as it came off the wire, behind a new file meta. storescu
                # re-encodes on sending (undefined-length sequences get explicit lengths), so the wire
                # bytes are not the file's: compare element by element, every value included.
                stored_ds = pydicom.dcmread(io.BytesIO(stored))
                assert stored_ds == pydicom.dcmread(scu_dicom)
                assert stored_ds.file_meta.TransferSyntaxUID == pydicom.dcmread(scu_dicom).file_meta.TransferSyntaxUID
                assert stored_ds.file_meta.MediaStorageSOPInstanceUID == scu_uid
            elif obj.media_type == "application/dicom":
                assert stored == http_dicom.read_bytes()
            else:
                name = obj.key.rsplit("/", 1)[-1]
                assert stored == wfdb_files[name], name
    finally:
        db.dispose()
