"""Dependencies the routes declare: the assembled system and the authenticated caller.

A caller is a person, by bearer token (``Authorization: Bearer``, from ``/api/v1/auth/login``)
or by the pages' session cookie, or a device, by its API key (``X-API-Key``, or a bearer
token that is not a session). A cookie is sent by the browser on its own, so a request that
changes anything with the cookie must also repeat the session's CSRF token in
``X-CSRF-Token``, which a page from another origin cannot read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Response

from telediag.bootstrap import System
from telediag.domain import DeviceIdentity, Principal, Role, SiteLevel
from telediag.network import device_by_api_key, upload_device, user_by_token

log = logging.getLogger(__name__)

SESSION_COOKIE = "telediag_session"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def get_system(request: Request) -> System:
    return request.app.state.system


SystemDep = Annotated[System, Depends(get_system)]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


AddressDep = Annotated[str | None, Depends(client_address)]


def bearer_token(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def _device_principal(identity: DeviceIdentity, system: System) -> Principal:
    with system.db.uow() as uow:
        site = uow.sites.get(identity.site_id)
    return Principal(kind="device", username=identity.name, site_id=identity.site_id, site_name=site.name,
                     site_level=site.level.value, device_id=identity.device_id)


def session_principal(request: Request, system: System) -> Principal | None:
    """The person of the request's session cookie, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    return user_by_token(system.db, token) if token else None


def page_principal(request: Request) -> Principal | None:
    """For page routes: the logged-in person (cookie), or None (the page sends them to /login)."""
    return session_principal(request, get_system(request))


def current_principal(request: Request, system: SystemDep, x_api_key: Annotated[str | None, Header()] = None,
                      authorization: Annotated[str | None, Header()] = None,
                      x_csrf_token: Annotated[str | None, Header()] = None) -> Principal:
    """Whoever the request's credential names (see module doc); 401 without a valid one."""
    bearer = bearer_token(authorization)
    if bearer and not bearer.startswith("td_"):
        principal = user_by_token(system.db, bearer)
        if principal is not None:
            return principal
    key = x_api_key or (bearer if bearer and bearer.startswith("td_") else None)
    if key:
        identity = device_by_api_key(system.db, key)
        if identity is None:
            log.warning("refused a request with an unknown or disabled API key")
            raise HTTPException(401, "unknown or disabled API key")
        request.state.device = identity
        return _device_principal(identity, system)
    if bearer:
        raise HTTPException(401, "unknown or expired token")
    principal = session_principal(request, system)
    if principal is None:
        raise HTTPException(401, "log in (POST /api/v1/auth/login) or send a device API key (X-API-Key)")
    if request.method not in _SAFE_METHODS and x_csrf_token != principal.csrf_token:
        log.warning("refused a cookie request without its CSRF token")
        raise HTTPException(403, "missing or wrong X-CSRF-Token")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def current_user(principal: PrincipalDep) -> Principal:
    if not principal.is_user:
        raise HTTPException(403, "this needs a person's login, not a device key")
    return principal


UserDep = Annotated[Principal, Depends(current_user)]


def admin_user(user: UserDep) -> Principal:
    if not user.role.is_admin:
        raise HTTPException(403, "administrators only")
    return user


AdminDep = Annotated[Principal, Depends(admin_user)]


def current_device(request: Request, principal: PrincipalDep, system: SystemDep) -> DeviceIdentity:
    """Who a received file is recorded as sent by: the device itself, or for clinic staff
    uploading from the page, their site's web-upload device."""
    if not principal.is_user:
        return request.state.device
    if principal.role is not Role.CLINIC or principal.site_level != SiteLevel.TOWNSHIP.value:
        raise HTTPException(403, "only a clinic's staff and devices upload exams")
    return upload_device(system.db, principal.site_id)


DeviceDep = Annotated[DeviceIdentity, Depends(current_device)]


class LoginRateLimit:
    """At most ``per_minute`` login attempts per address in any sliding minute (in this process)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, address: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._seen.setdefault(address or "?", deque())
            while times and now - times[0] > 60:
                times.popleft()
            if len(times) >= self.per_minute:
                log.warning("login attempts from one address over the rate limit")
                raise HTTPException(429, "too many login attempts; wait a minute",
                                    headers={"Retry-After": str(int(60 - (now - times[0])) + 1)})
            times.append(now)


def set_session_cookie(response: Response, token: str, max_age: int, secure: bool) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="strict", secure=secure,
                        path="/")
