"""The network's sites and devices: registration and authentication.

API keys are random, shown once, and stored only as sha256, so a leaked database
does not let anyone impersonate a township cart.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from telediag.db import Database
from telediag.models import Device, Site, SiteLevel

_PARENT_LEVEL = {SiteLevel.COUNTY: SiteLevel.PREFECTURE, SiteLevel.TOWNSHIP: SiteLevel.COUNTY}


class NetworkError(ValueError):
    """A site or device request that contradicts the network's shape."""


@dataclass(frozen=True)
class DeviceIdentity:
    """An authenticated sender: which device, and for which site it may deliver."""

    device_id: int
    name: str
    site_id: int
    ae_title: str | None


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def add_site(db: Database, name: str, level: SiteLevel | str, parent: str | None = None) -> int:
    """Register a site; townships hang under a county, counties under the prefecture."""
    level = SiteLevel(level)
    with db.uow() as uow:
        s = uow.session
        if s.scalar(select(Site).where(Site.name == name)):
            raise NetworkError(f"site {name!r} already exists")
        parent_site = None
        if level is SiteLevel.PREFECTURE:
            if parent:
                raise NetworkError("a prefecture center has no parent")
        else:
            if not parent:
                raise NetworkError(f"a {level.value} site needs --parent (a {_PARENT_LEVEL[level].value} site)")
            parent_site = s.scalar(select(Site).where(Site.name == parent))
            if parent_site is None:
                raise NetworkError(f"unknown parent site {parent!r}")
            if parent_site.level is not _PARENT_LEVEL[level]:
                raise NetworkError(f"the parent of a {level.value} site must be a {_PARENT_LEVEL[level].value} site, "
                                   f"{parent!r} is a {parent_site.level.value}")
        site = Site(name=name, level=level, parent_id=parent_site.id if parent_site else None)
        s.add(site)
        uow.commit()
        return site.id


def add_device(db: Database, name: str, site: str, ae_title: str | None = None) -> tuple[int, str]:
    """Register a device at a site; return its id and its new API key (shown once)."""
    if ae_title is not None:
        ae_title = ae_title.strip().upper()
        if not ae_title or len(ae_title) > 16 or not ae_title.isascii() or "\\" in ae_title:
            raise NetworkError("an AE title is 1 to 16 ASCII characters without backslash")
    with db.uow() as uow:
        s = uow.session
        site_row = s.scalar(select(Site).where(Site.name == site))
        if site_row is None:
            raise NetworkError(f"unknown site {site!r}")
        if s.scalar(select(Device).where(Device.name == name)):
            raise NetworkError(f"device {name!r} already exists")
        if ae_title and s.scalar(select(Device).where(Device.ae_title == ae_title)):
            raise NetworkError(f"AE title {ae_title!r} is already registered")
        api_key = "td_" + secrets.token_urlsafe(32)
        device = Device(name=name, site_id=site_row.id, ae_title=ae_title, api_key_sha256=hash_api_key(api_key))
        s.add(device)
        uow.commit()
        return device.id, api_key


def _identity(device: Device | None) -> DeviceIdentity | None:
    if device is None or not device.active:
        return None
    return DeviceIdentity(device.id, device.name, device.site_id, device.ae_title)


def device_by_ae_title(db: Database, ae_title: str) -> DeviceIdentity | None:
    with db.uow() as uow:
        return _identity(uow.session.scalar(select(Device).where(Device.ae_title == ae_title.strip().upper())))


def device_by_api_key(db: Database, api_key: str) -> DeviceIdentity | None:
    with db.uow() as uow:
        return _identity(uow.session.scalar(select(Device).where(Device.api_key_sha256 == hash_api_key(api_key))))
