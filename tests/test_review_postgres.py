"""Claims on PostgreSQL under contention: 20 readers of one county claim from one queue at
once, repeatedly; every case is held by exactly one of them, and no reader holds two."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from alarm_fixtures import normal_ecg
from review_fixtures import PASSWORD
from telediag.bootstrap import System
from telediag.config import Settings
from telediag.domain import ClaimConflict, Principal
from telediag.network import add_device, add_site, add_user, device_by_api_key, login

pytest_plugins = ["services"]

READERS = 20
CASES = 10


@pytest.fixture
def contested(fresh_postgres_url: str, tmp_path: Path) -> Iterator[tuple[System, list[Principal], list[int]]]:
    system = System(replace(Settings(data_dir=tmp_path), database_url=fresh_postgres_url))
    db = system.db
    add_site(db, "P", "prefecture"), add_site(db, "C", "county", "P"), add_site(db, "T", "township", "C")
    device = device_by_api_key(db, add_device(db, "cart", "T", "CART")[1])
    readers = []
    for i in range(READERS):
        add_user(db, system.vault, f"r{i}", PASSWORD, "reader", "C", ("ecg",))
        readers.append(login(db, f"r{i}", PASSWORD, ttl_s=600, max_failures=5, lockout_s=60).principal)
    cases = [system.ingest.ingest_dicom(device, normal_ecg()).case_id for _ in range(CASES)]
    try:
        yield system, readers, cases
    finally:
        system.close()


def _all_at_once(readers: list[Principal], attempt) -> list[object]:
    """Run ``attempt(reader)`` in one thread per reader, released together."""
    barrier = threading.Barrier(len(readers))
    results: list[object] = [None] * len(readers)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(readers[i])
        except ClaimConflict as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(readers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.services
def test_twenty_readers_claiming_at_once_each_case_held_by_exactly_one(contested) -> None:
    system, readers, cases = contested
    review = system.review
    for case_id in cases:  # all twenty want the same case, at the same instant
        results = _all_at_once(readers, lambda r, c=case_id: review.claim(r, c))
        winners = [r for r in results if isinstance(r, dict)]
        assert len(winners) == 1, results
        assert sum(isinstance(r, ClaimConflict) for r in results) == READERS - 1

    rng = random.Random(7)
    for _ in range(5):  # then each grabs a random case, again and again
        results = _all_at_once(readers, lambda r: review.claim(r, rng.choice(cases)))
        won = Counter(r["case_id"] for r in results if isinstance(r, dict))
        # At most one winner per case (a round may have none: every pick held by another reader).
        assert all(n == 1 for n in won.values()), won
        items = {i["case_id"]: i["claimed_by"] for i in review.queue(readers[0], limit=100)["items"]}
        holders = [h for h in items.values() if h is not None]
        assert len(holders) == len(set(holders)), "a reader holds two cases"
        for case_id, holder in items.items():
            if holder is not None:  # the holder's own view agrees: nobody else may draft it
                mine = next(r for r in readers if r.username == holder)
                other = next(r for r in readers if r.username != holder)
                review.save_draft(mine, case_id, [], "")
                with pytest.raises(ClaimConflict):
                    review.save_draft(other, case_id, [], "")
