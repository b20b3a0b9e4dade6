"""DICOM query/retrieve over DIMSE, an entry point: C-FIND, C-GET and C-MOVE for the viewers and
PACS that do not speak DICOMweb (Weasis, RadiAnt, a county PACS).

It only translates: an identifier becomes a query level and a ``match`` of keywords to QIDO-RS
style values for :class:`~telediag.ingest.query.Holdings`, and the records that come back
become response identifiers or, for a retrieve, the stored instances sent as C-STORE
sub-operations. It is served by :class:`~telediag.ingest.scp.StorageSCP` on the same AE title
and port as C-STORE, so the same ``authorize`` whitelist admits (or refuses) the association,
and the device it admitted decides the scope (see :mod:`telediag.ingest.query`).

Information models
    Patient Root (PATIENT, STUDY, SERIES, IMAGE) and Study Root (STUDY, SERIES, IMAGE), for
    FIND, GET and MOVE. Keys of the levels above the query level narrow the search as well
    (relational behaviour; a hierarchical request is a special case of it), keys of lower
    levels are ignored, and a requested key nobody records comes back empty.

Matching (PS3.4 C.2.2.2, the same as QIDO-RS)
    An empty value or ``*`` matches everything; ``*`` and ``?`` are wildcards; ``A-B``,
    ``A-`` and ``-B`` are date and time ranges; several UIDs (``a\\b``) are a list, handed on
    comma-separated as QIDO-RS writes them.

Retrieval
    The matching instances are listed first (their number is the sub-operation count), then
    read from the object store and sent one at a time: as stored (the data set bytes unchanged)
    when the peer accepted the stored transfer syntax for the SOP class, converted by pynetdicom
    between the uncompressed little-endian syntaxes, or decompressed when the peer took only
    uncompressed ones; what cannot be sent fails as one sub-operation. The peer's acceptor picks
    one syntax per presentation context: a C-MOVE proposes each stored syntax in a context of
    its own (and an uncompressed one to fall back on), while a C-GET requester proposing several
    syntaxes in one context gets the SCP's first choice, uncompressed. A C-MOVE destination is
    a registered device with a DICOM address (``telediag device set-destination``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from pydicom import dcmread, uid as ts
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove, Verification)

from telediag.domain import DeviceIdentity
from telediag.ingest.query import LEVELS, Holdings, InvalidMatch, Level, QueryService
from telediag.store import StoreError

log = logging.getLogger(__name__)

#: The information models served, by SOP class: the levels each allows.
PATIENT_ROOT: tuple[Level, ...] = LEVELS
STUDY_ROOT: tuple[Level, ...] = LEVELS[1:]
FIND_MODELS = {PatientRootQueryRetrieveInformationModelFind: PATIENT_ROOT,
               StudyRootQueryRetrieveInformationModelFind: STUDY_ROOT}
GET_MODELS = {PatientRootQueryRetrieveInformationModelGet: PATIENT_ROOT,
              StudyRootQueryRetrieveInformationModelGet: STUDY_ROOT}
MOVE_MODELS = {PatientRootQueryRetrieveInformationModelMove: PATIENT_ROOT,
               StudyRootQueryRetrieveInformationModelMove: STUDY_ROOT}
QUERY_RETRIEVE_SOP_CLASSES: list[str] = [*FIND_MODELS, *GET_MODELS, *MOVE_MODELS]

STATUS_PENDING = 0xFF00
STATUS_CANCELLED = 0xFE00
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_COUNT = 0xA701
STATUS_IDENTIFIER_MISMATCH = 0xA900
STATUS_UNABLE_TO_PROCESS = 0xC000

#: Request keys answered by the SCP itself rather than from a record.
_QR_LEVEL, _CHARSET = 0x00080052, 0x00080005

#: Little-endian syntaxes pynetdicom converts a data set between when the peer took another one.
_CONVERTIBLE = [ts.ExplicitVRLittleEndian, ts.ImplicitVRLittleEndian, ts.DeflatedExplicitVRLittleEndian]
#: Presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1-255).
_MAX_CONTEXTS = 128

#: The association's device, as the SCP admitted it.
DeviceOf = Callable[[Any], DeviceIdentity | None]


class Refused(Exception):
    """A request answered with a failure status before any match is returned."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Query:
    """A C-FIND/GET/MOVE identifier, translated: its level, what it matches on, and the keys
    (tag and VR, in the request's order) a C-FIND response returns."""

    level: Level
    match: dict[str, str]
    returned: tuple[tuple[int, str, str], ...]


