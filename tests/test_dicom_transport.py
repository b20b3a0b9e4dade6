"""``dicom_transport``: tuned pynetdicom acceptors still behave as pynetdicom's own.

The event-driven reactors replace pynetdicom's polling loops, so everything those loops
did must still happen: answer every request, release, notice a peer's abort or a closed
connection, and drop a silent peer after the network timeout. Each test runs a bare
pynetdicom SCP with :func:`tune_acceptor` on ``EVT_CONN_OPEN`` and a pynetdicom SCU over
loopback.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from telediag.ingest.transport import QuickAckSocket, install_prompt_reactor, install_quick_ack

from conftest import wait_for

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass
class TunedServer:
    """A bare SCP whose accepted associations are tuned; records what it saw."""

    port: int = 0
    server: Any = None
    tuned: list[tuple[bool, bool]] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_conn_open(self, event) -> None:
        quick, prompt = install_quick_ack(event.assoc), install_prompt_reactor(event.assoc)
        with self.lock:
            self.tuned.append((quick, prompt))

    def on_store(self, event) -> int:
        with self.lock:
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    @property
    def active(self) -> int:
        return len(self.server.active_associations)


@pytest.fixture
def server() -> Iterator[TunedServer]:
    ts = TunedServer()
    ae = AE(ae_title="TUNED")
    ae.network_timeout = 1.0  # a silent peer is dropped after 1 s (see the test below)
    ae.add_supported_context(Verification)
    ae.add_supported_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    ts.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_CONN_OPEN, ts.on_conn_open), (evt.EVT_C_STORE, ts.on_store)])
    ts.port = ts.server.server_address[1]
    try:
        yield ts
    finally:
        ts.server.shutdown()


def _associate(port: int):
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(Verification)
    ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="TUNED")
    assert assoc.is_established
    return assoc


def _image(size: int = 64) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(256)) * (size * size // 256)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_tuned_association_answers_every_request_and_releases(server: TunedServer) -> None:
    assoc = _associate(server.port)
    sent = []
    for _ in range(40):
        ds = _image()
        sent.append(ds.SOPInstanceUID)
        status = assoc.send_c_store(ds)
        assert status.Status == 0x0000
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert assoc.is_released
    assert server.tuned == [(True, True)]
    assert server.stored == sent
    wait_for(lambda: server.active == 0, timeout=5)


def test_accepted_socket_is_the_quick_ack_socket(server: TunedServer) -> None:
    assoc = _associate(server.port)
    try:
        accepted = server.server.active_associations[0]
        raw = accepted.dul.socket.socket
        assert type(raw) is QuickAckSocket
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        assoc.release()


def test_peer_abort_ends_the_association(server: TunedServer) -> None:
    assoc = _associate(server.port)
    assert assoc.send_c_echo().Status == 0x0000
    assoc.abort()
    wait_for(lambda: server.active == 0, timeout=5)


def test_closed_connection_ends_the_association(server: TunedServer) -> None:
    assoc = _associate(server.port)
    assert assoc.send_c_echo().Status == 0x0000
    raw = assoc.dul.socket.socket
    raw.shutdown(socket.SHUT_RDWR)  # the cart loses power: no release, no abort
    wait_for(lambda: server.active == 0, timeout=5)
    assoc.abort()


def test_silent_peer_is_dropped_after_the_network_timeout(server: TunedServer) -> None:
    assoc = _associate(server.port)
    started = time.monotonic()
    wait_for(lambda: server.active == 0, timeout=10)
    assert time.monotonic() - started >= 0.9  # not before the 1 s timeout
    wait_for(lambda: not assoc.is_established, timeout=5)


def test_concurrent_associations_are_each_answered(server: TunedServer) -> None:
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            assoc = _associate(server.port)
            for _ in range(n):
                assert assoc.send_c_store(_image()).Status == 0x0000
            assoc.release()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(15,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(server.stored) == 60 and len(set(server.stored)) == 60
    assert server.tuned == [(True, True)] * 4
    wait_for(lambda: server.active == 0, timeout=5)
