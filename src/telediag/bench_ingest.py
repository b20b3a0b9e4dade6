"""``telediag bench ingest``: DICOM ingest throughput with a stock sender.

Generates N distinct 12-lead ECG Waveform objects (500 Hz x 10 s x 12 leads, int16,
about 120 KB each, new Study/Series/SOP Instance UIDs per object; the signal is the
rhythm group of ``../shared/data/dicom/waveform_ecg.dcm`` resampled to 500 Hz when that
file is present, else a synthetic ECG), then sends the same files over loopback with ONE
dcmtk ``storescu`` association each to:

* ``telediag``      - telediag's :class:`~telediag.dicom_scp.StorageSCP` in embedded mode:
                      full validation, object store with fsync, SQLite (WAL, synchronous=FULL)
                      commit of object + outbox job, publish to the in-process broker;
* ``bare-naive``    - a bare pynetdicom SCP writing each data set to a file (no fsync,
                      no validation), with pynetdicom's defaults: the naive baseline that
                      suffers the Nagle / delayed-ACK stall where the kernel has it;
* ``bare-quick-ack``- the same bare SCP with the stall avoided (TCP_QUICKACK re-armed on
                      every recv, 256 KiB max PDU, no per-PDU log handlers), pynetdicom's
                      reactors as they ship: the issue's reference point;
* ``bare-prompt``   - the same bare SCP with all of telediag's transport tuning (also the
                      event-driven reactors of :mod:`telediag.dicom_transport`): the same
                      network path as telediag, so the gap to telediag is the cost of
                      validation, durability and recording alone.
* ``orthanc``       - Debian's Orthanc (C++ PACS, files fsync'd, SQLite index) with its
                      stock settings, when ``apt-get install orthanc`` has been done.

The analysis worker is not running while the objects are sent unless ``--with-worker``
is given (then it analyses the ECGs concurrently, in the same process, as
``telediag up`` does); jobs are written and published either way.

Only loopback traffic; files and state live in a temporary directory removed at the end
(``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from telediag.dcmtk import find_dcmtk

log = logging.getLogger(__name__)

ECG_12LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
#: SCP-ECG lead codes (CID 3001, coding scheme SCPECG) for the 12 standard leads.
SCP_CODES = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
             "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}
FS = 500
SECONDS = 10
BENCH_AE = "BENCHCART"


def _bench_ae(run: str) -> str:
    """The sending cart's AE title for one run (unique, so a shared database can be reused)."""
    return (BENCH_AE + run.upper())[:16]


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _reference_ecg() -> Path:
    return _project_root().parent / "shared" / "data" / "dicom" / "waveform_ecg.dcm"


# -- objects ---------------------------------------------------------------------------------
def base_signal_uv() -> tuple[np.ndarray, str]:
    """(5000 x 12 int16 samples in uV, where they came from)."""
    ref = _reference_ecg()
    if ref.is_file():
        try:
            from scipy.signal import resample_poly

            from telediag.ecg.io import read_dicom_waveform

            rec = read_dicom_waveform(ref)
            by_lead = {name: i for i, name in enumerate(rec.leads)}
            if set(LEADS) <= set(by_lead):
                sig_mv = np.column_stack([rec.signals[:, by_lead[name]] for name in LEADS])
                up, down = FS, int(round(rec.fs))
                res = resample_poly(sig_mv, up, down, axis=0)[: FS * SECONDS]
                if len(res) == FS * SECONDS:
                    return np.clip(np.round(res * 1000.0), -32768, 32767).astype("<i2"), ref.name
        except Exception as exc:  # fall back to the synthetic signal
            log.warning("could not use %s (%s); using a synthetic ECG", ref.name, exc)
    return synthetic_ecg_uv(), "synthetic"


