"""Signed reports pushed to the clinic that sent the exam, over real connections: the SSE stream
(the clinic page's and a cart's), MQTT (Mosquitto), a signed webhook (a loopback HTTP server);
amendments pushed again; a push orphaned by a crash re-sent by the push sweeper; and the
clinic's acknowledgement, recorded once, audited and pushed up the chain.

Every report here is signed through the API after real analysis of an uploaded ECG:
sign -> report row, ``report`` event and outbox deliveries in one transaction -> the bus ->
``deliver_alarms`` on the broker -> channel.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from alarm_fixtures import (MQTT_HOST, MQTT_PORT, MQTT_URL, MqttSubscriber, SseClient, WebhookReceiver, normal_ecg,
                            require_mosquitto)
from review_fixtures import ReviewWorld, build_world
from services import LOOPBACK, free_port, port_open, wait_until
from telediag.bootstrap import System
from telediag.config import Settings
from telediag.network import list_sites, set_site_webhook
from telediag.store.tables import AlarmEvent, Delivery
from telediag.web import BackgroundServer

pytest_plugins = ["services"]

PAYLOAD_KEYS = {"kind", "event_id", "case_id", "site_id", "version", "replaces", "sha256", "signed_by", "signed_at",
                "pdf"}


class PushWorld(ReviewWorld):
    sites: dict[str, int]

    def signed_case(self, conclusion: str | None = None) -> tuple[int, dict[str, Any]]:
        """Upload from cart-a1, let it be analysed, and have ``ra`` claim, draft and sign it.
        The conclusion is unique, so the digest tells this run's report from another's on a
        shared Mosquitto."""
        case_id = self.upload(normal_ecg())
        self.analysed(case_id)
        base = f"/api/v1/cases/{case_id}"
        proposal = self.call("GET", f"{base}/report", user="ra").json()
        assert self.call("POST", f"{base}/claim", user="ra").status_code == 200
        body = {"statements": proposal["statements"], "conclusion": conclusion or f"窦性心律。{uuid.uuid4()}"}
        assert self.call("PUT", f"{base}/report", user="ra", json=body).status_code == 200
        signed = self.call("POST", f"{base}/report/sign", user="ra")
        assert signed.status_code == 200, signed.text
        return case_id, signed.json()

    def amend(self, case_id: int) -> dict[str, Any]:
        base = f"/api/v1/cases/{case_id}"
        assert self.call("POST", f"{base}/claim", user="ra").status_code == 200
        current = self.call("GET", f"{base}/report", user="ra").json()
        amended = self.call("POST", f"{base}/report/amend", user="ra",
                            json={"statements": current["statements"], "conclusion": f"更正。{uuid.uuid4()}",
                                  "reason": "结论更正"})
        assert amended.status_code == 200, amended.text
        return amended.json()

    def ack(self, case_id: int, user: str | None = None, key: str | None = None, **body: Any) -> httpx.Response:
        return self.call("POST", f"/api/v1/cases/{case_id}/report/ack", user=user, key=key,
                         **({"json": body} if body else {}))

    def deliveries(self, event_id: int) -> list[tuple[str, int, str]]:
        with self.system.db.uow() as uow:
            return sorted(uow.session.execute(select(Delivery.channel, Delivery.site_id, Delivery.state)
                                              .where(Delivery.event_id == event_id)).all())

    def events(self, case_id: int) -> list[tuple[str, list[int], dict[str, Any]]]:
        with self.system.db.uow() as uow:
            return [(e.kind, list(e.site_ids), dict(e.payload)) for e in uow.session.scalars(
                select(AlarmEvent).where(AlarmEvent.case_id == case_id).order_by(AlarmEvent.id))]


class UserSse(SseClient):
    """The clinic page's stream: a person's bearer token instead of a device key."""

    def __init__(self, base: str, token: str) -> None:
        self._token = token
        super().__init__(base, api_key="")

    def run(self) -> None:
        self.headers = {"Authorization": f"Bearer {self._token}"}
        super().run()


def reports(sse: SseClient, case_id: int, kind: str = "report") -> list[dict[str, Any]]:
    return [e.data for e in sse.events if e.kind == kind and e.data.get("case_id") == case_id]


def on_mqtt(subscriber: MqttSubscriber, sha256: str, kind: str = "report") -> list[tuple[str, dict[str, Any]]]:
    with subscriber._lock:
        return [(t, m) for t, m, _ in subscriber.messages if m.get("sha256") == sha256 and m.get("kind") == kind]


def _world(tmp_path: Path, **overrides: Any) -> Iterator[PushWorld]:
    mqtt = MQTT_URL if port_open(int(MQTT_PORT), MQTT_HOST) else None
    settings = replace(Settings(data_dir=tmp_path / "data"), secure_cookies=False, mqtt_url=mqtt,
                       push_retry_base_s=0.2, push_pending_grace_s=0.5, push_sweep_interval_s=0.2, **overrides)
    system = System(settings)
    keys = build_world(system)
    workers = [system.worker(threads=1), system.push_worker()]
    for w in workers:
        w.start()
    server = BackgroundServer(system, LOOPBACK, free_port())
    server.start()
    w = PushWorld(system, f"http://{LOOPBACK}:{server._server.config.port}", keys)
    w.sites = {s.name: s.id for s in list_sites(system.db)}
    try:
        yield w
    finally:
        server.stop()
        for worker in workers:
            worker.stop()
        system.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[PushWorld]:
    """The review world with the push stage running: MQTT when Mosquitto is up, the push
    queue's worker, short retry and sweep times (the sweeper is started by the test needing it)."""
    yield from _world(tmp_path)


