"""DICOM storage SCP, an entry point: township carts and modalities push objects here with C-STORE.

Given a :class:`~telediag.ingest.query.QueryService`, the same AE also answers C-FIND, C-GET
and C-MOVE (:mod:`telediag.ingest.qr`), behind the same ``authorize`` whitelist.

It only translates between DIMSE and the ingest use case. Each received object goes to
:meth:`IngestService.ingest_dicom` exactly as received
(the encoded data set bytes from the wire, behind a Part 10 preamble and file meta;
never decoded and re-encoded) and the sender gets its C-STORE status only once ingest
returned, so ``0x0000`` means "durable and recorded".

Who may send
    Only devices registered with a calling AE title (``telediag device add --ae-title``).
    The SCP is given an ``authorize(calling_ae_title)`` callable (the network stage's
    lookup) and calls it on ``EVT_REQUESTED``, at the moment the association is requested,
    so a device registered while the SCP runs is accepted without a restart; an unknown calling AE gets A-ASSOCIATE-RJ (rejected-permanent,
    service-user, "calling AE title not recognised"), a wrong called AE title
    "called AE title not recognised".

C-STORE statuses
    ``0x0000``  stored, or a re-send of a stored object;
    ``0xB006``  warning: a different object under an already stored SOP Instance UID was
                kept in quarantine and not added to the study (Error Comment says so;
                a retry changes nothing, an administrator sees it in ``telediag quarantine list``);
    ``0xC000``  :class:`InvalidObject` (cannot understand) - the reason is in Error Comment;
    ``0xC001``  larger than ``max_object_bytes`` (checked once the object is received:
                pynetdicom assembles a data set in memory before any handler runs);
    ``0xA700``  :class:`StorageUnavailable` or any unexpected error (out of resources):
                nothing was recorded and the device should send again later.

Threads
    pynetdicom runs one thread per association and calls the handlers in it; ingest
    opens its own unit of work per call, so handlers share nothing but the
    :class:`IngestService` and the ``authorize`` callable (both thread safe).

Throughput
    A stock sender waits for each C-STORE status before sending the next object, so the
    time between the last byte in and the status out is the throughput. The accepted
    socket and pynetdicom's two reactor threads are tuned on ``EVT_CONN_OPEN`` (quick
    ACKs against the Nagle / delayed-ACK stall, event waits instead of 1 ms polling):
    see :mod:`telediag.ingest.transport`.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Callable

from pydicom import uid as ts
from pydicom.dataset import Dataset
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from telediag.domain import DeviceIdentity
from telediag.ingest.dicom import ECG_SOP_CLASSES, IMAGE_SOP_CLASSES, InvalidObject
from telediag.ingest.qr import QUERY_RETRIEVE_SOP_CLASSES, QueryRetrieveSCP, dimse_status, error_comment
from telediag.ingest.query import QueryService
from telediag.ingest.service import IngestService, StorageUnavailable
from telediag.ingest.transport import tune_acceptor
from telediag.ingest.uids import printable, uid_problem

#: Looks a calling AE title up: the registered, active device that uses it, or None.
Authorize = Callable[[str], DeviceIdentity | None]

log = logging.getLogger(__name__)

#: Transfer syntaxes accepted for waveforms (no image codec applies to a waveform).
WAVEFORM_TRANSFER_SYNTAXES: list[str] = [ts.ExplicitVRLittleEndian, ts.ImplicitVRLittleEndian,
                                           ts.DeflatedExplicitVRLittleEndian, ts.ExplicitVRBigEndian]
#: Transfer syntaxes accepted for images: uncompressed, deflated and the usual codecs.
IMAGE_TRANSFER_SYNTAXES: list[str] = WAVEFORM_TRANSFER_SYNTAXES + [
    ts.JPEGBaseline8Bit, ts.JPEGExtended12Bit, ts.JPEGLossless, ts.JPEGLosslessSV1, ts.JPEGLSLossless,
    ts.JPEGLSNearLossless, ts.JPEG2000Lossless, ts.JPEG2000, ts.RLELossless]

STATUS_SUCCESS = 0x0000
STATUS_WARNING_NOT_ADDED = 0xB006
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_TOO_LARGE = 0xC001

#: A-ASSOCIATE-RJ parameters (PS3.8 9.3.4).
_RJ_PERMANENT, _RJ_TRANSIENT = 0x01, 0x02
_RJ_SERVICE_USER, _RJ_PROVIDER_PRESENTATION = 0x01, 0x03
_RJ_CALLING_AE_NOT_RECOGNISED, _RJ_CALLED_AE_NOT_RECOGNISED = 0x03, 0x07
_RJ_TEMPORARY_CONGESTION = 0x01

#: PDU size we offer to receive. pynetdicom's default (16 KiB) cuts a 120 KB ECG into
#: 8 PDUs, each a trip through the DUL reactor; 256 KiB carries it in one
#: (dcmtk and most senders cap their own send size at 128 KiB anyway).
DEFAULT_MAX_PDU = 256 * 1024


def storage_contexts() -> list[tuple[str, list[str]]]:
    """(SOP class, transfer syntaxes) pairs the SCP accepts, besides Verification."""
    pairs = [(uid, list(WAVEFORM_TRANSFER_SYNTAXES)) for uid in ECG_SOP_CLASSES]
    pairs += [(uid, list(IMAGE_TRANSFER_SYNTAXES)) for uid in IMAGE_SOP_CLASSES]
    return pairs


@dataclass(frozen=True)
class AssociationLimits:
    """What one association may cost: PDU size we receive, how long a silent peer is kept,
    and how many carts may be connected at once."""

    max_pdu_size: int = DEFAULT_MAX_PDU
    network_timeout: float = 60.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    max_associations: int = 50


class StorageSCP:
    """pynetdicom storage SCP feeding IngestService; with ``queries``, also the query/retrieve SCP."""

    def __init__(self, ingest: IngestService, authorize: Authorize, ae_title: str = "TELEDIAG", host: str = "0.0.0.0",
                 port: int = 11112, max_object_bytes: int = 512 * 1024 * 1024, *,
                 tune_transport: bool = True, limits: AssociationLimits = AssociationLimits(),
                 queries: QueryService | None = None) -> None:
        self.ingest, self.authorize = ingest, authorize
        self.ae_title = ae_title.strip().upper()
        self.query_retrieve = None if queries is None else QueryRetrieveSCP(queries, self._device, self.ae_title)
        self.host, self.port = host, port
        self.max_object_bytes = max_object_bytes
        self.tune_transport = tune_transport
        self.limits = limits
        self._server = None
        self._stopped = threading.Event()
        self._devices: "weakref.WeakKeyDictionary[Any, DeviceIdentity]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        limits = self.limits
        ae.maximum_pdu_size = limits.max_pdu_size
        ae.network_timeout = limits.network_timeout
        ae.acse_timeout = limits.acse_timeout
        ae.dimse_timeout = limits.dimse_timeout
        ae.maximum_associations = limits.max_associations
        ae.require_called_aet = True  # second line of defence; EVT_REQUESTED checks it first
        ae.add_supported_context(Verification)
        # With query/retrieve, a C-GET requester may take the SCP role for storage (role
        # selection) and receive its matches as C-STORE sub-operations on its own association.
        retrieve = self.query_retrieve is not None
        for sop_class, syntaxes in storage_contexts():
            ae.add_supported_context(sop_class, syntaxes, scu_role=retrieve or None, scp_role=retrieve or None)
        if retrieve:
            for sop_class in QUERY_RETRIEVE_SOP_CLASSES:
                ae.add_supported_context(sop_class)
        return ae

    def start(self) -> None:
        """Start listening in background threads; return once the port is bound."""
        if self._server is not None:
            raise RuntimeError("StorageSCP already started")
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_OPEN, self._on_conn_open),
        ]
        if self.query_retrieve is not None:
            handlers += self.query_retrieve.handlers()
        ae = self._make_ae()
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self._drop_pdu_loggers(self._server)
        self.port = int(self._server.server_address[1])
        self._stopped.clear()
        log.info("DICOM storage SCP %s listening on %s:%d (transport tuning %s, query/retrieve %s)", self.ae_title,
                 self.host, self.port, "on" if self.tune_transport else "off",
                 "on" if self.query_retrieve is not None else "off")

    def stop(self) -> None:
        """Stop accepting, end running associations and close the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            for assoc in list(server.active_associations):
                assoc.abort()
            log.info("DICOM storage SCP %s stopped", self.ae_title)
        self._stopped.set()

    def serve_forever(self) -> None:
        """Start and block until :meth:`stop` is called (from another thread) or Ctrl-C."""
        self.start()
        try:
            while not self._stopped.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> "StorageSCP":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def _drop_pdu_loggers(server) -> None:
        """pynetdicom's per-PDU logging handlers format every PDU even when nobody logs at
        debug level; they cost measurable time at hundreds of objects per second."""
        from pynetdicom._handlers import standard_pdu_recv_handler, standard_pdu_sent_handler

        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            for event, handler in ((evt.EVT_PDU_RECV, standard_pdu_recv_handler),
                                   (evt.EVT_PDU_SENT, standard_pdu_sent_handler)):
                try:
                    server.unbind(event, handler)
                except Exception:  # pragma: no cover - not bound in this configuration
                    pass

    # -- event handlers ------------------------------------------------------------------
    def _on_conn_open(self, event) -> None:
        _answer_invalid_store_requests(event.assoc)
        if self.tune_transport:
            tune_acceptor(event.assoc)

    def _on_requested(self, event) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = (rq.calling_ae_title or "").strip()
        called = (rq.called_ae_title or "").strip()
        peer = assoc.requestor.address
        if called.upper() != self.ae_title:
            log.warning("association from %s rejected: called AE title %r is not %r", peer, called, self.ae_title)
            self._reject(assoc, _RJ_PERMANENT, _RJ_SERVICE_USER, _RJ_CALLED_AE_NOT_RECOGNISED)
            return
        try:
            device = self.authorize(calling) if calling else None
        except Exception as exc:  # database down: ask the device to come back later
            log.error("association from %s (%s) rejected, device lookup failed: %s", calling, peer,
                      type(exc).__name__)
            self._reject(assoc, _RJ_TRANSIENT, _RJ_PROVIDER_PRESENTATION, _RJ_TEMPORARY_CONGESTION)
            return
        if device is None:
            log.warning("association from %s rejected: calling AE title %r not recognised", peer, calling)
            self._reject(assoc, _RJ_PERMANENT, _RJ_SERVICE_USER, _RJ_CALLING_AE_NOT_RECOGNISED)
            return
        with self._lock:
            self._devices[assoc] = device
        log.info("association from device %s (AE %s, %s) accepted", device.device_id, calling, peer)

    @staticmethod
    def _reject(assoc, result: int, source: int, diagnostic: int) -> None:
        """Send A-ASSOCIATE-RJ and wait, as pynetdicom's own rejection path does, until the
        DUL has sent it and the peer closed (without ``kill`` the acceptor thread would
        close the socket before the RJ PDU went out and the peer would see an abort)."""
        assoc.acse.send_reject(result, source, diagnostic)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _device(self, assoc) -> DeviceIdentity | None:
        with self._lock:
            return self._devices.get(assoc)

    def _on_echo(self, event) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event) -> int | Dataset:
        started = time.perf_counter()
        rq = event.request
        sop_instance = str(rq.AffectedSOPInstanceUID or "?")
        sop_class = str(rq.AffectedSOPClassUID or "?")
        device = self._device(event.assoc)
        if device is None:  # cannot happen: associations are only accepted for known devices
            log.error("C-STORE of %s on an association without a device; refused", sop_instance)
            return dimse_status(STATUS_OUT_OF_RESOURCES, "association has no registered device")
        body = rq.DataSet.getvalue() if isinstance(rq.DataSet, BytesIO) else bytes(rq.DataSet or b"")
        problem = uid_problem(str(rq.AffectedSOPInstanceUID or ""))
        if problem:  # the file meta is built from it: refuse before anything else looks at it
            log.warning("C-STORE from device %s refused: Affected SOP Instance UID %r %s", device.device_id,
                        printable(str(rq.AffectedSOPInstanceUID or "")), problem)
            return dimse_status(STATUS_CANNOT_UNDERSTAND, f"Affected SOP Instance UID {problem}")
        if len(body) > self.max_object_bytes:
            log.warning("C-STORE from device %s: %s (%s) refused, %d bytes exceed the %d-byte limit",
                        device.device_id, sop_instance, sop_class, len(body), self.max_object_bytes)
            return dimse_status(STATUS_TOO_LARGE, f"object exceeds {self.max_object_bytes} bytes")
        try:
            data = self._part10(event, device, body)
            outcome = self.ingest.ingest_dicom(device, data)
        except InvalidObject as exc:
            log.warning("C-STORE from device %s: %s (%s, %d bytes) refused: %s", device.device_id, sop_instance,
                        sop_class, len(body), exc)
            return dimse_status(STATUS_CANNOT_UNDERSTAND, str(exc))
        except StorageUnavailable as exc:
            log.error("C-STORE from device %s: %s (%d bytes) not stored, storage unavailable: %s",
                      device.device_id, sop_instance, len(body), exc)
            return dimse_status(STATUS_OUT_OF_RESOURCES, "storage unavailable, retry later")
        except Exception as exc:
            log.exception("C-STORE from device %s: %s (%d bytes) failed unexpectedly (%s)", device.device_id,
                          sop_instance, len(body), type(exc).__name__)
            return dimse_status(STATUS_OUT_OF_RESOURCES, "internal error, retry later")
        log.info("C-STORE from device %s: %s (%s, ts %s, %d bytes) %s as object %s case %s in %.1f ms",
                 device.device_id, sop_instance, sop_class, event.context.transfer_syntax, len(body),
                 outcome.status, outcome.object_id, outcome.case_id, (time.perf_counter() - started) * 1000)
        if outcome.status == "quarantined":
            return dimse_status(STATUS_WARNING_NOT_ADDED, "differs from stored instance; quarantined")
        return STATUS_SUCCESS

    @staticmethod
    def _part10(event, device: DeviceIdentity, body: bytes) -> bytes:
        """Preamble + file meta + the data set bytes exactly as they came off the wire."""
        rq = event.request
        return part10_prefix(str(rq.AffectedSOPClassUID), str(rq.AffectedSOPInstanceUID),
                             str(event.context.transfer_syntax), device.ae_title) + body


