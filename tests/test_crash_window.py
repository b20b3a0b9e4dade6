"""The crash window between "committed" and "published", proven with real processes.

``procs.api(..., pause_after_commit=MARKER)`` starts a telediag process whose ``ObjectStored``
handler (``tests/telediag_paused.py``) writes MARKER and blocks: right after the
ingest transaction committed and before the job is handed to the broker.
The tests SIGKILL the process there: the device got no success, the job row is ``pending``
and nowhere on the broker. A fresh process (whose sweeper publishes orphaned ``pending``
jobs at start) and a worker must then finish the job exactly once, and the device's resend
must be recognised as a duplicate. Over PostgreSQL, Redis and SeaweedFS S3.

Also: a job whose analysis always fails ends ``dead`` with its last error, after the retries.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from services import (
    SAMPLE_DATA,
    SHARED_DATA,
    BackgroundCall,
    RedisDb,
    S3Server,
    run_cli,
    sha256_bytes,
    storescu,
    storescu_async,
    telediag_env,
    wait_until,
)
from telediag.store import Database
from telediag.store.tables import AnalysisResult, Case, CaseStatus, Job, JobState, StoredObject
from telediag.network import add_device, add_site

pytest_plugins = ["services"]
pytestmark = pytest.mark.services

WFDB_RECORD = "mitdb119_300s"
JOB_TIMEOUT_S = 90


def _wfdb_files(record: str = WFDB_RECORD) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((SAMPLE_DATA / "wfdb").glob(f"{record}.*"))}
    assert len(files) == 3, f"sample_data/wfdb/{record}.* is incomplete"
    return files


def _dicom(name: str) -> Path:
    for folder in (SHARED_DATA / "dicom", SAMPLE_DATA / "dicom"):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"reference file {name} is not present")


def _post_wfdb(port: int, api_key: str, files: dict[str, bytes], timeout: float = 60) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/api/v1/ecg/wfdb", headers={"X-API-Key": api_key},
                      files=[("files", (n, d, "application/octet-stream")) for n, d in files.items()],
                      data={"patient_id": "P-CRASH"}, timeout=timeout)


@pytest.fixture
def stack(fresh_postgres_url: str, redis_db: RedisDb, seaweed: S3Server, s3_bucket: str, tmp_path: Path):
    """Settings for PostgreSQL + Redis + S3, a registered cart, and a handle on the database."""
    db = Database(fresh_postgres_url)
    db.migrate()
    add_site(db, "Prefecture", "prefecture")
    add_site(db, "County", "county", "Prefecture")
    add_site(db, "Township", "township", "County")
    _, api_key = add_device(db, "cart-1", "Township", "CART1")
    env = telediag_env(database_url=fresh_postgres_url, object_store_url=seaweed.url(s3_bucket),
                       broker_url=redis_db.url, data_dir=tmp_path / "data")
    try:
        yield env, db, api_key
    finally:
        db.dispose()


def _jobs(db: Database) -> list[Job]:
    with db.uow() as uow:
        return list(uow.session.scalars(select(Job).order_by(Job.id)))


def _job(db: Database, job_id: int) -> Job:
    with db.uow() as uow:
        return uow.session.get(Job, job_id)


@pytest.mark.parametrize("entry", ["api", "scp"])
def test_kill_between_commit_and_publish_loses_nothing(entry: str, stack, redis_db: RedisDb, seaweed: S3Server,
                                                       s3_bucket: str, procs, tmp_path: Path) -> None:
    env, db, api_key = stack
    marker = tmp_path / "paused-after-commit"

    # 1. the device sends; the receiving process commits and stops in the window
    if entry == "api":
        proc, port = procs.api(env, pause_after_commit=marker)
        sender = BackgroundCall(lambda: _post_wfdb(port, api_key, _wfdb_files()))
        sender.start()
    else:
        proc, port = procs.scp(env, pause_after_commit=marker)
        sender = storescu_async(port, "CART1", [_dicom("waveform_ecg.dcm")])

    def paused() -> bool:
        if marker.exists():
            return True
        finished = not sender.is_alive() if entry == "api" else sender.poll() is not None
        if finished:  # the send ended without the process pausing: ingest failed before the commit
            answer = (sender.result.text if sender.result is not None else repr(sender.error)) if entry == "api" \
                else sender.communicate()[0]
            pytest.fail(f"the send ended before the after-commit pause:\n{answer}\n{proc.log_tail()}", pytrace=False)
        return False

    wait_until(paused, 60, "the process to reach the after-commit pause", on_timeout=lambda: "\n" + proc.log_tail())
    assert int(marker.read_text()) == proc.pid
    proc.kill()  # SIGKILL: no clean-up, no publish

    # 2. the device got no success (it will send again)...
    if entry == "api":
        sender.join(30)
        assert not sender.is_alive()
        assert sender.result is None and isinstance(sender.error, httpx.TransportError), \
            f"the device must not get an answer from a killed process: {sender.result or sender.error!r}"
    else:
        out, _ = sender.communicate(timeout=60)
        assert sender.returncode != 0, f"storescu reported success from a killed SCP:\n{out}"

    # ...but what was committed is durable: rows in PostgreSQL, bytes in S3, and the job is
    # pending and unknown to the broker
    [job] = _jobs(db)
    assert job.state is JobState.PENDING and job.attempts == 0
    with db.uow() as uow:
        objects = list(uow.session.scalars(select(StoredObject)))
    assert objects and all(sha256_bytes(seaweed.object_bytes(s3_bucket, o.key)) == o.sha256 for o in objects)
    assert redis_db.dramatiq_messages() == [], "the job reached the broker although the process died before"

    # 3. a fresh process publishes the orphan at start; a worker runs it exactly once
    if entry == "api":
        fresh, port = procs.api(env)
    else:
        fresh, port = procs.scp(env)
    worker = procs.worker(env)
    wait_until(lambda: _job(db, job.id).state in (JobState.DONE, JobState.DEAD), JOB_TIMEOUT_S,
               f"job {job.id} to finish", interval=0.3)
    done = _job(db, job.id)
    assert done.state is JobState.DONE, f"job ended {done.state.value}: {done.last_error}"
    assert done.attempts == 1
    fresh.wait_log(r"sweeper published 1 unfinished job", timeout=10)
    with db.uow() as uow:
        results = list(uow.session.scalars(select(AnalysisResult)))
        assert [r.object_id for r in results] == [job.object_id]
        assert uow.session.get(Case, objects[0].case_id).status is CaseStatus.ANALYSED
    wait_until(lambda: redis_db.dramatiq_messages() == [], 15, "the broker to hold no message any more")

    # 4. the device sends the same again (it never got a success): a duplicate, no new job
    if entry == "api":
        again = _post_wfdb(port, api_key, _wfdb_files())
        assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
    else:
        again = storescu(port, "CART1", [_dicom("waveform_ecg.dcm")])
        assert again.returncode == 0, f"storescu resend failed:\n{again.stdout}\n{again.stderr}"
    with db.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(StoredObject)) == len(objects)
        assert uow.session.scalar(select(func.count()).select_from(AnalysisResult)) == 1
    assert [(j.id, j.state, j.attempts) for j in _jobs(db)] == [(job.id, JobState.DONE, 1)]
    assert worker.log_text().count(f"job {job.id} done") == 1


def test_job_that_always_fails_ends_dead_with_its_error(stack, redis_db: RedisDb, seaweed: S3Server,
                                                        s3_bucket: str, procs) -> None:
    """The stored signal file is corrupted in S3 after ingest: every attempt fails the sha256
    check (IntegrityError, retried), and after TELEDIAG_JOB_MAX_RETRIES the job is ``dead``."""
    env, db, api_key = stack
    env = {**env, "TELEDIAG_JOB_MAX_RETRIES": "1"}
    api, port = procs.api(env)
    r = _post_wfdb(port, api_key, _wfdb_files())
    assert r.status_code == 201, r.text
    job_id, case_id = r.json()["job_id"], r.json()["case_id"]
    wait_until(lambda: _job(db, job_id).state is JobState.QUEUED, 30, f"job {job_id} to be queued")

    with db.uow() as uow:
        dat = uow.session.scalar(select(StoredObject).where(StoredObject.key.like("%.dat")))
    original = seaweed.object_bytes(s3_bucket, dat.key)
    corrupt = bytearray(original)
    corrupt[100] ^= 0x01  # one flipped bit on the server side
    seaweed.client().put_object(s3_bucket, dat.key, io.BytesIO(bytes(corrupt)), len(corrupt))

    worker = procs.worker(env)
    wait_until(lambda: _job(db, job_id).state is JobState.DEAD, JOB_TIMEOUT_S, f"job {job_id} to be dead-lettered",
               interval=0.3, on_timeout=lambda: "\n" + worker.log_tail())
    dead = _job(db, job_id)
    assert dead.attempts == 2  # the first attempt and one retry
    assert "IntegrityError" in dead.last_error and "sha256" in dead.last_error
    with db.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(AnalysisResult)) == 0
        assert uow.session.get(Case, case_id).status is CaseStatus.ANALYSIS_FAILED
    # visible to the site through the API and to the operator through the CLI
    case = httpx.get(f"http://127.0.0.1:{port}/api/v1/cases/{case_id}", headers={"X-API-Key": api_key},
                     timeout=10).json()
    [job_json] = [o["job"] for o in case["objects"] if o["job"]]
    assert job_json["state"] == "dead" and "IntegrityError" in job_json["error"]
    assert case["status"] == "analysis_failed"
    listed = run_cli(["jobs", "--state", "dead"], env)
    assert listed.split("\t")[0].strip() == str(job_id) and "dead" in listed
    # and the broker dead-lettered the message instead of retrying it for ever
    wait_until(lambda: [m for m in redis_db.messages_for_job(job_id) if m["_key"].endswith(".XQ.msgs")], 15,
               "the message in the broker's dead-letter queue")