def test_a_signed_report_reaches_its_clinic_on_sse_mqtt_and_the_signed_webhook(world: PushWorld) -> None:
    require_mosquitto()
    w, sites = world, world.sites
    receiver = WebhookReceiver()
    subscriber = MqttSubscriber([sites["Township A1"], sites["County A"], sites["Township A2"]])
    set_site_webhook(w.system.db, "Township A1", receiver.url, "s3cret-clinic")
    cart = SseClient(w.base, w.keys["cart-a1"])
    page = UserSse(w.base, w.token("c1"))
    other = SseClient(w.base, w.keys["cart-a2"])  # another township hears nothing of it
    try:
        case_id, signed = w.signed_case()
        [event] = wait_until(lambda: reports(cart, case_id), 10, "the report on the cart's stream")
        assert set(event) == PAYLOAD_KEYS
        assert event == {"kind": "report", "event_id": event["event_id"], "case_id": case_id,
                         "site_id": sites["Township A1"], "version": 1, "replaces": None, "sha256": signed["sha256"],
                         "signed_by": "ra", "signed_at": signed["signed_at"],
                         "pdf": f"/api/v1/cases/{case_id}/report.pdf"}
        assert [e.id for e in cart.events if e.kind == "report"] == [event["event_id"]]  # SSE id = event id
        assert wait_until(lambda: reports(page, case_id), 10, "the report on the clinic page's stream") == [event]

        # MQTT: on the clinic's topic only, QoS 1, the same payload plus the addressee
        [(topic, message)] = wait_until(lambda: on_mqtt(subscriber, signed["sha256"]), 10, "the report on MQTT")
        assert topic == f"telediag/sites/{sites['Township A1']}/alarms"
        assert message == {**event, "to_site_id": sites["Township A1"]}

        # the webhook: one POST, signed with the clinic's secret, the same bytes MQTT carried
        wait_until(lambda: receiver.requests, 10, "the report on the clinic's webhook")
        [(headers, body)] = receiver.requests
        assert WebhookReceiver.verify("s3cret-clinic", headers, body)
        assert headers["x-telediag-event"] == "report"
        assert json.loads(body) == message

        # no patient data travels: only ids (the patient's key is in the case, not in the push)
        patient = w.call("GET", f"/api/v1/cases/{case_id}", user="c1").json()["patient"]
        assert patient["patient_key"] and patient["patient_key"] not in body.decode()
        # the link works for the clinic
        pdf = w.call("GET", event["pdf"], key=w.keys["cart-a1"])
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"

        wait_until(lambda: {s for _, _, s in w.deliveries(event["event_id"])} == {"sent"}, 10, "deliveries sent")
        assert [(c, s) for c, s, _ in w.deliveries(event["event_id"])] == [
            ("mqtt", sites["Township A1"]), ("webhook", sites["Township A1"])]
        time.sleep(0.5)
        assert len(on_mqtt(subscriber, signed["sha256"])) == 1 and len(receiver.requests) == 1
        assert not any(e.kind == "report" for e in other.events)
        assert cart.error is None and page.error is None
    finally:
        for client in (cart, page, other):
            client.close()
        subscriber.close()
        receiver.close()


