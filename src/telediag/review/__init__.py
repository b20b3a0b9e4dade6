"""The review stage: the readers' queue, claims, reports and their signatures, the audit trail.

:class:`ReviewService` holds the use cases (each checks the caller's role and site, and
audits what it did in the same transaction); :class:`ReviewSweeper` moves cases whose
deadline passed unclaimed up to the next center; :func:`verify_audit` checks the trail's
hash chain. ``statements`` is the coded list of diagnostic statements and ``pdf`` renders a
signed report.
"""

from __future__ import annotations

from telediag.review.service import ReviewService, verify_audit
from telediag.review.sweeper import ReviewSweeper

__all__ = ["ReviewService", "ReviewSweeper", "verify_audit"]
