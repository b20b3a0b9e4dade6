"""Smoke test of ``telediag bench review`` on tiny sizes: it builds its network, serves it,
measures every part and prints the tables. No figure is asserted: the bench prints the
latencies beside their targets, and a loaded test machine must not fail a test on them."""

from __future__ import annotations

import pytest

from telediag.bench import review


def test_bench_review_runs_and_prints_its_tables(capsys: pytest.CaptureFixture[str]) -> None:
    code = review.main(["--cases", "200", "--requests", "10", "--clients", "2", "--readers", "1",
                        "--pdf-runs", "2", "--sign", "2", "--repeat", "2", "--holter-hours", "0.05"])
    out = capsys.readouterr().out
    assert code == 0
    for title in ("== part 1: lists, SQLite (embedded): 200 open cases", "== part 2: the signed report's PDF",
                  "== part 3: the viewer's data, SQLite (embedded)",
                  "== part 4: first paint of the 12-lead ECG in the viewer, SQLite (embedded)"):
        assert title in out
    for row in ("GET /api/v1/queue (county reader)", "GET /api/v1/cases (township clinic)",
                "GET /api/v1/cases (prefecture QC)", "render_report_pdf in process",
                "POST .../report/sign, SQLite (embedded)", "waveform 0-10 s, first call (decodes)",
                "overview points=1000", "peer: none comparable"):
        assert row in out
    if review.CHROMIUM.exists():  # the browser is there in CI; the row is the painted trace's
        assert "12-lead 10 s, 3x4 + rhythm strip" in out