def test_an_amendment_is_pushed_again_and_replaces_the_first(world: PushWorld) -> None:
    w = world
    cart = SseClient(w.base, w.keys["cart-a1"])
    subscriber = MqttSubscriber([w.sites["Township A1"]]) if w.system.settings.mqtt_url else None
    try:
        case_id, first = w.signed_case()
        wait_until(lambda: reports(cart, case_id), 10, "the first version on the stream")
        second = w.amend(case_id)
        got = wait_until(lambda: len(reports(cart, case_id)) == 2 and reports(cart, case_id), 10,
                         "the amendment on the stream")
        assert [(e["version"], e["replaces"], e["sha256"]) for e in got] == [
            (1, None, first["sha256"]), (2, 1, second["sha256"])]
        assert got[0]["event_id"] < got[1]["event_id"]
        if subscriber is not None:
            [(_, message)] = wait_until(lambda: on_mqtt(subscriber, second["sha256"]), 10, "the amendment on MQTT")
            assert (message["version"], message["replaces"]) == (2, 1)
        # acknowledging the replaced version is refused; the latest one is what the clinic confirms
        stale = w.ack(case_id, user="c1", version=1)
        assert stale.status_code == 409 and "version 2" in stale.json()["detail"]
        acked = w.ack(case_id, user="c1", version=2)
        assert acked.status_code == 200 and acked.json()["version"] == 2
    finally:
        cart.close()
        if subscriber is not None:
            subscriber.close()


def test_the_clinic_acknowledges_once_and_the_centers_hear_of_it(world: PushWorld) -> None:
    w, sites = world, world.sites
    cart = SseClient(w.base, w.keys["cart-a1"])
    subscriber = MqttSubscriber([sites["Township A1"], sites["County A"], sites["Prefecture Center"]]) \
        if w.system.settings.mqtt_url else None
    try:
        case_id, signed = w.signed_case()
        report = w.call("GET", f"/api/v1/cases/{case_id}/report", user="c1").json()
        assert (report["acknowledged_by"], report["acknowledged_at"]) == (None, None)  # the page's badge

        assert w.ack(case_id, user="c2").status_code == 404                 # another township's clinic
        assert w.ack(case_id, key=w.keys["cart-a2"]).status_code == 404     # another township's cart
        assert w.ack(case_id, key=w.keys["cart-b1"]).status_code == 404     # another county's cart
        assert w.ack(case_id, user="ra").status_code == 403                 # a reader is not the clinic
        assert w.ack(case_id).status_code == 401
        assert w.ack(w.upload(normal_ecg()), user="c1").status_code == 404  # nothing signed yet

        first = w.ack(case_id, user="c1")
        assert first.status_code == 200, first.text
        ack = first.json()
        assert (ack["case_id"], ack["version"], ack["sha256"], ack["acknowledged_by"]) == (
            case_id, 1, signed["sha256"], "c1")
        assert ack["acknowledged_at"].endswith("Z")
        again = w.ack(case_id, key=w.keys["cart-a1"])  # the cart too, later: nothing changes
        assert again.status_code == 200 and again.json() == ack

        report = w.call("GET", f"/api/v1/cases/{case_id}/report", user="c1").json()
        assert (report["acknowledged_by"], report["acknowledged_at"]) == ("c1", ack["acknowledged_at"])
        assert w.call("GET", f"/api/v1/cases/{case_id}/report", user="ra").json()["acknowledged_by"] == "c1"

        entries = w.call("GET", "/api/v1/audit", user="admin", params={"case_id": case_id}).json()["entries"]
        acks = [e for e in entries if e["action"] == "acknowledge"]
        assert [(e["username"], e["role"], e["detail"]) for e in acks] == [
            ("c1", "clinic", {"version": 1, "sha256": signed["sha256"]})]

        # one report_ack event, for the clinic and both centers above it, pushed to each
        [(kind, site_ids, payload)] = [e for e in w.events(case_id) if e[0] == "report_ack"]
        chain = [sites[n] for n in ("Township A1", "County A", "Prefecture Center")]
        assert site_ids == chain
        assert {k: payload[k] for k in ("case_id", "version", "sha256", "acknowledged_by", "acknowledged_at")} == {
            "case_id": case_id, "version": 1, "sha256": signed["sha256"], "acknowledged_by": "c1",
            "acknowledged_at": ack["acknowledged_at"]}
        [streamed] = wait_until(lambda: reports(cart, case_id, "report_ack"), 10, "the ack on the clinic's stream")
        assert streamed == payload
        if subscriber is not None:
            got = wait_until(lambda: len(on_mqtt(subscriber, signed["sha256"], "report_ack")) == 3
                             and on_mqtt(subscriber, signed["sha256"], "report_ack"), 10, "the ack on three topics")
            assert sorted(t for t, _ in got) == sorted(f"telediag/sites/{s}/alarms" for s in chain)
        time.sleep(0.5)
        assert len(reports(cart, case_id, "report_ack")) == 1
    finally:
        cart.close()
        if subscriber is not None:
            subscriber.close()


