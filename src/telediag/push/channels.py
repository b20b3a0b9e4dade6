"""Push channels: one small adapter per way of reaching a site, behind :class:`Channel`.

An adapter sends one delivery and says how it went; it never touches the database, retries or
decides anything (the :class:`~telediag.push.runner.DeliveryRunner` does). Adding a channel is
an adapter here, its name in ``domain.PushChannel`` and its construction in ``bootstrap``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from telediag.domain import DeliveryTask, PushChannel

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Telediag-Signature"


class PushFailed(RuntimeError):
    """The receiver did not take the delivery; ``status_code`` is its HTTP answer, if any."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Channel(Protocol):
    name: PushChannel

    def send(self, task: DeliveryTask) -> int | None:
        """Deliver, or raise (:class:`PushFailed` or any error): the runner logs and retries.
        Returns the receiver's status code where the channel has one."""

    def close(self) -> None: ...


def body_of(task: DeliveryTask) -> bytes:
    """The JSON every channel sends: compact, keys sorted, UTF-8 (the signed bytes)."""
    return json.dumps(task.payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>``, the value of ``X-Telediag-Signature``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def topic_of(site_id: int) -> str:
    return f"telediag/sites/{site_id}/alarms"


@dataclass
class WebhookChannel:
    """POSTs the event's JSON (an alarm's or a report's) to the site's URL, signed with the site's
    secret; any answer but 2xx is a failure (the runner retries it with backoff)."""

    timeout_s: float = 10.0
    name: PushChannel = PushChannel.WEBHOOK

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)

    def send(self, task: DeliveryTask) -> int | None:
        if not task.webhook_url:
            raise PushFailed("the site has no webhook URL any more")
        body = body_of(task)
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "telediag",
                   "X-Telediag-Delivery": str(task.id), "X-Telediag-Event": str(task.payload.get("kind"))}
        if task.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(task.webhook_secret, body)
        resp = self._client.post(task.webhook_url, content=body, headers=headers)
        if not 200 <= resp.status_code < 300:
            raise PushFailed(f"HTTP {resp.status_code}", resp.status_code)
        return resp.status_code

    def close(self) -> None:
        self._client.close()


class MqttChannel:
    """Publishes with QoS 1 to ``telediag/sites/<site_id>/alarms`` (the site's one topic: alarms
    and reports, told apart by ``kind``) and waits for the broker's
    PUBACK, so "sent" means the MQTT broker has it. One connection per process, kept open
    and reconnected by paho's network thread."""

    name = PushChannel.MQTT

    def __init__(self, url: str, timeout_s: float = 10.0, client_id: str = "") -> None:
        import paho.mqtt.client as mqtt

        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"unsupported MQTT URL {url!r} (use mqtt://HOST:PORT)")
        self.timeout_s = timeout_s
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   clean_session=True)
        if parts.username:
            self._client.username_pw_set(parts.username, parts.password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._connected = threading.Event()
        self._client.on_connect = lambda client, userdata, flags, rc, props=None: (
            self._connected.set() if not rc.is_failure else log.warning("MQTT connection refused: %s", rc))
        self._client.on_disconnect = lambda *args: self._connected.clear()
        self._client.connect_async(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
        self._client.loop_start()

    def send(self, task: DeliveryTask) -> int | None:
        if not self._connected.wait(self.timeout_s):
            raise PushFailed("not connected to the MQTT broker")
        info = self._client.publish(topic_of(task.site_id), body_of(task), qos=1)
        info.wait_for_publish(self.timeout_s)
        if not info.is_published():
            raise PushFailed(f"MQTT publish not acknowledged (rc {info.rc})")
        return None

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
