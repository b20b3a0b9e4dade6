"""``LocalFolderStore``: in-place writes of content-tagged keys, and what makes them durable."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from telediag.store import objects as objectstore
from telediag.store.objects import IntegrityError, LocalFolderStore, ObjectStoreError, sha256_hex

KEY = "sites/1/studies/1.2.3/series/1.2.3.4/1.2.3.4.5.abcdef0123456789.dcm"


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record the path of every descriptor fsync'd or fdatasync'd (through /proc/self/fd),
    then really sync it."""
    seen: list[Path] = []

    def recording(real):
        def sync(fd: int) -> None:
            seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
            real(fd)
        return sync

    monkeypatch.setattr(os, "fsync", recording(os.fsync))
    monkeypatch.setattr(objectstore, "_fdatasync", recording(objectstore._fdatasync))
    return seen


def test_put_writes_the_file_and_makes_it_and_every_new_folder_durable(tmp_path: Path, fsyncs: list[Path]) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    data = os.urandom(50_000)
    assert store.put(KEY, data) is True
    path = store.root / KEY
    assert path.read_bytes() == data
    assert store.get(KEY, sha256_hex(data)) == data
    # the file first, then its folder, then the parent of each folder the put created
    assert fsyncs[0] == path
    new_dirs = [path.parent] + [p for p in path.parent.parents if store.root in p.parents]
    assert set(fsyncs[1:]) == {d.parent for d in new_dirs} | {path.parent}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_second_key_in_a_known_folder_does_not_fsync_its_ancestors_again(tmp_path: Path,
                                                                            fsyncs: list[Path]) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    store.put(KEY, b"first")
    fsyncs.clear()
    other = KEY.replace("abcdef0123456789", "0000000000000000")
    store.put(other, b"second")
    assert fsyncs == [store.root / other, (store.root / other).parent]


def test_identical_put_reports_already_stored_and_keeps_the_file(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    data = os.urandom(10_000)
    assert store.put(KEY, data) is True
    inode = (store.root / KEY).stat().st_ino
    assert store.put(KEY, data) is False
    assert (store.root / KEY).stat().st_ino == inode and store.get(KEY) == data


def test_remains_of_an_interrupted_put_are_replaced_whole(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    data = os.urandom(100_000)
    path = store.root / KEY
    path.parent.mkdir(parents=True)
    path.write_bytes(data[:4096])  # what a crash in the middle of a write leaves
    with pytest.raises(IntegrityError):
        store.get(KEY, sha256_hex(data))
    assert store.put(KEY, data) is True
    assert store.get(KEY, sha256_hex(data)) == data
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_failed_write_leaves_nothing_at_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    real_write = os.write

    def disk_full(fd: int, data) -> int:
        real_write(fd, bytes(data[:1000]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(ObjectStoreError, match="No space left"):
        store.put(KEY, os.urandom(20_000))
    monkeypatch.undo()
    assert not (store.root / KEY).exists()
    assert store.put(KEY, b"whole") is True and store.get(KEY) == b"whole"


def test_concurrent_identical_puts_leave_one_whole_object(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    data = os.urandom(2_000_000)  # large enough that writes overlap
    results: list[bool] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def put() -> None:
        start.wait()
        try:
            results.append(store.put(KEY, data))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6 and True in results
    assert store.get(KEY, sha256_hex(data)) == data
    assert not [p for p in (store.root / KEY).parent.iterdir() if p.name.startswith(".tmp-")]


def test_get_range_reads_part_of_an_object_without_the_hash_check(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    data = os.urandom(10_000)
    store.put(KEY, data)
    assert store.get_range(KEY, 0, 100) == data[:100]
    assert store.get_range(KEY, 4321, 1000) == data[4321:5321]
    assert store.get_range(KEY, 9_990, 100) == data[9_990:]  # fewer bytes at the end, none after it
    assert store.get_range(KEY, 20_000, 10) == b"" and store.get_range(KEY, 5, 0) == b""
    # a part cannot be checked against the whole object's digest: corruption shows on a full read
    with open(store.root / KEY, "r+b") as fh:
        fh.seek(5000)
        fh.write(bytes([data[5000] ^ 0xFF]))
    assert store.get_range(KEY, 4999, 3) == data[4999:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:5002]
    with pytest.raises(IntegrityError):
        store.get(KEY, sha256_hex(data))
    with pytest.raises(ValueError):
        store.get_range(KEY, -1, 10)
    with pytest.raises(ObjectStoreError):
        store.get_range(KEY.replace("abcdef0123456789", "0000000000000000"), 0, 10)


def test_unsynced_put_waits_for_no_disk_until_sync_makes_it_durable(tmp_path: Path, fsyncs: list[Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest journal's writes: nothing flushed per object, all of them at the checkpoint
    (here without ``syncfs``, so each file and the folders it created are fsync'd)."""
    monkeypatch.setattr(objectstore, "_syncfs", None)
    store = LocalFolderStore(tmp_path / "objects")
    data = os.urandom(30_000)
    assert store.put(KEY, data, durable=False) is True
    assert (store.root / KEY).read_bytes() == data
    assert fsyncs == []
    store.sync()
    path = store.root / KEY
    new_dirs = [path.parent] + [p for p in path.parent.parents if store.root in p.parents]
    assert fsyncs[0] == path
    assert set(fsyncs[1:]) == {d.parent for d in new_dirs} | {path.parent}
    fsyncs.clear()
    store.sync()  # nothing written since
    assert fsyncs == []


def test_sync_uses_one_syncfs_for_all_unsynced_writes(tmp_path: Path, fsyncs: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if objectstore._syncfs is None:
        pytest.skip("no syncfs(2) on this platform")
    calls: list[str] = []
    real = objectstore._syncfs
    monkeypatch.setattr(objectstore, "_syncfs", lambda fd: (calls.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                            real(fd)))
    store = LocalFolderStore(tmp_path / "objects")
    for i in range(5):
        store.put(KEY.replace("abcdef", f"{i:06d}"), os.urandom(1000), durable=False)
    store.sync()
    assert calls == [str(store.root)] and fsyncs == []


def test_a_failed_sync_keeps_its_writes_owed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    store.put(KEY, b"x", durable=False)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(objectstore, "_syncfs", broken)
    with pytest.raises(ObjectStoreError, match="could not sync"):
        store.sync()
    seen: list[int] = []
    monkeypatch.setattr(objectstore, "_syncfs", lambda fd: seen.append(fd))
    store.sync()
    assert len(seen) == 1  # the write is still owed, so the next sync flushes again
