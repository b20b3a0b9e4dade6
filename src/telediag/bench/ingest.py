"""``telediag bench ingest``: DICOM ingest throughput with a stock sender.

Generates N distinct 12-lead ECG Waveform objects (500 Hz x 10 s x 12 leads, int16,
about 120 KB each, new Study/Series/SOP Instance UIDs per object; the signal is the
rhythm group of ``waveform_ecg.dcm`` (the shared reference data, or its copy in
``sample_data/``) resampled to 500 Hz), then sends the same files over loopback with ONE
dcmtk ``storescu`` association each to:

* ``telediag-up``   - ``telediag up`` as a newcomer runs it, in its own process: embedded
                      mode with its analysis processes analysing the ECGs while they arrive
                      (full validation, object store with fsync, SQLite (WAL,
                      synchronous=FULL) commit of object + outbox job, publish);
* ``telediag``      - telediag's :class:`~telediag.ingest.StorageSCP` alone, in the bench's
                      process, nothing analysed while receiving: the receiving path itself;
* ``bare-naive``    - a bare pynetdicom SCP writing each data set to a file (no fsync,
                      no validation), with pynetdicom's defaults: the naive baseline that
                      suffers the Nagle / delayed-ACK stall where the kernel has it;
* ``bare-quick-ack``- the same bare SCP with the stall avoided (TCP_QUICKACK re-armed on
                      every recv, 256 KiB max PDU, no per-PDU log handlers), pynetdicom's
                      reactors as they ship: the issue's reference point;
* ``bare-prompt``   - the same bare SCP with all of telediag's transport tuning (also the
                      event-driven reactors of :mod:`telediag.ingest.transport`): the same
                      network path as telediag, so the gap to telediag is the cost of
                      validation, durability and recording alone.
* ``orthanc``       - Debian's Orthanc (C++ PACS, files fsync'd, SQLite index) with its
                      stock settings, when ``apt-get install orthanc`` has been done.

For ``telediag up`` the table also says how many of the objects were analysed when the
last one had been received, and how long the backlog took to drain after that.

A shared virtual machine's disk and CPU drift by tens of percent within minutes, so the
servers run in turn, round after round (``--rounds``, default 3): the table gives each
server's median round, and each ratio is the median of the ratios within a round.

Only loopback traffic; files and state live in a temporary directory removed at the end
(``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from telediag.bench.dcmtk import find_dcmtk
from telediag.bench.refdata import project_root, shared_data_dir
from telediag.ecg import Recording, RecordingSource
from telediag.ecg.dicom_out import to_dicom_ecg

log = logging.getLogger(__name__)

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
FS = 500
SECONDS = 10
BENCH_AE = "BENCHCART"


def _bench_ae(run: str) -> str:
    """The sending cart's AE title for one run (unique, so a shared database can be reused)."""
    return (BENCH_AE + run.upper())[:16]


def _reference_ecg() -> Path:
    shared = shared_data_dir()
    return (shared or project_root() / "sample_data") / "dicom" / "waveform_ecg.dcm"


# -- objects ---------------------------------------------------------------------------------
def base_recording() -> tuple[Recording, str]:
    """The reference 12-lead ECG resampled to 500 Hz x 10 s, and where it came from."""
    from scipy.signal import resample_poly

    from telediag.ecg.readers import read_dicom_waveform

    ref = _reference_ecg()
    rec = read_dicom_waveform(ref)
    by_lead = {name: i for i, name in enumerate(rec.leads)}
    sig_mv = np.column_stack([rec.signals[:, by_lead[name]] for name in LEADS])
    res = resample_poly(sig_mv, FS, int(round(rec.fs)), axis=0)[: FS * SECONDS]
    return Recording(FS, tuple(LEADS), np.round(res * 1000.0) / 1000.0,
                     source=RecordingSource(patient_name="BENCH^SYNTHETIC", patient_sex="O",
                                            patient_birth_date="19700101", manufacturer="telediag bench")), ref.name


