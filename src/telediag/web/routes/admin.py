"""Administration: sites, devices and users of the administrator's part of the network, and
the audit trail. A center's administrator manages its own subtree; the network's, all."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from telediag.domain import NotPermitted, Role
from telediag.network import add_device, add_user, list_devices, list_sites, list_users, rotate_device_key
from telediag.network import set_user_active
from telediag.web.deps import AddressDep, AdminDep, SystemDep

router = APIRouter(prefix="/api/v1", tags=["admin"])


class NewUser(BaseModel):
    username: str = Field(..., min_length=1, max_length=64)
    password: str = Field(..., min_length=8, max_length=1024)
    role: Role
    site: str
    qualified: list[str] = Field(default_factory=list)
    display_name: str | None = None


class NewDevice(BaseModel):
    name: str = Field(..., min_length=1, max_length=200)
    site: str
    ae_title: str | None = None
    rules: str = "resting"


def _site_id(system, name: str) -> int:
    site = next((s for s in list_sites(system.db) if s.name == name), None)
    if site is None:
        raise HTTPException(422, f"unknown site {name!r}")
    return site.id


def _check_manages(system, admin, site_ids: set[int] | None, site_name: str) -> None:
    if site_ids is not None and _site_id(system, site_name) not in site_ids:
        raise NotPermitted(f"site {site_name!r} is outside the sites you manage")


@router.get("/sites")
def sites(system: SystemDep, admin: AdminDep) -> list[dict[str, Any]]:
    managed = system.review.managed_sites(admin)
    every = list_sites(system.db)
    names = {s.id: s.name for s in every}
    return [{"id": s.id, "name": s.name, "level": s.level.value, "parent_id": s.parent_id,
             "parent_name": names.get(s.parent_id), "active": s.active}
            for s in every if managed is None or s.id in managed]


@router.get("/devices")
def devices(system: SystemDep, admin: AdminDep) -> list[dict[str, Any]]:
    managed = system.review.managed_sites(admin)
    return [{"id": d.id, "name": d.name, "site": d.site_name, "ae_title": d.ae_title, "active": d.active,
             "rules": d.rules} for d in list_devices(system.db) if managed is None or d.site_id in managed]


@router.post("/devices", status_code=201)
def new_device(body: NewDevice, system: SystemDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    """Register a device; its API key is in this answer only."""
    _check_manages(system, admin, system.review.managed_sites(admin), body.site)
    device_id, key = add_device(system.db, body.name, body.site, body.ae_title, body.rules)
    system.review.record_admin(admin, "device_add", address, device=body.name, site=body.site)
    return {"id": device_id, "name": body.name, "api_key": key}


@router.post("/devices/{name}/rotate-key")
def rotate_key(name: str, system: SystemDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    managed = system.review.managed_sites(admin)
    device = next((d for d in list_devices(system.db) if d.name == name), None)
    if device is None or (managed is not None and device.site_id not in managed):
        raise HTTPException(404, f"no device {name!r}")
    key = rotate_device_key(system.db, name)
    system.review.record_admin(admin, "device_rotate_key", address, device=name)
    return {"name": name, "api_key": key}


@router.get("/users")
def users(system: SystemDep, admin: AdminDep) -> list[dict[str, Any]]:
    return [{"id": u.id, "username": u.username, "display_name": u.display_name, "role": u.role.value,
             "site": u.site_name, "qualified": list(u.qualified), "active": u.active}
            for u in list_users(system.db, system.review.managed_sites(admin))]


@router.post("/users", status_code=201)
def new_user(body: NewUser, system: SystemDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    if body.role is Role.NETWORK_ADMIN and admin.role is not Role.NETWORK_ADMIN:
        raise NotPermitted("only a network administrator makes another")
    _check_manages(system, admin, system.review.managed_sites(admin), body.site)
    user_id = add_user(system.db, system.vault, body.username, body.password, body.role, body.site,
                       tuple(body.qualified), body.display_name)
    system.review.record_admin(admin, "user_add", address, user=body.username, role=body.role.value, site=body.site)
    return {"id": user_id, "username": body.username}


@router.post("/users/{username}/disable")
def disable_user(username: str, system: SystemDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    managed = system.review.managed_sites(admin)
    user = next((u for u in list_users(system.db, managed) if u.username == username), None)
    if user is None:
        raise HTTPException(404, f"no user {username!r}")
    set_user_active(system.db, username, False)
    system.review.record_admin(admin, "user_disable", address, user=username)
    return {"username": username, "active": False}


@router.get("/audit")
def audit(system: SystemDep, admin: AdminDep, case_id: int | None = None,
          limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> dict[str, Any]:
    """The audit trail (of one case), newest first, with each entry's hash link."""
    return {"entries": system.review.audit_entries(admin, case_id, limit)}
