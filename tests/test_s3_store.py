"""``S3Store`` against a real SeaweedFS S3 server through the ``minio`` client, and
``IngestService`` over S3 + PostgreSQL when one of the two fails."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from services import PG_DEVICE_AE, ListPublisher, SAMPLE_DATA, BackgroundCall, S3Server, free_port, sha256_bytes, start_seaweed
from telediag.store import Database
from telediag.ingest.dicom import inspect
from telediag.ingest.service import IngestService, StorageUnavailable, dicom_key
from telediag.store.tables import Case, Job, Patient, QuarantinedObject, StoredObject
from telediag.network import device_by_ae_title
from telediag.store.objects import IntegrityError, ObjectStoreError, S3Store, open_object_store

pytest_plugins = ["services"]
pytestmark = pytest.mark.services

DICOM = SAMPLE_DATA / "dicom"  # the ECGs are in the clone; no test here needs ../shared
WFDB = SAMPLE_DATA / "wfdb"


@pytest.fixture
def store(seaweed: S3Server, s3_bucket: str) -> S3Store:
    return open_object_store(seaweed.url(s3_bucket))


def test_bucket_is_created_when_missing(seaweed: S3Server, s3_bucket: str) -> None:
    client = seaweed.client()
    assert not client.bucket_exists(s3_bucket)
    store = open_object_store(seaweed.url(s3_bucket))
    assert isinstance(store, S3Store)
    assert client.bucket_exists(s3_bucket)
    open_object_store(seaweed.url(s3_bucket))  # opening again with the bucket there is fine
    assert client.bucket_exists(s3_bucket)


def test_put_get_roundtrip_is_byte_exact_and_verified(store: S3Store, seaweed: S3Server) -> None:
    data = (DICOM / "waveform_ecg.dcm").read_bytes()
    digest = sha256_bytes(data)
    key = "sites/1/studies/s/series/x/instance.dcm"
    store.put(key, data, "application/dicom")
    assert store.get(key, digest) == data
    # what the server holds, read independently of S3Store
    raw = seaweed.object_bytes(store.bucket, key)
    assert sha256_bytes(raw) == digest and len(raw) == len(data)
    stat = seaweed.client().stat_object(store.bucket, key)
    assert stat.size == len(data)
    assert stat.content_type == "application/dicom"
    assert {k.lower(): v for k, v in stat.metadata.items()}.get("x-amz-meta-sha256") == digest
    store.put(key, data, "application/dicom")  # idempotent for identical bytes
    assert store.get(key, digest) == data


def test_mismatched_or_corrupted_bytes_raise_integrity_error(store: S3Store, seaweed: S3Server) -> None:
    import io

    data = (WFDB / "mitdb119_300s.dat").read_bytes()
    key = "sites/1/wfdb/abc/mitdb119_300s.dat"
    store.put(key, data)
    with pytest.raises(IntegrityError):
        store.get(key, "0" * 64)
    # silent corruption on the server side: same key, one byte flipped
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    seaweed.client().put_object(store.bucket, key, io.BytesIO(bytes(corrupt)), len(corrupt))
    with pytest.raises(IntegrityError):
        store.get(key, sha256_bytes(data))
    assert store.get(key) == bytes(corrupt)  # without a recorded digest nothing is checked


def test_exists_and_delete(store: S3Store) -> None:
    key = "sites/1/wfdb/def/mitdb101_600s.hea"
    assert not store.exists(key)
    with pytest.raises(ObjectStoreError) as missing:
        store.get(key)
    assert not isinstance(missing.value, IntegrityError)
    store.put(key, (WFDB / "mitdb101_600s.hea").read_bytes())
    assert store.exists(key)
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting an absent object is not an error


def test_get_range_is_one_ranged_read_without_the_hash_check(store: S3Store) -> None:
    data = (WFDB / "mitdb119_300s.dat").read_bytes()
    key = "sites/1/wfdb/abc/mitdb119_300s.dat"
    store.put(key, data)
    assert store.get_range(key, 0, 100) == data[:100]
    assert store.get_range(key, 12_345, 6_789) == data[12_345:12_345 + 6_789]
    assert store.get_range(key, len(data) - 10, 100) == data[-10:]  # fewer bytes at the end, none after it
    assert store.get_range(key, len(data) + 10, 100) == b"" and store.get_range(key, 5, 0) == b""
    with pytest.raises(ValueError):
        store.get_range(key, -1, 10)
    with pytest.raises(ObjectStoreError):
        store.get_range("sites/1/wfdb/abc/absent.dat", 0, 10)


def test_invalid_keys_are_refused(store: S3Store) -> None:
    for key in ("", "/abs", "a/../b", "a//b", "./a"):
        with pytest.raises(ValueError):
            store.put(key, b"x")


def _assert_fast_store_error(call, limit_s: float = 10.0) -> ObjectStoreError:
    started = time.monotonic()
    with pytest.raises(ObjectStoreError) as err:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < limit_s, f"failing took {elapsed:.1f} s (a hang, not a quick failure)"
    assert not isinstance(err.value, IntegrityError)
    return err.value


def test_unreachable_server_fails_fast_with_object_store_error(seaweed: S3Server) -> None:
    port = free_port()  # nothing listens there
    store = S3Store(f"127.0.0.1:{port}", seaweed.access_key, seaweed.secret_key, "telediag")
    _assert_fast_store_error(lambda: store.put("a/b", b"data"))
    _assert_fast_store_error(lambda: store.get("a/b"))
    _assert_fast_store_error(lambda: store.exists("a/b"))
    _assert_fast_store_error(lambda: store.delete("a/b"))


def test_open_object_store_on_unreachable_server_raises_object_store_error(seaweed: S3Server) -> None:
    _assert_fast_store_error(lambda: open_object_store(seaweed.url("telediag").replace(str(seaweed.port),
                                                                                str(free_port()))))


class BlackHole:
    """A TCP listener that accepts connections and never answers: a hung S3 server."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_hung_server_fails_within_20_s() -> None:
    hole = BlackHole()
    try:
        store = S3Store(f"127.0.0.1:{hole.port}", "access", "secret", "telediag")
        call = BackgroundCall(lambda: store.put("a/b", b"data"))
        call.start()
        call.join(20)
        assert not call.is_alive(), "a put to a hung S3 server was still blocked after 20 s"
        assert isinstance(call.error, ObjectStoreError)
    finally:
        hole.close()  # the blocked read gets EOF and the thread ends


