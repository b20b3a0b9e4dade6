"""Smoke test of ``telediag bench ingest`` on a tiny burst: every server of the table -
``telediag up`` as shipped in its own process, the SCP alone, the bare pynetdicom SCPs -
receives every object from a real dcmtk ``storescu`` in each round, and the medians and
per-round ratios are printed. No figure is asserted (a loaded test machine must not fail a
test on them); ``stored`` must equal the objects sent, which the exit code says."""

from __future__ import annotations

import re

import pytest

from telediag.bench import ingest
from telediag.bench.dcmtk import find_dcmtk


def test_bench_ingest_receives_everything_in_every_round_and_prints_medians(
        capsys: pytest.CaptureFixture[str]) -> None:
    if find_dcmtk("storescu") is None:
        pytest.skip("dcmtk storescu not found (apt-get install dcmtk)")
    code = ingest.main(["-n", "12", "--rounds", "2", "--skip", "naive", "--skip", "orthanc"])
    out = capsys.readouterr().out
    assert code == 0, out
    for server in ("bare pynetdicom, quick-ack", "bare pynetdicom, telediag transport",
                   "telediag up, as shipped (embedded)", "telediag SCP, receiving only (embedded)"):
        assert len(re.findall(rf"round [12]/2: {re.escape(server)}: [0-9.]+/s", out)) == 2, server
        assert re.search(rf"^{re.escape(server)} +\| +[0-9.]+ \|.*\| +12 \|", out, re.MULTILINE), server
    assert re.search(r"telediag up, as shipped \(embedded\) / bare pynetdicom, quick-ack: [0-9.]+ "
                     r"\(rounds: [0-9.]+, [0-9.]+\)", out)
    assert re.search(r"[0-9]+ analysed while receiving, the rest [0-9.]+ s later", out)
