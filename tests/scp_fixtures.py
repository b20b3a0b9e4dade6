"""Fixtures for the DICOM SCP tests: the SCP on an ephemeral port over the embedded system,
and the dcmtk command-line tools (``conftest.py`` belongs to the shared fixtures)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dramatiq
import pytest

from services import unavailable
from telediag.bench.dcmtk import find_dcmtk
from telediag.config import Settings
from telediag.ingest.scp import StorageSCP
from telediag.bootstrap import System

from conftest import Network, register_network

SCP_AE = "TELEDIAG"


@dataclass
class RunningSCP:
    """The SCP under test, the embedded system behind it and how to reach it with dcmtk."""

    scp: StorageSCP
    network: Network
    storescu_bin: str
    echoscu_bin: str

    @property
    def port(self) -> int:
        return self.scp.port

    def echoscu(self, calling: str, called: str = SCP_AE) -> subprocess.CompletedProcess:
        return subprocess.run([self.echoscu_bin, "-aet", calling, "-aec", called, "127.0.0.1", str(self.port)],
                              capture_output=True, text=True, timeout=30)

    def storescu(self, *args: str | Path, calling: str | None = None,
                 called: str = SCP_AE) -> subprocess.CompletedProcess:
        """``storescu -aet CALLING -aec CALLED [args...] 127.0.0.1 PORT`` plus the files in ``args``
        (options first, paths after)."""
        opts = [str(a) for a in args if not isinstance(a, Path)]
        files = [str(a) for a in args if isinstance(a, Path)]
        cmd = [self.storescu_bin, "-aet", calling or self.network.ae_title, "-aec", called, *opts,
               "127.0.0.1", str(self.port), *files]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def dcmtk_tools() -> tuple[str, str]:
    storescu, echoscu = find_dcmtk("storescu"), find_dcmtk("echoscu")
    if not storescu or not echoscu:
        unavailable("dcmtk storescu/echoscu not installed (apt-get install dcmtk)")
    return storescu, echoscu


@pytest.fixture
def running_scp(tmp_path: Path, dcmtk_tools: tuple[str, str]) -> Iterator[RunningSCP]:
    """StorageSCP on 127.0.0.1:<ephemeral> over an embedded system in ``tmp_path`` (device
    CART1 at Township A1 < County A < Prefecture Center) with an in-process Dramatiq worker.

    Like conftest's ``embedded``, but the worker polls every 50 ms so that stopping it
    does not cost a second per test.
    """
    system = System(Settings(data_dir=tmp_path / "data"))
    network = register_network(system)
    system.analysis_actor  # declare the actor before the worker consumes
    worker = dramatiq.Worker(system.broker, worker_threads=1, worker_timeout=50)
    worker.start()
    scp = StorageSCP(system.ingest, system.authorize, ae_title=SCP_AE, host="127.0.0.1", port=0,
                     max_object_bytes=4 * 1024 * 1024)
    scp.start()
    try:
        yield RunningSCP(scp, network, *dcmtk_tools)
    finally:
        scp.stop()
        worker.stop()
        system.close()
