"""The ingest journal: group commit for the embedded mode (SQLite and a local folder).

A device is told "success" only once its object and the rows that record it are durable.
Written the plain way, that is the object file's fdatasync, an fsync of each folder it
created and SQLite's commit fsync: three to five flushes of the disk for every object, about
2 ms of a cart's 6 ms round trip on a virtual disk. With the journal an object costs one
flush: its bytes, and what is needed to record them again, are written to a segment file
and fdatasync'd; the object file and the rows are then written without waiting for the
disk. Every ``interval_s`` a checkpoint makes all of those writes durable at once (one
``syncfs`` of the store's file system and an fsync of SQLite's log), and the segment is
reused from its start.

Reuse is what makes the one flush cheap: a record written over blocks the file already has
changes no metadata, so its fdatasync is a data write and a cache flush, without a commit
of the file system's own journal (which would also carry every folder and file the objects
created). A fresh segment grows for its first second; after that the process alternates
between two. Each use of a segment has a random nonce, in the segment's header and in every
record, so a record left from an earlier use is never taken for a new one.

After a crash (power cut, ``kill -9``) the next process that ingests replays the segments no
live process holds through the ingest use case, which is idempotent: what was recorded is
a re-send, what was not is recorded now. A torn record at the end (the crash came during
its write) was never acknowledged and is skipped.

Layout: ``<folder>/<pid>-<n>.seg``, each held with an exclusive ``flock`` by the process
using it, so a replay never takes a live process's segment. A segment starts with a
4 KiB header ``b"TDJS" | u64 nonce | u32 crc32``; records follow, each
``b"TDJR" | u64 nonce | u32 meta length | u32 crc32 of meta | meta (JSON) | blobs``
(little-endian), the meta listing each blob's size and sha256, which check it when read back.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import secrets
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from telediag.periodic import Periodic
from telediag.store.objects import _fdatasync, fsync_path, sha256_hex

log = logging.getLogger(__name__)

_SEGMENT = struct.Struct("<4sQI")
_SEGMENT_MAGIC = b"TDJS"
_RECORDS_START = 4096
_RECORD = struct.Struct("<4sQII")
_RECORD_MAGIC = b"TDJR"
#: Ready segments a process keeps besides the one it writes (a checkpoint frees one a round).
_SPARES = 2


class JournalError(RuntimeError):
    """A record could not be made durable: the object must not be acknowledged."""


class JournalRecord(NamedTuple):
    """A record to append: its meta (JSON) and its blobs, not yet bound to a segment."""

    head: bytes
    blobs: Sequence[bytes]


@dataclass(frozen=True)
class JournalEntry:
    """One record read back: what the writer said about it, and its files' bytes."""

    meta: dict[str, Any]
    blobs: tuple[bytes, ...]


@dataclass(eq=False)
class Segment:
    """One segment file, open and locked by this process."""

    path: Path
    fd: int
    nonce: int = 0
    #: Where the next record goes, and the file's size (writes below it change no metadata).
    offset: int = _RECORDS_START
    size: int = 0
    records: int = 0
    #: Appended records whose writer has not yet settled them (rows not yet committed).
    unsettled: int = 0
    #: Read back from a dead process's file (``IngestJournal.orphans``).
    entries: list[JournalEntry] = field(default_factory=list)


def encode_record(meta: dict[str, Any], blobs: Sequence[bytes], sha256s: Sequence[str]) -> JournalRecord:
    """A record of ``blobs`` (not copied) and ``meta``; their digests, which ingest computed
    anyway, check the blobs when the record is read back."""
    head = json.dumps({**meta, "sizes": [len(b) for b in blobs], "sha256": list(sha256s)},
                      separators=(",", ":")).encode()
    return JournalRecord(head, blobs)


def _record_buffers(record: JournalRecord, nonce: int) -> list[bytes]:
    return [_RECORD.pack(_RECORD_MAGIC, nonce, len(record.head), zlib.crc32(record.head)), record.head,
            *record.blobs]


def _segment_header(nonce: int) -> bytes:
    head = _SEGMENT_MAGIC + struct.pack("<Q", nonce)
    return head + struct.pack("<I", zlib.crc32(head))


def decode_segment(data: bytes) -> tuple[list[JournalEntry], bool]:
    """The records of the segment's current use, and whether the last one was torn (its
    header was written, its body did not all reach the disk)."""
    if len(data) < _SEGMENT.size:
        return [], False
    magic, nonce, crc = _SEGMENT.unpack_from(data)
    if magic != _SEGMENT_MAGIC or zlib.crc32(data[:_SEGMENT.size - 4]) != crc:
        return [], False  # written before its header was durable: nothing in it was acknowledged
    entries, offset = [], _RECORDS_START
    while offset + _RECORD.size <= len(data):
        magic, record_nonce, head_len, crc = _RECORD.unpack_from(data, offset)
        if magic != _RECORD_MAGIC or record_nonce != nonce:
            return entries, False  # the end of this use: zeros, or a record of an earlier use
        at = offset + _RECORD.size
        head = data[at: at + head_len]
        if len(head) != head_len or zlib.crc32(head) != crc:
            return entries, True
        meta = json.loads(head)
        at += head_len
        blobs = []
        for size, digest in zip(meta.pop("sizes"), meta.pop("sha256")):
            blob = data[at: at + size]
            if len(blob) != size or sha256_hex(blob) != digest:
                return entries, True
            blobs.append(blob)
            at += size
        entries.append(JournalEntry(meta, tuple(blobs)))
        offset = at
    return entries, False


