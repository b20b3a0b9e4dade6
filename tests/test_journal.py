"""The ingest journal (embedded mode): one flush per received object, checkpoints, and the
replay of what a process that died left, through the ingest use case.

A process's death is real here (a child process ends with ``os._exit`` before any
checkpoint). A power cut's losses - files and rows that were written but never reached the
disk - are made by removing them afterwards, since the page cache survives a mere exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from telediag.bootstrap import System
from telediag.config import Settings
from telediag.store import IngestJournal, JournalRecord, encode_record
from telediag.store.journal import decode_segment
from telediag.store.objects import sha256_hex
from telediag.store.tables import Job, StoredObject

from conftest import register_network

pytest_plugins = ["services"]
from factories import ecg_objects_of_one_study


def _record(meta: dict, *blobs: bytes) -> JournalRecord:
    return encode_record(meta, blobs, [sha256_hex(b) for b in blobs])


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.seg"))


def test_records_read_back_whole_and_a_torn_or_damaged_tail_is_skipped(tmp_path: Path) -> None:
    journal = IngestJournal(tmp_path / "journal", lambda: None, interval_s=3600)
    for record in (_record({"n": 1}, b"a" * 1000), _record({"n": 2}, b"b" * 500, b"c" * 7)):
        journal.settle(journal.append(record))
    (path,) = _segments(tmp_path / "journal")
    data = path.read_bytes()
    entries, torn = decode_segment(data)
    assert [e.meta for e in entries] == [{"n": 1}, {"n": 2}] and not torn
    assert entries[1].blobs == (b"b" * 500, b"c" * 7)
    # the crash came during the second write: only part of it reached the disk
    entries, torn = decode_segment(data[:-3])
    assert [e.meta for e in entries] == [{"n": 1}] and torn
    # blocks of the second record reached the disk out of order: a blob does not match its digest
    damaged = bytearray(data)
    damaged[-200] ^= 0xFF
    entries, torn = decode_segment(bytes(damaged))
    assert [e.meta for e in entries] == [{"n": 1}] and torn
    journal.close()


def test_a_reused_segment_never_yields_a_record_of_its_earlier_use(tmp_path: Path) -> None:
    journal = IngestJournal(tmp_path / "journal", lambda: None, interval_s=3600)
    for n in range(3):
        journal.settle(journal.append(_record({"n": n}, bytes([n]) * 3000)))
    journal.checkpoint()
    (path,) = _segments(tmp_path / "journal")
    assert decode_segment(path.read_bytes()) == ([], False)  # checkpointed: nothing to replay
    journal.settle(journal.append(_record({"n": 9}, b"z" * 3000)))  # the same file, from its start
    assert _segments(tmp_path / "journal") == [path]
    entries, torn = decode_segment(path.read_bytes())  # the old second and third follow it on disk
    assert [e.meta for e in entries] == [{"n": 9}] and not torn
    journal.close()
    assert _segments(tmp_path / "journal") == []


def test_checkpoint_waits_for_unsettled_records_then_syncs(tmp_path: Path) -> None:
    syncs: list[float] = []
    journal = IngestJournal(tmp_path / "journal", lambda: syncs.append(time.monotonic()), interval_s=3600)
    segment = journal.append(_record({"n": 1}, b"x"))
    done = threading.Event()
    checkpoint = threading.Thread(target=lambda: (journal.checkpoint(), done.set()))
    checkpoint.start()
    assert not done.wait(0.3), "checkpoint ran before the record's rows were written"
    assert syncs == []
    settled_at = time.monotonic()
    journal.settle(segment)
    assert done.wait(5)
    assert len(syncs) == 1 and syncs[0] >= settled_at
    assert decode_segment(segment.path.read_bytes()) == ([], False)
    journal.close()


def test_a_failed_sync_keeps_the_records_for_the_next_checkpoint(tmp_path: Path) -> None:
    outcomes = [OSError("disk error"), None]

    def sync() -> None:
        if (failure := outcomes.pop(0)) is not None:
            raise failure

    journal = IngestJournal(tmp_path / "journal", sync, interval_s=3600)
    journal.settle(journal.append(_record({"n": 1}, b"x")))
    with pytest.raises(OSError):
        journal.checkpoint()
    (path,) = _segments(tmp_path / "journal")
    assert len(decode_segment(path.read_bytes())[0]) == 1
    journal.checkpoint()
    assert decode_segment(path.read_bytes()) == ([], False)
    journal.close()


_DIE_AFTER_APPEND = textwrap.dedent("""
    import os, sys
    from telediag.store import IngestJournal, encode_record
    from telediag.store.objects import sha256_hex
    journal = IngestJournal(sys.argv[1], lambda: None, interval_s=3600)
    journal.append(encode_record({"n": 7}, [b"payload"], [sha256_hex(b"payload")]))
    print("appended", flush=True)
    if sys.argv[2] == "die":
        os._exit(0)
    sys.stdin.read()  # alive until the test closes stdin
""")


def test_a_live_processs_segment_is_never_replayed_a_dead_ones_is(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    live = subprocess.Popen([sys.executable, "-c", _DIE_AFTER_APPEND, str(folder), "live"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "appended"
        journal = IngestJournal(folder, lambda: None)
        assert list(journal.orphans()) == []  # its process holds it
    finally:
        live.stdin.close()
        live.wait(30)
    subprocess.run([sys.executable, "-c", _DIE_AFTER_APPEND, str(folder), "die"], check=True, capture_output=True)
    orphans = list(journal.orphans())
    assert sorted(e.meta["n"] for s in orphans for e in s.entries) == [7, 7]  # the live one ended unclean too
    for segment in orphans:
        journal.drop(segment)
    assert list(folder.glob("*.seg")) == []


_INGEST_THEN_DIE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from telediag.bootstrap import System
    from telediag.config import Settings
    from telediag.network import device_by_ae_title
    system = System(Settings(data_dir=Path(sys.argv[1]), journal_checkpoint_s=3600))
    device = device_by_ae_title(system.db, "CART1")
    outcomes = [system.ingest.ingest_dicom(device, Path(p).read_bytes()) for p in sys.argv[2:]]
    print(json.dumps([[o.status, o.object_id] for o in outcomes]), flush=True)
    os._exit(0)  # no checkpoint, no clean stop
""")


