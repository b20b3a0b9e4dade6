"""A two-county network with one person per role, served on loopback: the review tests' world.

Prefecture Center
├── County A: reader ``ra`` (ECG), reader ``ra2`` (ECG), reader ``ri`` (imaging), admin ``ca``
│   ├── Township A1: clinic ``c1``, cart ``cart-a1``
│   └── Township A2: clinic ``c2``, cart ``cart-a2``
└── County B: reader ``rb`` (ECG): its imaging cases go up to the prefecture
    └── Township B1: cart ``cart-b1``
prefecture: reader ``rp`` (ECG, imaging), network admin ``admin``
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from services import LOOPBACK, free_port, wait_until
from telediag.bootstrap import System
from telediag.config import Settings
from telediag.network import add_device, add_site, add_user
from telediag.web import BackgroundServer

PASSWORD = "correct horse battery"

USERS = {  # username: (role, site, qualified)
    "ra": ("reader", "County A", ("ecg",)),
    "ra2": ("reader", "County A", ("ecg",)),
    "ri": ("reader", "County A", ("imaging",)),
    "rb": ("reader", "County B", ("ecg",)),
    "rp": ("reader", "Prefecture Center", ("ecg", "imaging")),
    "c1": ("clinic", "Township A1", ()),
    "c2": ("clinic", "Township A2", ()),
    "ca": ("center_admin", "County A", ()),
    "admin": ("network_admin", "Prefecture Center", ()),
}


@dataclass
class ReviewWorld:
    system: System
    base: str
    keys: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, username: str) -> str:
        if username not in self.tokens:
            r = httpx.post(f"{self.base}/api/v1/auth/login", json={"username": username, "password": PASSWORD})
            r.raise_for_status()
            self.tokens[username] = r.json()["access_token"]
        return self.tokens[username]

    def call(self, method: str, path: str, user: str | None = None, key: str | None = None,
             **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        if key is not None:
            headers["X-API-Key"] = key
        return httpx.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def upload(self, data: bytes, cart: str = "cart-a1") -> int:
        r = self.call("POST", "/api/v1/dicom", key=self.keys[cart],
                      files=[("files", ("ecg.dcm", data, "application/dicom"))])
        assert r.status_code == 201, r.text
        return r.json()["objects"][0]["case_id"]

    def analysed(self, case_id: int, user: str = "ra") -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            view = self.call("GET", f"/api/v1/cases/{case_id}", user=user).json()
            return view if view["status"] in ("analysed", "analysis_failed") else None

        return wait_until(done, 60, f"case {case_id} analysed")


def build_world(system: System) -> dict[str, str]:
    """Register the sites, devices and people of the module doc; the devices' API keys."""
    db = system.db
    add_site(db, "Prefecture Center", "prefecture")
    for county, townships in (("County A", ("Township A1", "Township A2")), ("County B", ("Township B1",))):
        add_site(db, county, "county", "Prefecture Center")
        for township in townships:
            add_site(db, township, "township", county)
    keys = {name: add_device(db, name, site, ae)[1] for name, site, ae in
            (("cart-a1", "Township A1", "CARTA1"), ("cart-a2", "Township A2", "CARTA2"),
             ("cart-b1", "Township B1", "CARTB1"))}
    for username, (role, site, qualified) in USERS.items():
        add_user(db, system.vault, username, PASSWORD, role, site, qualified, display_name=f"Dr {username.upper()}")
    return keys


@pytest.fixture
def review_world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ReviewWorld]:
    """The world on an embedded system (SQLite, local folder, in-process worker); a test may
    change settings with ``@pytest.mark.parametrize("review_world", [{...}], indirect=True)``.
    An imaging study is in the queue as soon as it arrived unless a test sets ``study_quiet_s``."""
    overrides = {"study_quiet_s": 0, **(getattr(request, "param", None) or {})}
    settings = replace(Settings(data_dir=tmp_path / "data"), secure_cookies=False, **overrides)
    system = System(settings)
    keys = build_world(system)
    worker = system.worker(threads=1)
    worker.start()
    server = BackgroundServer(system, LOOPBACK, free_port())
    server.start()
    try:
        yield ReviewWorld(system, f"http://{LOOPBACK}:{server._server.config.port}", keys)
    finally:
        server.stop()
        worker.stop()
        system.close()


def rebuilt_digest(case: dict[str, Any], statements: list[str], conclusion: str, measurements: dict[str, Any],
                   signed: dict[str, Any], findings: str = "", version: int = 1, replaces: int | None = None) -> bytes:
    """The SHA-256 a verifier computes from the case and the report as documented in
    docs/review-api.md (not through telediag's own code): it must equal the signed digest."""
    import hashlib

    from telediag.domain import canonical_json

    content = {"case_id": case["case_id"], "version": version, "replaces": replaces, "site_id": case["site_id"],
               "patient_key": case["patient"]["patient_key"], "statements": statements, "findings": findings,
               "conclusion": conclusion, "measurements": measurements, "signed_by": signed["signed_by"],
               "signed_at": signed["signed_at"]}
    return hashlib.sha256(canonical_json(content)).digest()

