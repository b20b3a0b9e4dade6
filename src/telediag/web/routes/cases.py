"""Case status for the devices (and soon the people) of a site."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from telediag.review import case_view
from telediag.web.deps import DeviceDep, SystemDep

router = APIRouter(prefix="/api/v1", tags=["cases"])


@router.get("/cases/{case_id}")
def case_status(case_id: int, system: SystemDep, device: DeviceDep) -> dict[str, Any]:
    """Status of a case sent by the caller's own site, with each object's analysis state."""
    view = case_view(system.db, case_id, device.site_id)
    if view is None:
        raise HTTPException(404, f"no case {case_id} for this site")
    return view