def generate_objects(out_dir: Path, n: int, seed: int = 0) -> tuple[list[Path], str]:
    """Write ``n`` distinct ECG objects into ``out_dir``; return their paths and the signal source."""
    from pydicom.uid import generate_uid

    out_dir.mkdir(parents=True, exist_ok=True)
    rec, source = base_recording()
    base = np.round(rec.signals * 1000.0).astype("<i2")
    rng = np.random.default_rng(seed)
    ds = to_dicom_ecg(rec)
    group = ds.WaveformSequence[0]
    paths = []
    for i in range(n):
        # Distinct content too: a per-object circular shift and a little noise.
        sig = np.roll(base, int(rng.integers(0, FS)), axis=0)
        sig = (sig + rng.integers(-3, 4, size=sig.shape)).astype("<i2")
        group.WaveformData = sig.tobytes()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID = f"BENCH{i:05d}"
        path = out_dir / f"ecg{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths, source


# -- servers ---------------------------------------------------------------------------------
#: Transport variants of the bare SCP: pynetdicom as it ships, with the stall avoided,
#: and with telediag's whole transport tuning.
BARE_VARIANTS = {"naive": "bare pynetdicom, naive", "quick-ack": "bare pynetdicom, quick-ack",
                 "prompt": "bare pynetdicom, telediag transport"}


class BareSCP:
    """A bare pynetdicom storage SCP: writes each received data set to a file, nothing else."""

    def __init__(self, out_dir: Path, variant: str) -> None:
        self.out_dir = out_dir
        self.variant = variant
        self.port = 0
        self.count = 0
        self._server = None

    def start(self) -> None:
        from pynetdicom import AE, evt

        from telediag.ingest import scp as dicom_scp
        from telediag.ingest import transport as dicom_transport

        self.out_dir.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title="BARE")
        for sop_class, syntaxes in dicom_scp.storage_contexts():
            ae.add_supported_context(sop_class, syntaxes)
        handlers = [(evt.EVT_C_STORE, self._on_store)]
        tune = {"quick-ack": dicom_transport.install_quick_ack, "prompt": dicom_transport.tune_acceptor}.get(self.variant)
        if tune is not None:
            ae.maximum_pdu_size = dicom_scp.DEFAULT_MAX_PDU
            handlers.append((evt.EVT_CONN_OPEN, lambda event: tune(event.assoc)))
        self._server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        if tune is not None:
            dicom_scp.StorageSCP._drop_pdu_loggers(self._server)
        self.port = int(self._server.server_address[1])

    def _on_store(self, event) -> int:
        with open(self.out_dir / f"{event.request.AffectedSOPInstanceUID}.dcm", "wb") as fh:
            fh.write(event.encoded_dataset())
        self.count += 1
        return 0x0000

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@dataclass
class Row:
    server: str
    objects: int
    stored: int
    wall_s: float
    total_bytes: int
    note: str = ""  #: a fault (the run does not count as a success)
    remark: str = ""  #: information beside the figures

    @property
    def rate(self) -> float:
        return self.objects / self.wall_s if self.wall_s else 0.0

    @property
    def mb_s(self) -> float:
        return self.total_bytes / self.wall_s / 1e6 if self.wall_s else 0.0


