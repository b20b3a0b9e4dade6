"""The ingest journal: group commit for the embedded mode (SQLite and a local folder).

A device is told "success" only once its object and the rows that record it are durable.
Written the plain way, that is the object file's fdatasync, an fsync of each folder it
created and SQLite's commit fsync: three to five flushes of the disk for every object, about
2 ms of a cart's 6 ms round trip on a virtual disk. With the journal an object costs one
flush: its bytes, and what is needed to record them again, are appended to a segment file
and fdatasync'd; the object file and the rows are then written without waiting for the
disk. Every ``interval_s`` a checkpoint makes all of those writes durable at once (one
``syncfs`` of the store's file system and an fsync of SQLite's log) and deletes the segment.

After a crash (power cut, ``kill -9``) the next process that ingests replays the segments no
live process holds through the ingest use case, which is idempotent: what was recorded is
a re-send, what was not is recorded now. A torn record at the end of a segment (the crash
came during its append) was never acknowledged and is skipped.

Layout: ``<folder>/<pid>-<n>.seg``, each held with an exclusive ``flock`` by the process
writing it, so a replay never takes a live process's segment. A record is
``b"TDJ1" | u32 meta length | u32 crc32 of meta | meta (JSON) | blobs`` (little-endian),
the meta listing each blob's size and sha256, which check it when it is read back.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from telediag.periodic import Periodic
from telediag.store.objects import _fdatasync, _fsync_dir, _write_all, sha256_hex

log = logging.getLogger(__name__)

_MAGIC = b"TDJ1"
_HEADER = struct.Struct("<4sII")


class JournalError(RuntimeError):
    """An append could not be made durable: the object must not be acknowledged."""


@dataclass(frozen=True)
class JournalEntry:
    """One appended record: what the writer said about it, and its files' bytes."""

    meta: dict[str, Any]
    blobs: tuple[bytes, ...]


@dataclass(eq=False)
class Segment:
    """One segment file, open and locked by this process."""

    path: Path
    fd: int
    records: int = 0
    #: Appended records whose writer has not yet settled them (rows not yet committed).
    unsettled: int = 0
    #: Read back from a dead process's file (``IngestJournal.orphans``).
    entries: list[JournalEntry] = field(default_factory=list)


def encode_record(meta: dict[str, Any], blobs: Sequence[bytes], sha256s: Sequence[str]) -> list[bytes]:
    """One record as the buffers to write: the blobs themselves are not copied, and their
    digests (which ingest computed anyway) check them when the record is read back."""
    head = json.dumps({**meta, "sizes": [len(b) for b in blobs], "sha256": list(sha256s)},
                      separators=(",", ":")).encode()
    return [_HEADER.pack(_MAGIC, len(head), zlib.crc32(head)), head, *blobs]


def decode_records(data: bytes) -> tuple[list[JournalEntry], int]:
    """The whole records at the start of ``data``, and how many bytes after them are torn."""
    entries, offset = [], 0
    while offset + _HEADER.size <= len(data):
        magic, head_len, crc = _HEADER.unpack_from(data, offset)
        at = offset + _HEADER.size
        head = data[at: at + head_len]
        if magic != _MAGIC or len(head) != head_len or zlib.crc32(head) != crc:
            break
        meta = json.loads(head)
        at += head_len
        blobs = []
        for size, digest in zip(meta.pop("sizes"), meta.pop("sha256")):
            blob = data[at: at + size]
            if len(blob) != size or sha256_hex(blob) != digest:
                break
            blobs.append(blob)
            at += size
        else:
            entries.append(JournalEntry(meta, tuple(blobs)))
            offset = at
            continue
        break
    return entries, len(data) - offset


def _write_buffers(fd: int, buffers: list[bytes]) -> None:
    written, total = os.writev(fd, buffers), sum(len(b) for b in buffers)
    if written < total:  # a short write (a signal, a full disk): write the rest plainly
        _write_all(fd, b"".join(buffers)[written:])


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class _Checkpointer(Periodic):
    def __init__(self, journal: "IngestJournal", interval_s: float) -> None:
        super().__init__("telediag-journal-checkpoint", interval_s)
        self.journal = journal

    def sweep(self) -> None:
        self.journal.checkpoint()


