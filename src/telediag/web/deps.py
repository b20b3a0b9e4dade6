"""Dependencies the routes declare: the assembled system and the authenticated caller."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from telediag.bootstrap import System
from telediag.domain import DeviceIdentity
from telediag.network import device_by_api_key

log = logging.getLogger(__name__)


def get_system(request: Request) -> System:
    return request.app.state.system


SystemDep = Annotated[System, Depends(get_system)]


def current_device(system: SystemDep, x_api_key: Annotated[str | None, Header()] = None,
                   authorization: Annotated[str | None, Header()] = None) -> DeviceIdentity:
    """The device whose API key came with the request (``X-API-Key`` or ``Authorization: Bearer``)."""
    key = x_api_key or (authorization[7:].strip() if authorization and authorization.lower().startswith("bearer ")
                        else None)
    if not key:
        raise HTTPException(401, "missing API key (X-API-Key header)")
    identity = device_by_api_key(system.db, key)
    if identity is None:
        log.warning("refused a request with an unknown or disabled API key")
        raise HTTPException(401, "unknown or disabled API key")
    return identity


DeviceDep = Annotated[DeviceIdentity, Depends(current_device)]
