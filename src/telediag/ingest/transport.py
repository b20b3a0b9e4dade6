"""Transport tuning for pynetdicom acceptors: no Nagle stall, no polling latency.

A C-STORE from a stock sender is a strict request/response exchange: the cart sends an
object, waits for the status, then sends the next. Every millisecond the receiver adds
between "last byte in" and "status out" is lost throughput, and pynetdicom adds two kinds:

The Nagle / delayed-ACK stall
    A stock sender (dcmtk ``storescu``, most carts) writes a P-DATA PDU as a header
    write followed by the body, and leaves Nagle's algorithm on. Whenever the tail of a
    message is a small segment, Nagle holds it until the previous segment is ACKed, and
    a Linux receiver in its default *delayed ACK* mode waits up to 40 ms before ACKing:
    one or more ~40 ms stalls per object on some kernels. ``TCP_QUICKACK`` makes Linux
    ACK at once, but the kernel drops back to delayed ACKs by itself, so
    :class:`QuickAckSocket` re-arms it before every ``recv``. ``TCP_NODELAY`` keeps the
    SCP's own small responses from being held back either.

Polling reactors
    pynetdicom runs two threads per association and both poll: the DUL thread sleeps
    1 ms whenever a loop found nothing to do (then checks the socket with a zero-timeout
    ``select``), and the association thread sleeps 1 ms before every look at its message
    queue. An object therefore waits on average about half a millisecond for the DUL to
    notice it, another half for the association thread to pick it up, and another for the
    DUL to send the response: about 1.5 ms of a 3 ms exchange. :func:`install_prompt_reactor`
    makes both threads wait on the things they wait for instead - the DUL on the socket
    *or* on a wake-up pipe written whenever the association queues a PDU to send, the
    association thread on an event set whenever the DUL queues a message or a primitive
    for it - and both still wake at least every :data:`IDLE_WAKE_S` for their timers and
    kill flags, so pynetdicom's timeouts, release and abort handling work as before.

Both are installed on ``EVT_CONN_OPEN`` (:func:`tune_acceptor`), which pynetdicom fires in
the accepting thread before the association's threads start, so the swapped queues and
methods are in place before anyone uses them. Only plain TCP sockets on platforms with
the needed calls are tuned; TLS associations keep pynetdicom's own behaviour (``select``
on the raw descriptor cannot see data already decrypted into the SSL buffer).

The association loop in :func:`_prompt_association_reactor` follows pynetdicom 3.0's
``Association._run_reactor`` (MIT licence) step for step, except for the wait; the
pynetdicom version is pinned below 3.1 in ``pyproject.toml`` because it relies on those
internals, and :func:`install_prompt_reactor` leaves an association untouched when they
are not as expected.
"""

from __future__ import annotations

import logging
import queue
from select import select as wait_readable
import socket
import threading
import types
import weakref
from typing import Any, Callable

from pynetdicom import evt

log = logging.getLogger(__name__)

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

#: Longest either reactor thread waits without an event: bounds how late a kill flag,
#: the ARTIM timer or the network idle timeout is noticed (pynetdicom polls every 1 ms).
IDLE_WAKE_S = 0.01


class QuickAckSocket(socket.socket):
    """A TCP socket that re-arms ``TCP_QUICKACK`` before every ``recv`` (see module doc).

    The cost is one ``setsockopt`` per ``recv`` (pynetdicom reads 4 KiB at a time), well
    under a microsecond each.
    """

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        try:
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass
        return super().recv(bufsize, flags)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        try:
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass
        return super().recv_into(buffer, nbytes, flags)

    @classmethod
    def take_over(cls, sock: socket.socket) -> "QuickAckSocket":
        """Move ``sock``'s descriptor into a new QuickAckSocket; ``sock`` is left detached
        (so it no longer owns, or closes, the descriptor)."""
        timeout = sock.gettimeout()
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.settimeout(timeout)
        return new


def _plain_tcp_socket(assoc: Any) -> socket.socket | None:
    """The accepted socket of an acceptor ``assoc`` if it is plain TCP (not TLS)."""
    raw = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    return raw if isinstance(raw, socket.socket) and type(raw) in (socket.socket, QuickAckSocket) else None


def install_quick_ack(assoc: Any) -> bool:
    """Set TCP_NODELAY and swap the accepted socket for a :class:`QuickAckSocket`.

    Must run before the association's threads start (``EVT_CONN_OPEN``). Returns whether
    the socket was replaced (not on TLS, not without ``TCP_QUICKACK``).
    """
    raw = _plain_tcp_socket(assoc)
    if raw is None:
        return False
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    if _TCP_QUICKACK is None or type(raw) is not socket.socket:
        return False
    assoc.dul.socket.socket = QuickAckSocket.take_over(raw)
    return True


