"""Logins: bearer tokens for API clients, a session cookie for the pages.

``POST /api/v1/auth/login`` answers ``{access_token, token_type, expires_in}``; ``POST /login``
(the page's form) sets the cookie and sends the browser to ``/``. Both go through the one
``network.login`` use case (Argon2 check, lockout, audit) behind a per-address rate limit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from telediag.domain import LoginRefused, LoginResult
from telediag.network import login, logout, public_key, public_key_pem
from telediag.web.deps import (SESSION_COOKIE, bearer_token, AddressDep, SystemDep, UserDep, session_principal,
                               set_session_cookie)

router = APIRouter(tags=["auth"])


class Credentials(BaseModel):
    username: str = Field(..., min_length=1, max_length=64)
    password: str = Field(..., min_length=1, max_length=1024)


def _me(p) -> dict[str, Any]:
    return {"id": p.user_id, "username": p.username, "display_name": p.display_name, "role": p.role.value,
            "site_id": p.site_id, "site_name": p.site_name, "site_level": p.site_level, "qualified": list(p.qualified)}


def _login(request: Request, system, username: str, password: str, address: str | None) -> LoginResult:
    request.app.state.login_limit.check(address)
    s = system.settings
    return login(system.db, username, password, ttl_s=s.session_ttl_s, max_failures=s.login_max_failures,
                 lockout_s=s.login_lockout_s, address=address)


@router.post("/api/v1/auth/login")
def api_login(body: Credentials, request: Request, system: SystemDep, address: AddressDep) -> dict[str, Any]:
    try:
        result = _login(request, system, body.username, body.password, address)
    except LoginRefused as exc:
        retry_after = exc.details.get("retry_after")
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        raise HTTPException(429 if retry_after else 401, str(exc), headers=headers) from exc
    return {"access_token": result.token, "token_type": "bearer", "expires_in": result.expires_in,
            "user": _me(result.principal)}


@router.post("/api/v1/auth/logout", status_code=204)
def api_logout(request: Request, system: SystemDep, user: UserDep, address: AddressDep) -> Response:
    token = bearer_token(request.headers.get("authorization")) or request.cookies.get(SESSION_COOKIE, "")
    logout(system.db, token, user, address)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/api/v1/me")
def me(user: UserDep) -> dict[str, Any]:
    return _me(user)


@router.get("/api/v1/users/{username}/public-key", tags=["review"])
def user_public_key(username: str, system: SystemDep) -> dict[str, str]:
    """A reader's public signing key: anyone may verify a signed report with it."""
    key = public_key(system.db, username)
    if key is None:
        raise HTTPException(404, f"no signing key for {username!r}")
    algorithm, public = key
    return {"username": username, "algorithm": algorithm, "public_key": public, "pem": public_key_pem(public, algorithm)}


@router.post("/login", include_in_schema=False)
def page_login(request: Request, system: SystemDep, address: AddressDep, username: Annotated[str, Form()],
               password: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
    """The login form: the session cookie, then the page asked for (a local path only)."""
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    try:
        result = _login(request, system, username, password, address)
    except LoginRefused as exc:
        reason = "locked" if exc.details.get("retry_after") else "invalid"
        return RedirectResponse(f"/login?error={reason}", status_code=303)
    except HTTPException as exc:
        if exc.status_code != 429:
            raise
        return RedirectResponse("/login?error=rate", status_code=303)
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, result.token, result.expires_in, secure=system.settings.secure_cookies)
    return response


@router.post("/logout", include_in_schema=False)
def page_logout(request: Request, system: SystemDep, address: AddressDep,
                csrf_token: Annotated[str, Form()] = "") -> Response:
    principal = session_principal(request, system)
    if principal is not None and csrf_token == principal.csrf_token:
        logout(system.db, request.cookies[SESSION_COOKIE], principal, address)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
