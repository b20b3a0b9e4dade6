"""Reads are audited in batches: appended within a round, stamped with the time of the read,
chained like every other entry, and what is pending at shutdown is appended then."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from services import wait_until
from telediag.config import Settings
from telediag.review import verify_audit
from telediag.store import Database


def _entries(db: Database) -> list[dict]:
    with db.uow() as uow:
        return uow.audit.entries()


def test_reads_are_appended_within_a_round_stamped_when_read(tmp_path: Path) -> None:
    db = Database(Settings(data_dir=tmp_path).effective_database_url)
    db.migrate()
    read_at = time.time()
    for n in range(3):
        db.read_audit.record(username="ra", role="reader", action="retrieve", case_id=None, detail={"n": n},
                             address="10.0.0.7")
    wait_until(lambda: len(_entries(db)) == 3, 5, "the round's entries appended")
    entries = _entries(db)
    assert [e["detail"]["n"] for e in entries] == [2, 1, 0]  # newest first, in the order read
    assert all(abs(datetime.fromisoformat(e["at"]).timestamp() - read_at) < 0.1 for e in entries)
    assert entries[0]["prev_hash"] == entries[1]["hash"] and verify_audit(db) is None
    db.dispose()


def test_what_is_pending_at_shutdown_is_appended(tmp_path: Path) -> None:
    url = Settings(data_dir=tmp_path).effective_database_url
    db = Database(url)
    db.migrate()
    db.read_audit.record(username="device:cart-a1", role="device", action="search", detail={"level": "STUDY"})
    db.dispose()  # at once, before a round
    again = Database(url)
    assert [e["action"] for e in _entries(again)] == ["search"]
    again.dispose()
