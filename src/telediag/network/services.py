"""Registration, administration and authentication of sites and devices."""

from __future__ import annotations

import hashlib
import secrets

from telediag.domain import (RULE_SETS, DeviceIdentity, DeviceInfo, NetworkError, SiteInfo, SiteLevel,
                             SiteNotPermitted, UnknownSite)
from telediag.store import Database, RowConflict


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _new_key() -> tuple[str, str]:
    key = "td_" + secrets.token_urlsafe(32)
    return key, hash_api_key(key)


def add_site(db: Database, name: str, level: SiteLevel | str, parent: str | None = None) -> int:
    """Register a site; townships hang under a county, counties under the prefecture."""
    level = SiteLevel(level)
    name = name.strip()
    if not name:
        raise NetworkError("a site needs a name")
    with db.uow() as uow:
        if uow.sites.by_name(name):
            raise NetworkError(f"site {name!r} already exists")
        parent_id = None
        wanted = level.parent_level
        if wanted is None:
            if parent:
                raise NetworkError("a prefecture center has no parent")
        else:
            if not parent:
                raise NetworkError(f"a {level.value} site needs --parent (a {wanted.value} site)")
            parent_site = uow.sites.by_name(parent)
            if parent_site is None:
                raise NetworkError(f"unknown parent site {parent!r}")
            if parent_site.level is not wanted:
                raise NetworkError(f"the parent of a {level.value} site must be a {wanted.value} site, "
                                   f"{parent!r} is a {parent_site.level.value}")
            parent_id = parent_site.id
        site_id = uow.sites.add(name, level, parent_id)
        uow.commit()
    return site_id


def _site(uow, name: str) -> SiteInfo:
    site = uow.sites.by_name(name)
    if site is None:
        raise UnknownSite(f"unknown site {name!r}")
    return site


def _device(uow, name: str) -> DeviceInfo:
    device = uow.devices.by_name(name)
    if device is None:
        raise NetworkError(f"unknown device {name!r}")
    return device


def check_rules(rules: str) -> str:
    """A built-in critical-value rule set name, or :class:`NetworkError` naming the choices."""
    if rules not in RULE_SETS:
        raise NetworkError(f"unknown rule set {rules!r} (choose {', '.join(RULE_SETS)})")
    return rules


def add_device(db: Database, name: str, site: str, ae_title: str | None = None,
               rules: str = "resting") -> tuple[int, str]:
    """Register a device at a site; return its id and its new API key (shown once). ``rules`` is
    the critical-value rule set its recordings are analysed with (a Holter recorder ``holter``,
    a bedside or remote monitor ``monitoring``)."""
    check_rules(rules)
    if ae_title is not None:
        ae_title = ae_title.strip().upper()
        if not ae_title or len(ae_title) > 16 or not ae_title.isascii() or "\\" in ae_title:
            raise NetworkError("an AE title is 1 to 16 ASCII characters without backslash")
    api_key, digest = _new_key()
    try:
        with db.uow() as uow:
            site_row = _site(uow, site)
            if uow.devices.exists(name=name):
                raise NetworkError(f"device {name!r} already exists")
            if ae_title and uow.devices.exists(ae_title=ae_title):
                raise NetworkError(f"AE title {ae_title!r} is already registered")
            device_id = uow.devices.add(name, site_row.id, ae_title, digest, rules)
            uow.commit()
    except RowConflict as exc:  # registered by someone else a moment ago
        raise NetworkError(f"device {name!r} or AE title {ae_title!r} was registered meanwhile") from exc
    return device_id, api_key


def list_sites(db: Database) -> list[SiteInfo]:
    with db.uow() as uow:
        return uow.sites.list()


def list_devices(db: Database) -> list[DeviceInfo]:
    with db.uow() as uow:
        return uow.devices.list()


def set_site_active(db: Database, name: str, active: bool) -> SiteInfo:
    """Disable (or enable again) a site: its devices can no longer associate or upload."""
    with db.uow() as uow:
        return _set_active(uow, uow.sites, _site(uow, name), active)


def set_device_active(db: Database, name: str, active: bool) -> DeviceInfo:
    """Disable (or enable again) a device: a lost or stolen cart is refused at once."""
    with db.uow() as uow:
        return _set_active(uow, uow.devices, _device(uow, name), active)


def _set_active(uow, repository, row, active: bool):
    repository.set_active(row.id, active)
    uow.commit()
    return row


def set_site_webhook(db: Database, name: str, url: str | None, secret: str | None = None) -> str | None:
    """Make every alarm of the site (and of the sites below it) a signed POST to ``url``; None
    removes the webhook. Returns the secret, generated when none is given (shown once)."""
    if url is not None and not url.startswith(("http://", "https://")):
        raise NetworkError("a webhook URL starts with http:// or https://")
    if url is not None and not secret:
        secret = secrets.token_urlsafe(32)
    with db.uow() as uow:
        site = _site(uow, name)
        uow.sites.set_webhook(site.id, url, secret if url else None)
        uow.commit()
    return secret if url else None


def set_device_destination(db: Database, name: str, host: str | None, port: int | None = None) -> DeviceInfo:
    """Make a device (a viewer, a PACS) a C-MOVE destination: a C-MOVE naming its AE title sends to
    ``host``:``port``. None removes the address; the device keeps sending and querying as before."""
    if host is not None:
        host = host.strip()
        if not host or port is None or not 0 < port < 65536:
            raise NetworkError("a DICOM destination needs a host and a port from 1 to 65535")
    with db.uow() as uow:
        device = _device(uow, name)
        if host is not None and not device.ae_title:
            raise NetworkError(f"device {name!r} has no AE title, which is how a C-MOVE names its destination")
        uow.devices.set_destination(device.id, host, port if host is not None else None)
        uow.commit()
    return device


def rotate_device_key(db: Database, name: str) -> str:
    """Give a device a new API key (shown once); the old one stops working at once."""
    api_key, digest = _new_key()
    with db.uow() as uow:
        device = _device(uow, name)
        uow.devices.set_key(device.id, digest)
        uow.commit()
    return api_key


def device_by_ae_title(db: Database, ae_title: str) -> DeviceIdentity | None:
    with db.uow() as uow:
        return uow.devices.identity(ae_title=ae_title.strip().upper())


def device_by_api_key(db: Database, api_key: str) -> DeviceIdentity | None:
    with db.uow() as uow:
        return uow.devices.identity(api_key_sha256=hash_api_key(api_key))


def check_delivery_site(db: Database, device: DeviceIdentity, site: str | None) -> None:
    """A device delivers only for its own site: naming an unknown site raises
    :class:`UnknownSite`, naming another site :class:`SiteNotPermitted`."""
    if site is None:
        return
    with db.uow() as uow:
        row = _site(uow, site)
    if row.id != device.site_id:
        raise SiteNotPermitted(f"device {device.name!r} is not registered for site {site!r}")


def upload_device(db: Database, site_id: int) -> DeviceIdentity:
    """The device a site's staff upload through the clinic page as: ``web-upload-<site id>``,
    made on first use, with a key nobody is ever shown (it sends nothing by itself)."""
    name = f"web-upload-{site_id}"
    with db.uow() as uow:
        device = uow.devices.by_name(name)
        if device is None:
            try:
                uow.devices.add(name, site_id, None, _new_key()[1])
                uow.commit()
            except RowConflict:
                pass  # another request made it a moment ago
    with db.uow() as uow:
        device = uow.devices.by_name(name)
    return DeviceIdentity(device.id, device.name, device.site_id, device.ae_title, device.rules)
