"""``telediag bench push``: how long a critical ECG takes from the township to the screens.

Simulated township carts upload 12-lead ECGs (``POST /api/v1/ecg``, DICOM, 500 Hz x 10 s)
at a steady rate (default 20 per second for 30 s); a fraction of them (default a quarter)
has a 4-second pause that the analysis raises as a critical alarm. For each critical upload
the bench takes the time from "upload accepted" (the 201 answer) to

- the alarm's arrival at an MQTT subscriber (Mosquitto, the clinic's topic), and
- its arrival at an SSE client of the prefecture center (``GET /api/v1/alarms/stream``,
  connected to the *last* API process, so in the distributed mode it is not the process the
  upload went to),

and prints p50/p95/p99/max per channel, and where the time goes: accepted -> alarm committed
(queue, analysis, the commit with its outbox rows; the alarm's ``raised_at``) and alarm
committed -> received (the push). Modes:

- ``embedded``: ``telediag up`` (SQLite, in-process broker, analysis processes);
- ``distributed``: PostgreSQL + Redis, 2 ``telediag worker`` and 2 ``telediag api`` processes,
  uploads spread over the API processes, objects in a shared local folder.

PostgreSQL (``--pg``, an admin DSN; a throw-away database is created and dropped), Redis
(``--redis``; a free database number is claimed as the tests do) and Mosquitto (``--mqtt``)
must be running on the machine. A print-out, not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from telediag.ecg import Recording, RecordingSource
from telediag.ecg.dicom_out import to_dicom_ecg

FS, SECONDS = 500, 10
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
TOWNSHIPS = 8


# -- ECGs ------------------------------------------------------------------------------------
def _ecg(pause: bool, seed: int) -> np.ndarray:
    """A plausible 12-lead sinus rhythm in uV (P, QRS, T Gaussians); with ``pause`` the beats
    stop from 3.6 to 7.6 s (a 5-s RR: critical under every rule set)."""
    rng = np.random.default_rng(seed)
    t = np.arange(FS * SECONDS) / FS
    lead_ii = np.zeros_like(t)
    for b in np.arange(0.3, SECONDS, 60.0 / 72.0):
        if pause and 3.6 <= b < 7.6:
            continue
        for off, width, amp in ((-0.20, 0.025, 0.15), (-0.03, 0.008, -0.1), (0.0, 0.010, 1.2),
                                (0.03, 0.010, -0.25), (0.25, 0.040, 0.3)):
            lead_ii += amp * np.exp(-0.5 * ((t - b - off) / width) ** 2)
    gains = (0.6, 1.0, 0.4, -0.8, 0.1, 0.7, -0.5, 0.3, 0.8, 1.2, 1.1, 0.9)
    return np.column_stack([g * lead_ii + 0.02 * rng.standard_normal(t.size) for g in gains])


class Uploads:
    """DICOM bytes of a normal and of a pause ECG, given new UIDs for every upload."""

    def __init__(self) -> None:
        from pydicom.uid import generate_uid

        self._uid = generate_uid
        src = RecordingSource(patient_name="BENCH^PUSH", patient_id="PUSH0001", manufacturer="telediag bench")
        self._ds = {pause: to_dicom_ecg(Recording(FS, LEADS, _ecg(pause, 1), source=src)) for pause in (False, True)}
        self._lock = threading.Lock()

    def make(self, pause: bool) -> bytes:
        import io

        with self._lock:
            ds = self._ds[pause]
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = self._uid()
            ds.StudyInstanceUID = self._uid()
            ds.SeriesInstanceUID = self._uid()
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            return buf.getvalue()


# -- receivers -------------------------------------------------------------------------------
@dataclass
class Arrivals:
    """Wall-clock arrival of each alarm message on the clinic's topic or stream.

    Other telediag installations (test runs) may publish on the same Mosquitto with the same
    small ids, so arrivals are kept as they come and matched to this run's alarms at the end
    by (alarm id, raise time)."""

    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, payload: dict[str, Any]) -> None:
        now = time.time()
        if payload.get("kind") == "alarm" and payload.get("to_site_id", payload["site_id"]) == payload["site_id"]:
            with self.lock:
                self.seen.append((now, payload))

    def first(self, ours: dict[int, tuple[int, str]]) -> dict[int, tuple[float, float]]:
        """case id -> (arrival, raised) for this run's alarms (``ours``: case -> (alarm id, raised_at))."""
        by_alarm = {key: case for case, key in ours.items()}
        out: dict[int, tuple[float, float]] = {}
        with self.lock:
            for at, p in self.seen:
                case = by_alarm.get((p["alarm_id"], p["raised_at"]))
                if case is not None and case not in out:
                    out[case] = (at, datetime.fromisoformat(p["raised_at"]).timestamp())
        return out


