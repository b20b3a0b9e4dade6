"""The review sweeper: a case nobody claimed by its deadline moves up to the next center."""

from __future__ import annotations

import time
from typing import Callable

from telediag.periodic import Periodic
from telediag.review.service import ReviewService


class ReviewSweeper(Periodic):
    """Every ``interval_s``, :meth:`ReviewService.escalate_overdue` (each case moved once, however
    many API processes sweep).

    With ``receiving`` (the embedded mode: objects arrived a moment ago), a round waits while a
    burst is being received, for at most ``max_defer_s``: moving a hundred cases is a write
    transaction of a few hundred milliseconds, which on SQLite holds every C-STORE's commit,
    while a case's deadline is minutes away.
    """

    def __init__(self, review: ReviewService, interval_s: float = 5.0,
                 receiving: Callable[[], bool] | None = None, max_defer_s: float = 30.0) -> None:
        super().__init__("telediag-review-sweeper", interval_s)
        self.review = review
        self.receiving = receiving
        self.max_defer_s = max_defer_s
        self._deferred_since: float | None = None

    def sweep(self) -> list[int]:
        if self.receiving is not None and self.receiving():
            now = time.monotonic()
            if self._deferred_since is None:
                self._deferred_since = now
            if now - self._deferred_since < self.max_defer_s:
                return []
        self._deferred_since = None
        return self.review.escalate_overdue()