def synthetic_ecg_uv(hr_bpm: float = 72.0, seed: int = 1) -> np.ndarray:
    """A plausible 12-lead sinus rhythm (P, QRS, T Gaussians, lead-specific gains) in uV."""
    rng = np.random.default_rng(seed)
    t = np.arange(FS * SECONDS) / FS
    rr = 60.0 / hr_bpm
    beats = np.arange(0.3, SECONDS, rr)
    waves = [(-0.20, 0.025, 0.15), (-0.03, 0.008, -0.1), (0.0, 0.010, 1.2), (0.03, 0.010, -0.25), (0.25, 0.040, 0.3)]
    lead_ii = np.zeros_like(t)
    for b in beats:
        for off, width, amp in waves:
            lead_ii += amp * np.exp(-0.5 * ((t - b - off) / width) ** 2)
    gains = [0.6, 1.0, 0.4, -0.8, 0.1, 0.7, -0.5, 0.3, 0.8, 1.2, 1.1, 0.9]
    sig_mv = np.column_stack([g * lead_ii + 0.02 * rng.standard_normal(t.size) for g in gains])
    return np.round(sig_mv * 1000.0).astype("<i2")


def make_ecg_dataset(samples_uv: np.ndarray):
    """A 12-lead ECG Waveform Storage data set around ``samples_uv`` (n x 12, int16, uV)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = ECG_12LEAD
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "ECG"
    ds.PatientName = "BENCH^SYNTHETIC"
    ds.PatientID = "BENCH0001"
    ds.PatientSex = "O"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = ds.ContentDate = time.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = time.strftime("%H%M%S")
    ds.AcquisitionDateTime = ds.ContentDate + ds.ContentTime
    ds.Manufacturer = "telediag bench"
    ds.InstanceNumber = 1
    ds.SeriesNumber = 1
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0.0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = samples_uv.shape[1]
    group.NumberOfWaveformSamples = samples_uv.shape[0]
    group.SamplingFrequency = str(FS)
    group.MultiplexGroupLabel = "RHYTHM"
    channels = []
    for name in LEADS:
        ch = Dataset()
        src = Dataset()
        src.CodeValue = f"5.6.3-9-{SCP_CODES[name]}"
        src.CodingSchemeDesignator = "SCPECG"
        src.CodingSchemeVersion = "1.3"
        src.CodeMeaning = f"Lead {name}"
        ch.ChannelSourceSequence = Sequence([src])
        ch.ChannelSensitivity = "1.0"
        unit = Dataset()
        unit.CodeValue = "uV"
        unit.CodingSchemeDesignator = "UCUM"
        unit.CodeMeaning = "microvolt"
        ch.ChannelSensitivityUnitsSequence = Sequence([unit])
        ch.ChannelSensitivityCorrectionFactor = "1.0"
        ch.ChannelBaseline = "0.0"
        ch.ChannelSampleSkew = "0.0"
        ch.WaveformBitsStored = 16
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = np.ascontiguousarray(samples_uv, dtype="<i2").tobytes()
    ds.WaveformSequence = Sequence([group])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ECG_12LEAD
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def generate_objects(out_dir: Path, n: int, seed: int = 0) -> tuple[list[Path], str]:
    """Write ``n`` distinct ECG objects into ``out_dir``; return their paths and the signal source."""
    from pydicom.uid import generate_uid

    out_dir.mkdir(parents=True, exist_ok=True)
    base, source = base_signal_uv()
    rng = np.random.default_rng(seed)
    ds = make_ecg_dataset(base)
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

        from telediag import dicom_scp, dicom_transport

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
    note: str = ""

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


def _count_stored(system, device_id: int) -> int:
    from sqlalchemy import func, select

    from telediag.models import Case, StoredObject

    with system.db.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(StoredObject).join(Case)
                                      .where(Case.device_id == device_id)))


def run_telediag(work: Path, src: list[Path], storescu: str, n: int, total: int, with_worker: bool,
                 timeout_s: float, servers: dict[str, str | None]) -> Row:
    """telediag's SCP in embedded mode, or against the servers named in ``servers``
    (``database_url``, ``object_store_url``, ``broker_url``; None keeps the embedded part).
    The bench network gets names unique to this run, so a shared database can be reused."""
    from telediag.config import Settings
    from telediag.dicom_scp import StorageSCP
    from telediag.network import add_device, add_site
    from telediag.system import System

    settings = Settings(data_dir=work / "telediag-data", database_url=servers.get("database_url"),
                        object_store_url=servers.get("object_store_url"),
                        broker_url=servers.get("broker_url") or "stub://")
    system = System(settings)
    run = work.name.rsplit("-", 1)[-1]
    add_site(system.db, f"Bench Prefecture {run}", "prefecture")
    add_site(system.db, f"Bench County {run}", "county", f"Bench Prefecture {run}")
    add_site(system.db, f"Bench Township {run}", "township", f"Bench County {run}")
    device_id, _ = add_device(system.db, f"bench-cart-{run}", f"Bench Township {run}", _bench_ae(run))
    system.store  # open before timing
    worker = system.worker(threads=1) if with_worker else None
    if worker is not None:
        worker.start()
    scp = StorageSCP(system.ingest, system.db, ae_title="TELEDIAG", host="127.0.0.1", port=0)
    scp.start()
    try:
        wall, rc, out = send_all(storescu, scp.port, "TELEDIAG", src, timeout_s, _bench_ae(run))
        stored = _count_stored(system, device_id)
    finally:
        scp.stop()
        if worker is not None:
            worker.stop()
        system.close()
    note = "" if rc == 0 else f"storescu exit {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}"
    parts = [url.split(":", 1)[0].split("+")[0] for url in servers.values() if url]  # postgresql, s3, redis
    name = "telediag (" + (", ".join(parts) if parts else "durable") + (", worker on)" if with_worker else ")")
    return Row(name, n, stored, wall, total, note)


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
    import socket
    import urllib.request

    exe = shutil.which("Orthanc")
    if exe is None:
        return None
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    dicom_port, http_port = ports
    home = work / "orthanc"
    home.mkdir()
    (home / "orthanc.json").write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(home / "db"), "IndexDirectory": str(home / "db"),
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
        "SyncStorageArea": True, "StorageCompression": False, "Plugins": [], "HttpServerEnabled": True}))
    proc = subprocess.Popen([exe, str(home / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", dicom_port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                return Row("orthanc (Debian)", n, 0, 0.0, total, "did not start")
            time.sleep(0.2)
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


def format_table(rows: list[Row]) -> str:
    lines = [f"{'server':<36} | {'instances/s':>11} | {'MB/s':>6} | {'wall s':>7} | {'stored':>6} | note",
             "-" * 36 + "-+-" + "-" * 11 + "-+-" + "-" * 6 + "-+-" + "-" * 7 + "-+-" + "-" * 6 + "-+-----"]
    for r in rows:
        lines.append(f"{r.server:<36} | {r.rate:>11.1f} | {r.mb_s:>6.1f} | {r.wall_s:>7.2f} | {r.stored:>6} | {r.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telediag bench ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="number of ECG objects (default 1000)")
    parser.add_argument("--with-worker", action="store_true",
                        help="run the in-process analysis worker while telediag receives")
    parser.add_argument("--skip", action="append", default=[], choices=["telediag", *BARE_VARIANTS, "orthanc"],
                        help="leave out one of the servers (repeatable)")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit per storescu run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--database-url", help="run telediag against this database (default: embedded SQLite)")
    parser.add_argument("--object-store-url", help="... this object store, e.g. s3://ACCESS:SECRET@HOST:PORT/BUCKET")
    parser.add_argument("--broker-url", help="... and this broker, e.g. redis://127.0.0.1:6379/0")
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
        runs: list[tuple[str, Callable[[], Row]]] = [
            (variant, lambda variant=variant: run_bare(work, src, storescu, len(paths), total, variant, args.timeout))
            for variant in BARE_VARIANTS] + [
            ("telediag", lambda: run_telediag(work, src, storescu, len(paths), total, args.with_worker,
                                              args.timeout, servers)),
            ("orthanc", lambda: run_orthanc(work, src, storescu, len(paths), total, args.timeout)),
        ]
        rows: dict[str, Row] = {}
        for key, run in runs:
            if key not in args.skip:
                row = run()
                if row is None:  # an optional peer that is not installed
                    print(f"  ({key} not installed: apt-get install {key} adds its column)")
                    continue
                rows[key] = row
                print(f"  {row.server}: {row.rate:.1f}/s", flush=True)
        print()
        print(format_table(list(rows.values())))
        if "telediag" in rows:
            td = rows["telediag"].rate
            for key in (*BARE_VARIANTS, "orthanc"):
                if key in rows and rows[key].rate:
                    print(f"telediag / {rows[key].server}: {td / rows[key].rate:.2f}")
        ok = all(r.stored == r.objects and not r.note for r in rows.values())
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
