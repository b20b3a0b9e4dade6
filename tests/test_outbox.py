"""The outbox: a job committed while the broker is unreachable is not lost."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from telediag.config import Settings
from telediag.store.tables import Job, JobState
from telediag.network import device_by_ae_title
from telediag.bootstrap import System

from conftest import register_network, wait_for


def _job_state(system: System, job_id: int) -> JobState:
    with system.db.uow() as uow:
        return uow.session.get(Job, job_id).state


def test_job_survives_a_broker_outage_and_is_swept_later(tmp_path: Path, shared_dicom: Path) -> None:
    # A Redis broker on a port where nothing listens: publishing fails, ingest must still succeed.
    down = System(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:9/0"))
    register_network(down)
    device = device_by_ae_title(down.db, "CART1")
    outcome = down.ingest.ingest_dicom(device, (shared_dicom / "test_ecg.dcm").read_bytes())
    assert outcome.status == "stored"
    assert down.publisher.wait_idle(timeout=60)
    assert _job_state(down, outcome.job_id) is JobState.PENDING
    down.close()

    # The next process over the same database publishes it at start and a worker runs it.
    up = System(replace(down.settings, broker_url="stub://"))
    worker = up.worker(threads=1)
    worker.start()
    sweeper = up.sweeper(interval_s=0.5)
    sweeper.start()
    try:
        wait_for(lambda: _job_state(up, outcome.job_id) is JobState.DONE, timeout=60)
    finally:
        sweeper.stop()
        worker.stop()
        up.close()
    with up.db.uow() as uow:
        assert uow.session.scalar(select(Job).where(Job.id == outcome.job_id)).attempts == 1
