"""``telediag demo``: play a township ECG cart sending ``sample_data/`` and show what happened.

It registers a small demo network if absent (prefecture -> county -> township, one
cart, one person per role with a generated password kept in the data directory), then sends every DICOM sample with C-STORE, every cart export (SCP-ECG, HL7 aECG,
Philips XML) and every WFDB record over HTTP,
exactly as a device would, and prints each object's fate and its analysis. If a
``telediag up`` is already serving this data directory's ports it talks to that;
otherwise it starts the embedded system itself and keeps serving it afterwards (until
Ctrl-C; ``--no-serve`` stops at the end), so the printed logins work at once.
"""

from __future__ import annotations

import secrets
import socket
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from telediag.bootstrap import System
from telediag.config import Settings
from telediag.ecg.summary import describe_analysis
from telediag.network import add_device, add_site, add_user, list_devices, list_sites, list_users

DEMO_AE = "DEMOCART"
DEMO_SITES = (("Demo Prefecture Center", "prefecture", None), ("Demo County Sub-center", "county",
              "Demo Prefecture Center"), ("Demo Township Clinic", "township", "Demo County Sub-center"))
_KEY_FILE = "demo-device.key"
_LOGINS_FILE = "demo-logins.txt"
#: username -> (role, site, qualified): one person per role.
DEMO_USERS = {"demo-reader": ("reader", DEMO_SITES[1][0], ("ecg", "imaging")),
              "demo-clinic": ("clinic", DEMO_SITES[2][0], ()),
              "demo-center-admin": ("center_admin", DEMO_SITES[1][0], ()),
              "demo-admin": ("network_admin", DEMO_SITES[0][0], ())}


def _ensure_users(system: System) -> dict[str, str]:
    """The demo people and their passwords (generated once, kept readable by the owner only)."""
    path = system.settings.data_dir / _LOGINS_FILE
    logins = dict(line.split("\t", 1) for line in path.read_text().splitlines()) if path.is_file() else {}
    have = {u.username for u in list_users(system.db)}
    for username, (role, site, qualified) in DEMO_USERS.items():
        if username in have and username in logins:
            continue
        if username in have:
            raise SystemExit(f"the demo user {username} exists but {path} lost its password; use a fresh --data-dir")
        logins[username] = secrets.token_urlsafe(9)
        add_user(system.db, system.vault, username, logins[username], role, site, qualified,
                 display_name=username.replace("-", " ").title())
    path.write_text("".join(f"{u}\t{pw}\n" for u, pw in logins.items()))
    path.chmod(0o600)
    return logins


def _ensure_network(system: System) -> str:
    """Create the demo sites and cart once; return the cart's API key (kept in the data dir)."""
    key_file = system.settings.data_dir / _KEY_FILE
    have_sites = {site.name for site in list_sites(system.db)}
    have_device = any(device.ae_title == DEMO_AE for device in list_devices(system.db))
    for name, level, parent in DEMO_SITES:
        if name not in have_sites:
            add_site(system.db, name, level, parent)
    if have_device and not key_file.is_file():
        raise SystemExit(f"the demo device exists but its key file {key_file} is gone; use a fresh --data-dir")
    if not have_device:
        _, key = add_device(system.db, "demo-cart", DEMO_SITES[-1][0], DEMO_AE)
        key_file.write_text(key)
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start_embedded(system: System, stack: ExitStack) -> None:
    """Everything ``telediag up`` runs, in this process for the demo's duration (DICOM on loopback)."""
    from telediag.web import BackgroundServer

    system.start_embedded(stack, host="127.0.0.1")
    api = BackgroundServer(system, "127.0.0.1", system.settings.http_port)
    api.start()
    stack.callback(api.stop)


def _send_dicom(path: Path, settings: Settings) -> str:
    ae = AE(ae_title=DEMO_AE)
    ae.add_requested_context(Verification)
    ds = pydicom.dcmread(path)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)
    if not assoc.is_established:
        return "association refused"
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    if not status:
        return "no answer"
    code = int(status.Status)
    comment = status.get("ErrorComment", "")
    return "success" if code == 0 else f"refused, status 0x{code:04X} {comment}".rstrip()


