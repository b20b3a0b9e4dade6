"""``IngestService`` on PostgreSQL (+ SeaweedFS S3), in-process: what SQLite lets pass and
PostgreSQL does not (column lengths, real concurrent transactions) shows up here first."""

from __future__ import annotations

import io

import pydicom
import pytest
from sqlalchemy import func, inspect as sa_inspect, select

from conftest import send_concurrently
from factories import ecg_objects_of_one_study
from services import PG_DEVICE_AE, ListPublisher, SAMPLE_DATA, SHARED_DATA, S3Server, sha256_bytes
from telediag.store import Database
from telediag.ingest import IngestService
from telediag.store.tables import Case, Job, JobState, QuarantinedObject, StoredObject
from telediag.network import device_by_ae_title
from telediag.store.objects import open_object_store

pytest_plugins = ["services"]
pytestmark = pytest.mark.services


@pytest.fixture
def ingest(pg_db: Database, seaweed: S3Server, s3_bucket: str) -> IngestService:
    return IngestService(pg_db, open_object_store(seaweed.url(s3_bucket)), ListPublisher())


def test_migrations_create_the_schema_and_are_idempotent(pg_db: Database) -> None:
    tables = set(sa_inspect(pg_db.engine).get_table_names())
    assert {"sites", "devices", "patients", "cases", "stored_objects", "quarantined_objects", "jobs",
            "analysis_results", "alembic_version"} <= tables
    pg_db.migrate()  # every process migrates at start: a second run changes nothing


def test_wfdb_record_is_recorded_and_a_reupload_is_a_duplicate(pg_db: Database, ingest: IngestService) -> None:
    device = device_by_ae_title(pg_db, PG_DEVICE_AE)
    files = {p.name: p.read_bytes() for p in sorted((SAMPLE_DATA / "wfdb").glob("mitdb101_600s.*"))}
    outcome = ingest.ingest_wfdb(device, files, patient_id="P-PG-1")
    assert outcome.status == "stored" and outcome.job_id in ingest.bus.published
    with pg_db.uow() as uow:
        rows = list(uow.session.scalars(select(StoredObject).where(StoredObject.case_id == outcome.case_id)))
        assert sorted(r.key.rsplit("/", 1)[-1] for r in rows) == sorted(files)
        for row in rows:
            assert row.sha256 == sha256_bytes(files[row.key.rsplit("/", 1)[-1]])
            assert ingest.store.get(row.key, row.sha256) == files[row.key.rsplit("/", 1)[-1]]
        assert uow.session.get(Job, outcome.job_id).state is JobState.PENDING
    again = ingest.ingest_wfdb(device, files, patient_id="P-PG-1")
    assert (again.status, again.object_id, again.case_id) == ("duplicate", outcome.object_id, outcome.case_id)


def test_dicom_resend_and_conflict_on_postgres(pg_db: Database, ingest: IngestService) -> None:
    device = device_by_ae_title(pg_db, PG_DEVICE_AE)
    src = SHARED_DATA / "dicom" / "waveform_ecg.dcm"
    if not src.is_file():
        src = SAMPLE_DATA / "dicom" / "waveform_ecg.dcm"
    data = src.read_bytes()
    first = ingest.ingest_dicom(device, data)
    assert first.status == "stored"
    assert ingest.ingest_dicom(device, data).status == "duplicate"
    # same SOP Instance UID, different bytes (a changed patient name, same length): kept aside
    changed = data.replace(b"Anonymous", b"Anonymouz", 1)
    assert changed != data
    conflict = ingest.ingest_dicom(device, changed)
    assert conflict.status == "quarantined" and conflict.case_id == first.case_id
    with pg_db.uow() as uow:
        [q] = uow.session.scalars(select(QuarantinedObject))
        assert q.sha256 == sha256_bytes(changed)
    assert ingest.store.get(q.key, q.sha256) == changed


def test_concurrent_sends_of_one_instance_store_it_once(pg_db: Database, ingest: IngestService) -> None:
    """Several associations deliver the same object at the same moment: one row, one job, and
    every sender is told success (stored or duplicate)."""
    device = device_by_ae_title(pg_db, PG_DEVICE_AE)
    src = SHARED_DATA / "dicom" / "test_ecg.dcm"
    if not src.is_file():
        src = SAMPLE_DATA / "dicom" / "test_ecg.dcm"
    data = src.read_bytes()
    outcomes, errors = send_concurrently(lambda data: ingest.ingest_dicom(device, data), [data] * 4)
    assert errors == []
    assert sorted(o.status for o in outcomes).count("stored") == 1
    assert {o.status for o in outcomes} <= {"stored", "duplicate"}
    with pg_db.uow() as uow:
        n = uow.session.scalar(select(func.count()).select_from(StoredObject).where(
            StoredObject.sha256 == sha256_bytes(data)))
        assert n == 1
        assert len({o.case_id for o in outcomes}) == 1
        assert uow.session.scalar(select(func.count()).select_from(Case).where(Case.id == outcomes[0].case_id)) == 1


def test_concurrent_instances_of_one_new_study_share_one_case(pg_db: Database, ingest: IngestService) -> None:
    """Two carts (or one cart on several associations) send different objects of one study
    at once: the first to insert the case wins, the others see its row and join it; nobody
    is told to retry."""
    device = device_by_ae_title(pg_db, PG_DEVICE_AE)
    objects = ecg_objects_of_one_study(6)
    outcomes, errors = send_concurrently(lambda data: ingest.ingest_dicom(device, data), objects)
    assert errors == []
    assert [o.status for o in outcomes] == ["stored"] * len(objects)
    assert len({o.case_id for o in outcomes}) == 1
    study = pydicom.dcmread(io.BytesIO(objects[0])).StudyInstanceUID
    with pg_db.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Case).where(Case.study_instance_uid == study)) == 1
        ids = [o.object_id for o in outcomes]
        assert uow.session.scalar(select(func.count()).select_from(StoredObject).where(
            StoredObject.id.in_(ids), StoredObject.case_id == outcomes[0].case_id)) == len(objects)
        assert uow.session.scalar(select(func.count()).select_from(Job).where(Job.object_id.in_(ids))) == len(objects)


def test_unreachable_database_is_storage_unavailable_and_writes_nothing(seaweed: S3Server, s3_bucket: str,
                                                                        pg_db: Database) -> None:
    """PostgreSQL down (nothing listens on its port): the sender is told to retry, and no
    bytes were put in the store, since nothing could have recorded them."""
    from services import free_port
    from telediag.ingest import StorageUnavailable

    device = device_by_ae_title(pg_db, PG_DEVICE_AE)
    down = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/telediag?connect_timeout=2")
    store = open_object_store(seaweed.url(s3_bucket))
    try:
        with pytest.raises(StorageUnavailable):
            IngestService(down, store, ListPublisher()).ingest_dicom(device, ecg_objects_of_one_study(1)[0])
    finally:
        down.dispose()
    assert list(seaweed.client().list_objects(s3_bucket, recursive=True)) == []