def send_all(storescu: str, port: int, called_ae: str, src_dirs: list[Path],
             timeout_s: float, calling_ae: str = BENCH_AE) -> tuple[float, int, str]:
    """One storescu association per folder, all at once; return (wall s, worst exit code, output tail)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen([storescu, "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port), "+sd", str(d)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for d in src_dirs]
    outs = [p.communicate(timeout=timeout_s)[0] for p in procs]
    wall = time.perf_counter() - t0
    return wall, max(p.returncode for p in procs), "".join(outs)[-600:]


def split_folders(paths: list[Path], work: Path, k: int) -> list[Path]:
    """``k`` folders holding the files round-robin (hard links), one per sending association."""
    if k == 1:
        return [paths[0].parent]
    folders = [work / f"assoc{i}" for i in range(k)]
    for folder in folders:
        folder.mkdir()
    for i, path in enumerate(paths):
        os.link(path, folders[i % k] / path.name)
    return folders


def _bench_network(db, run: str) -> int:
    """Register the run's sites and sending cart (names unique to the run, so a shared
    database can be reused); return the cart's device id."""
    from telediag.network import add_device, add_site

    add_site(db, f"Bench Prefecture {run}", "prefecture")
    add_site(db, f"Bench County {run}", "county", f"Bench Prefecture {run}")
    add_site(db, f"Bench Township {run}", "township", f"Bench County {run}")
    device_id, _ = add_device(db, f"bench-cart-{run}", f"Bench Township {run}", _bench_ae(run))
    return device_id


def _count_stored(db, device_id: int) -> int:
    with db.uow() as uow:
        return uow.cases.object_count(device_id)


def _server_names(servers: dict[str, str | None]) -> str:
    parts = [url.split(":", 1)[0].split("+")[0] for url in servers.values() if url]  # postgresql, s3, redis
    return ", ".join(parts) if parts else "embedded"


def _settings(work: Path, name: str, servers: dict[str, str | None]):
    from telediag.config import Settings

    return Settings(data_dir=work / name, database_url=servers.get("database_url"),
                    object_store_url=servers.get("object_store_url"),
                    broker_url=servers.get("broker_url") or "stub://")


def run_telediag(work: Path, src: list[Path], storescu: str, n: int, total: int, timeout_s: float,
                 servers: dict[str, str | None]) -> Row:
    """telediag's SCP alone in this process, receiving only: embedded parts, or the servers
    named in ``servers`` (``database_url``, ``object_store_url``, ``broker_url``)."""
    from telediag.bootstrap import System

    system = System(replace(_settings(work, "telediag-data", servers), dicom_port=0))
    run = work.name.rsplit("-", 1)[-1]
    device_id = _bench_network(system.db, run)
    system.store  # open before timing
    scp = system.storage_scp(host="127.0.0.1")
    scp.start()
    try:
        wall, rc, out = send_all(storescu, scp.port, "TELEDIAG", src, timeout_s, _bench_ae(run))
        stored = _count_stored(system.db, device_id)
    finally:
        scp.stop()
        system.close()
    note = "" if rc == 0 else f"storescu exit {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}"
    return Row(f"telediag SCP, receiving only ({_server_names(servers)})", n, stored, wall, total, note)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _finished(states: dict[str, int]) -> int:
    return states.get("done", 0) + states.get("dead", 0)