def _pwrite_all(fd: int, buffers: list[bytes], offset: int) -> int:
    total = sum(len(b) for b in buffers)
    written = os.pwritev(fd, buffers, offset)
    if written < total:  # a short write (a signal, a full disk): write the rest plainly
        rest = memoryview(b"".join(buffers))[written:]
        while rest:
            n = os.pwrite(fd, rest, offset + written)
            rest, written = rest[n:], written + n
    return total


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
        self._lock = threading.Lock()  # the segments and their offsets
        self._settled = threading.Condition()
        self._checkpoint_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._current: Segment | None = None
        self._sealed: list[Segment] = []
        self._spares: list[Segment] = []
        self._checkpointer: _Checkpointer | None = None

    # -- writing ---------------------------------------------------------------------------
    def append(self, record: JournalRecord) -> Segment:
        """Write one record and return once it is on disk. The caller writes what the record
        describes, then calls :meth:`settle` with the returned segment, success or not. Only
        system calls here, which leave the interpreter to the thread that receives."""
        with self._lock:
            try:
                segment = self._segment_for(record)
                segment.offset += _pwrite_all(segment.fd, _record_buffers(record, segment.nonce), segment.offset)
            except OSError as exc:
                if self._current is not None:  # may end in part of a record: later ones go elsewhere
                    self._sealed.append(self._current)
                    self._current = None
                raise JournalError(f"ingest journal could not write: {exc.strerror or exc}") from exc
            segment.size = max(segment.size, segment.offset)
            segment.records += 1
            with self._settled:
                segment.unsettled += 1
        try:
            # Outside the lock, so other associations write while this one flushes; the
            # segment is not reused before every record in it is settled.
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

    def _segment_for(self, record: JournalRecord) -> Segment:
        """The segment the record goes to (under ``_lock``): the current one, unless it is
        full and a ready one waits (a full one without a spare grows: slower, still right)."""
        current = self._current
        if current is not None and current.records and self._spares:
            length = _RECORD.size + len(record.head) + sum(len(b) for b in record.blobs)
            if current.offset + length > current.size:
                self._sealed.append(current)
                current = None
        if current is None:
            current = self._spares.pop() if self._spares else self._new_segment()
            self._current = current
        return current

    def _new_segment(self) -> Segment:
        while True:
            path = self.folder / f"{os.getpid()}-{next(self._names)}.seg"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:  # left by an earlier process with this pid
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)  # new and ours: never contended
            segment = Segment(path, fd)
            self._begin_use(segment)
            fsync_path(self.folder)  # the file itself survives a crash, not only its records
            return segment

    @staticmethod
    def _begin_use(segment: Segment) -> None:
        """A new nonce, durable in the header before any record of this use is written."""
        segment.nonce = secrets.randbits(64)
        os.pwrite(segment.fd, _segment_header(segment.nonce), 0)
        _fdatasync(segment.fd)
        segment.offset, segment.records = _RECORDS_START, 0
        segment.size = os.fstat(segment.fd).st_size

    @staticmethod
    def _discard(segment: Segment) -> None:
        os.close(segment.fd)
        segment.path.unlink(missing_ok=True)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Make everything appended so far durable where it belongs, then reuse its segments."""
        with self._checkpoint_lock:
            with self._lock:
                current = self._current
                if current is not None and current.records:
                    self._sealed.append(current)
                    self._current = self._spares.pop() if self._spares else None
                sealed = list(self._sealed)
            if not sealed:
                return
            with self._settled:
                self._settled.wait_for(lambda: all(s.unsettled == 0 for s in sealed))
            self._sync()  # raises: the segments stay sealed for the next round
            ready = []
            for segment in sealed:
                try:
                    self._begin_use(segment)
                    ready.append(segment)
                except OSError as exc:  # its records are durable elsewhere now: let it go
                    log.warning("ingest journal %s not reused: %s", segment.path.name, exc.strerror or exc)
                    self._discard(segment)
            with self._lock:
                self._sealed = [s for s in self._sealed if s not in sealed]
                for segment in ready:
                    if len(self._spares) < _SPARES:
                        self._spares.append(segment)
                    else:
                        self._discard(segment)

    def _start_checkpointer(self) -> None:
        if self._checkpointer is None:
            with self._start_lock:  # not the checkpoint's lock: a checkpoint waits for this append
                if self._checkpointer is None:
                    self._checkpointer = _Checkpointer(self, self.interval_s)
                    self._checkpointer.start()

    def close(self) -> None:
        """Stop checkpointing after a last checkpoint; a clean stop leaves no segment."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer.join(10)
        self.checkpoint()
        with self._lock:
            for segment in ([self._current] if self._current is not None else []) + self._spares:
                self._discard(segment)
            self._current, self._spares = None, []

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
            entries, torn = decode_segment(data)
            if torn:
                log.warning("ingest journal %s: the record after its %d whole ones is torn (a write the crash "
                            "interrupted, never acknowledged); skipped", path.name, len(entries))
            yield Segment(path, fd, records=len(entries), entries=entries)

    @classmethod
    def drop(cls, segment: Segment) -> None:
        """Delete a replayed segment (see :meth:`orphans`)."""
        cls._discard(segment)


__all__ = ["IngestJournal", "JournalEntry", "JournalError", "JournalRecord", "Segment", "encode_record"]
