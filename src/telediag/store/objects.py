"""Object store: one small interface, a local folder (embedded) and S3 via the ``minio`` client.

``put`` returns only once the bytes are durable (fsync'd file and directory, or the S3
server's 200), and is idempotent for identical bytes. The embedded mode's ingest, whose
journal already holds the bytes durably, writes with ``durable=False`` and makes a second's
worth of objects durable at once with ``sync`` (see :mod:`telediag.store.journal`). ``get``
verifies the sha256 recorded at ingest, so silent corruption is detected rather than
analysed. ``get_range`` returns part of an object (a window of a long recording) unchecked:
a digest covers the whole object only, which ingest verified and every full read (the
analysis) verifies again.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import unquote, urlparse


class ObjectStoreError(RuntimeError):
    """The store could not durably keep or return an object."""


class IntegrityError(ObjectStoreError):
    """The bytes read back do not match the recorded sha256."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream",
            durable: bool = True) -> bool:
        """Store ``data`` durably under ``key``. Keys are content-tagged by the callers, so a
        key already present holds the same bytes. Returns whether this call wrote the
        object (False: identical bytes were already stored, and a caller that fails to
        record it must not delete what someone else may have recorded).

        ``durable=False``: the caller keeps the bytes durably elsewhere (the ingest journal)
        until it has called :meth:`sync`; a store whose writes are always durable ignores it."""
        ...
    def sync(self) -> None:
        """Make every ``durable=False`` write so far durable."""
        ...
    def get(self, key: str, sha256: str | None = None) -> bytes: ...
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the object from ``offset`` (fewer at its end), without
        a hash check: the recorded sha256 is of the whole object, so a part cannot be
        verified on its own; the whole is verified at ingest and on every full read."""
        ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...


def _verify(key: str, data: bytes, sha256: str | None) -> bytes:
    if sha256 is not None and sha256_hex(data) != sha256:
        raise IntegrityError(f"object {key} does not match its recorded sha256")
    return data


def _check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"invalid byte range: offset {offset}, length {length}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


#: fdatasync flushes the data and what is needed to read it back (size, blocks), not
#: the timestamps: about 0.1 ms less per object than fsync, where the platform has it.
_fdatasync = getattr(os, "fdatasync", os.fsync)


def _syncfs_call() -> Callable[[int], None] | None:
    """Linux ``syncfs(2)``: one journal commit and cache flush for a whole file system, where
    a second's worth of objects would otherwise each pay their own; None elsewhere."""
    import ctypes
    import ctypes.util

    try:
        call = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return syncfs


_syncfs = _syncfs_call() if sys.platform.startswith("linux") else None


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_if_same(path: Path, stat: os.stat_result) -> None:
    """Remove a file this call created, unless another writer has replaced it meanwhile."""
    try:
        current = os.stat(path)
        if (current.st_dev, current.st_ino) == (stat.st_dev, stat.st_ino):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