class _NotifyingQueue(queue.Queue):
    """A ``queue.Queue`` that calls ``notify`` after every ``put``: how a reactor thread
    learns that the other one left it work, without polling."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class _WakePipe:
    """A socket pair the DUL thread can ``select`` on beside the peer's socket."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def signal(self) -> None:
        try:
            self.writer.send(b"\0")
        except (BlockingIOError, OSError):  # already full of wake-ups, or closing
            pass

    def drain(self) -> None:
        try:
            while self.reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def install_prompt_reactor(assoc: Any) -> bool:
    """Replace the polling sleeps of an acceptor ``assoc``'s two threads by event waits.

    Must run before the association's threads start (``EVT_CONN_OPEN``). Returns whether
    it was installed (plain TCP and the expected pynetdicom internals only).
    """
    dul, dimse = getattr(assoc, "dul", None), getattr(assoc, "dimse", None)
    needed = (hasattr(dul, "_run_loop_delay") and hasattr(dul, "_is_transport_event")
              and hasattr(dul, "event_queue") and hasattr(dimse, "msg_queue") and hasattr(assoc, "_run_reactor")
              and hasattr(assoc, "_reactor_checkpoint"))
    if not needed or _plain_tcp_socket(assoc) is None:
        return False

    # Association thread: woken by whatever the DUL hands it.
    arrived = threading.Event()
    dimse.msg_queue = _NotifyingQueue(arrived.set)
    dul.to_user_queue = _NotifyingQueue(arrived.set)
    assoc._run_reactor = types.MethodType(
        lambda self: _prompt_association_reactor(self, arrived), assoc)

    # DUL thread: woken by the peer's socket or by a PDU queued for sending.
    pipe = _WakePipe()
    weakref.finalize(assoc, pipe.close)
    dul.to_provider_queue = _NotifyingQueue(pipe.signal)
    stock_transport_event = dul._is_transport_event

    def transport_event() -> bool:
        if dul.event_queue.empty() and dul.to_provider_queue.empty():
            raw = getattr(dul.socket, "socket", None)
            try:
                wait_readable([raw, pipe.reader], [], [], IDLE_WAKE_S)
            except (OSError, TypeError, ValueError):  # socket closed: pynetdicom winds down; no busy loop
                wait_readable([pipe.reader], [], [], IDLE_WAKE_S)
            pipe.drain()
        return stock_transport_event()

    dul._is_transport_event = transport_event
    dul._run_loop_delay = 0  # the wait above replaces the DUL's idle sleep
    return True


def _prompt_association_reactor(assoc: Any, arrived: threading.Event) -> None:
    """pynetdicom 3.0's acceptor loop (``Association._run_reactor``), waiting on ``arrived``
    instead of sleeping 1 ms before each look at the message queue.

    ``arrived`` is cleared before the queues are read, so a message queued while this
    loop handles another is seen on the next turn without waiting.
    """
    assoc._is_paused = False
    while not assoc._kill:
        arrived.wait(IDLE_WAKE_S)
        arrived.clear()

        # Paused by a local release()/abort() so the reactor does not steal their replies.
        assoc._is_paused = True
        assoc._reactor_checkpoint.wait()
        assoc._is_paused = False

        context_id, msg = assoc.dimse.get_msg(block=False)
        if msg:
            assoc._serve_request(msg, context_id)

        if assoc.is_established and assoc.acse.is_release_requested():
            assoc.acse.send_release(is_response=True)
            log.debug("association released by the peer")
            assoc.is_released = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_RELEASED, {})
            assoc.kill()
            return

        if assoc.acse.is_aborted():
            log.debug("association aborted")
            assoc.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for subscribers
            assoc.is_aborted = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_ABORTED, {})
            assoc.kill()
            return

        if not assoc.dul.is_alive():
            assoc.kill()
            return

        if assoc.dul.idle_timer_expired():
            log.error("DICOM network timeout reached")
            if assoc.network_timeout_response == "A-RELEASE":
                assoc._is_paused = True
                assoc._reactor_checkpoint.wait()
                assoc.release()
                assoc._is_paused = False
            else:
                assoc.abort()
            assoc.kill()
            return


def tune_acceptor(assoc: Any) -> None:
    """``EVT_CONN_OPEN`` handler body: quick ACKs, no Nagle on replies, no polling."""
    install_quick_ack(assoc)
    install_prompt_reactor(assoc)
