"""The store stage: object bytes and database rows, the only door to either.

- Objects: :func:`open_object_store` gives a local folder (embedded) or S3/MinIO through
  the ``minio`` client, behind the small :class:`ObjectStore` interface.
- Database: :class:`Database` gives units of work (:class:`UnitOfWork`) whose repositories
  answer the stages' questions with domain value objects, and the ingest repository
  (``db.ingest_rows``) that records received objects over precompiled statements. No SQL is
  written outside this package.
- Durability in one flush: the embedded mode's :class:`IngestJournal` (group commit).
"""

from telediag.store.errors import DatabaseUnavailable, RowConflict, StoreError
from telediag.store.journal import IngestJournal, JournalEntry, JournalError, JournalRecord, encode_record
from telediag.store.hotpath import InstanceCatalog, IngestRows, KnownInstance, ObjectRow, StudyCatalog, StudyRef
from telediag.store.objects import (IntegrityError, LocalFolderStore, ObjectStore, ObjectStoreError, S3Store,
                                    open_object_store, sha256_hex)
from telediag.store.repositories import JobTask, ObjectRef
from telediag.store.uow import Database, UnitOfWork

__all__ = ["Database", "UnitOfWork", "IngestJournal", "JournalEntry", "JournalError", "JournalRecord", "encode_record", "IngestRows", "ObjectRow", "StudyRef", "StudyCatalog", "InstanceCatalog", "KnownInstance", "JobTask", "ObjectRef",
           "StoreError", "RowConflict", "DatabaseUnavailable", "ObjectStore", "ObjectStoreError", "IntegrityError",
           "LocalFolderStore", "S3Store", "open_object_store", "sha256_hex"]