def test_what_a_power_cut_lost_is_recorded_again_from_the_journal_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    first = System(settings)
    register_network(first)
    first.close()
    objects = ecg_objects_of_one_study(3)
    paths = []
    for i, data in enumerate(objects):
        paths.append(tmp_path / f"ecg{i}.dcm")
        paths[-1].write_bytes(data)

    out = subprocess.run([sys.executable, "-c", _INGEST_THEN_DIE, str(data_dir), *map(str, paths)], check=True,
                         capture_output=True, text=True, timeout=120)
    outcomes = json.loads(out.stdout.strip().splitlines()[-1])
    assert [status for status, _ in outcomes] == ["stored"] * 3
    assert len(list((data_dir / "journal").glob("*.seg"))) == 1

    # The power cut: no object file reached the disk, nor the rows of the last object.
    lost_id = outcomes[-1][1]
    probe = System(settings)
    with probe.db.uow() as uow:
        keys = dict(uow.session.execute(select(StoredObject.id, StoredObject.key)).all())
        uow.session.execute(delete(Job).where(Job.object_id == lost_id))
        uow.session.execute(delete(StoredObject).where(StoredObject.id == lost_id))
        uow.commit()
    probe.db.dispose()
    for key in keys.values():
        (data_dir / "objects" / key).unlink()

    system = System(settings)
    try:
        system.ingest  # the use case replays the journal before it takes anything new
        assert list((data_dir / "journal").glob("*.seg")) == []
        with system.db.uow() as uow:
            rows = uow.session.execute(select(StoredObject.sop_instance_uid, StoredObject.key,
                                              StoredObject.sha256)).all()
            jobs = uow.session.scalar(select(func.count()).select_from(Job))
        assert len(rows) == 3 and jobs == 3
        for uid, key, digest in rows:
            assert system.store.get(key, digest) in objects
        assert system.ingest.recover() == 0  # nothing left to replay
    finally:
        system.close()
    assert list((data_dir / "journal").glob("*.seg")) == []


def test_a_clean_stop_leaves_no_segment_and_every_object_durable(tmp_path: Path) -> None:
    system = System(Settings(data_dir=tmp_path / "data"))
    network = register_network(system)
    from telediag.network import device_by_ae_title

    device = device_by_ae_title(system.db, network.ae_title)
    for data in ecg_objects_of_one_study(2):
        assert system.ingest.ingest_dicom(device, data).status == "stored"
    assert list((tmp_path / "data" / "journal").glob("*.seg"))
    system.close()
    assert list((tmp_path / "data" / "journal").glob("*.seg")) == []


def test_without_the_journal_each_object_waits_for_its_own_fsyncs(tmp_path: Path) -> None:
    system = System(Settings(data_dir=tmp_path / "data", ingest_journal=False))
    try:
        network = register_network(system)
        from telediag.network import device_by_ae_title

        device = device_by_ae_title(system.db, network.ae_title)
        assert system.journal is None
        assert system.ingest.ingest_dicom(device, ecg_objects_of_one_study(1)[0]).status == "stored"
        assert not (tmp_path / "data" / "journal").exists()
    finally:
        system.close()


def _count_objects(data_dir: Path) -> tuple[int, int]:
    db = System(Settings(data_dir=data_dir)).db
    try:
        with db.uow() as uow:
            return (uow.session.scalar(select(func.count()).select_from(StoredObject)),
                    uow.session.scalar(select(func.count(func.distinct(StoredObject.sop_instance_uid)))))
    finally:
        db.dispose()


def test_telediag_scp_stops_clean_on_sigterm_and_replays_after_sigkill(procs, tmp_path: Path) -> None:
    """Over a real association from dcmtk's storescu: SIGTERM ends ``telediag scp`` with a last
    checkpoint (no segment left); after SIGKILL its segment stays, and the next ``telediag
    scp`` replays it before it listens: every object once, nothing left to replay."""
    from services import register_network_cli, storescu, telediag_env

    data_dir = tmp_path / "data"
    env = telediag_env(data_dir=data_dir, journal_checkpoint_s=3600)
    cart = register_network_cli(env)
    batches = []
    for b in range(2):
        folder = tmp_path / f"batch{b}"
        folder.mkdir()
        for i, data in enumerate(ecg_objects_of_one_study(5)):
            (folder / f"ecg{i}.dcm").write_bytes(data)
        batches.append(sorted(folder.iterdir()))

    scp, port = procs.scp(env)
    assert storescu(port, cart.ae_title, batches[0]).returncode == 0
    assert len(_segments(data_dir / "journal")) == 1  # no checkpoint within the hour
    assert scp.stop() == 0
    assert _segments(data_dir / "journal") == []
    assert _count_objects(data_dir) == (5, 5)

    scp, port = procs.scp(env)
    assert storescu(port, cart.ae_title, batches[1]).returncode == 0
    scp.kill()
    assert len(_segments(data_dir / "journal")) == 1
    scp, port = procs.scp(env)  # replays, then listens
    scp.wait_log(r"ingest journal of a process that stopped: 5 input\(s\) replayed, 0 of them recorded only now")
    assert _segments(data_dir / "journal") == []
    assert _count_objects(data_dir) == (10, 10)
    assert scp.stop() == 0