def _query_value(elem: DataElement) -> str | None:
    """A matching key's value as QIDO-RS writes it, or None for universal matching."""
    value = elem.value
    if value is None or elem.VR == "SQ":
        return None
    if isinstance(value, MultiValue):
        values = [str(v) for v in value if str(v)]
        text = ",".join(values) if elem.VR == "UI" else "\\".join(values)
    else:
        text = str(value)
    text = text.strip()
    return None if text in ("", "*") else text


def parse_identifier(identifier: Dataset, levels: tuple[Level, ...]) -> Query:
    """Translate a request identifier of an information model allowing ``levels``."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in levels:
        raise Refused(STATUS_IDENTIFIER_MISMATCH, f"Query/Retrieve Level {level or 'missing'} not in this model")
    match: dict[str, str] = {}
    returned: list[tuple[int, str, str]] = []
    for elem in identifier:
        if elem.tag in (_QR_LEVEL, _CHARSET) or elem.tag.is_private or not elem.keyword:
            continue
        returned.append((int(elem.tag), elem.VR, elem.keyword))
        value = _query_value(elem)
        if value is not None:
            match[elem.keyword] = value
    return Query(cast(Level, level), match, tuple(returned))


def response_identifier(query: Query, record: dict[str, Any], ae_title: str) -> Dataset:
    """A C-FIND pending response: the requested keys with the record's values (empty where
    it has none), in UTF-8 when any value needs more than ASCII."""
    computed = {"RetrieveAETitle": ae_title, "InstanceAvailability": "ONLINE"}
    ds = Dataset()
    ds.QueryRetrieveLevel = query.level
    wide = False
    for tag, vr, keyword in query.returned:
        value = computed.get(keyword, record.get(keyword))
        if vr == "SQ":
            value = Sequence()
        elif isinstance(value, (list, tuple)):
            value = [str(v) for v in value]
        elif value is not None and not isinstance(value, (str, int, float)):
            value = str(value)
        texts = value if isinstance(value, list) else [value]
        wide = wide or any(isinstance(v, str) and not v.isascii() for v in texts)
        try:
            ds.add(DataElement(tag, vr, value))
        except (ValueError, TypeError, OverflowError):  # a recorded value its VR cannot carry
            ds.add(DataElement(tag, vr, None))
    if wide:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def move_contexts(instances: list[dict[str, Any]]) -> list[PresentationContext]:
    """What a C-MOVE proposes to its destination: a context of its own for each SOP class and
    stored transfer syntax among the instances (the acceptor picks one syntax per context, so only
    a context of one syntax makes it take the stored one when it can), then one of the
    uncompressed little-endian syntaxes each to fall back on (see :func:`as_accepted`); past
    128 contexts the fallbacks go first."""
    stored = dict.fromkeys((str(i["SOPClassUID"]), str(i.get("_transfer_syntax") or ts.ExplicitVRLittleEndian))
                           for i in instances)
    contexts = [build_context(sop_class, syntax) for sop_class, syntax in stored]
    contexts += [build_context(sop_class, [s for s in _CONVERTIBLE if s != syntax]) for sop_class, syntax in stored]
    if len(contexts) > _MAX_CONTEXTS:
        log.warning("C-MOVE needs %d presentation contexts; proposing the first %d (what needs the rest fails)",
                    len(contexts), _MAX_CONTEXTS)
    return contexts[:_MAX_CONTEXTS]


def as_accepted(dataset: Dataset, accepted: set[str]) -> Dataset:
    """``dataset`` ready for a peer that accepted ``accepted`` syntaxes for its SOP class: as
    stored when it took the stored syntax, or an uncompressed one pynetdicom converts to; an
    encapsulated (compressed) one decompressed when it took only uncompressed ones (the SOP
    Instance UID kept: it is the instance asked for). Anything else is left for pynetdicom to
    fail as one sub-operation."""
    stored = dataset.file_meta.TransferSyntaxUID
    if stored in accepted or not stored.is_encapsulated or not accepted & set(_CONVERTIBLE):
        return dataset
    dataset.decompress(generate_instance_uid=False)
    return dataset


class _StoreAssociation:
    """Catches the association pynetdicom opens to a C-MOVE destination (its ``EVT_ESTABLISHED``),
    so each instance can be prepared for the syntaxes the destination accepted."""

    def __init__(self) -> None:
        self.assoc: Any = None

    def established(self, event) -> None:
        self.assoc = event.assoc


def _accepted(assoc: Any, sop_class: str) -> set[str]:
    """The transfer syntaxes ``assoc``'s peer accepted for receiving ``sop_class`` from us."""
    return {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.as_scu}