def _send_ecg_file(path: Path, settings: Settings, api_key: str) -> str:
    """A cart's own export (SCP-ECG, HL7 aECG, GE MUSE or Philips XML) over HTTP."""
    resp = httpx.post(f"http://127.0.0.1:{settings.http_port}/api/v1/ecg", headers={"X-API-Key": api_key},
                      files=[("files", (path.name, path.read_bytes()))], timeout=60)
    body = resp.json()
    detail = body["objects"][0]["status"] if resp.is_success else body.get("detail")
    return f"HTTP {resp.status_code} {detail}"


def _send_wfdb(header: Path, settings: Settings, api_key: str) -> str:
    files = [("files", (p.name, p.read_bytes())) for p in sorted(header.parent.glob(header.stem + ".*"))
             if p.suffix != ".md"]
    resp = httpx.post(f"http://127.0.0.1:{settings.http_port}/api/v1/ecg/wfdb", files=files,
                      headers={"X-API-Key": api_key}, timeout=60)
    body = resp.json()
    return f"HTTP {resp.status_code} {body.get('status') or body.get('detail')}"


def _report_analyses(system: System, since_job: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with system.db.uow() as uow:
            if not uow.jobs.unfinished_after(since_job):
                break
        time.sleep(0.2)
    with system.db.uow() as uow:
        for job in uow.jobs.list(after_id=since_job):
            result = uow.results.for_object(job["object_id"])
            name = job["object_key"].rsplit("/", 1)[-1]
            if result is None:
                print(f"  job {job['id']} ({name}): {job['state']} {job['error'] or ''}")
                continue
            print(f"  job {job['id']} ({name}): {_describe(result)}")


def _describe(result: dict) -> str:
    """One line on a job's result: an ECG's analysis, or an image's description and preview."""
    image = result.get("imaging")
    if image is None:
        return describe_analysis(result)
    findings = ", ".join(f["code"] for f in image["findings"]) or "none"
    return (f"{image['modality'] or 'image'} {image['columns']}x{image['rows']}, {image['frames']} frame(s), "
            f"preview {'kept' if result.get('preview') else 'none'}, findings: {findings}")


def run_demo(settings: Settings, samples: Path, serve: bool = True) -> int:
    system = System(settings)
    api_key = _ensure_network(system)
    logins = _ensure_users(system)
    with system.db.uow() as uow:
        last_job = uow.jobs.last_id()
    with ExitStack() as stack:
        stack.callback(system.close)
        started_here = not (_listening(settings.dicom_port) and _listening(settings.http_port))
        if not started_here:
            print(f"using the telediag already running on ports {settings.dicom_port}/{settings.http_port}")
        else:
            print(f"starting telediag in this process (data in {settings.data_dir})")
            _start_embedded(system, stack)
        ae = AE(ae_title=DEMO_AE)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)
        print(f"C-ECHO as {DEMO_AE}: {'ok' if assoc.is_established and assoc.send_c_echo() else 'failed'}")
        if assoc.is_established:
            assoc.release()
        for path in sorted(samples.rglob("*.dcm")):
            print(f"C-STORE {path.relative_to(samples)}: {_send_dicom(path, settings)}")
        vendor_files = sorted(p for p in (samples / "ecg-formats").rglob("*") if p.is_file() and p.suffix != ".md")
        for path in vendor_files:
            print(f"HTTP upload of {path.relative_to(samples)}: {_send_ecg_file(path, settings, api_key)}")
        for header in sorted(samples.rglob("*.hea")):
            print(f"HTTP upload of WFDB record {header.relative_to(samples).with_suffix('')}: "
                  f"{_send_wfdb(header, settings, api_key)}")
        print("analysis results:")
        _report_analyses(system, last_job)
        print(f"\nlog in at http://127.0.0.1:{settings.http_port}/login (the ECGs above wait in the reader's queue):")
        for username, password in logins.items():
            print(f"  {DEMO_USERS[username][0]:<14} {username:<18} password {password}")
        if started_here and serve:
            print("telediag keeps serving; Ctrl-C stops it", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0

