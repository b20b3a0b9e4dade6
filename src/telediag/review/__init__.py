"""The review stage: what a site may see of its cases.

Today a device reads the state and analysis of its own site's cases; the readers' queue,
claims and signed reports of the review issue are built here next.
"""

from __future__ import annotations

from typing import Any

from telediag.store import Database


def case_view(db: Database, case_id: int, site_id: int) -> dict[str, Any] | None:
    """The case with its objects, jobs and analyses, or None unless it belongs to ``site_id``
    (an unknown case and another site's case look the same to the caller)."""
    with db.uow(snapshot=True) as uow:
        view = uow.cases.view(case_id)
    if view is None or view["site_id"] != site_id:
        return None
    return view


__all__ = ["case_view"]
