"""Object store: one small interface, a local folder (embedded) and S3 via the ``minio`` client.

``put`` returns only once the bytes are durable (fsync'd file and directory, or the S3
server's 200), and is idempotent for identical bytes. ``get`` verifies the sha256
recorded at ingest, so silent corruption is detected rather than analysed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse


class ObjectStoreError(RuntimeError):
    """The store could not durably keep or return an object."""


class IntegrityError(ObjectStoreError):
    """The bytes read back do not match the recorded sha256."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get(self, key: str, sha256: str | None = None) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...


def _verify(key: str, data: bytes, sha256: str | None) -> bytes:
    if sha256 is not None and sha256_hex(data) != sha256:
        raise IntegrityError(f"object {key} does not match its recorded sha256")
    return data


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


class LocalFolderStore:
    """Objects as files under one folder: the embedded default."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise ObjectStoreError(f"local store could not write {key}: {exc.strerror or exc}") from exc

    def get(self, key: str, sha256: str | None = None) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except OSError as exc:
            raise ObjectStoreError(f"local store could not read {key}: {exc.strerror or exc}") from exc
        return _verify(key, data, sha256)

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

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            self.client.put_object(self.bucket, _check_key(key), io.BytesIO(data), len(data),
                                   content_type=content_type,
                                   metadata={"x-amz-meta-sha256": sha256_hex(data)})
        except ValueError:
            raise
        except Exception as exc:  # network errors, S3Error, urllib3 errors
            raise ObjectStoreError(f"S3 put of {key} failed: {type(exc).__name__}: {exc}") from exc

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


def open_store(url: str) -> ObjectStore:
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
