"""The alarm API over real HTTP: the Server-Sent Events stream (with Last-Event-ID replay, and
fan-out between API processes through PostgreSQL), listing and acknowledging, who sees what,
and the critical-value rule set of a device or an upload.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from alarm_fixtures import SseClient, normal_ecg, pause_ecg
from conftest import Network, register_network
from services import LOOPBACK, free_port, run_cli, telediag_env, wait_until
from telediag.bootstrap import System
from telediag.config import Settings
from telediag.network import add_device, list_sites
from telediag.web import BackgroundServer

pytest_plugins = ["services"]


class Api:
    """An embedded system serving on loopback, with helpers for the calls of these tests."""

    def __init__(self, system: System, network: Network | None = None) -> None:
        self.system = system
        self.network = network
        self.port = free_port()
        self.server = BackgroundServer(system, LOOPBACK, self.port)
        self.server.start()
        self.base = f"http://{LOOPBACK}:{self.port}"

    def get(self, path: str, key: str, **params: Any) -> httpx.Response:
        return httpx.get(self.base + path, headers={"X-API-Key": key}, params=params, timeout=10)

    def post(self, path: str, key: str) -> httpx.Response:
        return httpx.post(self.base + path, headers={"X-API-Key": key}, timeout=10)

    def upload(self, key: str, data: bytes, **form: str) -> httpx.Response:
        return httpx.post(f"{self.base}/api/v1/ecg", headers={"X-API-Key": key},
                          files=[("files", ("ecg.dcm", data))], data=form, timeout=30)

    def alarm_of(self, key: str, data: bytes, **form: str) -> dict[str, Any]:
        """Upload an ECG and return the one alarm its analysis raised."""
        resp = self.upload(key, data, **form)
        assert resp.status_code == 201, resp.text
        case_id = resp.json()["objects"][0]["case_id"]
        found = wait_until(lambda: [a for a in self.get("/api/v1/alarms", key).json() if a["case_id"] == case_id],
                           30, f"the alarm of case {case_id}")
        assert len(found) == 1, found
        return found[0]

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    system = System(Settings(data_dir=tmp_path / "data"))
    network = register_network(system)
    worker = system.worker(threads=1)
    worker.start()
    served = Api(system, network)
    try:
        yield served
    finally:
        served.stop()
        worker.stop()
        system.close()


def _sites(system: System) -> dict[str, int]:
    return {s.name: s.id for s in list_sites(system.db)}


def test_sse_streams_alarm_and_ack_and_replays_what_a_reconnecting_client_missed(api: Api) -> None:
    key = api.network.api_key
    client = SseClient(api.base, key)
    first = api.alarm_of(key, pause_ecg(seed=1))
    wait_until(lambda: client.kinds() == [("alarm", first["id"])], 10, "the alarm on the stream")
    event = client.events[0]
    assert event.data["type"] == "pause" and event.data["severity"] == "critical"
    assert event.data["text_zh"] and event.data["site_id"] == api.network.site_id
    client.close()

    # while the client is away: its alarm is acknowledged, another one is raised
    assert api.post(f"/api/v1/alarms/{first['id']}/ack", key).status_code == 200
    second = api.alarm_of(key, pause_ecg(seed=2))

    back = SseClient(api.base, key, last_event_id=event.id)
    try:
        wait_until(lambda: len(back.events) >= 2, 10, "the missed events")
        time.sleep(0.3)
        assert back.kinds() == [("ack", first["id"]), ("alarm", second["id"])]
        assert [e.id for e in back.events] == sorted(e.id for e in back.events) and back.events[0].id > event.id
        assert back.events[0].data["acknowledged_by"] == "device:cart-a1"
        # and it stays live after the replay
        third = api.alarm_of(key, pause_ecg(seed=3))
        wait_until(lambda: ("alarm", third["id"]) in back.kinds(), 10, "a live alarm after the replay")
    finally:
        back.close()
    assert back.error is None


def test_who_sees_and_acknowledges_what(api: Api) -> None:
    system, net = api.system, api.network
    _, county_key = add_device(system.db, "county-viewer", "County A")
    sites = _sites(system)
    county_stream = SseClient(api.base, county_key)
    neighbour_stream = SseClient(api.base, net.other_site_api_key)
    try:
        alarm = api.alarm_of(net.api_key, pause_ecg())
        assert api.upload(net.api_key, normal_ecg()).status_code == 201
        wait_until(lambda: county_stream.kinds() == [("alarm", alarm["id"])], 10, "the alarm at the county")

        # the neighbouring township sees nothing of it
        assert api.get("/api/v1/alarms", net.other_site_api_key).json() == []
        assert api.get(f"/api/v1/alarms/{alarm['id']}", net.other_site_api_key).status_code == 404
        assert api.post(f"/api/v1/alarms/{alarm['id']}/ack", net.other_site_api_key).status_code == 404
        assert api.get("/api/v1/alarms", net.api_key, site="Township A2").status_code == 404

        # the county lists its townships' alarms, by site and state, and acknowledges
        assert [a["id"] for a in api.get("/api/v1/alarms", county_key, site="Township A1", state="open").json()] \
            == [alarm["id"]]
        assert api.get("/api/v1/alarms", county_key, site=str(sites["Township A2"])).json() == []
        acked = api.post(f"/api/v1/alarms/{alarm['id']}/ack", county_key).json()
        assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == "device:county-viewer"
        again = api.post(f"/api/v1/alarms/{alarm['id']}/ack", net.api_key).json()
        assert again["acknowledged_by"] == "device:county-viewer", "the first acknowledgement stands"
        assert api.get("/api/v1/alarms", net.api_key, state="open").json() == []
        assert [a["id"] for a in api.get("/api/v1/alarms", net.api_key, state="acknowledged").json()] \
            == [alarm["id"]]
        wait_until(lambda: county_stream.kinds() == [("alarm", alarm["id"]), ("ack", alarm["id"])], 10,
                   "one ack event at the county")
        time.sleep(0.3)
        assert neighbour_stream.events == []
        assert len([k for k in county_stream.kinds() if k[0] == "ack"]) == 1
    finally:
        county_stream.close()
        neighbour_stream.close()


def test_a_stream_refuses_a_request_without_a_key_or_with_a_bad_last_event_id(api: Api) -> None:
    assert httpx.get(f"{api.base}/api/v1/alarms/stream", timeout=10).status_code == 401
    bad = httpx.get(f"{api.base}/api/v1/alarms/stream", timeout=10,
                    headers={"X-API-Key": api.network.api_key, "Last-Event-ID": "x"})
    assert bad.status_code == 400


def test_rules_of_the_device_and_of_the_upload(api: Api, tmp_path: Path) -> None:
    env = telediag_env(data_dir=api.system.settings.data_dir)
    out = run_cli(["device", "add", "monitor-1", "--site", "Township A1", "--rules", "monitoring"], env)
    assert "rules monitoring" in out
    monitor_key = out.split("API key (shown once, keep it): ")[1].split()[0]
    devices = {d["name"]: d for d in json.loads(run_cli(["device", "list", "--json"], env))}
    assert devices["monitor-1"]["rules"] == "monitoring" and devices["cart-a1"]["rules"] == "resting"
    assert "rules" in run_cli(["device", "add", "--help"], env)

    # the same pause: a resting ECG's "pause", a monitor's "asystole"
    by_cart = api.alarm_of(api.network.api_key, pause_ecg(seed=1))
    assert (by_cart["type"], by_cart["evidence"]["rules"]) == ("pause", "resting")
    monitor = api.upload(monitor_key, pause_ecg(seed=2))
    case_id = monitor.json()["objects"][0]["case_id"]
    types = wait_until(lambda: {a["type"] for a in api.get("/api/v1/alarms", monitor_key).json()
                                if a["case_id"] == case_id}, 30, "the monitor's alarms")
    assert "asystole" in types
    # an upload may name the rule set for itself
    named = api.upload(api.network.api_key, pause_ecg(seed=3), rules="monitoring")
    case_id = named.json()["objects"][0]["case_id"]
    rules = wait_until(lambda: {a["evidence"]["rules"] for a in api.get("/api/v1/alarms", api.network.api_key).json()
                                if a["case_id"] == case_id}, 30, "the alarms of the upload")
    assert rules == {"monitoring"}
    refused = api.upload(api.network.api_key, pause_ecg(seed=4), rules="icu-special")
    assert refused.status_code == 422 and "resting, holter, monitoring" in refused.json()["detail"]


@pytest.mark.services
def test_a_client_of_one_api_process_gets_events_raised_in_another(fresh_postgres_url: str,
                                                                   tmp_path: Path) -> None:
    """Two systems (each with its own alarm feed, as two API processes) on one PostgreSQL: the
    one that analyses raises the alarm, the other's SSE client gets it (LISTEN/NOTIFY), and an
    acknowledgement made through the second reaches a client of the first."""
    analysing = System(Settings(data_dir=tmp_path / "a", database_url=fresh_postgres_url))
    network = register_network(analysing)
    worker = analysing.worker(threads=1)
    worker.start()
    other = System(Settings(data_dir=tmp_path / "b", database_url=fresh_postgres_url))
    api_a, api_b = Api(analysing, network), Api(other, network)
    on_b = SseClient(api_b.base, network.api_key)
    on_a = SseClient(api_a.base, network.api_key)
    try:
        alarm = api_a.alarm_of(network.api_key, pause_ecg())
        wait_until(lambda: on_b.kinds() == [("alarm", alarm["id"])], 10, "the alarm at the other process")
        assert api_b.post(f"/api/v1/alarms/{alarm['id']}/ack", network.api_key).status_code == 200
        wait_until(lambda: on_a.kinds() == [("alarm", alarm["id"]), ("ack", alarm["id"])], 10,
                   "the acknowledgement back at the first process")
    finally:
        on_a.close()
        on_b.close()
        api_a.stop()
        api_b.stop()
        worker.stop()
        other.close()
        analysing.close()