def _unsent(instance: dict[str, Any]) -> Dataset:
    """Stands in for an instance that could not be read: without a transfer syntax pynetdicom
    cannot send it, so it counts as a failed sub-operation under its SOP Instance UID."""
    ds = Dataset()
    ds.SOPClassUID = instance["SOPClassUID"]
    ds.SOPInstanceUID = instance["SOPInstanceUID"]
    return ds


class QueryRetrieveSCP:
    """The C-FIND, C-GET and C-MOVE handlers :class:`~telediag.ingest.scp.StorageSCP` binds.

    Handlers run in the association's thread; this object holds no per-request state.
    """

    def __init__(self, queries: QueryService, device_of: DeviceOf, ae_title: str) -> None:
        self.queries, self.device_of, self.ae_title = queries, device_of, ae_title

    def handlers(self) -> list[tuple[Any, Callable[[Any], Any]]]:
        return [(evt.EVT_C_FIND, self.on_find), (evt.EVT_C_GET, self.on_get), (evt.EVT_C_MOVE, self.on_move)]

    def _request(self, event, models: dict[str, tuple[Level, ...]]) -> tuple[DeviceIdentity, Query]:
        device = self.device_of(event.assoc)
        if device is None:  # cannot happen: associations are only accepted for known devices
            raise Refused(STATUS_UNABLE_TO_PROCESS, "association has no registered device")
        levels = models[str(event.request.AffectedSOPClassUID)]
        try:
            identifier = event.identifier
        except Exception as exc:  # an identifier that does not decode
            raise Refused(STATUS_IDENTIFIER_MISMATCH, f"identifier cannot be decoded ({type(exc).__name__})")
        return device, parse_identifier(identifier, levels)

    # -- C-FIND --------------------------------------------------------------------------------
    def on_find(self, event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        started, found = time.perf_counter(), 0
        try:
            device, query = self._request(event, FIND_MODELS)
            for record in self.queries.holdings(device, _address(event)).find(query.level, query.match):
                if event.is_cancelled:
                    yield STATUS_CANCELLED, None
                    return
                found += 1
                yield STATUS_PENDING, response_identifier(query, record, self.ae_title)
        except _REFUSALS as exc:
            yield _refused("C-FIND", event, exc, STATUS_OUT_OF_RESOURCES), None
            return
        log.info("C-FIND from device %s: %s level on %s, %d matches in %.1f ms", device.device_id, query.level,
                 sorted(query.match), found, (time.perf_counter() - started) * 1000)
        yield 0x0000, None

    # -- C-GET ---------------------------------------------------------------------------------
    def on_get(self, event) -> Iterator[Any]:
        """pynetdicom wants the number of sub-operations first, then the statuses: a request it
        cannot serve is one sub-operation answered with the failure."""
        try:
            device, query = self._request(event, GET_MODELS)
            holdings = self.queries.holdings(device, _address(event))
            instances = holdings.instances(query.level, query.match)
        except _REFUSALS as exc:
            yield 1
            yield _refused("C-GET", event, exc, STATUS_CANNOT_COUNT), None
            return
        log.info("C-GET from device %s: %s level on %s, %d instances", device.device_id, query.level,
                 sorted(query.match), len(instances))
        yield len(instances)
        yield from self._send(event, holdings, instances, lambda: event.assoc)

    # -- C-MOVE --------------------------------------------------------------------------------
    def on_move(self, event) -> Iterator[Any]:
        """pynetdicom wants the destination first, then the count, then the statuses: an unknown
        destination is answered 0xA801; a request it cannot serve otherwise still associates
        with its destination (pynetdicom's order) for the one failed sub-operation; a database
        failure before the destination is known is left to pynetdicom (0xC514, unable to process)."""
        destination_ae = str(event.move_destination or "").strip()
        device = self.device_of(event.assoc)
        found = None if device is None else self.queries.move(device, destination_ae, _address(event))
        if found is None:
            log.warning("C-MOVE from %s: destination %r is not a registered device with a DICOM address",
                        event.assoc.requestor.ae_title, destination_ae)
            yield None, None
            return
        destination, holdings = found
        try:
            device, query = self._request(event, MOVE_MODELS)
            instances = holdings.instances(query.level, query.match)
        except _REFUSALS as exc:
            yield destination.host, destination.port, {"contexts": [build_context(Verification)]}
            yield 1
            yield _refused("C-MOVE", event, exc, STATUS_CANNOT_COUNT), None
            return
        log.info("C-MOVE from device %s to %s (%s:%d): %s level on %s, %d instances", device.device_id,
                 destination.ae_title, destination.host, destination.port, query.level, sorted(query.match),
                 len(instances))
        store = _StoreAssociation()
        yield destination.host, destination.port, {"contexts": move_contexts(instances),
                                                   "evt_handlers": [(evt.EVT_ESTABLISHED, store.established)]}
        yield len(instances)
        yield from self._send(event, holdings, instances, lambda: store.assoc)

    # -- sub-operations ------------------------------------------------------------------------
    @staticmethod
    def _send(event, holdings: Holdings, instances: list[dict[str, Any]],
              peer: Callable[[], Any]) -> Iterator[tuple[int, Dataset]]:
        """Each instance read when its turn comes (one in memory at a time), as stored when
        ``peer()``, the association it goes out on, accepted that (see :func:`as_accepted`)."""
        for instance in instances:
            if event.is_cancelled:
                yield STATUS_CANCELLED, Dataset()
                return
            try:
                dataset = dcmread(BytesIO(holdings.read(instance)))
                dataset = as_accepted(dataset, _accepted(peer(), str(dataset.SOPClassUID)))
            except Exception as exc:  # missing or corrupt in the object store, or no decoder
                log.error("retrieve of %s failed, object %s not sendable (%s): %s", instance.get("SOPInstanceUID"),
                          instance.get("_key"), type(exc).__name__, exc)
                yield STATUS_PENDING, _unsent(instance)
                continue
            yield STATUS_PENDING, dataset


#: What a request can fail with before its first match: a refusal, a value its key cannot
#: take, the database gone.
_REFUSALS = (Refused, InvalidMatch, StoreError)


def _address(event) -> str | None:
    """The calling peer's IP address, for the audit trail."""
    return getattr(event.assoc.requestor, "address", None)


def _refused(service: str, event, exc: Exception, unavailable: int) -> Dataset:
    """The failure status for ``exc`` (``unavailable`` when the database is), logged."""
    requestor = event.assoc.requestor.ae_title
    if isinstance(exc, StoreError):
        log.error("%s from %s failed, database unavailable: %s", service, requestor, exc)
        return dimse_status(unavailable, "database unavailable, retry later")
    log.warning("%s from %s refused: %s", service, requestor, exc)
    return dimse_status(exc.status if isinstance(exc, Refused) else STATUS_IDENTIFIER_MISMATCH, str(exc))


def error_comment(text: str) -> str:
    """An Error Comment value (LO): at most 64 printable ASCII characters, no backslash."""
    clean = "".join(c if 32 <= ord(c) < 127 and c != "\\" else "?" for c in text)
    return clean[:64]


def dimse_status(code: int, comment: str | None = None) -> Dataset:
    """A status with its Error Comment, for any DIMSE response (C-STORE's too)."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = error_comment(comment)
    return ds
