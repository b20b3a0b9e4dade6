"""HTTP ingest over a real socket: auth, WFDB and DICOM uploads, clear refusals."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import wfdb
from sqlalchemy import func, select

from telediag.store.tables import StoredObject

from conftest import SHARED_DATA, Network, wait_for


@pytest.fixture
def wfdb_record(tmp_path: Path) -> dict[str, bytes]:
    """A 20-second two-lead WFDB record (format 212) cut from MIT-BIH record 101."""
    src = SHARED_DATA / "mitdb" / "101"
    if not src.with_suffix(".hea").is_file():
        pytest.skip("../shared/data/mitdb is not present")
    rec = wfdb.rdrecord(str(src), sampto=7200, physical=False)
    out = tmp_path / "wfdb"
    out.mkdir()
    wfdb.wrsamp("rec101", fs=rec.fs, units=rec.units, sig_name=rec.sig_name, d_signal=rec.d_signal,
                fmt=rec.fmt, adc_gain=rec.adc_gain, baseline=rec.baseline, write_dir=str(out))
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _files(files: dict[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (name, data)) for name, data in files.items()]


def _stored(network: Network) -> int:
    with network.system.db.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(StoredObject))


def test_wfdb_upload_is_stored_and_analysed(api, wfdb_record) -> None:
    network, url = api
    headers = {"X-API-Key": network.api_key}
    resp = httpx.post(f"{url}/api/v1/ecg/wfdb", headers=headers, files=_files(wfdb_record), timeout=30)
    assert resp.status_code == 201, resp.text
    case_id = resp.json()["case_id"]

    def analysed():
        body = httpx.get(f"{url}/api/v1/cases/{case_id}", headers=headers).json()
        header = next(o for o in body["objects"] if o["media_type"] == "application/x-wfdb-header")
        return body if header["job"]["state"] == "done" else None

    body = wait_for(analysed)
    analysis = next(o for o in body["objects"] if o["analysis"])["analysis"]
    assert analysis["fs"] == 360 and analysis["leads"] == ["MLII", "V1"]
    assert 60 <= analysis["heart_rate_bpm"] <= 90  # record 101 is a sinus rhythm around 70/min
    stored = {o["key"].rsplit("/", 1)[-1]: o for o in body["objects"]}
    assert set(stored) == set(wfdb_record)

    again = httpx.post(f"{url}/api/v1/ecg/wfdb", headers=headers, files=_files(wfdb_record), timeout=30)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    # Another township's device cannot read this township's case.
    other = httpx.get(f"{url}/api/v1/cases/{case_id}", headers={"X-API-Key": network.other_site_api_key})
    assert other.status_code == 404


def test_truncated_wfdb_is_refused_with_reason(api, wfdb_record) -> None:
    network, url = api
    broken = dict(wfdb_record)
    broken["rec101.dat"] = broken["rec101.dat"][:-3000]
    resp = httpx.post(f"{url}/api/v1/ecg/wfdb", headers={"X-API-Key": network.api_key}, files=_files(broken))
    assert resp.status_code == 422
    assert "rec101" in resp.json()["detail"]
    missing = {k: v for k, v in wfdb_record.items() if not k.endswith(".dat")}
    resp = httpx.post(f"{url}/api/v1/ecg/wfdb", headers={"X-API-Key": network.api_key}, files=_files(missing))
    assert resp.status_code == 422
    assert _stored(network) == 0


def test_dicom_upload_checks_every_file_before_storing_any(api, shared_dicom: Path) -> None:
    network, url = api
    headers = {"X-API-Key": network.api_key}
    good = (shared_dicom / "test_ecg.dcm").read_bytes()
    bad = (shared_dicom / "MR_truncated.dcm").read_bytes()
    resp = httpx.post(f"{url}/api/v1/dicom", headers=headers,
                      files=_files({"ecg.dcm": good, "mr.dcm": bad}))
    assert resp.status_code == 422 and resp.json()["detail"].startswith("mr.dcm: ")
    assert _stored(network) == 0

    resp = httpx.post(f"{url}/api/v1/dicom", headers=headers, files=_files({"ecg.dcm": good}))
    assert resp.status_code == 201
    assert resp.json()["objects"][0]["status"] == "stored"


def test_authentication_site_and_size_limits(api, shared_dicom: Path) -> None:
    network, url = api
    data = {"a.dcm": (shared_dicom / "CT_small.dcm").read_bytes()}
    assert httpx.post(f"{url}/api/v1/dicom", files=_files(data)).status_code == 401
    assert httpx.post(f"{url}/api/v1/dicom", headers={"X-API-Key": "td_wrong"}, files=_files(data)).status_code == 401
    headers = {"Authorization": f"Bearer {network.api_key}"}
    unknown = httpx.post(f"{url}/api/v1/dicom", headers=headers, files=_files(data), data={"site": "Atlantis"})
    assert unknown.status_code == 404 and "unknown site" in unknown.json()["detail"]
    foreign = httpx.post(f"{url}/api/v1/dicom", headers=headers, files=_files(data), data={"site": "Township A2"})
    assert foreign.status_code == 403

    limit = network.system.settings.max_upload_bytes
    huge = {"big.dcm": b"\0" * (limit + 1)}
    assert httpx.post(f"{url}/api/v1/dicom", headers=headers, files=_files(huge), timeout=60).status_code == 413

    def chunks():  # a multipart body without Content-Length: the limit must hold while streaming too
        yield b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="big.dcm"\r\n\r\n'
        for _ in range(limit // 1_000_000 + 2):
            yield b"\0" * 1_000_000
        yield b"\r\n--b0undary--\r\n"
    streamed = httpx.post(f"{url}/api/v1/dicom", content=chunks(), timeout=60,
                          headers={**headers, "Content-Type": "multipart/form-data; boundary=b0undary"})
    assert streamed.status_code == 413
    assert _stored(network) == 0