def test_a_report_push_orphaned_by_a_crash_is_sent_by_the_push_sweeper(world: PushWorld) -> None:
    w = world
    receiver = WebhookReceiver()
    set_site_webhook(w.system.db, "Township A1", receiver.url, "s3cret-clinic")
    w.system.review.bus = None  # the process "dies" after the signing commit, before handing over the push
    sweeper = w.system.push_sweeper()
    try:
        case_id, signed = w.signed_case()
        [(kind, site_ids, payload)] = w.events(case_id)
        assert (kind, site_ids) == ("report", [w.sites["Township A1"]])
        time.sleep(0.3)
        assert receiver.requests == [] and {s for *_, s in w.deliveries(payload["event_id"])} == {"pending"}
        sweeper.start()
        wait_until(lambda: receiver.requests, 10, "the orphaned report sent by the sweeper")
        wait_until(lambda: {s for *_, s in w.deliveries(payload["event_id"])} == {"sent"}, 10, "deliveries sent")
        time.sleep(0.6)  # more sweeps: nothing is sent again
        [(headers, body)] = receiver.requests
        assert WebhookReceiver.verify("s3cret-clinic", headers, body)
        assert json.loads(body)["sha256"] == signed["sha256"]
    finally:
        sweeper.stop()
        receiver.close()


@pytest.mark.services
def test_on_postgres_the_report_streams_through_notify_and_the_migration_goes_both_ways(
        fresh_postgres_url: str, tmp_path: Path) -> None:
    for w in _world(tmp_path, database_url=fresh_postgres_url):
        cart = SseClient(w.base, w.keys["cart-a1"])
        try:
            case_id, signed = w.signed_case()
            [event] = wait_until(lambda: reports(cart, case_id), 10, "the report on the stream (LISTEN/NOTIFY)")
            assert (event["version"], event["sha256"]) == (1, signed["sha256"])
            assert w.ack(case_id, key=w.keys["cart-a1"]).json()["acknowledged_by"] == "device:cart-a1"
            wait_until(lambda: reports(cart, case_id, "report_ack"), 10, "the ack on the stream")
        finally:
            cart.close()
        # Down to 0004 (report events go, alarm events stay) and up again, with data in the tables.
        engine = create_engine(fresh_postgres_url, poolclass=NullPool)
        try:
            cfg = Config()
            with resources.as_file(resources.files("telediag.store.migrations")) as location:
                cfg.set_main_option("script_location", str(location))
                for run, target in ((command.downgrade, "0004"), (command.upgrade, "head")):
                    with engine.begin() as conn:
                        cfg.attributes["connection"] = conn
                        run(cfg, target)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM alarm_events WHERE alarm_id IS NULL")).scalar() == 0
                assert conn.execute(text("SELECT acknowledged_by FROM reports")).scalars().all() == [None]
        finally:
            engine.dispose()
        report = w.call("GET", f"/api/v1/cases/{case_id}/report", user="c1").json()
        assert report["sha256"] == signed["sha256"] and report["acknowledged_by"] is None
        assert report["algorithm"] == "ed25519"  # 0010 back-fills the algorithm of earlier signatures
