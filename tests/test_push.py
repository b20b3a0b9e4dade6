"""Alarms pushed over real connections: MQTT (Mosquitto), webhooks (a loopback HTTP server),
escalation, and a crash between the analysis commit and the push.

Every alarm here comes from real analysis of an uploaded ECG with a 4-second pause
(``alarm_fixtures.pause_ecg``): upload -> analysis -> alarm rows and outbox deliveries in
one transaction -> ``deliver_alarms`` on the broker -> channel.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from alarm_fixtures import MQTT_URL, MqttSubscriber, WebhookReceiver, normal_ecg, pause_ecg, require_mosquitto
from conftest import register_network, send_concurrently
from services import (LOOPBACK, PAUSED_LAUNCHER, ProcessGroup, RedisDb, TelediagProcess, free_port, telediag_env,
                      wait_until)
from telediag.bootstrap import System
from telediag.config import Settings
from telediag.domain import PushChannel
from telediag.network import add_device, add_site, list_sites, set_site_webhook
from telediag.push import DeliveryRunner, MqttChannel, PushSweeper
from telediag.store import Database
from telediag.store.tables import Alarm, AlarmEvent, Delivery, Job
from telediag.web import BackgroundServer

pytest_plugins = ["services"]


@dataclass
class Pushing:
    """An embedded system with MQTT, its API on loopback, and the test network's site ids."""

    system: System
    base: str
    api_key: str
    sites: dict[str, int]

    def upload(self, data: bytes, **form: str) -> dict[str, Any]:
        resp = httpx.post(f"{self.base}/api/v1/ecg", headers={"X-API-Key": self.api_key},
                          files=[("files", ("ecg.dcm", data))], data=form, timeout=30)
        assert resp.status_code == 201, resp.text
        return resp.json()["objects"][0]

    def alarms_of(self, case_id: int, timeout: float = 30) -> list[dict[str, Any]]:
        """The alarms of a case once it is analysed (they commit with the analysis, so none is late)."""
        headers = {"X-API-Key": self.api_key}
        wait_until(lambda: httpx.get(f"{self.base}/api/v1/cases/{case_id}", headers=headers,
                                     timeout=10).json()["status"] != "received", timeout, f"case {case_id} analysed")
        return [a for a in httpx.get(f"{self.base}/api/v1/alarms", headers=headers, timeout=10).json()
                if a["case_id"] == case_id]


def _pushing(tmp_path: Path, **settings: Any) -> Iterator[Pushing]:
    require_mosquitto()
    system = System(Settings(data_dir=tmp_path / "data", mqtt_url=MQTT_URL, push_retry_base_s=0.2,
                             **settings))
    network = register_network(system)
    workers = [system.worker(threads=1), system.push_worker()]
    for w in workers:
        w.start()
    port = free_port()
    server = BackgroundServer(system, LOOPBACK, port)
    server.start()
    sites = {s.name: s.id for s in list_sites(system.db)}
    try:
        yield Pushing(system, f"http://{LOOPBACK}:{port}", network.api_key, sites)
    finally:
        server.stop()
        for w in workers:
            w.stop()
        system.close()


@pytest.fixture
def pushing(tmp_path: Path) -> Iterator[Pushing]:
    yield from _pushing(tmp_path)


