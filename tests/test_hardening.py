"""Bad input and crashes, tried as a new user would, each over a real connection.

- UIDs that are not UIDs (``..``, ``1.2.3/sub/dir``, leading zeros, too long) are refusals
  with the reason, over C-STORE and HTTP, and never name anything in the object store;
- a C-STORE without an Affected SOP Instance UID gets an answer at once;
- a conflicting re-send gets a Warning status and is listed for administrators;
- the API docs load nothing from outside;
- no job is forgotten: the embedded process republishes every unfinished job at start, two
  sweepers never both publish a job (PostgreSQL), a dead worker's lease runs out and its job
  is published again while a live worker's lease is renewed, and a Redis that lost its
  messages is noticed within a sweep;
- analysis in the embedded mode waits for a pause in receiving, but never longer than its limit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom import config as pydicom_config
from pynetdicom import AE

from conftest import SAMPLE_DATA, Network, register_network, send_concurrently
from factories import ecg_dataset, ecg_objects_of_one_study, part10, synthetic_ecg_uv
from scp_fixtures import SCP_AE, RunningSCP, dcmtk_tools, running_scp  # noqa: F401  (fixtures)
from services import PG_DEVICE_AE, ListPublisher, RedisDb
from telediag.bootstrap import System
from telediag.config import Settings
from telediag.domain import JobState
from telediag.ingest import IngestService
from telediag.network import device_by_ae_title
from telediag.queue import BrokerWatch, Sweeper
from telediag.store import Database, LocalFolderStore

pytest_plugins = ["services"]

BAD_UIDS = {"..": "StudyInstanceUID", "1.2.3/sub/dir": "SOPInstanceUID", "1.02.3": "SeriesInstanceUID",
            "1." + "2" * 70: "StudyInstanceUID"}


def _with_uid(keyword: str, value: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(SAMPLE_DATA / "dicom" / "test_ecg.dcm")
    with pydicom_config.disable_value_validation():
        setattr(ds, keyword, value)
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = value
    return ds


def _c_store(port: int, ds: pydicom.Dataset, calling: str = "CART1") -> pydicom.Dataset | None:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = 10
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP_AE)
    assert assoc.is_established
    try:
        with pydicom_config.disable_value_validation():
            return assoc.send_c_store(ds)
    finally:
        assoc.release()


def _store_files(network: Network) -> list[Path]:
    store = network.system.store
    assert isinstance(store, LocalFolderStore)
    return [p for p in store.root.rglob("*") if p.is_file()]


# -- UIDs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", list(BAD_UIDS))
def test_invalid_uid_is_refused_over_c_store(running_scp: RunningSCP, value: str) -> None:
    keyword = BAD_UIDS[value]
    status = _c_store(running_scp.port, _with_uid(keyword, value))
    assert status is not None and int(status.Status) == 0xC000
    assert "UID" in str(status.ErrorComment)
    assert _store_files(running_scp.network) == []  # nothing stored, no folder named by the value


def test_c_store_without_affected_sop_instance_uid_is_answered_at_once(running_scp: RunningSCP) -> None:
    started = time.monotonic()
    status = _c_store(running_scp.port, _with_uid("SOPInstanceUID", ""))
    assert time.monotonic() - started < 5, "the SCP did not answer; the sender waited for its timeout"
    assert status is not None and int(status.Status) == 0xC000
    assert "AffectedSOPInstanceUID" in str(status.ErrorComment)
    assert _store_files(running_scp.network) == []


@pytest.mark.parametrize("value", list(BAD_UIDS))
def test_invalid_uid_is_refused_over_http(api: tuple[Network, str], value: str, tmp_path: Path) -> None:
    network, base = api
    ds = _with_uid(BAD_UIDS[value], value)
    with pydicom_config.disable_value_validation():
        data = part10(ds)
    for path in ("/api/v1/dicom", "/api/v1/ecg"):
        resp = httpx.post(base + path, headers={"X-API-Key": network.api_key},
                          files=[("files", ("bad.dcm", data))], timeout=30)
        assert resp.status_code == 422, resp.text
        assert "UID" in resp.json()["detail"]
    assert _store_files(network) == []


# -- quarantine ------------------------------------------------------------------------------------
def test_conflicting_resend_gets_a_warning_and_is_listed(running_scp: RunningSCP) -> None:
    ds = ecg_dataset(synthetic_ecg_uv()[:1000])
    first = _c_store(running_scp.port, ds)
    assert first is not None and int(first.Status) == 0x0000
    ds.StudyDescription = "edited at the township"  # same SOP Instance UID, other content
    second = _c_store(running_scp.port, ds)
    assert second is not None and int(second.Status) == 0xB006
    assert "quarantine" in str(second.ErrorComment)

    data_dir = running_scp.network.system.settings.data_dir
    listed = subprocess.run([sys.executable, "-m", "telediag.cli", "quarantine", "list", "--json",
                             "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [e["sop_instance_uid"] for e in entries] == [ds.SOPInstanceUID]
    assert entries[0]["reason"].startswith("different content")


# -- API docs on a network without internet --------------------------------------------------------
def test_api_docs_load_nothing_from_outside(api: tuple[Network, str]) -> None:
    _, base = api
    page = httpx.get(base + "/docs", timeout=30)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: ?'([^']+)'", page.text)
    assert urls, page.text
    assert not [u for u in urls if re.match(r"^(https?:)?//", u)], urls
    for url in urls:
        assert httpx.get(base + url, timeout=30).status_code == 200, url
    assert httpx.get(base + "/openapi.json", timeout=30).json()["info"]["title"] == "telediag"


# -- no job forgotten ------------------------------------------------------------------------------
class RecordingPublisher:
    """Stands in for the outbox publisher under a sweeper: records what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self._lock = threading.Lock()

    def send_now(self, job_ids) -> None:
        with self._lock:
            self.sent.extend(job_ids)