class LocalFolderStore:
    """Objects as files under one folder: the embedded default.

    A key is written straight to its final path (``O_CREAT | O_EXCL``), then the file, its
    folder and every folder this process has not yet seen made durable are fsync'd, files
    first: on a journalling file system the file's fsync commits the new folder entries
    with it, and the folder fsyncs after it find little left to do. Writing in place is
    safe because keys are content-tagged (the same key always means the same bytes) and a
    row naming a key is committed only after ``put`` returned: a half-written file can
    only be the remains of an interrupted ``put``, and the next ``put`` of that key
    replaces it atomically (temporary file, fsync, rename).
    """

    #: How many folders are remembered as durable (one per study and series, so bounded).
    KNOWN_DIRS = 4096

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._durable_dirs: OrderedDict[Path, None] = OrderedDict()
        self._dirs_lock = threading.Lock()
        #: Files written with ``durable=False`` since the last ``sync``.
        self._unsynced: list[Path] = []

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream",
            durable: bool = True) -> bool:
        """Store ``data`` (durably unless ``durable=False``, see :meth:`ObjectStore.put`);
        return False when identical bytes were already there."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            created = self._write(path, data, durable)
            if durable:
                fsync_path(path.parent)
                self._make_dirs_durable(path.parent)
            else:
                with self._dirs_lock:
                    self._unsynced.append(path)
        except OSError as exc:
            raise ObjectStoreError(f"local store could not write {key}: {exc.strerror or exc}") from exc
        return created

    def sync(self) -> None:
        """Make the ``durable=False`` writes so far durable: one ``syncfs`` of the store's file
        system where Linux has it, else each file and the folders above it."""
        with self._dirs_lock:
            paths, self._unsynced = self._unsynced, []
        if not paths:
            return
        try:
            if _syncfs is not None:
                fd = os.open(self.root, os.O_RDONLY)
                try:
                    _syncfs(fd)
                finally:
                    os.close(fd)
                return
            for path in paths:
                try:
                    with open(path, "rb") as fh:
                        os.fsync(fh.fileno())
                except FileNotFoundError:  # removed since: its send failed and it was never recorded
                    continue
                fsync_path(path.parent)
                self._make_dirs_durable(path.parent)
        except OSError as exc:
            with self._dirs_lock:  # still owed: the next sync tries them again
                self._unsynced[:0] = paths
            raise ObjectStoreError(f"local store could not sync its writes: {exc.strerror or exc}") from exc

    def _write(self, path: Path, data: bytes, durable: bool = True) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return self._settle_existing(path, data)
        try:
            _write_all(fd, data)
            if durable:
                _fdatasync(fd)
        except BaseException:
            _unlink_if_same(path, os.fstat(fd))
            raise
        finally:
            os.close(fd)
        return True

    @staticmethod
    def _settle_existing(path: Path, data: bytes) -> bool:
        """A file is already at the key: the same object stored before (make sure it is
        durable, report it unchanged), or what an interrupted or concurrent ``put`` left so
        far (replace it atomically with the whole object)."""
        try:
            with open(path, "rb") as fh:
                if fh.read() == data:
                    os.fsync(fh.fileno())
                    return False
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def _make_dirs_durable(self, directory: Path) -> None:
        """fsync the parent of ``directory`` and of each ancestor below the store root up to
        the first one known durable, so that a folder created for this key (by this or a
        concurrent ``put``) survives a crash along with the file."""
        with self._dirs_lock:
            if directory in self._durable_dirs:
                self._durable_dirs.move_to_end(directory)
                return
        chain = []
        while directory != self.root and directory not in self._durable_dirs:
            chain.append(directory)
            directory = directory.parent
        for folder in chain:
            fsync_path(folder.parent)
        with self._dirs_lock:
            for folder in chain:
                self._durable_dirs[folder] = None
            while len(self._durable_dirs) > self.KNOWN_DIRS:
                self._durable_dirs.popitem(last=False)

    def get(self, key: str, sha256: str | None = None) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except OSError as exc:
            raise ObjectStoreError(f"local store could not read {key}: {exc.strerror or exc}") from exc
        return _verify(key, data, sha256)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (unchecked, see :meth:`ObjectStore.get_range`)."""
        _check_range(offset, length)
        try:
            with open(self._path(key), "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except OSError as exc:
            raise ObjectStoreError(f"local store could not read {key}: {exc.strerror or exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """Objects in an S3 bucket (MinIO in production) through the ``minio`` client."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 secure: bool = False, region: str | None = None) -> None:
        from minio import Minio
        from urllib3 import PoolManager, Retry, Timeout

        # Short timeouts and few retries: a stalled store must turn into a failure status
        # for the device (which retries) rather than a hung association.
        http = PoolManager(timeout=Timeout(connect=5, read=10), maxsize=16,
                           retries=Retry(total=2, read=0, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key,
                            secure=secure, region=region, http_client=http)
        self.bucket = bucket

    def ensure_bucket(self) -> None:
        from minio.error import S3Error

        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise ObjectStoreError(f"cannot create bucket {self.bucket}: {exc.code}") from exc
        except Exception as exc:  # connection refused, timeouts (urllib3 errors)
            raise ObjectStoreError(f"cannot reach S3 for bucket {self.bucket}: {type(exc).__name__}: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream",
            durable: bool = True) -> bool:
        """Store ``data`` (durable once the server answered, whatever ``durable`` says); always
        reports True (S3 cannot say cheaply whether the key existed)."""
        try:
            self.client.put_object(self.bucket, _check_key(key), io.BytesIO(data), len(data),
                                   content_type=content_type,
                                   metadata={"x-amz-meta-sha256": sha256_hex(data)})
        except ValueError:
            raise
        except Exception as exc:  # network errors, S3Error, urllib3 errors
            raise ObjectStoreError(f"S3 put of {key} failed: {type(exc).__name__}: {exc}") from exc
        return True

    def sync(self) -> None:
        """Nothing to do: every put was durable when the server answered it."""

    def get(self, key: str, sha256: str | None = None) -> bytes:
        try:
            resp = self.client.get_object(self.bucket, _check_key(key))
            try:
                data = resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except ValueError:
            raise
        except Exception as exc:
            raise ObjectStoreError(f"S3 get of {key} failed: {type(exc).__name__}: {exc}") from exc
        return _verify(key, data, sha256)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` as one ranged GET (unchecked, see
        :meth:`ObjectStore.get_range`)."""
        from minio.error import S3Error

        _check_range(offset, length)
        if length == 0:
            return b""  # S3 has no empty range: bytes=offset-(offset-1) is refused
        try:
            resp = self.client.get_object(self.bucket, _check_key(key), offset=offset, length=length)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except ValueError:
            raise
        except S3Error as exc:
            if exc.code == "InvalidRange":  # the range starts at or after the end, as a file read there
                return b""
            raise ObjectStoreError(f"S3 get of {key} bytes {offset}+{length} failed: {exc.code}") from exc
        except Exception as exc:
            raise ObjectStoreError(f"S3 get of {key} bytes {offset}+{length} failed: {type(exc).__name__}: "
                                   f"{exc}") from exc

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, _check_key(key))
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise ObjectStoreError(f"S3 stat of {key} failed: {exc.code}") from exc
        except Exception as exc:
            raise ObjectStoreError(f"S3 stat of {key} failed: {type(exc).__name__}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, _check_key(key))
        except Exception as exc:
            raise ObjectStoreError(f"S3 delete of {key} failed: {type(exc).__name__}: {exc}") from exc


def open_object_store(url: str) -> ObjectStore:
    """Open the store named by a URL: ``file:///path`` or ``s3://ACCESS:SECRET@HOST:PORT/BUCKET``
    (``s3s://`` for TLS)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalFolderStore(unquote(parsed.path))
    if parsed.scheme in ("s3", "s3s"):
        bucket = parsed.path.strip("/")
        if not bucket or not parsed.hostname:
            raise ValueError("S3 URL must be s3://ACCESS:SECRET@HOST:PORT/BUCKET")
        endpoint = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
        store = S3Store(endpoint, unquote(parsed.username or ""), unquote(parsed.password or ""), bucket,
                        secure=parsed.scheme == "s3s")
        store.ensure_bucket()
        return store
    raise ValueError(f"unknown object store URL scheme {parsed.scheme!r}")
