"""``telediag site|device|quarantine``: administration from the shell, as real processes on an
embedded data dir, checked against the lookups every entry point authenticates senders with."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import telediag
from telediag.config import Settings
from telediag.network import add_device, add_site, device_by_ae_title, device_by_api_key
from telediag.store import Database

KEY_LINE = re.compile(r"API key \(shown once, keep it\): (\S+)")


def _telediag(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    """``telediag ARGS`` with ``TELEDIAG_DATA_DIR`` (and no other TELEDIAG_* of the developer)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEDIAG_")}
    src = str(Path(telediag.__file__).resolve().parents[1])  # the telediag these tests import
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["TELEDIAG_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "telediag.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _ok(*args: str, data_dir: Path) -> str:
    proc = _telediag(*args, data_dir=data_dir)
    assert proc.returncode == 0, f"telediag {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _json(*args: str, data_dir: Path):
    return json.loads(_ok(*args, "--json", data_dir=data_dir))


@dataclass
class Net:
    data_dir: Path
    db: Database
    site_ids: dict[str, int]
    key1: str  # cart-1 at Township 1, AE title CART1
    key2: str  # cart-2 at Township 2, AE title CART2


@pytest.fixture
def net(tmp_path: Path) -> Net:
    """A prefecture, a county and two townships with a cart each, in the database the CLI uses."""
    data_dir = tmp_path / "data"
    db = Database(Settings(data_dir=data_dir).effective_database_url)
    db.migrate()
    ids = {"Prefecture": add_site(db, "Prefecture", "prefecture")}
    ids["County"] = add_site(db, "County", "county", "Prefecture")
    ids["Township 1"] = add_site(db, "Township 1", "township", "County")
    ids["Township 2"] = add_site(db, "Township 2", "township", "County")
    _, key1 = add_device(db, "cart-1", "Township 1", "CART1")
    _, key2 = add_device(db, "cart-2", "Township 2", "CART2")
    return Net(data_dir, db, ids, key1, key2)


def _authenticates(net: Net, key: str, ae_title: str) -> bool:
    by_key, by_ae = device_by_api_key(net.db, key), device_by_ae_title(net.db, ae_title)
    assert (by_key is None) == (by_ae is None), (by_key, by_ae)
    return by_key is not None


def test_site_list_json_shows_the_hierarchy(net: Net) -> None:
    sites = _json("site", "list", data_dir=net.data_dir)
    assert isinstance(sites, list) and len(sites) == 4
    for s in sites:
        assert {"id", "name", "level", "parent"} <= s.keys(), s
    by_name = {s["name"]: s for s in sites}
    ids = net.site_ids
    assert {name: s["id"] for name, s in by_name.items()} == ids
    assert {name: (s["level"], s["parent"]) for name, s in by_name.items()} == {
        "Prefecture": ("prefecture", None),
        "County": ("county", ids["Prefecture"]),
        "Township 1": ("township", ids["County"]),
        "Township 2": ("township", ids["County"]),
    }
    assert by_name["Township 1"]["parent_name"] == "County"
    assert all(s["active"] is True for s in sites)

    # the plain listing names the parent
    lines = _ok("site", "list", data_dir=net.data_dir).splitlines()
    assert f"{ids['Township 2']}\tTownship 2\ttownship\tCounty\tTrue" in lines


def test_disabling_a_site_refuses_its_devices_until_enabled(net: Net) -> None:
    before = device_by_api_key(net.db, net.key1)
    assert before is not None and _authenticates(net, net.key2, "CART2")

    out = _ok("site", "disable", "Township 1", data_dir=net.data_dir)
    assert "disabled" in out
    assert not _authenticates(net, net.key1, "CART1")
    assert _authenticates(net, net.key2, "CART2"), "disabling one township refused another's cart"
    active = {s["name"]: s["active"] for s in _json("site", "list", data_dir=net.data_dir)}
    assert active == {"Prefecture": True, "County": True, "Township 1": False, "Township 2": True}
    # the device itself stays enabled: only its site is off
    devices = {d["name"]: d for d in _json("device", "list", data_dir=net.data_dir)}
    assert devices["cart-1"]["active"] is True

    _ok("site", "enable", "Township 1", data_dir=net.data_dir)
    assert device_by_api_key(net.db, net.key1) == before == device_by_ae_title(net.db, "CART1")
    assert all(s["active"] for s in _json("site", "list", data_dir=net.data_dir))


def test_device_list_json(net: Net) -> None:
    devices = _json("device", "list", data_dir=net.data_dir)
    assert [(d["name"], d["site_id"], d["site_name"], d["ae_title"], d["active"]) for d in devices] == [
        ("cart-1", net.site_ids["Township 1"], "Township 1", "CART1", True),
        ("cart-2", net.site_ids["Township 2"], "Township 2", "CART2", True),
    ]
    assert all(isinstance(d["id"], int) and d["created_at"] for d in devices)
    assert not any("key" in field for d in devices for field in d), "a listing must not show key material"


def test_device_disable_and_enable(net: Net) -> None:
    before = device_by_api_key(net.db, net.key1)
    _ok("device", "disable", "cart-1", data_dir=net.data_dir)
    assert not _authenticates(net, net.key1, "CART1")
    assert _authenticates(net, net.key2, "CART2")
    assert {d["name"]: d["active"] for d in _json("device", "list", data_dir=net.data_dir)} == \
        {"cart-1": False, "cart-2": True}

    _ok("device", "enable", "cart-1", data_dir=net.data_dir)
    assert device_by_api_key(net.db, net.key1) == before


def test_rotate_key_replaces_the_old_key(net: Net) -> None:
    before = device_by_api_key(net.db, net.key1)
    out = _ok("device", "rotate-key", "cart-1", data_dir=net.data_dir)
    match = KEY_LINE.search(out)
    assert match, out
    new_key = match.group(1)
    assert new_key != net.key1 and new_key.startswith("td_")

    assert device_by_api_key(net.db, net.key1) is None, "the old key still authenticates"
    assert device_by_api_key(net.db, new_key) == before
    assert device_by_ae_title(net.db, "CART1") == before, "rotating the key changed the DICOM identity"
    assert device_by_api_key(net.db, net.key2) is not None, "rotating one device's key touched another's"

    # a second rotation retires the first new key too
    newer = KEY_LINE.search(_ok("device", "rotate-key", "cart-1", data_dir=net.data_dir)).group(1)
    assert newer not in (new_key, net.key1)
    assert device_by_api_key(net.db, new_key) is None and device_by_api_key(net.db, newer) == before


@pytest.mark.parametrize("args, message", [
    (("site", "disable", "Nowhere"), "unknown site 'Nowhere'"),
    (("site", "enable", "Nowhere"), "unknown site 'Nowhere'"),
    (("device", "disable", "ghost"), "unknown device 'ghost'"),
    (("device", "enable", "ghost"), "unknown device 'ghost'"),
    (("device", "rotate-key", "ghost"), "unknown device 'ghost'"),
])
def test_unknown_site_or_device_exits_2_with_a_message(net: Net, args: tuple[str, ...], message: str) -> None:
    proc = _telediag(*args, data_dir=net.data_dir)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert f"error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "API key" not in proc.stdout
    # nothing changed
    assert _authenticates(net, net.key1, "CART1") and _authenticates(net, net.key2, "CART2")


def test_quarantine_list_is_empty_on_an_empty_system(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    assert _json("quarantine", "list", data_dir=data_dir) == []
    assert _ok("quarantine", "list", data_dir=data_dir) == ""
    assert _json("site", "list", data_dir=data_dir) == []
    assert _json("device", "list", data_dir=data_dir) == []
