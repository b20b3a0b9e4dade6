"""Ingest over HTTP: DICOM files, WFDB records and vendor ECG files from township devices.

Uploads are validated in full before anything is stored, and refused with a 4xx whose
``detail`` names the file and the fault, so the township can fix it. The body is read on
the event loop; validation, fsync and database work run in the thread pool so one slow
upload does not hold up the others.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Callable

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from telediag.bootstrap import System
from telediag.domain import RULE_SETS, DeviceIdentity, IngestOutcome, SiteNotPermitted, UnknownSite
from telediag.ingest import InvalidObject, Received, StorageUnavailable
from telediag.network import check_delivery_site
from telediag.web.deps import DeviceDep, SystemDep

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["ingest"])

RULES_HELP = "critical-value rules to analyse with: resting, holter or monitoring (default: the device's)"
QUARANTINE_WARNING = "a different object is already stored under this SOP Instance UID; kept in quarantine"


def _outcome_json(outcome: IngestOutcome) -> dict[str, Any]:
    body: dict[str, Any] = {"case_id": outcome.case_id, "object_id": outcome.object_id, "status": outcome.status,
                            "job_id": outcome.job_id}
    if outcome.status == "quarantined":
        body["warning"] = QUARANTINE_WARNING
    return body


def _check_site(system: System, device: DeviceIdentity, site: str | None) -> None:
    try:
        check_delivery_site(system.db, device, site)
    except UnknownSite as exc:
        log.warning("device %s named an unknown site", device.device_id)
        raise HTTPException(404, str(exc)) from exc
    except SiteNotPermitted as exc:
        log.warning("device %s named a site that is not its own", device.device_id)
        raise HTTPException(403, str(exc)) from exc


async def _read_all(files: list[UploadFile]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for f in files:
        name = (f.filename or "").rsplit("/", 1)[-1]
        if name in out:
            raise HTTPException(422, f"file {name!r} given twice")
        out[name] = await f.read()
    return out


def _prepare(what: str, device: DeviceIdentity, prepare: Callable[[], Received]) -> Received:
    try:
        return prepare()
    except InvalidObject as exc:
        log.warning("refused a %s upload from device %s: %s", what, device.device_id, exc)
        raise HTTPException(422, str(exc)) from exc


def _check_rules(device: DeviceIdentity, rules: str | None) -> None:
    if rules is not None and rules not in RULE_SETS:
        log.warning("device %s named an unknown rule set", device.device_id)
        raise HTTPException(422, f"unknown rules {rules!r} (choose {', '.join(RULE_SETS)})")


def _store(system: System, device: DeviceIdentity, received: Received, rules: str | None = None) -> IngestOutcome:
    try:
        return system.ingest.store_received(device, received, rules)
    except StorageUnavailable as exc:
        raise HTTPException(503, f"storage unavailable, nothing was stored; retry later ({exc})",
                            headers={"Retry-After": "30"}) from exc


def _answer(what: str, device: DeviceIdentity, results: list[dict[str, Any]], single: bool) -> JSONResponse:
    log.info("%s upload from device %s: %s", what, device.device_id,
             ", ".join(f"{r['status']} as object {r['object_id']} case {r['case_id']}" for r in results))
    created = any(r["status"] == "stored" for r in results)
    return JSONResponse(results[0] if single else {"objects": results}, status_code=201 if created else 200)


def _ingest_wfdb(system: System, device: DeviceIdentity, site: str | None, files: dict[str, bytes],
                 patient_id: str | None, rules: str | None = None) -> JSONResponse:
    _check_site(system, device, site)
    _check_rules(device, rules)
    received = _prepare("WFDB", device, lambda: system.ingest.prepare_wfdb(device, files, patient_id))
    return _answer("WFDB", device, [_outcome_json(_store(system, device, received, rules))], single=True)


def _ingest_files(system: System, device: DeviceIdentity, site: str | None, files: dict[str, bytes],
                  what: str, prepare: Callable[[DeviceIdentity, bytes], Received],
                  rules: str | None = None) -> JSONResponse:
    """Several files: all are checked before any is stored, so a refusal stores nothing."""
    _check_site(system, device, site)
    _check_rules(device, rules)
    prepared = []
    for name, content in files.items():
        try:
            prepared.append((name, prepare(device, content)))
        except InvalidObject as exc:
            log.warning("refused a %s upload from device %s: %s", what, device.device_id, exc)
            raise HTTPException(422, f"{name}: {exc}") from exc
    results = [{"file": name, **_outcome_json(_store(system, device, received, rules))}
               for name, received in prepared]
    return _answer(what, device, results, single=False)


@router.post("/ecg/wfdb", status_code=201)
async def upload_wfdb(system: SystemDep, device: DeviceDep,
                      files: Annotated[list[UploadFile], File(description=".hea, signal file(s), optional annotations")],
                      patient_id: Annotated[str | None, Form()] = None,
                      site: Annotated[str | None, Form()] = None,
                      rules: Annotated[str | None, Form(description=RULES_HELP)] = None) -> JSONResponse:
    """Upload one WFDB record; answers with the case id once it is durable."""
    return await run_in_threadpool(_ingest_wfdb, system, device, site, await _read_all(files), patient_id, rules)


@router.post("/dicom", status_code=201)
async def upload_dicom(system: SystemDep, device: DeviceDep,
                       files: Annotated[list[UploadFile], File(description="one or more DICOM Part 10 files")],
                       site: Annotated[str | None, Form()] = None,
                       rules: Annotated[str | None, Form(description=RULES_HELP)] = None) -> JSONResponse:
    """Upload DICOM files; all are checked (waveform or pixel data decoded) before any is stored."""
    prepare = lambda device, data: system.ingest.prepare_dicom(device, data, thorough=True)  # noqa: E731
    return await run_in_threadpool(_ingest_files, system, device, site, await _read_all(files), "DICOM", prepare,
                                   rules)


@router.post("/ecg", status_code=201)
async def upload_ecg(system: SystemDep, device: DeviceDep,
                     files: Annotated[list[UploadFile], File(description="ECG files: DICOM, SCP-ECG, HL7 aECG, "
                                                                         "GE MUSE XML or Philips XML")],
                     site: Annotated[str | None, Form()] = None,
                     rules: Annotated[str | None, Form(description=RULES_HELP)] = None) -> JSONResponse:
    """Upload ECG files in any supported format, detected from their content (not their
    names); each is stored exactly as received, with its format recorded."""
    return await run_in_threadpool(_ingest_files, system, device, site, await _read_all(files), "ECG",
                                   system.ingest.prepare_ecg_file, rules)
