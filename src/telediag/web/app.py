"""The FastAPI application: one router per stage over an assembled :class:`System`."""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from telediag import __version__
from telediag.bootstrap import System
from telediag.web.middleware import BodyLimitMiddleware
from telediag.web.routes import alarms, cases, health, ingest


def create_app(system: System) -> FastAPI:
    """The ASGI app; everything it serves comes from this package or its dependencies, so
    it works on a network without internet."""
    import swagger_ui_bundle

    app = FastAPI(title="telediag", version=__version__, docs_url=None, redoc_url=None,
                  description="Ingest for township ECG carts and imaging devices; case status; "
                              "critical-value alarms.")
    app.state.system = system
    for router in (health.router, ingest.router, cases.router, alarms.router):
        app.include_router(router)
    app.mount(health.DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    app.add_middleware(BodyLimitMiddleware, limit=system.settings.max_upload_bytes)
    return app


class BackgroundServer:
    """The API served by uvicorn in a thread of this process (the demo, tests); ``telediag api``
    and ``up`` run uvicorn in the foreground instead."""

    def __init__(self, system: System, host: str, port: int) -> None:
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(create_app(system), host=host, port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="telediag-api", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        """Start serving; return once the port is listening (or raise after ``timeout``)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the HTTP API did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
