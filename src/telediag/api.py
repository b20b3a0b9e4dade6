"""HTTP ingest and case status API (FastAPI).

Devices authenticate with their API key (``X-API-Key`` header or ``Authorization:
Bearer``). Uploads are validated in full before anything is stored, and refused
with a 4xx whose ``detail`` names the file and the fault, so the township can fix it.

(No ``from __future__ import annotations`` here: FastAPI must evaluate the dependency
annotations of the routes, which refer to ``create_app``'s local functions.)
"""

import logging
import threading
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telediag import __version__
from telediag.dicom_objects import InvalidObject, inspect
from telediag.ingest import IngestOutcome, StorageUnavailable
from telediag.models import AnalysisResult, Case, Job, Site, StoredObject
from telediag.network import DeviceIdentity, device_by_api_key
from telediag.system import System

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    """Raised from inside the body stream; an ``HTTPException`` so that FastAPI's body
    parsing lets it through instead of turning it into a generic 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not Content-Length
    is declared (chunked uploads are counted as they arrive)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            log.warning("refused an upload over %d bytes on %s", self.limit, scope.get("path"))
            response = JSONResponse({"detail": BodyTooLarge(self.limit).detail}, status_code=413)
            await response(scope, _empty_receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    log.warning("refused an upload over %d bytes on %s", self.limit, scope.get("path"))
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


def _outcome_json(outcome: IngestOutcome) -> dict[str, Any]:
    return {"case_id": outcome.case_id, "object_id": outcome.object_id, "status": outcome.status,
            "job_id": outcome.job_id}


def create_app(system: System) -> FastAPI:
    """The ASGI app over an assembled ``System``."""
    app = FastAPI(title="telediag", version=__version__,
                  description="Ingest for township ECG carts and imaging devices; case status.")

    def device(x_api_key: Annotated[str | None, Header()] = None,
               authorization: Annotated[str | None, Header()] = None) -> DeviceIdentity:
        key = x_api_key or (authorization[7:].strip() if authorization and authorization.lower().startswith("bearer ")
                            else None)
        if not key:
            raise HTTPException(401, "missing API key (X-API-Key header)")
        identity = device_by_api_key(system.db, key)
        if identity is None:
            log.warning("refused a request with an unknown or disabled API key")
            raise HTTPException(401, "unknown or disabled API key")
        return identity

    def check_site(identity: DeviceIdentity, site: str | None) -> None:
        """A device delivers only for its own site; naming another or an unknown one is refused."""
        if site is None:
            return
        with system.db.uow() as uow:
            row = uow.session.scalar(select(Site).where(Site.name == site))
        if row is None:
            log.warning("device %s named an unknown site", identity.device_id)
            raise HTTPException(404, f"unknown site {site!r}")
        if row.id != identity.site_id:
            log.warning("device %s named a site that is not its own", identity.device_id)
            raise HTTPException(403, f"device {identity.name!r} is not registered for site {site!r}")

    async def read_all(files: list[UploadFile]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for f in files:
            name = (f.filename or "").rsplit("/", 1)[-1]
            if name in out:
                raise HTTPException(422, f"file {name!r} given twice")
            out[name] = await f.read()
        return out

    def store(call, identity: DeviceIdentity, *args) -> IngestOutcome:
        try:
            return call(identity, *args)
        except StorageUnavailable as exc:
            raise HTTPException(503, f"storage unavailable, nothing was stored; retry later ({exc})",
                                headers={"Retry-After": "30"}) from exc

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    # Uploads: the body is read on the event loop; validation, fsync and database work run in
    # the thread pool so one slow upload does not hold up the others.
    def ingest_wfdb(identity: DeviceIdentity, site: str | None, data: dict[str, bytes],
                    patient_id: str | None) -> JSONResponse:
        check_site(identity, site)
        try:
            outcome = store(system.ingest.ingest_wfdb, identity, data, patient_id)  # validates first
        except InvalidObject as exc:
            log.warning("refused a WFDB upload from device %s: %s", identity.device_id, exc)
            raise HTTPException(422, str(exc)) from exc
        log.info("WFDB upload from device %s: %s as object %s case %s", identity.device_id, outcome.status,
                 outcome.object_id, outcome.case_id)
        return JSONResponse(_outcome_json(outcome), status_code=201 if outcome.status == "stored" else 200)

    def ingest_dicom(identity: DeviceIdentity, site: str | None, data: dict[str, bytes]) -> JSONResponse:
        check_site(identity, site)
        for name, content in data.items():
            try:
                inspect(content, thorough=True)
            except InvalidObject as exc:
                log.warning("refused a DICOM upload from device %s: %s", identity.device_id, exc)
                raise HTTPException(422, f"{name}: {exc}") from exc
        results = [{"file": name, **_outcome_json(store(system.ingest.ingest_dicom, identity, content))}
                   for name, content in data.items()]
        log.info("DICOM upload from device %s: %s", identity.device_id,
                 ", ".join(f"{r['status']} as object {r['object_id']}" for r in results))
        created = any(r["status"] == "stored" for r in results)
        return JSONResponse({"objects": results}, status_code=201 if created else 200)

    @app.post("/api/v1/ecg/wfdb", status_code=201)
    async def upload_wfdb(identity: Annotated[DeviceIdentity, Depends(device)],
                          files: Annotated[list[UploadFile], File(description=".hea, signal file(s), optional annotations")],
                          patient_id: Annotated[str | None, Form()] = None,
                          site: Annotated[str | None, Form()] = None) -> JSONResponse:
        """Upload one WFDB record; answers with the case id once it is durable."""
        return await run_in_threadpool(ingest_wfdb, identity, site, await read_all(files), patient_id)

    @app.post("/api/v1/dicom", status_code=201)
    async def upload_dicom(identity: Annotated[DeviceIdentity, Depends(device)],
                           files: Annotated[list[UploadFile], File(description="one or more DICOM Part 10 files")],
                           site: Annotated[str | None, Form()] = None) -> JSONResponse:
        """Upload DICOM files; all are checked before any is stored, so a refusal stores nothing."""
        return await run_in_threadpool(ingest_dicom, identity, site, await read_all(files))

    @app.get("/api/v1/cases/{case_id}")
    def case_status(case_id: int, identity: Annotated[DeviceIdentity, Depends(device)]) -> dict[str, Any]:
        """Status of a case sent by the caller's own site, with each object's analysis state."""
        with system.db.uow(snapshot=True) as uow:
            s = uow.session
            case = s.get(Case, case_id)
            if case is None or case.site_id != identity.site_id:
                raise HTTPException(404, f"no case {case_id} for this site")
            objects = []
            rows = s.execute(select(StoredObject, Job, AnalysisResult)
                             .outerjoin(Job, Job.object_id == StoredObject.id)
                             .outerjoin(AnalysisResult, AnalysisResult.object_id == StoredObject.id)
                             .where(StoredObject.case_id == case.id).order_by(StoredObject.id))
            for obj, job, result in rows:
                objects.append({
                    "object_id": obj.id, "key": obj.key, "size": obj.size, "sha256": obj.sha256,
                    "media_type": obj.media_type, "sop_class_uid": obj.sop_class_uid, "modality": obj.modality,
                    "job": None if job is None else {"id": job.id, "state": job.state.value,
                                                     "attempts": job.attempts, "error": job.last_error},
                    "analysis": None if result is None else result.result,
                })
            return {"case_id": case.id, "kind": case.kind.value, "status": case.status.value,
                    "received_at": case.received_at.isoformat(), "objects": objects}

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
