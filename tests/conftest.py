"""Shared fixtures: reference data, an embedded system with a small registered network."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from telediag.config import Settings
from telediag.network import add_device, add_site
from telediag.bootstrap import System


ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SAMPLE_DATA = ROOT / "sample_data"


@pytest.fixture(scope="session")
def shared_dicom() -> Path:
    path = SHARED_DATA / "dicom"
    if not path.is_dir():
        pytest.skip("../shared/data/dicom is not present")
    return path


def send_concurrently(send: Callable[[Any], object], objects: list) -> tuple[list, list]:
    """Call ``send`` on every object, each from its own thread, all released at once (the way
    to race senders, sweepers or claimers against each other); return (results, exceptions)."""
    import threading

    barrier = threading.Barrier(len(objects))
    results: list = []
    errors: list = []

    def run(data: Any) -> None:
        barrier.wait()
        try:
            results.append(send(data))
        except Exception as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(data,)) for data in objects]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


@dataclass
class Network:
    """The system under test plus one registered township device."""

    system: System
    site_id: int
    device_name: str
    ae_title: str
    api_key: str
    other_site_api_key: str


def register_network(system: System) -> Network:
    add_site(system.db, "Prefecture Center", "prefecture")
    add_site(system.db, "County A", "county", "Prefecture Center")
    site_id = add_site(system.db, "Township A1", "township", "County A")
    add_site(system.db, "Township A2", "township", "County A")
    _, key = add_device(system.db, "cart-a1", "Township A1", "CART1")
    _, other_key = add_device(system.db, "cart-a2", "Township A2", "CART2")
    return Network(system, site_id, "cart-a1", "CART1", key, other_key)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Network]:
    """An embedded system (SQLite, local folder, in-process Dramatiq worker) in a temp dir;
    an imaging study is in the queue as soon as it arrived (no quiet period)."""
    system = System(Settings(data_dir=tmp_path / "data", study_quiet_s=0))
    network = register_network(system)
    worker = system.worker(threads=1)
    worker.start()
    try:
        yield network
    finally:
        worker.stop()
        system.close()


@pytest.fixture
def api(embedded: Network) -> Iterator[tuple[Network, str]]:
    """The API app over ``embedded``, served by uvicorn on a loopback port as in production."""
    from services import free_port
    from telediag.web import BackgroundServer

    port = free_port()
    server = BackgroundServer(embedded.system, "127.0.0.1", port)
    server.start()
    try:
        yield embedded, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")
