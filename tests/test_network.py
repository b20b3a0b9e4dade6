"""Sites and devices from the shell: hierarchy rules and API keys."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from telediag.store import Database
from telediag.network import device_by_ae_title, device_by_api_key


def _telediag(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telediag.cli", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


def test_site_and_device_commands_build_the_hierarchy(tmp_path: Path) -> None:
    assert _telediag("site", "add", "州中心", "--level", "prefecture", data_dir=tmp_path).returncode == 0
    assert _telediag("site", "add", "县分中心", "--level", "county", "--parent", "州中心",
                     data_dir=tmp_path).returncode == 0
    assert _telediag("site", "add", "乡镇卫生院", "--level", "township", "--parent", "县分中心",
                     data_dir=tmp_path).returncode == 0

    wrong = _telediag("site", "add", "Bad", "--level", "township", "--parent", "州中心", data_dir=tmp_path)
    assert wrong.returncode == 2 and "must be a county" in wrong.stderr
    unknown = _telediag("device", "add", "cart", "--site", "Nowhere", data_dir=tmp_path)
    assert unknown.returncode == 2 and "unknown site" in unknown.stderr

    added = _telediag("device", "add", "cart-1", "--site", "乡镇卫生院", "--ae-title", "cart01", data_dir=tmp_path)
    assert added.returncode == 0, added.stderr
    key = re.search(r"API key \(shown once, keep it\): (\S+)", added.stdout).group(1)

    db = Database(f"sqlite:///{tmp_path / 'telediag.sqlite3'}")
    by_key, by_ae = device_by_api_key(db, key), device_by_ae_title(db, "CART01")
    assert by_key is not None and by_key == by_ae
    assert device_by_api_key(db, key + "x") is None
    taken = _telediag("device", "add", "cart-2", "--site", "乡镇卫生院", "--ae-title", "CART01", data_dir=tmp_path)
    assert taken.returncode == 2 and "already registered" in taken.stderr
