"""The DICOM query/retrieve use case: what a device may find and fetch, level by level.

The DIMSE entry point (:mod:`telediag.ingest.qr`) translates identifiers into a query level
and a ``match`` of DICOM keywords to query values; this module answers them from the catalog
(``uow.catalog``, which matches as PS3.4 C.2.2.2 and QIDO-RS say, keys of the levels above
included) and reads the instances to send back from the object store.

Scope
    A device sees the studies of its own site and of the sites below it (a county PACS
    registered at the county finds its townships' studies), like the cases it could send.
    A C-MOVE sends only what both the requesting device and the destination device may see:
    a county's viewer cannot push one township's study to another township's cart.

Levels
    STUDY, SERIES and IMAGE are the catalog's studies, series and instances; a record of a
    lower level carries its study's attributes too, which a response needs for the unique
    keys of the levels above. PATIENT records are the matching studies grouped by their patient
    attributes (the catalog has no patient level of its own). A retrieve sends every instance
    below the matching records.

Audit
    Every query is an audit entry (``search``: level and keys), every retrieve one per case it
    sends (``retrieve``, or ``move`` with the destination), by ``device:<name>`` from its address.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from telediag.domain import DeviceIdentity
from telediag.store import Database, ObjectStore
from telediag.store.catalog import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS, CatalogRepository, InvalidMatch
from telediag.store.review import CaseScope

__all__ = ["QueryService", "Holdings", "Destination", "InvalidMatch", "Level", "LEVELS"]

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")

#: The keys that may narrow a query or retrieve at each level: its own and those above
#: (a key of a lower level in the identifier is not a condition; PS3.4 C.4.1.2.1).
_KEYS_AT: dict[str, frozenset[str]] = {"PATIENT": STUDY_KEYS, "STUDY": STUDY_KEYS,
                                       "SERIES": STUDY_KEYS | SERIES_KEYS,
                                       "IMAGE": STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS}
#: What identifies a record of each level, so that a record seen twice is returned once.
_UNIQUE: dict[str, tuple[str, ...]] = {"STUDY": ("StudyInstanceUID",),
                                       "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
                                       "IMAGE": ("SOPInstanceUID",)}
#: The attributes that make a patient (a PATIENT-level record) out of its studies.
PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")

#: Records are read from the catalog in pages of this many: a universal query over a
#: prefecture's network streams, it never becomes one result set in memory.
PAGE_SIZE = 500

Page = Callable[[CatalogRepository, int, int], list[dict[str, Any]]]


@dataclass(frozen=True)
class Destination:
    """Where a C-MOVE sends: a registered device's AE title and DICOM address."""

    ae_title: str
    host: str
    port: int