def _wait_listening(port: int, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until ``proc`` accepts connections on ``port``; False if it died or took too long."""
    import socket

    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        if time.monotonic() > deadline or proc.poll() is not None:
            return False
        time.sleep(0.2)


def run_telediag_up(work: Path, src: list[Path], storescu: str, n: int, total: int, timeout_s: float,
                    servers: dict[str, str | None]) -> Row:
    """``telediag up`` as shipped, in its own process, analysing while it receives."""
    from telediag.store import Database

    settings = _settings(work, "telediag-up", servers)
    db = Database(settings.effective_database_url)
    db.migrate()
    run = work.name.rsplit("-", 1)[-1] + "u"
    device_id = _bench_network(db, run)
    dicom_port, http_port = _free_port(), _free_port()
    env = {**os.environ, "TELEDIAG_DATA_DIR": str(settings.data_dir), "TELEDIAG_DICOM_PORT": str(dicom_port),
           "TELEDIAG_HTTP_PORT": str(http_port), "TELEDIAG_DICOM_HOST": "127.0.0.1"}
    for key, value in servers.items():
        if value:
            env[f"TELEDIAG_{key.upper()}"] = value
    log_file = open(work / "telediag-up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "telediag.cli", "up"], env=env, stdout=log_file,
                            stderr=subprocess.STDOUT)
    try:
        if not _wait_listening(dicom_port, proc, 60):
            return Row("telediag up", n, 0, 0.0, total, "did not start (see telediag-up.log)")
        with db.uow() as uow:  # a shared production database may hold earlier runs' jobs
            finished_before = _finished(uow.jobs.count_by_state())
        wall, rc, out = send_all(storescu, dicom_port, "TELEDIAG", src, timeout_s, _bench_ae(run))
        with db.uow() as uow:
            analysed_at_end = _finished(uow.jobs.count_by_state()) - finished_before
        stored = _count_stored(db, device_id)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            with db.uow() as uow:
                if _finished(uow.jobs.count_by_state()) - finished_before >= stored:
                    break
            time.sleep(0.5)
        drain = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)
        log_file.close()
        db.dispose()
    note = "" if rc == 0 else f"storescu exit {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}"
    remark = f"{analysed_at_end} analysed while receiving, the rest {drain:.1f} s later"
    return Row(f"telediag up, as shipped ({_server_names(servers)})", n, stored, wall, total, note, remark)


def run_bare(work: Path, src: list[Path], storescu: str, n: int, total: int, variant: str, timeout_s: float) -> Row:
    out_dir = work / f"bare-{variant}"
    scp = BareSCP(out_dir, variant)
    scp.start()
    try:
        wall, rc, out = send_all(storescu, scp.port, "BARE", src, timeout_s)
    finally:
        scp.stop()
    stored = len(list(out_dir.glob("*.dcm")))
    shutil.rmtree(out_dir, ignore_errors=True)
    note = "" if rc == 0 else f"storescu exit {rc}"
    return Row(BARE_VARIANTS[variant], n, stored, wall, total, note)


def run_orthanc(work: Path, src: list[Path], storescu: str, n: int, total: int, timeout_s: float) -> Row | None:
    """Debian's Orthanc (C++ PACS; files fsync'd, SQLite index) as a third peer, if installed."""
    import json
    import urllib.request

    exe = shutil.which("Orthanc")
    if exe is None:
        return None
    dicom_port, http_port = _free_port(), _free_port()
    home = work / "orthanc"
    home.mkdir()
    (home / "orthanc.json").write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(home / "db"), "IndexDirectory": str(home / "db"),
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
        "SyncStorageArea": True, "StorageCompression": False, "Plugins": [], "HttpServerEnabled": True}))
    proc = subprocess.Popen([exe, str(home / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not _wait_listening(dicom_port, proc, 30):
            return Row("orthanc (Debian)", n, 0, 0.0, total, "did not start")
        wall, rc, _ = send_all(storescu, dicom_port, "ORTHANC", src, timeout_s)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=10) as resp:
            stored = int(json.load(resp)["CountInstances"])
    finally:
        proc.terminate()
        proc.wait(30)
    return Row("orthanc (Debian, C++)", n, stored, wall, total, "" if rc == 0 else f"storescu exit {rc}")


def _log_to_file(path: Path) -> logging.Handler:
    """Send the servers' log lines (telediag logs every C-STORE at INFO, as in production) to
    a file instead of the terminal, which keeps the cost of logging in the figures and the
    tables readable."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def _median_row(rows: list[Row]) -> Row:
    """The round whose rate is the median (the lower middle of an even count)."""
    return sorted(rows, key=lambda r: r.rate)[(len(rows) - 1) // 2]


def format_table(rows: list[Row]) -> str:
    lines = [f"{'server':<44} | {'instances/s':>11} | {'MB/s':>6} | {'wall s':>7} | {'stored':>6} | note",
             "-" * 44 + "-+-" + "-" * 11 + "-+-" + "-" * 6 + "-+-" + "-" * 7 + "-+-" + "-" * 6 + "-+-----"]
    for r in rows:
        notes = "; ".join(x for x in (r.note, r.remark) if x)
        lines.append(f"{r.server:<44} | {r.rate:>11.1f} | {r.mb_s:>6.1f} | {r.wall_s:>7.2f} | {r.stored:>6} | {notes}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telediag bench ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="number of ECG objects (default 1000)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["telediag-up", "telediag", *BARE_VARIANTS, "orthanc"],
                        help="leave out one of the servers (repeatable)")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit per storescu run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--database-url", help="run telediag against this database (default: embedded SQLite)")
    parser.add_argument("--object-store-url", help="... this object store, e.g. s3://ACCESS:SECRET@HOST:PORT/BUCKET")
    parser.add_argument("--broker-url", help="... and this broker, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=3,
                        help="run every server this many times, in turn (default 3); medians are reported")
    parser.add_argument("--associations", type=int, default=1,
                        help="concurrent storescu associations (several carts at once); the issue's figure is 1")
    args = parser.parse_args(argv)

    servers = {"database_url": args.database_url, "object_store_url": args.object_store_url,
               "broker_url": args.broker_url}
    storescu = find_dcmtk("storescu")
    if storescu is None:
        print("dcmtk storescu not found on PATH (apt-get install dcmtk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="telediag-bench-"))
    log_handler = _log_to_file(work / "telediag.log")
    try:
        t0 = time.perf_counter()
        paths, source = generate_objects(work / "objects", args.n)
        total = sum(p.stat().st_size for p in paths)
        src = split_folders(paths, work, args.associations)
        print(f"generated {len(paths)} 12-lead ECG objects ({total / len(paths) / 1000:.1f} KB each, "
              f"signal: {source}) in {time.perf_counter() - t0:.1f} s; sender: {storescu}, "
              f"{args.associations} association(s) at once")
        skipped: set[str] = set(args.skip)
        rounds: dict[str, list[Row]] = {}
        for r in range(args.rounds):
            here = work / f"round{r + 1}"
            here.mkdir()
            runs: list[tuple[str, Callable[[], Row | None]]] = [
                (variant, lambda variant=variant: run_bare(here, src, storescu, len(paths), total, variant,
                                                           args.timeout))
                for variant in BARE_VARIANTS] + [
                ("telediag-up", lambda: run_telediag_up(here, src, storescu, len(paths), total, args.timeout,
                                                        servers)),
                ("telediag", lambda: run_telediag(here, src, storescu, len(paths), total, args.timeout, servers)),
                ("orthanc", lambda: run_orthanc(here, src, storescu, len(paths), total, args.timeout)),
            ]
            for key, run in runs:
                if key in skipped:
                    continue
                row = run()
                if row is None:  # an optional peer that is not installed
                    print(f"  ({key} not installed: apt-get install {key} adds its column)")
                    skipped.add(key)
                    continue
                rounds.setdefault(key, []).append(row)
                print(f"  round {r + 1}/{args.rounds}: {row.server}: {row.rate:.1f}/s", flush=True)
        rows = {key: _median_row(runs_of) for key, runs_of in rounds.items()}
        print()
        print(format_table(list(rows.values())))
        if args.rounds > 1:
            print(f"(each row: the median of {args.rounds} rounds; each ratio: the median of the rounds' ratios)")
        for ours in ("telediag-up", "telediag"):
            if ours not in rows:
                continue
            for key in (*BARE_VARIANTS, "orthanc"):
                if key in rows:
                    ratios = [o.rate / p.rate for o, p in zip(rounds[ours], rounds[key]) if p.rate]
                    print(f"{rows[ours].server} / {rows[key].server}: {statistics.median(ratios):.2f} "
                          f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
        ok = all(r.stored == r.objects and not r.note for runs_of in rounds.values() for r in runs_of)
        return 0 if ok else 1
    finally:
        logging.getLogger().removeHandler(log_handler)
        log_handler.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