class IngestJournal:
    """Appends received objects durably and checkpoints them (see module doc); thread safe.

    ``sync`` makes every write made without waiting for the disk durable (the object
    store's and the database's); the journal calls it at each checkpoint.
    """

    def __init__(self, folder: str | os.PathLike, sync: Callable[[], None], interval_s: float = 1.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sync = sync
        self.interval_s = interval_s
        self._names = itertools.count()
        self._lock = threading.Lock()  # the current segment and its appends
        self._settled = threading.Condition()
        self._checkpoint_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._current: Segment | None = None
        self._sealed: list[Segment] = []
        self._checkpointer: _Checkpointer | None = None

    # -- writing ---------------------------------------------------------------------------
    def append(self, record: list[bytes]) -> Segment:
        """Append one record (from :func:`encode_record`) and return once it is on disk. The
        caller writes what the record describes, then calls :meth:`settle` with the returned
        segment, success or not. Only system calls here, which leave the interpreter to the
        thread that receives."""
        with self._lock:
            try:
                if self._current is None:
                    self._current = self._open_segment()
                segment = self._current
                _write_buffers(segment.fd, record)
            except OSError as exc:
                if self._current is not None:  # may end in part of a record: later ones go elsewhere
                    self._sealed.append(self._current)
                    self._current = None
                raise JournalError(f"ingest journal could not append: {exc.strerror or exc}") from exc
            segment.records += 1
            with self._settled:
                segment.unsettled += 1
        try:
            # Outside the lock, so other associations append while this one flushes; the
            # segment stays open until every record in it is settled.
            _fdatasync(segment.fd)
        except OSError as exc:
            self.settle(segment)
            raise JournalError(f"ingest journal could not flush: {exc.strerror or exc}") from exc
        self._start_checkpointer()
        return segment

    def settle(self, segment: Segment) -> None:
        """The record appended to ``segment`` has been written and recorded (or given up)."""
        with self._settled:
            segment.unsettled -= 1
            self._settled.notify_all()

    def _open_segment(self) -> Segment:
        while True:
            path = self.folder / f"{os.getpid()}-{next(self._names)}.seg"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            except FileExistsError:  # left by an earlier process with this pid
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)  # new and ours: never contended
            _fsync_dir(self.folder)  # the file itself survives a crash, not only its appends
            return Segment(path, fd)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Make everything appended so far durable where it belongs, then drop its segments."""
        with self._checkpoint_lock:
            with self._lock:
                current = self._current
                if current is not None and current.records:
                    self._sealed.append(current)
                    self._current = None
                sealed = list(self._sealed)
            if not sealed:
                return
            with self._settled:
                self._settled.wait_for(lambda: all(s.unsettled == 0 for s in sealed))
            self._sync()  # raises: the segments stay for the next round
            for segment in sealed:
                os.close(segment.fd)
                segment.path.unlink(missing_ok=True)
            with self._lock:
                self._sealed = [s for s in self._sealed if s not in sealed]

    def _start_checkpointer(self) -> None:
        if self._checkpointer is None:
            with self._start_lock:  # not the checkpoint's lock: a checkpoint waits for this append
                if self._checkpointer is None:
                    self._checkpointer = _Checkpointer(self, self.interval_s)
                    self._checkpointer.start()

    def close(self) -> None:
        """Stop checkpointing after a last checkpoint (a clean stop leaves no segment)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer.join(10)
        self.checkpoint()
        with self._lock:
            if self._current is not None:  # opened, nothing in it
                os.close(self._current.fd)
                self._current.path.unlink(missing_ok=True)
                self._current = None

    # -- recovery ----------------------------------------------------------------------------
    def orphans(self) -> Iterator[Segment]:
        """The segments of processes that are gone, each locked and read back; pass each to
        :meth:`drop` once its records are recorded (one left undropped is read again by the
        next process)."""
        for path in sorted(self.folder.glob("*.seg")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # dropped meanwhile by another process's replay
                continue
            if not _lock(fd):  # a live process's segment
                os.close(fd)
                continue
            with open(fd, "rb", closefd=False) as fh:
                data = fh.read()
            entries, torn = decode_records(data)
            if torn:
                log.warning("ingest journal %s: %d bytes after its %d whole records are torn (an append "
                            "the crash interrupted, never acknowledged); skipped", path.name, torn, len(entries))
            yield Segment(path, fd, records=len(entries), entries=entries)

    @staticmethod
    def drop(segment: Segment) -> None:
        """Delete a replayed segment (see :meth:`orphans`)."""
        segment.path.unlink(missing_ok=True)
        os.close(segment.fd)


__all__ = ["IngestJournal", "JournalEntry", "JournalError", "Segment"]