def _jobs_in_states(system: System, n: int = 3) -> list[int]:
    """``n`` stored ECGs whose jobs end pending, queued and running (a live-looking lease):
    what a killed embedded process leaves."""
    device = device_by_ae_title(system.db, "CART1")
    ids = [system.ingest.ingest_dicom(device, data).job_id for data in ecg_objects_of_one_study(n)]
    with system.db.uow() as uow:
        uow.jobs.mark_queued(ids[1:])
        assert uow.jobs.claim_for_run(ids[2], lease_s=600) is not None
        uow.commit()
    return ids


def test_embedded_start_republishes_every_unfinished_job_at_once(tmp_path: Path) -> None:
    down = System(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:9/0"))  # nothing sends
    register_network(down)
    ids = _jobs_in_states(down)
    down.close()

    restarted = System(Settings(data_dir=tmp_path))
    publisher = RecordingPublisher()
    embedded = Sweeper(restarted.db, publisher, owns_all_jobs=True, stale_after_s=600, pending_grace_s=5)
    assert embedded.sweep(first=True) == 3 and sorted(publisher.sent) == sorted(ids)
    with restarted.db.uow() as uow:
        assert {uow.jobs.state(i) for i in ids} == {JobState.QUEUED}
    restarted.close()


def test_distributed_sweeper_leaves_live_jobs_to_their_owners(tmp_path: Path) -> None:
    system = System(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:9/0"))
    register_network(system)
    ids = _jobs_in_states(system)
    publisher = RecordingPublisher()
    peer = Sweeper(system.db, publisher, stale_after_s=600, pending_grace_s=5)
    # At its start a distributed process takes the pending orphan only: the queued job is the
    # broker's and the running one's lease is alive.
    assert peer.sweep(first=True) == 1 and publisher.sent == [ids[0]]
    system.close()


def test_dead_workers_lease_runs_out_and_a_live_workers_is_renewed(tmp_path: Path) -> None:
    from telediag.queue import LeaseKeeper

    system = System(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:9/0"))
    register_network(system)
    device = device_by_ae_title(system.db, "CART1")
    dead, alive = [system.ingest.ingest_dicom(device, d).job_id for d in ecg_objects_of_one_study(2)]
    lease_s = 1.0
    with system.db.uow() as uow:
        assert uow.jobs.claim_for_run(dead, lease_s) is not None
        assert uow.jobs.claim_for_run(alive, lease_s) is not None
        assert uow.jobs.claim_for_run(alive, lease_s) is None  # held: a second delivery does not run it
        uow.commit()
    publisher = RecordingPublisher()
    sweeper = Sweeper(system.db, publisher, stale_after_s=600, pending_grace_s=600)
    keeper = LeaseKeeper(system.db, lease_s)
    with keeper.hold(alive):
        assert sweeper.sweep() == 0
        time.sleep(2.5 * lease_s)
        assert sweeper.sweep() == 1 and publisher.sent == [dead]
    with system.db.uow() as uow:
        assert uow.jobs.state(dead) is JobState.QUEUED and uow.jobs.state(alive) is JobState.RUNNING
    system.close()


def _store_every(system: System, objects: list[bytes], interval_s: float) -> list[float]:
    """Ingest ``objects`` one every ``interval_s``; return when each was stored (monotonic)."""
    device = device_by_ae_title(system.db, "CART1")
    stored = []
    for data in objects:
        assert system.ingest.ingest_dicom(device, data).status == "stored"
        stored.append(time.monotonic())
        time.sleep(interval_s)
    return stored


def test_analysis_waits_for_a_pause_in_receiving(tmp_path: Path) -> None:
    """Every stored object marks the gate (through the message bus): a job waiting on it
    starts only once nothing arrived for the quiet time."""
    system = System(Settings(data_dir=tmp_path, analysis_quiet_s=0.6, analysis_defer_max_s=30))
    register_network(system)
    gate, waited = system.receiving_gate, []
    waiter = threading.Thread(target=lambda: (gate.wait(), waited.append(time.monotonic())))
    stored = _store_every(system, ecg_objects_of_one_study(1), 0)
    waiter.start()
    stored += _store_every(system, ecg_objects_of_one_study(4), 0.2)
    waiter.join(10)
    assert waited and waited[0] >= stored[-1] + 0.6 - 0.05, "analysis started while objects were arriving"
    assert waited[0] - stored[-1] < 0.6 + 1.0
    started = time.monotonic()
    gate.wait()  # long quiet now: no wait at all
    assert time.monotonic() - started < 0.1
    system.close()


def test_analysis_waits_no_longer_than_its_limit_behind_a_long_burst(tmp_path: Path) -> None:
    system = System(Settings(data_dir=tmp_path, analysis_quiet_s=1.0, analysis_defer_max_s=1.5))
    register_network(system)
    gate, waited = system.receiving_gate, []
    objects = ecg_objects_of_one_study(20)
    _store_every(system, objects[:1], 0)
    started = time.monotonic()
    waiter = threading.Thread(target=lambda: (gate.wait(), waited.append(time.monotonic())))
    waiter.start()
    stored = _store_every(system, objects[1:], 0.15)  # ~3 s of arrivals, never 1 s apart
    waiter.join(10)
    assert waited and 1.5 - 0.05 <= waited[0] - started < 1.5 + 1.0
    assert stored[-1] > waited[0], "the burst outlasted the limit"
    system.close()


@pytest.mark.services
def test_two_sweepers_never_publish_a_job_twice(pg_db: Database, tmp_path: Path) -> None:
    ingest = IngestService(pg_db, LocalFolderStore(tmp_path), ListPublisher())
    device = device_by_ae_title(pg_db, PG_DEVICE_AE)
    for _ in range(3):
        ids = [ingest.ingest_dicom(device, data).job_id for data in ecg_objects_of_one_study(30)]
        publisher = RecordingPublisher()
        sweepers = [Sweeper(pg_db, publisher, stale_after_s=600, pending_grace_s=0) for _ in range(2)]
        _, errors = send_concurrently(lambda sweeper: sweeper.sweep(), sweepers)
        assert not errors
        assert sorted(publisher.sent) == sorted(ids), "every job published exactly once"


@pytest.mark.services
def test_redis_that_lost_its_messages_is_noticed_within_a_sweep(redis_db: RedisDb, tmp_path: Path) -> None:
    system = System(replace(Settings(data_dir=tmp_path), broker_url=redis_db.url, sweep_interval_s=0.5))
    register_network(system)
    device = device_by_ae_title(system.db, "CART1")
    ids = [system.ingest.ingest_dicom(device, d).job_id for d in ecg_objects_of_one_study(4)]
    assert system.publisher.wait_idle(30)
    assert all(redis_db.messages_for_job(i) for i in ids)
    sweeper = system.sweeper()
    assert isinstance(sweeper.watch, BrokerWatch)
    assert sweeper.sweep(first=True) == 0  # nothing lost yet: learns the broker's epoch

    redis_db.client.flushdb()  # what a Redis restart without persistence leaves
    time.sleep(0.6)
    assert sweeper.sweep() == 4
    assert all(len(redis_db.messages_for_job(i)) == 1 for i in ids)
    assert sweeper.sweep() == 0  # the queue holds them again: nothing more to do
    system.close()


def test_kill_9_of_telediag_up_with_a_backlog_resumes_at_once(procs, tmp_path: Path) -> None:
    """``telediag up`` as a newcomer runs it, killed with a backlog of unanalysed ECGs: its
    analysis processes end with it, and the next ``up`` owns every job and finishes the
    backlog at once, not after the stale-job rule (set to an hour here)."""
    from services import free_port, port_open, register_network_cli, storescu, telediag_env, wait_until

    env = {**telediag_env(data_dir=tmp_path / "data", job_stale_after_s=3600, analysis_processes=1),
           "TELEDIAG_DICOM_HOST": "127.0.0.1"}
    cart = register_network_cli(env)
    folder = tmp_path / "objects"
    folder.mkdir()
    for i, data in enumerate(ecg_objects_of_one_study(40)):
        (folder / f"ecg{i:03d}.dcm").write_bytes(data)
    dicom_port, http_port = free_port(), free_port()
    args = ["up", "--dicom-port", str(dicom_port), "--http-port", str(http_port)]
    up = procs.start("up", args, env).wait_port(dicom_port)
    sent = storescu(dicom_port, cart.ae_title, sorted(folder.iterdir()))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    children = _children(up.pid)
    assert children, "telediag up runs its analysis in child processes"
    up.kill()  # SIGKILL, with jobs of the 40 not yet analysed
    wait_until(lambda: not port_open(dicom_port), 10, "the killed process to release its port")
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 10,
               "the killed process's analysis processes to end")

    db = Database(Settings(data_dir=tmp_path / "data").effective_database_url)
    with db.uow() as uow:
        left = 40 - uow.jobs.count_by_state().get("done", 0)
    assert left > 0, "the backlog was analysed before the kill; nothing to prove"
    started = time.monotonic()
    procs.start("up", args, env).wait_port(dicom_port)

    def finished() -> bool:
        with db.uow() as uow:
            return uow.jobs.count_by_state().get("done", 0) == 40

    wait_until(finished, 60, "the restarted telediag up to analyse the backlog")
    elapsed = time.monotonic() - started
    db.dispose()
    assert elapsed < 60


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out