def test_upload_to_mqtt_on_the_clinics_topic_and_the_centers_above(pushing: Pushing) -> None:
    sites = pushing.sites
    subscriber = MqttSubscriber([sites["Township A1"], sites["County A"], sites["Prefecture Center"]])
    try:
        quiet = pushing.upload(normal_ecg())
        case = pushing.upload(pause_ecg())
        [alarm] = pushing.alarms_of(case["case_id"])
        assert (alarm["type"], alarm["severity"], alarm["site_id"]) == ("pause", "critical", sites["Township A1"])
        assert pushing.alarms_of(quiet["case_id"]) == []
        got = wait_until(lambda: len(subscriber.received(alarm)) == 3 and subscriber.received(alarm), 15,
                         "the alarm on the three topics")
        assert sorted(topic for topic, _ in got) == sorted(
            f"telediag/sites/{sites[n]}/alarms" for n in ("Township A1", "County A", "Prefecture Center"))
        for topic, message in got:
            assert message["kind"] == "alarm" and message["to_site_id"] == int(topic.split("/")[2])
            expected = {"alarm_id": alarm["id"], **{k: alarm[k] for k in (
                "case_id", "site_id", "type", "severity", "text", "text_zh", "raised_at")}}
            assert {k: message[k] for k in expected} == expected
        assert "长RR间期" in got[0][1]["text_zh"]
        # the case is now first in the review queue, and who was notified is on record
        case_view = httpx.get(f"{pushing.base}/api/v1/cases/{case['case_id']}",
                              headers={"X-API-Key": pushing.api_key}, timeout=10).json()
        assert case_view["priority"] == "critical"
        detail = httpx.get(f"{pushing.base}/api/v1/alarms/{alarm['id']}", headers={"X-API-Key": pushing.api_key},
                           timeout=10).json()
        assert sorted((n["channel"], n["site_id"]) for n in detail["notified"]) == sorted(
            ("mqtt", sites[n]) for n in ("Township A1", "County A", "Prefecture Center"))
    finally:
        subscriber.close()


def test_webhook_is_signed_and_retried_after_failing_twice(pushing: Pushing) -> None:
    receiver = WebhookReceiver(fail_first=2)
    try:
        secret = set_site_webhook(pushing.system.db, "County A", receiver.url, "s3cret-county")
        assert secret == "s3cret-county"
        case = pushing.upload(pause_ecg())
        [alarm] = pushing.alarms_of(case["case_id"])
        wait_until(lambda: len(receiver.requests) >= 3, 15, "three webhook requests")
        time.sleep(0.5)
        assert len(receiver.requests) == 3, "no request after the successful one"
        bodies = {body for _, body in receiver.requests}
        assert len(bodies) == 1, "every attempt sends the same bytes"
        for headers, body in receiver.requests:
            assert WebhookReceiver.verify("s3cret-county", headers, body)
            assert not WebhookReceiver.verify("wrong", headers, body)
        payload = json.loads(receiver.requests[-1][1])
        assert payload["alarm_id"] == alarm["id"] and payload["to_site_id"] == pushing.sites["County A"]
        detail = httpx.get(f"{pushing.base}/api/v1/alarms/{alarm['id']}", headers={"X-API-Key": pushing.api_key},
                           timeout=10).json()
        [hook] = [d for d in detail["deliveries"] if d["channel"] == "webhook"]
        assert hook["state"] == "sent" and hook["site_id"] == pushing.sites["County A"]
        assert [(a["ok"], a["status_code"]) for a in hook["attempts"]] == [(False, 500), (False, 500), (True, 204)]
    finally:
        receiver.close()


@pytest.fixture
def escalating(tmp_path: Path) -> Iterator[Pushing]:
    yield from _pushing(tmp_path, escalate_county_s=1.0, escalate_prefecture_s=2.0, push_sweep_interval_s=0.2)


