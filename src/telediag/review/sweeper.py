"""The review sweeper: a case nobody claimed by its deadline moves up to the next center."""

from __future__ import annotations

from typing import Callable

from telediag.periodic import Periodic
from telediag.review.service import ReviewService


class ReviewSweeper(Periodic):
    """Every ``interval_s``, :meth:`ReviewService.escalate_overdue` (each case moved once, however
    many API processes sweep).

    With ``pause`` (the embedded mode: the ``ReceivingGate`` analysis waits on), a round first
    waits for a pause in receiving, as long as the gate allows: moving a hundred cases is a
    write transaction of a few hundred milliseconds, which on SQLite holds every C-STORE's
    commit, while a case's deadline is minutes away.
    """

    def __init__(self, review: ReviewService, interval_s: float = 5.0,
                 pause: Callable[[], None] | None = None) -> None:
        super().__init__("telediag-review-sweeper", interval_s)
        self.review = review
        self.pause = pause

    def sweep(self) -> list[int]:
        if self.pause is not None:
            self.pause()
        return self.review.escalate_overdue()
