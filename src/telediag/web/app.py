"""The FastAPI application: one router per stage over an assembled :class:`System`."""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from telediag import __version__
from telediag.bootstrap import System
from telediag.domain import (CaseNotVisible, ClaimConflict, InvalidReport, NetworkError, NotPermitted,
                             ReportImmutable)
from telediag.web.deps import LoginRateLimit
from telediag.web.middleware import BodyLimitMiddleware
from telediag.web.routes import admin, alarms, auth, dicomweb, health, ingest, pages, review

#: What the use cases' refusals mean in HTTP (routes raise them through untouched).
_REFUSALS: dict[type[Exception], int] = {NotPermitted: 403, CaseNotVisible: 404, ClaimConflict: 409,
                                         ReportImmutable: 409, NetworkError: 422, InvalidReport: 422}


def create_app(system: System) -> FastAPI:
    """The ASGI app; everything it serves comes from this package or its dependencies, so
    it works on a network without internet."""
    import swagger_ui_bundle

    app = FastAPI(title="telediag", version=__version__, docs_url=None, redoc_url=None,
                  description="Ingest for township ECG carts and imaging devices; the readers' queue, "
                              "reports and signatures; critical-value alarms; administration and audit.")
    app.state.system = system
    app.state.login_limit = LoginRateLimit(system.settings.login_rate_per_minute)
    for router in (health.router, auth.router, ingest.router, review.router, alarms.router, admin.router,
                   dicomweb.router, pages.router):
        app.include_router(router)
    for exc_type, status in _REFUSALS.items():
        app.add_exception_handler(exc_type, _refusal(status))
    app.mount(health.DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    app.mount(pages.STATIC_URL, pages.assets, name="static")
    app.add_middleware(BodyLimitMiddleware, limit=system.settings.max_upload_bytes)
    return app


def _refusal(status: int):
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        # The refusal's facts (e.g. who holds a claim) let a page say it in the reader's language.
        return JSONResponse({"detail": str(exc), **getattr(exc, "details", {})}, status_code=status)

    return handler


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