def test_unacknowledged_critical_alarm_escalates_and_an_acknowledged_one_does_not(escalating: Pushing) -> None:
    sites = escalating.sites
    subscriber = MqttSubscriber([sites["Township A1"], sites["County A"], sites["Prefecture Center"]])
    sweeper = escalating.system.push_sweeper()
    sweeper.start()
    try:
        ignored = escalating.upload(pause_ecg(seed=1))
        answered = escalating.upload(pause_ecg(seed=2))
        [a_ignored] = escalating.alarms_of(ignored["case_id"])
        [a_answered] = escalating.alarms_of(answered["case_id"])
        ack = httpx.post(f"{escalating.base}/api/v1/alarms/{a_answered['id']}/ack",
                         headers={"X-API-Key": escalating.api_key}, timeout=10)
        assert ack.status_code == 200 and ack.json()["state"] == "acknowledged"
        assert ack.json()["acknowledged_by"] == "device:cart-a1" and ack.json()["acknowledged_at"]

        def escalated_twice() -> list:
            got = subscriber.received(a_ignored, "escalation")
            return got if len(got) == 2 else []

        got = wait_until(escalated_twice, 15, "two escalations of the unacknowledged alarm")
        assert sorted((m["escalation_level"], t) for t, m in got) == [
            (1, f"telediag/sites/{sites['County A']}/alarms"),
            (2, f"telediag/sites/{sites['Prefecture Center']}/alarms")]
        assert {m["escalated_to_site_id"] for _, m in got} == {sites["County A"], sites["Prefecture Center"]}
        time.sleep(1.0)  # well past both escalation times for the acknowledged one too
        assert subscriber.received(a_answered, "escalation") == []
        assert len(subscriber.received(a_answered, "ack")) == 3  # the clinic and both centers hear of it
        listed = httpx.get(f"{escalating.base}/api/v1/alarms", params={"state": "open"},
                           headers={"X-API-Key": escalating.api_key}, timeout=10).json()
        assert [(a["id"], a["escalation_level"]) for a in listed] == [(a_ignored["id"], 2)]
    finally:
        sweeper.stop()
        subscriber.close()


# -- PostgreSQL: the delivery outbox under concurrency, and a crash between commit and push -------
@pytest.mark.services
def test_two_runners_send_each_delivery_once_on_postgres(fresh_postgres_url: str, tmp_path: Path) -> None:
    require_mosquitto()
    system = System(Settings(data_dir=tmp_path, database_url=fresh_postgres_url, mqtt_url=MQTT_URL))
    network = register_network(system)
    subscriber = MqttSubscriber([network.site_id])
    channels = (PushChannel.MQTT,)
    try:
        with system.db.uow() as uow:
            device = uow.devices.identity(ae_title="CART1")
        objects = [system.ingest.ingest_dicom(device, pause_ecg(seed=s)) for s in range(20)]
        delivery_ids: list[int] = []
        with system.db.uow() as uow:
            for o in objects:
                _, ids = uow.alarms.record(o.case_id, o.object_id, [
                    {"type": "pause", "severity": "critical", "start_s": 1.0, "end_s": 5.0, "text": "Pause",
                     "text_zh": "长RR间期", "evidence": {}}], channels)
                delivery_ids += ids
            uow.commit()
        runners = [DeliveryRunner(system.db, {PushChannel.MQTT: MqttChannel(MQTT_URL)}) for _ in range(2)]
        _, errors = send_concurrently(lambda runner: runner.deliver(delivery_ids), runners)
        assert not errors
        with system.db.uow() as uow:
            alarms = [a for a in uow.alarms.list({network.site_id})]
            assert uow.session.scalar(select(func.count()).select_from(Delivery)
                                      .where(Delivery.state == "sent")) == len(delivery_ids) == 3 * 20
        mine = lambda: [m for a in alarms for m in subscriber.received(  # noqa: E731
            {"id": a.id, "raised_at": a.raised_at.isoformat()})]
        wait_until(lambda: len(mine()) >= 20, 15, "the 20 alarms on the clinic's topic")
        time.sleep(0.5)
        assert len(mine()) == 20, "each delivery to the clinic sent once"
        for r in runners:
            r.close()
    finally:
        subscriber.close()
        system.close()