class Holdings:
    """What one caller may see, and the way to it: queries by level and instance reads.

    Each catalog page is its own short unit of work, so an association that streams a
    thousand responses holds no transaction open between them.
    """

    def __init__(self, db: Database, store: ObjectStore, scope: CaseScope, caller: DeviceIdentity,
                 address: str | None = None, destination: str | None = None) -> None:
        self._db, self._store, self.scope = db, store, scope
        self._caller, self._address, self._destination = caller, address, destination

    def _audit(self, action: str, case_id: int | None, **detail: Any) -> None:
        """A search or a retrieve changes nothing: audited in the next batch (``store.read_audit``)."""
        self._db.read_audit.record(username=f"device:{self._caller.name}", role="device", action=action,
                                   case_id=case_id, detail=detail, address=self._address)

    def _pages(self, page: Page) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            with self._db.uow() as uow:
                rows = page(uow.catalog, PAGE_SIZE, offset)
            yield from rows
            if len(rows) < PAGE_SIZE:
                return
            offset += PAGE_SIZE

    def _level(self, level: Level, match: dict[str, str]) -> Iterator[dict[str, Any]]:
        """The catalog's records of ``level`` (PATIENT: studies) that match, page by page."""
        s = self.scope
        pages: dict[str, Page] = {
            "STUDY": lambda c, limit, offset: c.studies(s, match, limit, offset),
            "SERIES": lambda c, limit, offset: c.series(s, None, match, limit=limit, offset=offset),
            "IMAGE": lambda c, limit, offset: c.instances(s, None, None, match, limit=limit, offset=offset),
        }
        return self._pages(pages["STUDY" if level == "PATIENT" else level])

    def find(self, level: Level, match: dict[str, str]) -> Iterator[dict[str, Any]]:
        """The records of ``level`` that match, each with its study's attributes, lazily.

        Raises :class:`InvalidMatch` for a value its key cannot take (``StudyDate=May``)."""
        match = {k: v for k, v in match.items() if k in _KEYS_AT[level]}
        self._audit("search", None, level=level, keys=sorted(match))
        if level == "PATIENT":
            yield from self._patients(match)
            return
        unique, seen = _UNIQUE[level], set()  # a record arriving while we page shifts the next page
        for record in self._level(level, match):
            identity = tuple(record.get(k) for k in unique)
            if identity not in seen:
                seen.add(identity)
                yield record

    def _patients(self, match: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Studies grouped by patient, with the PS3.4 C.6.1.1.2 patient-level counts."""
        patients: dict[tuple[str, ...], dict[str, Any]] = {}
        seen = set()
        for study in self._level("STUDY", match):
            if study["StudyInstanceUID"] in seen:
                continue
            seen.add(study["StudyInstanceUID"])
            identity = tuple(str(study.get(k) or "") for k in PATIENT_KEYS)
            patient = patients.setdefault(identity, {
                **{k: study.get(k) for k in PATIENT_KEYS}, "NumberOfPatientRelatedStudies": 0,
                "NumberOfPatientRelatedSeries": 0, "NumberOfPatientRelatedInstances": 0})
            patient["NumberOfPatientRelatedStudies"] += 1
            patient["NumberOfPatientRelatedSeries"] += study.get("NumberOfStudyRelatedSeries") or 0
            patient["NumberOfPatientRelatedInstances"] += study.get("NumberOfStudyRelatedInstances") or 0
        yield from patients.values()

    def instances(self, level: Level, match: dict[str, str]) -> list[dict[str, Any]]:
        """Every instance a retrieve at ``level`` with ``match`` sends, in study, series and
        instance order: their attributes and where their bytes are (read by :meth:`read`, one
        at a time). One query, so the count a retrieve announces is the number it sends."""
        match = {k: v for k, v in match.items() if k in _KEYS_AT[level]}
        with self._db.uow() as uow:
            rows = uow.catalog.instances(self.scope, None, None, match)
        for case_id, n in Counter(row["_case_id"] for row in rows).items():
            self._audit("move" if self._destination else "retrieve", case_id, level=level, keys=sorted(match),
                        instances=n, **({"destination": self._destination} if self._destination else {}))
        return rows

    def read(self, instance: dict[str, Any]) -> bytes:
        """The stored Part 10 bytes of an instance, checked against their recorded SHA-256."""
        return self._store.get(instance["_key"], instance["_sha256"])


class QueryService:
    """Gives a device (and a C-MOVE its destination) the :class:`Holdings` it may see."""

    def __init__(self, db: Database, store: ObjectStore) -> None:
        self._db, self._store = db, store

    def holdings(self, device: DeviceIdentity, address: str | None = None) -> Holdings:
        """What ``device`` (calling from ``address``) may find and retrieve: its site's studies
        and those of the sites below."""
        with self._db.uow() as uow:
            sites = frozenset(uow.sites.subtree(device.site_id))
        return Holdings(self._db, self._store, CaseScope(sites=sites), device, address)

    def move(self, device: DeviceIdentity, destination_ae: str,
             address: str | None = None) -> tuple[Destination, Holdings] | None:
        """The registered destination ``destination_ae`` and what ``device`` may send it: the
        studies both may see. None when no active device with a DICOM address has that AE title."""
        with self._db.uow() as uow:
            found = uow.devices.destination(destination_ae.strip().upper())
            if found is None:
                return None
            target, host, port = found
            sites = frozenset(uow.sites.subtree(device.site_id)) & frozenset(uow.sites.subtree(target.site_id))
        destination = Destination(target.ae_title or destination_ae, host, port)
        return destination, Holdings(self._db, self._store, CaseScope(sites=sites), device, address,
                                     destination.ae_title)