def _answer_invalid_store_requests(assoc) -> None:
    """pynetdicom drops a C-STORE request that lacks a required parameter (an empty Affected
    SOP Instance UID decodes as absent) without answering, and the cart then waits for its
    DIMSE timeout and sends again, for ever. Answer such a request with 0xC000 and the reason.

    Installed on ``EVT_CONN_OPEN``, before the association's reactor runs; it wraps
    pynetdicom 3.0's ``Association._serve_request`` (the version is pinned, see
    :mod:`telediag.ingest.transport`)."""
    from pynetdicom.dimse_primitives import C_STORE

    serve = assoc._serve_request

    def serve_request(msg, context_id: int) -> None:
        if isinstance(msg, C_STORE) and msg.MessageID is not None and not msg.is_valid_request:
            missing = [k for k in msg.REQUEST_KEYWORDS if getattr(msg, k) is None]
            log.warning("C-STORE from %s refused: request without %s", assoc.requestor.ae_title,
                        ", ".join(missing))
            rsp = C_STORE()
            rsp.MessageIDBeingRespondedTo = msg.MessageID
            if msg.AffectedSOPClassUID is not None:
                rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
            rsp.Status = STATUS_CANNOT_UNDERSTAND
            rsp.ErrorComment = error_comment(f"request without {', '.join(missing)}")
            assoc.dimse.send_msg(rsp, context_id)
            return
        serve(msg, context_id)

    assoc._serve_request = serve_request


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian element (only the short-length VRs and OB used below)."""
    if vr == b"OB":
        return struct.pack("<HH2s2xL", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def part10_prefix(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                  source_ae_title: str | None) -> bytes:
    """The 128-byte preamble, ``DICM`` and the File Meta Information group for a received data set.

    Encoded here rather than with pydicom's ``write_file_meta_info``: the group is seven
    fixed elements, and building it through pydicom datasets cost about 1 ms per C-STORE.
    The elements are those of pynetdicom's ``Event.file_meta`` plus Source AE Title.
    """
    elements = [
        _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, 0x0002, b"UI", _padded(sop_class_uid, b"\0")),
        _element(0x0002, 0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
        _element(0x0002, 0x0010, b"UI", _padded(transfer_syntax_uid, b"\0")),
        _element(0x0002, 0x0012, b"UI", _padded(PYNETDICOM_IMPLEMENTATION_UID, b"\0")),
        _element(0x0002, 0x0013, b"SH", _padded(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
    ]
    if source_ae_title:
        elements.append(_element(0x0002, 0x0016, b"AE", _padded(source_ae_title, b" ")))
    group = b"".join(elements)
    return b"\x00" * 128 + b"DICM" + _element(0x0002, 0x0000, b"UL", struct.pack("<L", len(group))) + group