@pytest.mark.services
def test_kill_between_analysis_commit_and_push_loses_and_duplicates_nothing(
        fresh_postgres_url: str, redis_db: RedisDb, procs: ProcessGroup, tmp_path: Path) -> None:
    require_mosquitto()
    db = Database(fresh_postgres_url)
    db.migrate()
    add_site(db, "Prefecture", "prefecture")
    add_site(db, "County", "county", "Prefecture")
    township = add_site(db, "Township", "township", "County")
    _, api_key = add_device(db, "cart-1", "Township", "CART1")
    env = telediag_env(database_url=fresh_postgres_url, broker_url=redis_db.url, data_dir=tmp_path / "data",
                       mqtt_url=MQTT_URL, push_pending_grace_s=1, push_sweep_interval_s=0.3)
    subscriber = MqttSubscriber([township])
    marker = tmp_path / "paused-before-push"
    try:
        api, port = procs.api(env)
        paused = TelediagProcess("worker-paused", ["worker", "--threads", "1"], env,
                                 procs.log_dir / "worker-paused.log", (str(PAUSED_LAUNCHER), "_publish_deliveries", str(marker)))
        procs.processes.append(paused)
        resp = httpx.post(f"http://{LOOPBACK}:{port}/api/v1/ecg", headers={"X-API-Key": api_key},
                          files=[("files", ("ecg.dcm", pause_ecg()))], timeout=30)
        assert resp.status_code == 201, resp.text
        wait_until(marker.exists, 60, "the worker to pause after the analysis commit",
                   on_timeout=lambda: "\n" + paused.log_tail())
        paused.kill()  # SIGKILL after the commit, before any push

        with db.uow() as uow:
            [alarm] = [(a.id, a.raised_at) for a in uow.session.scalars(select(Alarm))]
            states = list(uow.session.scalars(select(Delivery.state)))
            assert uow.session.scalar(select(Job.state)).value == "done"
        assert states == ["pending"] * 3, "committed with the alarm, not yet pushed"
        key = {"id": alarm[0], "raised_at": alarm[1].isoformat()}
        time.sleep(0.3)
        assert subscriber.received(key) == []

        procs.worker(env)  # a fresh worker, and the API's push sweeper, take it from there
        wait_until(lambda: subscriber.received(key), 20, "the alarm on MQTT after the crash")
        time.sleep(2.0)  # several more sweeps: nothing is sent again
        assert len(subscriber.received(key)) == 1
        with db.uow() as uow:
            assert uow.session.scalar(select(func.count()).select_from(Alarm)) == 1
            assert uow.session.scalar(select(func.count()).select_from(AlarmEvent)) == 1
            assert sorted(uow.session.scalars(select(Delivery.state))) == ["sent"] * 3
            assert list(uow.session.scalars(select(Delivery.attempts))) == [1, 1, 1]
        api.wait_log(r"push sweeper re-sends 3 deliver", timeout=5)
    finally:
        subscriber.close()
        db.dispose()


@pytest.mark.services
def test_two_push_sweepers_escalate_each_alarm_once_per_level_on_postgres(fresh_postgres_url: str,
                                                                          tmp_path: Path) -> None:
    system = System(Settings(data_dir=tmp_path, database_url=fresh_postgres_url))
    register_network(system)
    with system.db.uow() as uow:
        device = uow.devices.identity(ae_title="CART1")
    objects = [system.ingest.ingest_dicom(device, normal_ecg()) for _ in range(10)]
    with system.db.uow() as uow:
        for o in objects:
            uow.alarms.record(o.case_id, o.object_id, [
                {"type": "asystole", "severity": "critical", "start_s": 1.0, "end_s": 6.0, "text": "Asystole",
                 "text_zh": "心脏停搏", "evidence": {}}], (PushChannel.WEBHOOK,))
        uow.commit()
    announced: list = []
    sweepers = [PushSweeper(system.db, lambda ids: None, announced.append, channels=(PushChannel.WEBHOOK,),
                            escalate_after_s={1: 0.0, 2: 0.0}) for _ in range(2)]
    _, errors = send_concurrently(lambda sweeper: sweeper.sweep(), sweepers)
    assert not errors
    every_site = {site.id for site in list_sites(system.db)}
    with system.db.uow() as uow:
        kinds = list(uow.session.execute(select(AlarmEvent.alarm_id, AlarmEvent.payload)
                                         .where(AlarmEvent.kind == "escalation")))
        levels = sorted((alarm_id, payload["escalation_level"]) for alarm_id, payload in kinds)
        assert levels == sorted((a.id, level) for a in uow.alarms.list(every_site) for level in (1, 2))
    assert sum(len(e.event_ids) for e in announced) == 20
    system.close()
