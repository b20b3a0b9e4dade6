"""The review sweeper: a case nobody claimed by its deadline moves up to the next center."""

from __future__ import annotations

from telediag.periodic import Periodic
from telediag.review.service import ReviewService


class ReviewSweeper(Periodic):
    """Every ``interval_s``, :meth:`ReviewService.escalate_overdue` (each case moved once, however
    many API processes sweep)."""

    def __init__(self, review: ReviewService, interval_s: float = 5.0) -> None:
        super().__init__("telediag-review-sweeper", interval_s)
        self.review = review

    def sweep(self) -> list[int]:
        return self.review.escalate_overdue()
