"""Helpers of the alarm and push tests: an ECG the analysis flags, and real receivers.

- :func:`pause_ecg` - a 12-lead DICOM ECG with a 4-second pause (a critical ``pause`` under the
  resting rules, ``asystole`` under the monitoring ones), built with numpy and ``to_dicom_ecg``;
- :class:`MqttSubscriber` - a paho client on the machine's Mosquitto;
- :class:`SseClient` - an httpx stream on ``/api/v1/alarms/stream`` in a thread;
- :class:`WebhookReceiver` - a loopback HTTP server that fails the first N requests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest

from factories import ecg_dataset, part10, synthetic_ecg_uv
from services import LOOPBACK, port_open

MQTT_HOST, MQTT_PORT = os.environ.get("TELEDIAG_TEST_MQTT", "127.0.0.1:1883").split(":")
MQTT_URL = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


def require_mosquitto() -> None:
    if not port_open(int(MQTT_PORT), MQTT_HOST):
        if os.environ.get("CI"):
            pytest.fail(f"Mosquitto not reachable on {MQTT_HOST}:{MQTT_PORT} (CI must provide it)", pytrace=False)
        pytest.skip(f"Mosquitto not reachable on {MQTT_HOST}:{MQTT_PORT}")


def pause_ecg(seed: int = 3) -> bytes:
    """A sinus ECG at 72 /min whose beats stop from 3.6 to 7.6 s (noise only): a 5-s RR."""
    signal = synthetic_ecg_uv().copy()
    rng = np.random.default_rng(seed)
    a, b = 1800, 3800
    signal[a:b] = (20 * rng.standard_normal((b - a, signal.shape[1]))).astype("<i2")
    return part10(ecg_dataset(signal))


def normal_ecg() -> bytes:
    """A sinus ECG at 72 /min: no alarm."""
    return part10(ecg_dataset(synthetic_ecg_uv()))


class MqttSubscriber:
    """Subscribes (QoS 1) to the alarm topics of some sites and keeps what arrives."""

    def __init__(self, site_ids: list[int]) -> None:
        import paho.mqtt.client as mqtt

        require_mosquitto()
        self.messages: list[tuple[str, dict[str, Any], float]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        topics = [(f"telediag/sites/{sid}/alarms", 1) for sid in site_ids]
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics)
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(MQTT_HOST, int(MQTT_PORT), keepalive=30)
        self._client.loop_start()
        assert self._subscribed.wait(10), "MQTT subscription not acknowledged"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload), time.monotonic()))

    def received(self, alarm: dict[str, Any], kind: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Messages about ``alarm`` (as the API shows it). Other test runs on this Mosquitto have
        their own databases with the same small ids, so the raise time tells alarms apart."""
        with self._lock:
            return [(t, m) for t, m, _ in self.messages
                    if m.get("alarm_id") == alarm["id"] and m.get("raised_at") == alarm["raised_at"]
                    and (kind is None or m.get("kind") == kind)]

    def arrival(self, alarm: dict[str, Any], kind: str = "alarm") -> float | None:
        with self._lock:
            return next((at for t, m, at in self.messages if m.get("alarm_id") == alarm["id"]
                         and m.get("raised_at") == alarm["raised_at"] and m.get("kind") == kind), None)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass
class SseEvent:
    id: int
    kind: str
    data: dict[str, Any]
    at: float


class SseClient(threading.Thread):
    """Reads ``/api/v1/alarms/stream`` in a thread until :meth:`close`; keeps the events."""

    def __init__(self, base: str, api_key: str, last_event_id: int | None = None) -> None:
        super().__init__(daemon=True)
        self.url = f"{base}/api/v1/alarms/stream"
        self.headers = {"X-API-Key": api_key}
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = str(last_event_id)
        self.events: list[SseEvent] = []
        self.connected = threading.Event()
        self.error: BaseException | None = None
        self._closing = threading.Event()
        self._resp: httpx.Response | None = None
        self.start()
        assert self.connected.wait(10), f"SSE stream did not open: {self.error!r}"

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(5, read=None)) as resp:
                self._resp = resp
                assert resp.status_code == 200, resp.read()
                fields: dict[str, str] = {}
                for line in resp.iter_lines():
                    self.connected.set()
                    if self._closing.is_set():
                        return
                    if not line:
                        if "data" in fields:
                            self.events.append(SseEvent(int(fields["id"]), fields["event"], json.loads(fields["data"]),
                                                        time.monotonic()))
                        fields = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.lstrip(" ")
        except BaseException as exc:  # reported by the test (or the close below)
            if not self._closing.is_set():
                self.error = exc
            self.connected.set()

    def close(self) -> None:
        """Drop the connection, as a client that goes away does."""
        self._closing.set()
        if self._resp is not None:  # unblock the reading thread at once
            stream = self._resp.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        self.join(10)
        assert not self.is_alive(), "the SSE client did not stop"

    def kinds(self) -> list[tuple[str, int]]:
        return [(e.kind, e.data["alarm_id"]) for e in self.events]


@dataclass
class WebhookReceiver:
    """A loopback HTTP server answering 500 to the first ``fail_first`` POSTs, then 204."""

    fail_first: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(receiver.requests) <= receiver.fail_first else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}/hooks/telediag"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @staticmethod
    def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, headers.get("x-telediag-signature", ""))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
