"""``telediag bench dicomweb``: issue #9's figures for DICOMweb.

1. **QIDO-RS latency** (p50/p99; the issue's target: p99 under 100 ms on PostgreSQL with
   100,000 instances) with ``--instances`` (default 20,000 for a quick run) indexed in the
   real network's shape (1 prefecture, 11 counties, 247 townships; a cart, a clinic user and
   readers as in ``bench review``). Studies are a regional network's mix - resting ECGs (one
   instance), radiographs, ultrasound, CT and MR series - over two years and a patient list
   per township with Chinese names (``ZHANG^WEI=张^伟``). Their rows are written through the
   store's ingest repository (``db.ingest_rows``: case, patient and object rows with the
   catalog's attributes; no bytes, which no search reads). The searches are those a viewer and
   a county PACS make: a worklist page, a patient by ID and by name (wildcard and fuzzy), a
   month's studies, a modality, one study's series, one series' instances, an instance by UID,
   asked by a township clinic, a county reader and the prefecture.
2. **WADO-RS throughput** in MB/s for a ``--study-mb`` (default 200) study of 5 MB images
   stored through the ingest use case, beside reading the same objects straight from the
   object store (``ObjectStore.get`` with its SHA-256 check, which the retrieve does too),
   and how much the serving process's RSS grew while it sent the study.
3. **STOW-RS instances/s** for ``--stow`` (default 200) 12-lead ECG objects (``bench
   ingest``'s, about 120 KB), one instance per request and ten per request, beside C-STORE of
   the same objects over one dcmtk ``storescu`` association to telediag's SCP (when dcmtk is
   installed).

The API is served by uvicorn in a thread of this process; the HTTP clients run in separate
processes, so their work does not share the server's interpreter lock. Runs on SQLite
(embedded) and, with ``--postgres`` (a throw-away database created and dropped on
``--pg-admin``) or ``--database-url``, on PostgreSQL too. A print-out, not a timed test.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import subprocess
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import httpx
import numpy as np

from telediag.bench.review import Clients, Township, World, databases, serve_world

if TYPE_CHECKING:
    from telediag.bootstrap import System

__all__ = ["main"]

QIDO_TARGET_MS = 100.0
#: The study mix: modality -> (share of studies, (min, max) series, (min, max) instances per series, SOP class).
MIX = {
    "ECG": (0.50, (1, 1), (1, 1), "1.2.840.10008.5.1.4.1.1.9.1.1"),
    "DX": (0.25, (1, 1), (1, 3), "1.2.840.10008.5.1.4.1.1.1.1"),
    "US": (0.15, (1, 1), (4, 20), "1.2.840.10008.5.1.4.1.1.6.1"),
    "CT": (0.07, (1, 2), (20, 80), "1.2.840.10008.5.1.4.1.1.2"),
    "MR": (0.03, (2, 4), (15, 30), "1.2.840.10008.5.1.4.1.1.4"),
}
SURNAMES = [("ZHANG", "张"), ("WANG", "王"), ("LI", "李"), ("LIU", "刘"), ("CHEN", "陈"), ("YANG", "杨"),
            ("HUANG", "黄"), ("ZHAO", "赵"), ("WU", "吴"), ("ZHOU", "周"), ("XU", "徐"), ("SUN", "孙")]
GIVEN = [("WEI", "伟"), ("FANG", "芳"), ("NA", "娜"), ("MIN", "敏"), ("JING", "静"), ("LEI", "磊"), ("QIANG", "强"),
         ("YANG", "洋"), ("YAN", "艳"), ("JUN", "军"), ("JIE", "杰"), ("TAO", "涛"), ("MING", "明"), ("CHAO", "超")]
INSTANCE_MB = 5


# -- part 1: QIDO-RS ---------------------------------------------------------------------------
@dataclass
class Seeded:
    """What was indexed, and handles on it for the searches."""

    studies: int
    series: int
    instances: int
    #: per township site id: the PatientIDs of its studies
    patients: dict[int, list[str]]
    #: (study UID, series UID, an instance UID) of CT and MR series
    cross_sectional: list[tuple[str, str, str]]
    accessions: list[str]
    study_uids: list[str]


def seed_catalog(system: System, townships: list[Township], instances: int, seed: int = 9) -> Seeded:
    """``instances`` catalogued instances in studies of the module doc's mix, in transactions
    of about 1,000 rows; the bytes are never written (searches never read them)."""
    from telediag.domain import MediaType
    from telediag.store import InstanceCatalog, ObjectRow, StudyCatalog, StudyRef

    rng = np.random.default_rng(seed)
    modalities = list(MIX)
    shares = np.array([MIX[m][0] for m in modalities])
    root = f"2.25.{secrets.randbits(64)}"
    now = datetime.now(timezone.utc)
    patients_per_township = 40
    patients: dict[int, list[str]] = {}
    seeded = Seeded(0, 0, 0, patients, [], [], [])
    rows = system.db.ingest_rows
    written = 0
    while seeded.instances < instances:
        with rows.transaction() as tx:
            while written < 1000 and seeded.instances < instances:
                s = seeded.studies
                town = townships[int(rng.integers(len(townships)))]
                p = int(rng.integers(patients_per_township))
                patient_id = f"T{town.site_id:03d}P{p:04d}"
                (family, family_zh), (given, given_zh) = (SURNAMES[(town.site_id * 7 + p) % len(SURNAMES)],
                                                          GIVEN[(town.site_id + p * 3) % len(GIVEN)])
                modality = modalities[int(rng.choice(len(modalities), p=shares))]
                _, series_range, per_series, sop_class = MIX[modality]
                when = now - timedelta(days=float(rng.uniform(0, 730)))
                study_uid = f"{root}.{s}"
                accession = f"A{s:08d}"
                ref = StudyRef(site_id=town.site_id, device_id=town.device_id, study_instance_uid=study_uid,
                               is_ecg=modality == "ECG", patient_key=patient_id,
                               patient_name=f"{family}^{given}={family_zh}^{given_zh}",
                               patient_sex="MF"[p % 2], patient_birth_date=f"{1940 + p % 70}0615",
                               catalog=StudyCatalog(study_date=when.strftime("%Y%m%d"),
                                                    study_time=when.strftime("%H%M%S"), accession_number=accession,
                                                    study_description=f"{modality} exam", study_id=str(s)))
                case_id = tx.case_for_study(ref, when)
                for k in range(int(rng.integers(series_range[0], series_range[1] + 1))):
                    series_uid = f"{study_uid}.{k + 1}"
                    count = int(rng.integers(per_series[0], per_series[1] + 1))
                    for i in range(count):
                        uid = f"{series_uid}.{i + 1}"
                        tx.insert_object(case_id, ObjectRow(
                            key=f"bench/{town.site_id}/{uid}.dcm", size=500_000, sha256="0" * 64,
                            media_type=MediaType.DICOM, sop_instance_uid=uid, sop_class_uid=sop_class,
                            series_instance_uid=series_uid, transfer_syntax_uid="1.2.840.10008.1.2.1",
                            modality=modality, catalog=InstanceCatalog(
                                series_number=k + 1, series_description=f"{modality} series {k + 1}",
                                instance_number=i + 1, rows=None if modality == "ECG" else 512,
                                columns=None if modality == "ECG" else 512,
                                number_of_frames=None if modality == "ECG" else 1)), when)
                    seeded.series += 1
                    seeded.instances += count
                    written += count
                    if modality in ("CT", "MR"):
                        seeded.cross_sectional.append((study_uid, series_uid, f"{series_uid}.1"))
                seeded.studies += 1
                patients.setdefault(town.site_id, []).append(patient_id)
                seeded.accessions.append(accession)
                seeded.study_uids.append(study_uid)
            tx.commit()
        written = 0
    system.db.refresh_statistics()  # what autovacuum would do before anyone searched
    return seeded


def qido_calls(world: World, seeded: Seeded, seed: int = 3) -> list[tuple[str, list[tuple[str, str]]]]:
    """The searches of the module doc: (name, [(path, bearer token)]), each with varied parameters."""
    rng = np.random.default_rng(seed)
    clinic_sites = [next(t.site_id for t in world.townships if t.county == c) for c in sorted(world.readers)]
    clinic_token = dict(zip(clinic_sites, world.clinics))
    readers = [(tok, county) for county, toks in world.readers.items() for tok in toks]
    pick = lambda values: values[int(rng.integers(len(values)))]  # noqa: E731
    months = [(datetime.now(timezone.utc) - timedelta(days=30 * m)) for m in range(24)]
    month_range = lambda d: f"{d.strftime('%Y%m')}01-{d.strftime('%Y%m')}28"  # noqa: E731
    n = 50
    calls: list[tuple[str, list[tuple[str, str]]]] = [
        ("studies, first page (township clinic)", [("/dicomweb/studies?limit=100", clinic_token[s])
                                                   for s in clinic_sites]),
        ("studies?PatientID= (township clinic)", [
            (f"/dicomweb/studies?PatientID={pick(seeded.patients.get(s) or ['none'])}", clinic_token[s])
            for s in clinic_sites for _ in range(5)]),
        ("studies, first page (county reader)", [("/dicomweb/studies?limit=100", tok) for tok, _ in readers]),
        ("studies?StudyDate=<a month> (county reader)", [
            (f"/dicomweb/studies?StudyDate={month_range(pick(months))}&limit=100", pick(readers)[0])
            for _ in range(n)]),
        ("studies?PatientName=<surname>* (county reader)", [
            (f"/dicomweb/studies?PatientName={pick(SURNAMES)[0].lower()}*&limit=100", pick(readers)[0])
            for _ in range(n)]),
        ("studies?PatientName=<given surname>&fuzzymatching=true", [
            (f"/dicomweb/studies?PatientName={pick(GIVEN)[0]}%20{pick(SURNAMES)[0]}&fuzzymatching=true&limit=100",
             pick(readers)[0]) for _ in range(n)]),
        ("studies?ModalitiesInStudy=CT (county reader)", [("/dicomweb/studies?ModalitiesInStudy=CT&limit=100", tok)
                                                          for tok, _ in readers]),
        ("studies, first page (prefecture)", [("/dicomweb/studies?limit=100", world.prefecture)]),
        ("studies?PatientID= (prefecture)", [
            (f"/dicomweb/studies?PatientID={pick(pick(list(seeded.patients.values())))}", world.prefecture)
            for _ in range(n)]),
        ("studies?AccessionNumber= (prefecture)", [
            (f"/dicomweb/studies?AccessionNumber={pick(seeded.accessions)}", world.prefecture) for _ in range(n)]),
        ("studies?PatientName=<surname>*&StudyDate=<a month> (pref.)", [
            (f"/dicomweb/studies?PatientName={pick(SURNAMES)[0]}*&StudyDate={month_range(pick(months))}&limit=100",
             world.prefecture) for _ in range(n)]),
        ("studies/{study}/series (prefecture)", [
            (f"/dicomweb/studies/{pick(seeded.cross_sectional)[0]}/series", world.prefecture) for _ in range(n)]),
        ("studies/{study}/series/{series}/instances (prefecture)", [
            (f"/dicomweb/studies/{study}/series/{series}/instances", world.prefecture)
            for study, series, _ in (pick(seeded.cross_sectional) for _ in range(n))]),
        ("instances?SOPInstanceUID= (prefecture)", [
            (f"/dicomweb/instances?SOPInstanceUID={pick(seeded.cross_sectional)[2]}", world.prefecture)
            for _ in range(n)]),
    ]
    return calls


def part_qido(world: World, clients: Clients, seeded: Seeded, requests: int, label: str) -> list[str]:
    rows = [f"== QIDO-RS, {label}: {seeded.instances:,} instances in {seeded.series:,} series of "
            f"{seeded.studies:,} studies over {len(world.townships)} townships; ms, {requests} sequential "
            f"requests each ==",
            f"  {'search':<58} {'n':>4} {'KB':>6} {'results':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6}  "
            f"p99 < {QIDO_TARGET_MS:.0f}"]
    for name, calls in qido_calls(world, seeded):
        clients.run(calls, min(10, requests), 1)  # warm-up: compiled statements, pooled connections
        run = clients.run(calls, requests, 1)
        p50, p95, p99, top = run.pcts()
        results = _results(world.base, calls[0])
        rows.append(f"  {name:<58} {len(run.ms):4d} {np.median(run.sizes) / 1024:6.1f} {results:7d} {p50:6.1f} "
                    f"{p95:6.1f} {p99:6.1f} {top:6.1f}  {'yes' if p99 < QIDO_TARGET_MS else 'NO'}")
    return rows


def _results(base: str, call: tuple[str, str]) -> int:
    path, token = call
    return len(httpx.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=60).json())


# -- part 2: WADO-RS ---------------------------------------------------------------------------
def _image(study: str, series: str, number: int, side: int, pixels: bytes) -> bytes:
    """A 16-bit secondary capture image of ``side`` squared pixels as Part 10 bytes."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, number
    ds.PatientID, ds.PatientName, ds.Modality = "BENCHWADO", "BENCH^WADO", "OT"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def part_wado(world: World, clients: Clients, study_mb: int, repeat: int, label: str) -> list[str]:
    """A large study stored through the ingest use case, then read from the store and over WADO-RS."""
    from pydicom.uid import generate_uid

    from telediag.network import device_by_api_key
    from telediag.store.review import CaseScope

    system = world.system
    device = device_by_api_key(system.db, world.townships[0].api_key)
    side = int((INSTANCE_MB * 1e6 / 2) ** 0.5)
    count = max(1, study_mb // INSTANCE_MB)
    study, series = generate_uid(), generate_uid()
    pixels = np.random.default_rng(4).integers(0, 4096, side * side, dtype="<u2").tobytes()
    t0 = time.perf_counter()
    for n in range(count):
        system.ingest.ingest_dicom(device, _image(study, series, n + 1, side, pixels))
    ingest_s = time.perf_counter() - t0
    with system.db.uow() as uow:
        rows = uow.catalog.instances(CaseScope(), study, None, {})
    total = sum(r["_size"] for r in rows)
    store_s = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for r in rows:
            system.store.get(r["_key"], r["_sha256"])
        store_s.append(time.perf_counter() - t0)
    path = f"/dicomweb/studies/{study}"
    peak, done = [_rss_mb()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(_rss_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    before = _rss_mb()
    sampler.start()
    try:
        client, fetched = _fetch(world.base, path, world.prefecture, clients, repeat)
    finally:
        done.set()
        sampler.join()
    sent = float(np.median([size for size, _ in fetched]))
    wado_s = float(np.median([seconds for _, seconds in fetched]))
    store_mb_s = total / float(np.median(store_s)) / 1e6
    return [f"== WADO-RS, {label}: one study of {count} instances of {total / count / 1e6:.1f} MB "
            f"({total / 1e6:.0f} MB, stored through ingest in {ingest_s:.1f} s); median of {repeat} ==",
            f"  {'read':<62} {'MB':>6} {'s':>6} {'MB/s':>7}",
            f"  {'object store, ObjectStore.get with the SHA-256 check, in process':<62} {total / 1e6:6.0f} "
            f"{float(np.median(store_s)):6.2f} {store_mb_s:7.0f}",
            f"  {'GET /dicomweb/studies/{study} (multipart/related), ' + client:<62} {sent / 1e6:6.0f} "
            f"{wado_s:6.2f} {sent / wado_s / 1e6:7.0f}",
            f"  WADO-RS / object store: {sent / wado_s / 1e6 / store_mb_s:.2f}; the serving process's RSS grew "
            f"{max(peak) - before:.0f} MB while sending ({before:.0f} MB before)"]


def _fetch(base: str, path: str, token: str, clients: Clients, repeat: int) -> tuple[str, list[tuple[int, float]]]:
    """GET ``path`` ``repeat`` times with curl (a stock client that keeps up with the server;
    httpx in a client process when there is none); the client's name and (bytes, s) of each."""
    curl = shutil.which("curl")
    if curl is None:
        run = clients.run([(path, token)], repeat, 1)
        return "httpx", [(size, ms / 1000) for size, ms in zip(run.sizes, run.ms)]
    out = []
    for _ in range(repeat):
        done = subprocess.run([curl, "-sS", "--fail", "-o", os.devnull, "-w", "%{size_download} %{time_total}",
                               "-H", f"Authorization: Bearer {token}", base + path], capture_output=True, text=True,
                              check=True)
        size, seconds = done.stdout.split()
        out.append((int(size), float(seconds)))
    return "curl", out


# -- part 3: STOW-RS ---------------------------------------------------------------------------
def _post_all(base: str, key: str, paths: list[str], per_request: int) -> tuple[float, int]:
    """POST the files in requests of ``per_request`` instances on one connection (run in a
    client process); (seconds, instances acknowledged as stored)."""
    boundary = "telediag-bench-boundary"
    headers = {"X-API-Key": key, "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    bodies = []
    for i in range(0, len(paths), per_request):
        parts = [Path(p).read_bytes() for p in paths[i:i + per_request]]
        bodies.append(b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                               for p in parts) + f"--{boundary}--\r\n".encode())
    stored = 0
    with httpx.Client(base_url=base, timeout=300) as client:
        t0 = time.perf_counter()
        for body in bodies:
            r = client.post("/dicomweb/studies", content=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"STOW-RS: HTTP {r.status_code} {r.text[:300]}")
            stored += len(r.json().get("00081199", {}).get("Value", []))
        return time.perf_counter() - t0, stored


def part_stow(world: World, work: Path, n: int, database_url: str | None, label: str) -> list[str]:
    from telediag.bench.dcmtk import find_dcmtk
    from telediag.bench.ingest import generate_objects, run_telediag

    rows = [f"== STOW-RS, {label}: {n} 12-lead ECG objects of about 120 KB (bench ingest's), one client ==",
            f"  {'how':<62} {'s':>6} {'instances/s':>11}"]
    key = world.townships[1].api_key
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        for per_request in (1, 10):
            paths, _ = generate_objects(work / f"stow{per_request}", n, seed=per_request)
            seconds, stored = pool.submit(_post_all, world.base, key, [str(p) for p in paths], per_request).result()
            what = f"POST /dicomweb/studies, {per_request} instance{'s' if per_request > 1 else ''} per request"
            rows.append(f"  {what:<62} {seconds:6.2f} {stored / seconds:11.1f}")
    storescu = find_dcmtk("storescu")
    if storescu is None:
        rows.append("  (C-STORE beside it needs dcmtk's storescu: apt-get install dcmtk)")
        return rows
    paths, _ = generate_objects(work / "cstore", n, seed=99)
    cstore = run_telediag(work, [paths[0].parent], storescu, n, sum(p.stat().st_size for p in paths), 600,
                          {"database_url": database_url})
    rows.append(f"  {'C-STORE, dcmtk storescu, one association, telediag SCP':<62} {cstore.wall_s:6.2f} "
                f"{cstore.rate:11.1f}{'  ' + cstore.note if cstore.note else ''}")
    return rows


# -- one database ------------------------------------------------------------------------------
def run_database(label: str, database_url: str | None, args: argparse.Namespace,
                 say: Callable[[str], None]) -> None:
    with ExitStack() as stack:
        _, world, work, clients, seeded, network_s, seed_s = serve_world(
            stack, "telediag-bench-dicomweb-", database_url, args.readers, 1,
            lambda system, world: seed_catalog(system, world.townships, args.instances))
        say(f"{label}: network in {network_s:.1f} s, {seeded.instances:,} instances catalogued in {seed_s:.1f} s")
        for row in part_qido(world, clients, seeded, args.requests, label):
            say(row)
        if args.study_mb:
            for row in part_wado(world, clients, args.study_mb, args.repeat, label):
                say(row)
        if args.stow:
            for row in part_stow(world, work, args.stow, database_url, label):
                say(row)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``telediag bench dicomweb``; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="telediag bench dicomweb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=20_000,
                        help="instances catalogued (default 20,000; the issue's figure is 100,000)")
    parser.add_argument("--requests", type=int, default=200, help="requests per search (default 200)")
    parser.add_argument("--readers", type=int, default=1, help="readers per county (default 1)")
    parser.add_argument("--study-mb", type=int, default=200,
                        help=f"size of the WADO-RS study in MB, in {INSTANCE_MB} MB instances (0: skip; default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="reads of the large study (default 3)")
    parser.add_argument("--stow", type=int, default=200, help="ECG objects stored with STOW-RS (0: skip; default 200)")
    parser.add_argument("--database-url", help="also run on this (empty) PostgreSQL database")
    parser.add_argument("--postgres", action="store_true", help="also run on a throw-away PostgreSQL database")
    parser.add_argument("--pg-admin", default="host=127.0.0.1 user=postgres dbname=postgres",
                        help="admin DSN that --postgres creates its database with")
    args = parser.parse_args(argv)
    logging.getLogger("telediag").setLevel(logging.WARNING)  # the tables, not a line per stored object
    started = time.perf_counter()

    def say(row: str) -> None:
        print(row, flush=True)

    say(f"telediag bench dicomweb: QIDO-RS target p99 < {QIDO_TARGET_MS:.0f} ms (on PostgreSQL, 100,000 instances)")
    with ExitStack() as stack:
        for label, url in databases(args, stack):
            run_database(label, url, args, say)
    say(f"whole bench: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
