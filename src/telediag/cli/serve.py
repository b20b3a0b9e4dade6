"""The long-running commands: ``up`` (embedded), ``api``, ``scp`` and ``worker`` (distributed)."""

from __future__ import annotations

import argparse
from contextlib import ExitStack
import gc
import logging
import signal
import threading

from telediag.cli.common import data_dir_option, port_options, settings_from
from telediag.config import Settings

log = logging.getLogger("telediag.cli")


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _serve_http(app, settings: Settings) -> None:
    import uvicorn

    # Everything built so far lives as long as the process: moving it out of the collector's
    # generations keeps full collections (pauses of 200 ms in a queue request) short.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning")


def cmd_up(args: argparse.Namespace) -> int:
    """Everything on one machine: HTTP API, DICOM SCP, analysis processes, sweeper."""
    from telediag.bootstrap import System
    from telediag.web import create_app

    settings = settings_from(args)
    system = System(settings)
    with ExitStack() as stack:
        stack.callback(system.close)
        # The web stage is built (about a second of imports, holding the interpreter lock) before
        # the SCP listens, so a cart that connects at once is not received at half speed.
        app = create_app(system)
        scp = system.start_embedded(stack, args.workers)
        print(f"telediag {settings.data_dir}: DICOM SCP {settings.ae_title}@{settings.dicom_host}:{scp.port}, "
              f"HTTP http://{settings.http_host}:{settings.http_port} (readers' and clinics' pages; API docs at "
              "/docs); Ctrl-C stops", flush=True)
        _serve_http(app, settings)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from telediag.bootstrap import System
    from telediag.web import create_app

    settings = settings_from(args)
    system = System(settings)
    with ExitStack() as stack:
        stack.callback(system.close)  # last: a last journal checkpoint, where there is one
        # Orphaned pushes, escalations and overdue cases: any number of API processes may sweep.
        for part in (system.sweeper(), system.push_sweeper(), system.review_sweeper(), system.push_worker()):
            part.start()
            stack.callback(part.stop)
        _serve_http(create_app(system), settings)
    return 0


def cmd_scp(args: argparse.Namespace) -> int:
    from telediag.bootstrap import System

    system = System(settings_from(args))
    try:
        system.sweeper().start()
        scp = system.storage_scp()
        signal.signal(signal.SIGTERM, lambda *_: scp.stop())  # stop as on Ctrl-C, then close
        scp.serve_forever()
    finally:
        system.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from telediag.bootstrap import System

    system = System(settings_from(args))
    system.db
    worker = system.worker(threads=args.threads)
    worker.start()
    pusher = system.push_worker()
    pusher.start()
    log.info("worker consuming with %d thread(s)", args.threads)
    _wait_for_signal()
    pusher.stop()
    worker.stop()
    system.close()
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("up", help="run the whole system on this machine (embedded mode)")
    data_dir_option(p), port_options(p)
    p.add_argument("--workers", type=int, help="analysis processes, at a lower priority than receiving "
                                               "(default: cores - 1, or TELEDIAG_ANALYSIS_PROCESSES)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("api", help="run the HTTP API (distributed mode)")
    data_dir_option(p), port_options(p)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("scp", help="run the DICOM storage SCP (distributed mode)")
    data_dir_option(p), port_options(p)
    p.set_defaults(func=cmd_scp)

    p = sub.add_parser("worker", help="run an analysis worker (distributed mode)")
    data_dir_option(p)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_worker)