def test_wrong_credentials_are_an_object_store_error(seaweed: S3Server, s3_bucket: str) -> None:
    good = open_object_store(seaweed.url(s3_bucket))
    bad = S3Store(seaweed.endpoint, seaweed.access_key, "not-the-secret", s3_bucket)
    _assert_fast_store_error(lambda: bad.put("a/b", b"data"))
    assert not good.exists("a/b")


# -- IngestService over S3 + PostgreSQL ------------------------------------------------------------


def _counts(db: Database) -> dict[str, int]:
    with db.uow() as uow:
        return {m.__tablename__: uow.session.scalar(select(func.count()).select_from(m))
                for m in (Case, StoredObject, Job, Patient, QuarantinedObject)}


def _wfdb_files(record: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(WFDB.glob(f"{record}.*"))}


def test_ingest_during_s3_outage_raises_storage_unavailable_and_records_nothing(pg_db: Database,
                                                                                 tmp_path: Path) -> None:
    server = start_seaweed(tmp_path / "weed")  # a private server: this test kills it
    try:
        store = open_object_store(server.url("outage"))
        publisher = ListPublisher()
        ingest = IngestService(pg_db, store, publisher)
        device = device_by_ae_title(pg_db, PG_DEVICE_AE)
        first = (DICOM / "waveform_ecg.dcm").read_bytes()
        stored = ingest.ingest_dicom(device, first)
        assert stored.status == "stored" and stored.job_id in publisher.published
        key = dicom_key(device.site_id, inspect(first), sha256_bytes(first))
        assert sha256_bytes(server.object_bytes("outage", key)) == sha256_bytes(first)

        server.stop(kill=True)  # the S3 server dies
        before = _counts(pg_db)
        second = (DICOM / "test_ecg.dcm").read_bytes()
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            ingest.ingest_dicom(device, second)
        with pytest.raises(StorageUnavailable):
            ingest.ingest_wfdb(device, _wfdb_files("mitdb119_300s"), patient_id="P-OUTAGE")
        assert time.monotonic() - started < 20, "an S3 outage must fail fast, not hang the sender"
        assert _counts(pg_db) == before, "an object that could not be stored left rows behind"
        with pg_db.uow() as uow:
            assert uow.session.scalar(select(StoredObject).where(
                StoredObject.sop_instance_uid == inspect(second).sop_instance_uid)) is None
        # a re-send of what is already stored is still recognised (nothing to write)
        assert ingest.ingest_dicom(device, first).status == "duplicate"
        assert publisher.published == [stored.job_id]
    finally:
        server.stop(kill=True)


def test_database_refusing_the_row_discards_the_stored_object(pg_db: Database, seaweed: S3Server,
                                                              s3_bucket: str) -> None:
    """The row cannot be committed (PostgreSQL answers 'disk full' to the insert): ingest
    says StorageUnavailable, leaves no row, and removes the bytes it had put in S3."""
    store = open_object_store(seaweed.url(s3_bucket))
    ingest = IngestService(pg_db, store, ListPublisher())
    device = device_by_ae_title(pg_db, PG_DEVICE_AE)
    data = (DICOM / "test_ecg.dcm").read_bytes()
    info = inspect(data)
    key = dicom_key(device.site_id, info, sha256_bytes(data))
    with pg_db.engine.begin() as conn:
        conn.execute(text("""
            CREATE FUNCTION td_refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$;
            CREATE TRIGGER td_refuse BEFORE INSERT ON stored_objects
                FOR EACH ROW WHEN (NEW.sop_instance_uid = :uid) EXECUTE FUNCTION td_refuse_insert();
        """.replace(":uid", "'" + info.sop_instance_uid + "'")))
    before = _counts(pg_db)
    try:
        with pytest.raises(StorageUnavailable):
            ingest.ingest_dicom(device, data)
        assert _counts(pg_db) == before
        assert not store.exists(key), "bytes without a row were left in the store"
    finally:
        with pg_db.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER td_refuse ON stored_objects; DROP FUNCTION td_refuse_insert();"))
    # the device retries once the database is healthy again: stored, byte-exact
    outcome = ingest.ingest_dicom(device, data)
    assert outcome.status == "stored"
    assert store.get(key, sha256_bytes(data)) == data