class Mqtt:
    def __init__(self, url: str, arrivals: Arrivals) -> None:
        import paho.mqtt.client as mqtt
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("telediag/sites/+/alarms", qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = lambda c, u, msg: arrivals.add(json.loads(msg.payload))
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError(f"no MQTT subscription at {url}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Sse(threading.Thread):
    def __init__(self, base: str, api_key: str, arrivals: Arrivals) -> None:
        super().__init__(daemon=True)
        self.base, self.api_key, self.arrivals = base, api_key, arrivals
        self.open = threading.Event()
        self.start()
        if not self.open.wait(15):
            raise RuntimeError("the SSE stream did not open")

    def run(self) -> None:
        try:
            with httpx.stream("GET", f"{self.base}/api/v1/alarms/stream", headers={"X-API-Key": self.api_key},
                              timeout=httpx.Timeout(10, read=None)) as resp:
                self.open.set()
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        self.arrivals.add(json.loads(line[5:]))
        except httpx.HTTPError:  # the server stopped at the end of the run
            pass


# -- the systems under test ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(work: Path, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEDIAG_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["TELEDIAG_DATA_DIR"] = str(work / "data")
    env |= {f"TELEDIAG_{k.upper()}": str(v) for k, v in settings.items() if v is not None}
    return env


def _register(database_url: str) -> tuple[list[str], str]:
    """A prefecture, 2 counties, TOWNSHIPS townships with one cart each, and a device at the
    prefecture (its SSE stream sees every township); returns the carts' keys and its key."""
    from telediag.network import add_device, add_site
    from telediag.store import Database

    db = Database(database_url)
    db.migrate()
    add_site(db, "Prefecture", "prefecture")
    keys = []
    for c in range(2):
        add_site(db, f"County {c}", "county", "Prefecture")
        for t in range(TOWNSHIPS // 2):
            add_site(db, f"Township {c}.{t}", "township", f"County {c}")
            keys.append(add_device(db, f"cart-{c}.{t}", f"Township {c}.{t}")[1])
    _, center = add_device(db, "prefecture-screen", "Prefecture")
    db.dispose()
    return keys, center


class Processes:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.work / f"{name}.log", "ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "telediag.cli", *args], env=env, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True))

    def wait_http(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"no API on port {port}; see the logs in {self.work}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, 15)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()


def _claim_redis_db(base: str) -> tuple[str, Any]:
    import redis

    admin = redis.Redis.from_url(f"{base}/0")
    owner = f"bench-{os.getpid()}-{secrets.token_hex(4)}"
    for index in range(int(admin.config_get("databases")["databases"]) - 1, 0, -1):
        if admin.set(f"telediag-tests:db-claim:{index}", owner, nx=True, ex=3600):
            client = redis.Redis.from_url(f"{base}/{index}")
            client.flushdb()
            return f"{base}/{index}", lambda: (client.flushdb(), admin.delete(f"telediag-tests:db-claim:{index}"))
    raise RuntimeError("no free Redis database number")


def _pg_database(admin_dsn: str) -> tuple[str, Any]:
    from telediag.store.database import create_database, drop_database

    url = create_database(admin_dsn, f"td_bench_push_{secrets.token_hex(4)}")
    return url, lambda: drop_database(admin_dsn, url)


def start_system(mode: str, work: Path, stack: ExitStack, args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """Start the system of ``mode``; return the API base URLs, the carts' keys, the center's key."""
    procs = Processes(work)
    common = {"mqtt_url": args.mqtt}
    if mode == "embedded":
        stack.callback(procs.stop)
        keys, center = _register(f"sqlite:///{(work / 'data' / 'telediag.sqlite3').resolve()}")
        port = _free_port()
        procs.start("up", ["up", "--http-port", str(port), "--dicom-port", str(_free_port())], _env(work, **common))
        procs.wait_http(port)
        return [f"http://127.0.0.1:{port}"], keys, center
    database_url, drop = _pg_database(args.pg)
    stack.callback(drop)
    broker_url, release = _claim_redis_db(args.redis)
    stack.callback(release)
    keys, center = _register(database_url)
    stack.callback(procs.stop)  # before the database and the Redis db go
    env = _env(work, database_url=database_url, broker_url=broker_url,
               object_store_url=f"file://{(work / 'objects').resolve()}", **common)
    for i in range(2):
        procs.start(f"worker{i}", ["worker", "--threads", "2"], env)
    ports = [_free_port() for _ in range(2)]
    for i, port in enumerate(ports):
        procs.start(f"api{i}", ["api", "--http-port", str(port)], env)
    for port in ports:
        procs.wait_http(port)
    return [f"http://127.0.0.1:{p}" for p in ports], keys, center


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Sent:
    case_id: int
    critical: bool
    accepted: float


def load(bases: list[str], keys: list[str], rate: float, duration_s: float, critical: float) -> list[Sent]:
    """Upload at ``rate`` per second for ``duration_s`` (open loop: a late answer does not delay
    the next upload), round-robin over the carts and the API processes."""
    uploads = Uploads()
    n = int(rate * duration_s)
    rng = np.random.default_rng(7)
    flags = rng.random(n) < critical
    bodies = [uploads.make(bool(f)) for f in flags]
    sent: list[Sent] = []
    lock = threading.Lock()
    local = threading.local()
    t0 = time.monotonic() + 0.5

    def one(i: int) -> None:
        client = getattr(local, "client", None) or httpx.Client(timeout=60)
        local.client = client
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        resp = client.post(f"{bases[i % len(bases)]}/api/v1/ecg", headers={"X-API-Key": keys[i % len(keys)]},
                           files=[("files", ("ecg.dcm", bodies[i]))])
        accepted = time.time()
        if resp.status_code != 201:
            print(f"upload {i}: HTTP {resp.status_code} {resp.text[:200]}", file=sys.stderr)
            return
        with lock:
            sent.append(Sent(resp.json()["objects"][0]["case_id"], bool(flags[i]), accepted))

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(one, range(n)))
    return sent


def _pcts(values: list[float]) -> str:
    if not values:
        return f"{'-':>7} {'-':>7} {'-':>7} {'-':>7}"
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return f"{p50:7.3f} {p95:7.3f} {p99:7.3f} {max(values):7.3f}"


def run_mode(mode: str, args: argparse.Namespace) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix=f"telediag-bench-push-{mode}-"))
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, work, True)
        bases, keys, center = start_system(mode, work, stack, args)
        mqtt, sse = Arrivals(), Arrivals()
        stack.callback(Mqtt(args.mqtt, mqtt).close)
        Sse(bases[-1], center, sse)
        started = time.monotonic()
        sent = load(bases, keys, args.rate, args.duration, args.critical)
        elapsed = time.monotonic() - started
        critical = [s for s in sent if s.critical]

        def ours() -> dict[int, tuple[int, str]]:
            alarms = httpx.get(f"{bases[0]}/api/v1/alarms", headers={"X-API-Key": center}, timeout=30).json()
            return {a["case_id"]: (a["id"], a["raised_at"]) for a in alarms}

        deadline = time.monotonic() + args.drain
        while True:
            raised = ours()
            arrived = {name: got.first(raised) for name, got in (("mqtt", mqtt), ("sse", sse))}
            if time.monotonic() > deadline or all(s.case_id in a for s in critical for a in arrived.values()):
                break
            time.sleep(0.5)
        false_alarms = len(set(raised) - {s.case_id for s in critical})
        rows = [f"{mode}: {len(sent)} uploads accepted ({len(sent) / elapsed:.1f}/s over {elapsed:.1f} s incl. "
                f"the last answers), {len(critical)} critical, {false_alarms} alarm(s) on normal ECGs; seconds:"]
        rows.append(f"  {'':<46} {'n':>4} {'lost':>4} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
        for name, got in (("MQTT subscriber", arrived["mqtt"]),
                          ("SSE client (other API process)" if len(bases) > 1 else "SSE client", arrived["sse"])):
            total = [got[s.case_id][0] - s.accepted for s in critical if s.case_id in got]
            analysis = [got[s.case_id][1] - s.accepted for s in critical if s.case_id in got]
            push = [got[s.case_id][0] - got[s.case_id][1] for s in critical if s.case_id in got]
            lost = len(critical) - len(total)
            rows.append(f"  {'accepted -> ' + name:<46} {len(total):4d} {lost:4d} {_pcts(total)}")
            rows.append(f"  {'  accepted -> alarm committed (queue+analysis)':<46} {len(analysis):4d} {'':>4} "
                        f"{_pcts(analysis)}")
            rows.append(f"  {'  alarm committed -> received (push)':<46} {len(push):4d} {'':>4} {_pcts(push)}")
        if args.keep:
            rows.append(f"  logs and data kept in {work}")
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telediag bench push", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="embedded,distributed", help="embedded and/or distributed")
    parser.add_argument("--rate", type=float, default=20.0, help="uploads per second (default 20)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of uploads (default 30)")
    parser.add_argument("--critical", type=float, default=0.25, help="fraction with a critical pause (0.25)")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the last alarms")
    parser.add_argument("--mqtt", default=os.environ.get("TELEDIAG_MQTT_URL", "mqtt://127.0.0.1:1883"))
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                        help="admin DSN of the PostgreSQL to create a throw-away database on")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server (a free db is claimed)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data of each run")
    args = parser.parse_args(argv)
    print(f"{args.rate:g} uploads/s for {args.duration:g} s, {args.critical:.0%} critical (4-s pause), "
          f"{TOWNSHIPS} township carts; target p99 < 2 s")
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        for row in run_mode(mode, args):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
