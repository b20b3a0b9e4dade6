"""``POST /api/v1/ecg``: the files township carts export, over a real socket.

Each format is detected from its content (the file name says nothing), stored exactly as
received with its format recorded, analysed by the worker with the cart's own measurements
beside ours; a file that is not one, truncated or hostile is refused with the format, the
section and the fault, and nothing is stored.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import SAMPLE_DATA, SHARED_DATA, Network, wait_for
from telediag.domain import MediaType

FORMATS = SAMPLE_DATA / "ecg-formats"
#: (file, format, whether the cart's measurements are in it)
SAMPLES = [
    (FORMATS / "scp-ecg" / "Example.scp", "scp-ecg", True),
    (FORMATS / "philips-xml" / "129DYPRG.XML", "philips-xml", True),
]
SHARED_SAMPLES = [
    ("ecg-formats/ge-muse-xml/example1.xml", "ge-muse"),
    ("ecg-formats/hl7-aecg/Example_aECG.xml", "hl7-aecg"),
    ("ecg-formats/scp-ecg/ECG_20070321_110542_ANON000004.SCP", "scp-ecg"),
    ("ecg-formats/philips-sierra-xml/3191723_ZZDEMOPTONLY_1-04_orig.xml", "philips-xml"),
]
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<RestingECG>&lol4;</RestingECG>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<restingecgdata><x>&x;</x></restingecgdata>"""


def _post(base: str, key: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/ecg", headers={"X-API-Key": key}, files=[("files", (name, data))], timeout=60)


def _case(base: str, key: str, case_id: int) -> dict:
    resp = httpx.get(f"{base}/api/v1/cases/{case_id}", headers={"X-API-Key": key}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _analysed(base: str, key: str, case_id: int) -> dict:
    def done() -> dict | None:
        obj = _case(base, key, case_id)["objects"][0]
        return obj if obj["job"]["state"] in ("done", "dead") else None

    return wait_for(done, timeout=60)


def _object_files(network: Network) -> list[Path]:
    return [p for p in network.system.store.root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("path, fmt, has_cart", SAMPLES, ids=[s[1] for s in SAMPLES])
def test_each_format_is_stored_as_received_and_analysed(api: tuple[Network, str], path: Path, fmt: str,
                                                        has_cart: bool) -> None:
    network, base = api
    data = path.read_bytes()
    resp = _post(base, network.api_key, "upload.bin", data)  # the name says nothing of the format
    assert resp.status_code == 201, resp.text
    body = resp.json()["objects"][0]
    assert body["status"] == "stored"
    obj = _analysed(base, network.api_key, body["case_id"])
    assert obj["media_type"] == MediaType.ECG_FILES[fmt][0]
    assert network.system.store.get(obj["key"], obj["sha256"]) == data  # the original bytes
    assert obj["job"]["state"] == "done", obj["job"]
    analysis = obj["analysis"]
    assert analysis["format"] == fmt and len(analysis["leads"]) == 12
    assert analysis["heart_rate_bpm"] is not None
    if has_cart:
        assert analysis["device_measurements"]["qrs_ms"] > 0 and analysis["measurements"]["qrs_ms"] > 0
    again = _post(base, network.api_key, "again.bin", data)
    assert again.status_code == 200 and again.json()["objects"][0]["status"] == "duplicate"


@pytest.mark.parametrize("relative, fmt", SHARED_SAMPLES, ids=[s[1] for s in SHARED_SAMPLES])
def test_shared_samples_of_every_format_are_accepted(api: tuple[Network, str], relative: str, fmt: str) -> None:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip("../shared/data/ecg-formats is not present")
    network, base = api
    resp = _post(base, network.api_key, path.name, path.read_bytes())
    assert resp.status_code == 201, resp.text
    obj = _analysed(base, network.api_key, resp.json()["objects"][0]["case_id"])
    assert obj["media_type"] == MediaType.ECG_FILES[fmt][0] and obj["job"]["state"] == "done"


@pytest.mark.parametrize("data, expected", [
    (b"\x00\x01garbage" * 100, "unsupported ECG file format"),
    ((FORMATS / "scp-ecg" / "Example.scp").read_bytes()[:3000], "SCP-ECG section"),
    ((FORMATS / "philips-xml" / "129DYPRG.XML").read_bytes()[:20000], "Philips XML"),
    (BILLION_LAUGHS, "GE MUSE XML"),
    (XXE, "Philips XML"),
], ids=["unknown", "truncated-scp", "truncated-philips", "billion-laughs", "xxe"])
def test_bad_files_are_refused_with_format_and_reason(api: tuple[Network, str], data: bytes, expected: str) -> None:
    network, base = api
    resp = _post(base, network.api_key, "bad.bin", data)
    assert resp.status_code == 422, resp.text
    assert expected in resp.json()["detail"]
    assert "root:" not in resp.text  # nothing of /etc/passwd came back
    assert _object_files(network) == []


def test_a_refused_file_in_a_batch_stores_none_of_it(api: tuple[Network, str]) -> None:
    network, base = api
    files = [("files", ("good.scp", SAMPLES[0][0].read_bytes())), ("files", ("bad.xml", BILLION_LAUGHS))]
    resp = httpx.post(f"{base}/api/v1/ecg", headers={"X-API-Key": network.api_key}, files=files, timeout=60)
    assert resp.status_code == 422 and resp.json()["detail"].startswith("bad.xml:")
    assert _object_files(network) == []
