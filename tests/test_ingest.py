"""Ingest service in the embedded mode: durability order, idempotency, quarantine, outages."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from telediag.ingest.dicom import InvalidObject
from telediag.ingest import StorageUnavailable
from telediag.store.tables import AnalysisResult, Case, CaseKind, Job, JobState, QuarantinedObject, StoredObject
from telediag.domain import JobKind
from telediag.network import device_by_ae_title
from telediag.store.objects import ObjectStoreError, sha256_hex

from conftest import Network, send_concurrently, wait_for
from factories import ecg_objects_of_one_study


def _count(network: Network, model) -> int:
    with network.system.db.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model))


def test_ecg_object_is_stored_byte_for_byte_and_analysed(embedded: Network, shared_dicom: Path) -> None:
    system = embedded.system
    device = device_by_ae_title(system.db, embedded.ae_title)
    data = (shared_dicom / "waveform_ecg.dcm").read_bytes()

    outcome = system.ingest.ingest_dicom(device, data)

    assert outcome.status == "stored" and outcome.job_id is not None
    with system.db.uow() as uow:
        obj = uow.session.get(StoredObject, outcome.object_id)
        case = uow.session.get(Case, outcome.case_id)
        assert (case.kind, case.site_id) == (CaseKind.ECG, embedded.site_id)
        assert obj.sha256 == sha256_hex(data) and obj.size == len(data)
        assert obj.key.startswith(f"sites/{embedded.site_id}/studies/")
    assert system.store.get(obj.key, obj.sha256) == data

    def analysed():
        with system.db.uow() as uow:
            return uow.session.scalar(select(AnalysisResult).where(AnalysisResult.object_id == outcome.object_id))

    result = wait_for(analysed)
    assert result.lead_count == 12 and result.fs == 1000
    with system.db.uow() as uow:
        assert uow.session.get(Job, outcome.job_id).state is JobState.DONE


def test_image_object_is_stored_with_a_preview_job_not_an_ecg_analysis(embedded: Network,
                                                                        shared_dicom: Path) -> None:
    device = device_by_ae_title(embedded.system.db, embedded.ae_title)
    outcome = embedded.system.ingest.ingest_dicom(device, (shared_dicom / "CT_small.dcm").read_bytes())
    assert outcome.status == "stored" and outcome.job_id is not None
    with embedded.system.db.uow() as uow:
        assert uow.session.get(Case, outcome.case_id).kind is CaseKind.IMAGING
        assert uow.session.get(Job, outcome.job_id).kind == JobKind.RENDER_PREVIEW


def test_resend_is_idempotent_and_conflict_is_quarantined(embedded: Network, shared_dicom: Path) -> None:
    system = embedded.system
    device = device_by_ae_title(system.db, embedded.ae_title)
    original = (shared_dicom / "CT_small.dcm").read_bytes()
    first = system.ingest.ingest_dicom(device, original)
    again = system.ingest.ingest_dicom(device, original)
    assert again.status == "duplicate" and again.object_id == first.object_id
    assert _count(embedded, StoredObject) == 1

    ds = pydicom.dcmread(io.BytesIO(original))
    ds.InstitutionName = "a different object, same SOP Instance UID"
    buf = io.BytesIO()
    ds.save_as(buf)
    conflicting = buf.getvalue()
    outcome = system.ingest.ingest_dicom(device, conflicting)

    assert outcome.status == "quarantined"
    with system.db.uow() as uow:
        kept = uow.session.scalar(select(QuarantinedObject))
        stored = uow.session.get(StoredObject, first.object_id)
    assert system.store.get(kept.key, kept.sha256) == conflicting
    assert system.store.get(stored.key, stored.sha256) == original  # never overwritten
    assert _count(embedded, StoredObject) == 1


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm", "no_meta.dcm"])
def test_malformed_dicom_is_refused_with_reason_and_nothing_stored(embedded: Network, shared_dicom: Path,
                                                                   name: str) -> None:
    device = device_by_ae_title(embedded.system.db, embedded.ae_title)
    with pytest.raises(InvalidObject) as err:
        embedded.system.ingest.ingest_dicom(device, (shared_dicom / name).read_bytes())
    assert str(err.value)
    assert _count(embedded, StoredObject) == 0
    assert not any(p.is_file() for p in (embedded.system.settings.data_dir / "objects").rglob("*"))


class _FailingStore:
    """An object store that is down: every write fails as a real outage would."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def put(self, key, data, content_type="application/octet-stream", durable=True):
        raise ObjectStoreError("connection refused")

    def sync(self):
        self.inner.sync()

    def get(self, key, sha256=None):
        return self.inner.get(key, sha256)

    def exists(self, key):
        return self.inner.exists(key)

    def delete(self, key):
        self.inner.delete(key)


def test_object_store_outage_records_nothing_and_resend_succeeds(embedded: Network, shared_dicom: Path) -> None:
    system = embedded.system
    device = device_by_ae_title(system.db, embedded.ae_title)
    data = (shared_dicom / "waveform_ecg.dcm").read_bytes()
    healthy = system.ingest.store
    system.ingest.store = _FailingStore(healthy)
    with pytest.raises(StorageUnavailable):
        system.ingest.ingest_dicom(device, data)
    assert _count(embedded, StoredObject) == 0 and _count(embedded, Job) == 0

    system.ingest.store = healthy
    assert system.ingest.ingest_dicom(device, data).status == "stored"


def test_database_failure_after_put_removes_the_object(embedded: Network, shared_dicom: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A committed row is the only proof of storage; a file without one must not linger.
    (The same against a real PostgreSQL refusing the row: test_s3_store.)"""
    from telediag.store import DatabaseUnavailable

    system = embedded.system
    device = device_by_ae_title(system.db, embedded.ae_title)

    def broken_commit(self) -> None:
        raise DatabaseUnavailable("disk I/O error")

    monkeypatch.setattr("telediag.store.hotpath.RowTransaction.commit", broken_commit)
    with pytest.raises(StorageUnavailable):
        system.ingest.ingest_dicom(device, (shared_dicom / "CT_small.dcm").read_bytes())
    monkeypatch.undo()
    assert _count(embedded, StoredObject) == 0
    assert not any(p.is_file() for p in (system.settings.data_dir / "objects").rglob("*.dcm"))


def test_concurrent_instances_of_one_new_study_share_one_case(embedded: Network) -> None:
    """Several associations deliver different objects of one new study at once (SQLite has
    one writer: the losers of the race for the case row see it and join it)."""
    system = embedded.system
    device = device_by_ae_title(system.db, embedded.ae_title)
    objects = ecg_objects_of_one_study(6)
    outcomes, errors = send_concurrently(lambda data: system.ingest.ingest_dicom(device, data), objects)
    assert errors == []
    assert [o.status for o in outcomes] == ["stored"] * len(objects)
    assert len({o.case_id for o in outcomes}) == 1
    assert _count(embedded, Case) == 1 and _count(embedded, StoredObject) == len(objects)
    assert _count(embedded, Job) == len(objects)
