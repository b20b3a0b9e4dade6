"""The ``telediag`` command.

Scripts and operators rely on these names and options; keep them stable.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from telediag.config import Settings


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env().with_data_dir(getattr(args, "data_dir", None))
    if getattr(args, "http_port", None) is not None:
        settings = replace(settings, http_port=args.http_port)
    if getattr(args, "dicom_port", None) is not None:
        settings = replace(settings, dicom_port=args.dicom_port)
    return settings


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pynetdicom", "dramatiq", "pika", "urllib3", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _serve_http(system, settings: Settings) -> None:
    import uvicorn

    from telediag.api import create_app

    uvicorn.run(create_app(system), host=settings.http_host, port=settings.http_port, log_level="warning")


def cmd_up(args: argparse.Namespace) -> int:
    """Everything on one machine: HTTP API, DICOM SCP, in-process workers, sweeper."""
    from telediag.dicom_scp import StorageSCP
    from telediag.system import System

    settings = _settings(args)
    system = System(settings)
    system.db  # migrate before anything listens
    worker = system.worker(threads=args.threads)
    worker.start()
    sweeper = system.sweeper()
    sweeper.start()
    scp = StorageSCP(system.ingest, system.db, ae_title=settings.ae_title, host=settings.dicom_host,
                     port=settings.dicom_port, max_object_bytes=settings.max_dicom_bytes)
    scp.start()
    print(f"telediag {settings.data_dir}: DICOM SCP {settings.ae_title}@{settings.dicom_host}:{scp.port}, "
          f"HTTP http://{settings.http_host}:{settings.http_port} (docs at /docs); Ctrl-C stops", flush=True)
    try:
        _serve_http(system, settings)
    finally:
        scp.stop()
        sweeper.stop()
        worker.stop()
        system.close()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from telediag.system import System

    settings = _settings(args)
    system = System(settings)
    system.sweeper().start()
    _serve_http(system, settings)
    return 0


def cmd_scp(args: argparse.Namespace) -> int:
    from telediag.dicom_scp import StorageSCP
    from telediag.system import System

    settings = _settings(args)
    system = System(settings)
    system.sweeper().start()
    scp = StorageSCP(system.ingest, system.db, ae_title=settings.ae_title, host=settings.dicom_host,
                     port=settings.dicom_port, max_object_bytes=settings.max_dicom_bytes)
    scp.serve_forever()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from telediag.system import System

    system = System(_settings(args))
    system.db
    worker = system.worker(threads=args.threads)
    worker.start()
    logging.getLogger("telediag.worker").info("worker consuming with %d thread(s)", args.threads)
    _wait_for_signal()
    worker.stop()
    system.close()
    return 0


def cmd_site_add(args: argparse.Namespace) -> int:
    from telediag.db import Database
    from telediag.network import NetworkError, add_site

    db = Database(_settings(args).effective_database_url)
    db.migrate()
    try:
        site_id = add_site(db, args.name, args.level, args.parent)
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"site {args.name!r} ({args.level}) added with id {site_id}")
    return 0


def cmd_device_add(args: argparse.Namespace) -> int:
    from telediag.db import Database
    from telediag.network import NetworkError, add_device

    db = Database(_settings(args).effective_database_url)
    db.migrate()
    try:
        device_id, api_key = add_device(db, args.name, args.site, args.ae_title)
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"device {args.name!r} added with id {device_id} at site {args.site!r}"
          + (f", AE title {args.ae_title.upper()}" if args.ae_title else ""))
    print(f"API key (shown once, keep it): {api_key}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from telediag.db import Database
    from telediag.models import Job, JobState

    db = Database(_settings(args).effective_database_url)
    db.migrate()
    with db.uow() as uow:
        query = select(Job).order_by(Job.id)
        if args.state:
            query = query.where(Job.state == JobState(args.state))
        for job in uow.session.scalars(query):
            print(f"{job.id}\t{job.state.value}\tobject {job.object_id}\tattempts {job.attempts}\t"
                  f"{job.last_error or ''}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from telediag.ecg.analysis import analyze
    from telediag.ecg.io import read_recording
    from telediag.ecg.recording import WaveformError

    try:
        result = analyze(read_recording(args.path))
    except (WaveformError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        from telediag.summary import describe_analysis

        print(f"{args.path}: {describe_analysis(result)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from telediag.demo import run_demo

    return run_demo(_settings(args), Path(args.samples))


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "ingest":
        from telediag.bench_ingest import main as bench
    else:
        from telediag.bench_qrs import main as bench
    return bench(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telediag", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="where the embedded database and objects live (default ./telediag-data, "
                                          "or TELEDIAG_DATA_DIR)")

    def ports(p: argparse.ArgumentParser) -> None:
        p.add_argument("--http-port", type=int)
        p.add_argument("--dicom-port", type=int)

    p = sub.add_parser("up", help="run the whole system on this machine (embedded mode)")
    data_dir(p), ports(p)
    p.add_argument("--threads", type=int, default=2, help="analysis worker threads")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("api", help="run the HTTP API (distributed mode)")
    data_dir(p), ports(p)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("scp", help="run the DICOM storage SCP (distributed mode)")
    data_dir(p), ports(p)
    p.set_defaults(func=cmd_scp)

    p = sub.add_parser("worker", help="run an analysis worker (distributed mode)")
    data_dir(p)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_worker)

    site = sub.add_parser("site", help="manage the network's sites").add_subparsers(dest="action", required=True)
    p = site.add_parser("add", help="add a site")
    p.add_argument("name")
    p.add_argument("--level", required=True, choices=["prefecture", "county", "township"])
    p.add_argument("--parent", help="the county (for a township) or prefecture (for a county)")
    data_dir(p)
    p.set_defaults(func=cmd_site_add)

    device = sub.add_parser("device", help="manage devices").add_subparsers(dest="action", required=True)
    p = device.add_parser("add", help="add a device; prints its API key")
    p.add_argument("name")
    p.add_argument("--site", required=True)
    p.add_argument("--ae-title", help="the calling AE title the device uses for DICOM")
    data_dir(p)
    p.set_defaults(func=cmd_device_add)

    p = sub.add_parser("jobs", help="list analysis jobs (e.g. --state dead for the dead-letter list)")
    p.add_argument("--state", choices=["pending", "queued", "done", "dead"])
    data_dir(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("demo", help="play a township device sending sample_data/ to the system")
    data_dir(p), ports(p)
    p.add_argument("--samples", default=str(Path(__file__).resolve().parents[2] / "sample_data"))
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("analyze", help="analyse one WFDB record or DICOM ECG file (no server needed)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("bench", help="benchmarks: ingest throughput, QRS accuracy")
    p.add_argument("what", choices=["ingest", "qrs"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (see telediag bench X --help)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is not cmd_analyze:
        _logging(args.verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
