"""DICOMweb (PS3.18) under ``/dicomweb``: QIDO-RS search, WADO-RS retrieve, STOW-RS store.

Routes translate HTTP into :class:`~telediag.review.catalog.DicomWeb` calls and back: query
strings, ``Accept`` headers, ``multipart/related`` bodies in and out. Callers authenticate as
everywhere in the API (a person's bearer token or session, a device's ``X-API-Key``) and see
what :meth:`ReviewService.scope` gives them; only a clinic's staff and devices store
(``DeviceDep``). Multipart answers are streamed one instance at a time; a STOW-RS body is
stored part by part as it arrives, each part durable before the answer.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from telediag.domain import DeviceIdentity, Principal
from telediag.imaging import ImageError
from telediag.review.catalog import (DICOM, DICOM_JSON, OCTET_STREAM, Accepted, DicomWeb, InvalidRequest, Level,
                                     NotAcceptable, Part, StowItem, accepted, parse_query)
from telediag.store import ObjectStoreError
from telediag.web.deps import AddressDep, DeviceDep, PrincipalDep, SystemDep

try:  # python-multipart's module is ``python_multipart`` since 0.0.13, ``multipart`` before
    from python_multipart.multipart import MultipartParser, parse_options_header
except ModuleNotFoundError:  # pragma: no cover - depends on the installed version
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

T = TypeVar("T")
#: The use cases' refusals in HTTP (a study the caller may not see is CaseNotVisible: 404 in ``web.app``).
_STATUS: dict[type[Exception], int] = {InvalidRequest: 400, NotAcceptable: 406, ImageError: 422,
                                       ObjectStoreError: 503}
_MORE = '299 telediag "There are additional results that can be requested"'
#: An instance goes out in slices of this size, so the server's buffers copy a slice, not the instance.
_SLICE = 1 << 20


def _service(system: SystemDep, address: AddressDep) -> DicomWeb:
    return DicomWeb(system.db, system.store, system.ingest, address)


ServiceDep = Annotated[DicomWeb, Depends(_service)]


def _base(request: Request) -> str:
    """The service's root URL as the client sees it, for RetrieveURL and BulkDataURI."""
    return str(request.base_url).rstrip("/") + router.prefix


def _accept(request: Request) -> list[Accepted]:
    ranges = []
    for each in filter(None, (r.strip() for r in request.headers.get("accept", "").split(","))):
        media_type, params = parse_options_header(each)
        ranges.append((media_type.decode().lower(), {k.decode().lower(): v.decode() for k, v in params.items()}))
    return accepted(ranges)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except tuple(_STATUS) as exc:
        raise HTTPException(next(code for kind, code in _STATUS.items() if isinstance(exc, kind)), str(exc)) from exc


def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with _translated():
        return function(*args, **kwargs)


def _multipart(media_type: str, parts: Iterator[Part]) -> StreamingResponse:
    """A ``multipart/related`` answer written as ``parts`` yields them: one part in memory at a time."""
    boundary = secrets.token_hex(16)

    def body() -> Iterator[bytes]:
        try:
            for part in parts:
                yield (f"--{boundary}\r\nContent-Type: {part.media_type}\r\n"
                       f"Content-Length: {len(part.data)}\r\n\r\n").encode()
                for start in range(0, len(part.data), _SLICE):
                    yield part.data[start:start + _SLICE]
                yield b"\r\n"
        except ObjectStoreError as exc:  # the status line is gone: the client sees a cut answer
            log.error("DICOMweb retrieve cut short: %s", exc)
            raise
        yield f"--{boundary}--\r\n".encode()

    return StreamingResponse(body(), media_type=f'multipart/related; type="{media_type}"; boundary={boundary}')


def _json_array(items: Iterator[dict[str, Any]]) -> StreamingResponse:
    """A JSON array written item by item (a study's metadata is one data set per instance)."""
    def body() -> Iterator[bytes]:
        yield b"["
        for i, item in enumerate(items):
            yield (b"," if i else b"") + json.dumps(item, ensure_ascii=False).encode()
        yield b"]"

    return StreamingResponse(body(), media_type=DICOM_JSON)


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise HTTPException(400, f"frame numbers must be whole numbers separated by commas, not {text!r}") from None
    if not numbers:
        raise HTTPException(400, "no frame number given")
    return numbers


def _one_frame(text: str) -> int:
    numbers = _frame_numbers(text)
    if len(numbers) != 1:
        raise HTTPException(400, "a rendered frame or thumbnail is of one frame")
    return numbers[0]


# -- QIDO-RS ------------------------------------------------------------------------------------
def _search(request: Request, service: DicomWeb, caller: Principal, level: Level, study: str | None = None,
            series: str | None = None) -> JSONResponse:
    query = _call(parse_query, level, request.query_params.multi_items())
    results, more = _call(service.search, caller, level, query, _base(request), study, series)
    warnings = [_MORE] if more else []
    if query.ignored:
        warnings.append(f'299 telediag "not matched on (unsupported): {", ".join(query.ignored)}"')
    return JSONResponse(results, media_type=DICOM_JSON, headers={"Warning": ", ".join(warnings)} if warnings else None)


@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request, service: ServiceDep, caller: PrincipalDep) -> JSONResponse:
    """PatientID, PatientName (``fuzzymatching=true``), StudyDate ranges, ModalitiesInStudy,
    StudyInstanceUID, AccessionNumber, ...; ``includefield``, ``limit``, ``offset``."""
    return _search(request, service, caller, "study")


@router.get("/series", summary="QIDO-RS: search for series (of all studies)")
def search_all_series(request: Request, service: ServiceDep, caller: PrincipalDep) -> JSONResponse:
    return _search(request, service, caller, "series")


@router.get("/instances", summary="QIDO-RS: search for instances (of all studies)")
def search_all_instances(request: Request, service: ServiceDep, caller: PrincipalDep) -> JSONResponse:
    return _search(request, service, caller, "instance")


@router.get("/studies/{study}/series", summary="QIDO-RS: search for a study's series")
def search_series(study: str, request: Request, service: ServiceDep, caller: PrincipalDep) -> JSONResponse:
    return _search(request, service, caller, "series", study)


@router.get("/studies/{study}/instances", summary="QIDO-RS: search for a study's instances")
def search_study_instances(study: str, request: Request, service: ServiceDep, caller: PrincipalDep) -> JSONResponse:
    return _search(request, service, caller, "instance", study)


@router.get("/studies/{study}/series/{series}/instances", summary="QIDO-RS: search for a series' instances")
def search_instances(study: str, series: str, request: Request, service: ServiceDep,
                     caller: PrincipalDep) -> JSONResponse:
    return _search(request, service, caller, "instance", study, series)


# -- WADO-RS ------------------------------------------------------------------------------------
@router.get("/studies/{study}", summary="WADO-RS: retrieve a study (multipart/related; application/dicom)")
def retrieve_study(study: str, request: Request, service: ServiceDep, caller: PrincipalDep) -> StreamingResponse:
    return _multipart(DICOM, _call(service.retrieve, caller, _accept(request), study))


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(study: str, series: str, request: Request, service: ServiceDep,
                    caller: PrincipalDep) -> StreamingResponse:
    return _multipart(DICOM, _call(service.retrieve, caller, _accept(request), study, series))


@router.get("/studies/{study}/series/{series}/instances/{instance}", summary="WADO-RS: retrieve an instance")
def retrieve_instance(study: str, series: str, instance: str, request: Request, service: ServiceDep,
                      caller: PrincipalDep) -> StreamingResponse:
    return _multipart(DICOM, _call(service.retrieve, caller, _accept(request), study, series, instance))


@router.get("/studies/{study}/metadata", summary="WADO-RS: a study's metadata (DICOM JSON, BulkDataURIs)")
def study_metadata(study: str, request: Request, service: ServiceDep, caller: PrincipalDep) -> StreamingResponse:
    return _json_array(_call(service.metadata, caller, _base(request), study))


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: a series' metadata")
def series_metadata(study: str, series: str, request: Request, service: ServiceDep,
                    caller: PrincipalDep) -> StreamingResponse:
    return _json_array(_call(service.metadata, caller, _base(request), study, series))


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata",
            summary="WADO-RS: an instance's metadata")
def instance_metadata(study: str, series: str, instance: str, request: Request, service: ServiceDep,
                      caller: PrincipalDep) -> StreamingResponse:
    return _json_array(_call(service.metadata, caller, _base(request), study, series, instance))


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            summary="WADO-RS: frames (1-based, comma-separated)")
def frames(study: str, series: str, instance: str, frames: str, request: Request, service: ServiceDep,
           caller: PrincipalDep) -> StreamingResponse:
    media_type, parts = _call(service.frames, caller, _accept(request), study, series, instance,
                              _frame_numbers(frames))
    return _multipart(media_type, parts)


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulk/{path:path}",
            summary="WADO-RS: bulk data (a BulkDataURI of the metadata)")
def bulk(study: str, series: str, instance: str, path: str, service: ServiceDep,
         caller: PrincipalDep) -> StreamingResponse:
    return _multipart(OCTET_STREAM, iter([_call(service.bulk, caller, study, series, instance, path)]))


def _image(part: Part) -> Response:
    return Response(part.data, media_type=part.media_type)


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered",
            summary="WADO-RS: rendered instance (JPEG or PNG; window, viewport, quality)")
def rendered_instance(study: str, series: str, instance: str, request: Request, service: ServiceDep,
                      caller: PrincipalDep, window: str | None = None, viewport: str | None = None,
                      quality: str | None = None) -> Response:
    return _image(_call(service.rendered, caller, _accept(request), study, series, instance, None, window, viewport,
                        quality))


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
            summary="WADO-RS: rendered frame")
def rendered_frame(study: str, series: str, instance: str, frame: str, request: Request, service: ServiceDep,
                   caller: PrincipalDep, window: str | None = None, viewport: str | None = None,
                   quality: str | None = None) -> Response:
    return _image(_call(service.rendered, caller, _accept(request), study, series, instance, _one_frame(frame),
                        window, viewport, quality))


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: study thumbnail")
def study_thumbnail(study: str, request: Request, service: ServiceDep, caller: PrincipalDep,
                    viewport: str | None = None) -> Response:
    return _image(_call(service.thumbnail, caller, _accept(request), study, viewport=viewport))


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: series thumbnail")
def series_thumbnail(study: str, series: str, request: Request, service: ServiceDep, caller: PrincipalDep,
                     viewport: str | None = None) -> Response:
    return _image(_call(service.thumbnail, caller, _accept(request), study, series, viewport=viewport))


@router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail", summary="WADO-RS: instance thumbnail")
def instance_thumbnail(study: str, series: str, instance: str, request: Request, service: ServiceDep,
                       caller: PrincipalDep, viewport: str | None = None) -> Response:
    return _image(_call(service.thumbnail, caller, _accept(request), study, series, instance, viewport=viewport))


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/thumbnail",
            summary="WADO-RS: frame thumbnail")
def frame_thumbnail(study: str, series: str, instance: str, frame: str, request: Request, service: ServiceDep,
                    caller: PrincipalDep, viewport: str | None = None) -> Response:
    return _image(_call(service.thumbnail, caller, _accept(request), study, series, instance, _one_frame(frame),
                        viewport))


# -- STOW-RS ------------------------------------------------------------------------------------
class _Parts:
    """Collects the parts of a multipart body as python-multipart's parser finds them."""

    def __init__(self) -> None:
        self.done: list[tuple[str | None, bytes]] = []
        self._data = bytearray()
        self._field = b""
        self._type: str | None = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self._begin, "on_part_data": self._data_in, "on_part_end": self._end,
                "on_header_field": self._header_field, "on_header_value": self._header_value,
                "on_header_end": self._header_end}

    def _begin(self) -> None:
        self._data, self._type, self._field = bytearray(), None, b""

    def _data_in(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        if self._field.lower() == b"content-type":
            self._type = (self._type or "") + data[start:end].decode("latin-1")

    def _header_end(self) -> None:
        self._field = b""

    def _end(self) -> None:
        self.done.append((self._type, bytes(self._data)))
        self._data = bytearray()


async def _stow(request: Request, service: DicomWeb, device: DeviceIdentity, study: str | None) -> JSONResponse:
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    inner = params.get(b"type", DICOM.encode()).decode().lower()
    if media_type.lower() != b"multipart/related" or inner != DICOM:
        raise HTTPException(415, f'STOW-RS takes multipart/related; type="{DICOM}" (Part 10 instances)')
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "the multipart/related Content-Type has no boundary")
    parts = _Parts()
    parser = MultipartParser(boundary, parts.callbacks())
    items: list[StowItem] = []

    async def store_done() -> None:
        while parts.done:
            part_type, data = parts.done.pop(0)
            items.append(await run_in_threadpool(service.store_part, device, part_type or DICOM, data, study))

    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await store_done()
        parser.finalize()
    except ValueError as exc:  # python-multipart's parse errors derive from it
        log.warning("malformed STOW-RS body from device %s: %s", device.device_id, exc)
        raise HTTPException(400, f"malformed multipart body: {exc}") from exc
    await store_done()
    if not items:
        raise HTTPException(400, "the multipart body has no parts")
    log.info("STOW-RS from device %s: %d stored, %d failed", device.device_id,
             sum(i.failure is None for i in items), sum(i.failure is not None for i in items))
    status, body = service.stow_response(items, _base(request), study)
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


@router.post("/studies", summary="STOW-RS: store instances (multipart/related; application/dicom)")
async def store_instances(request: Request, service: ServiceDep, device: DeviceDep) -> JSONResponse:
    """Each instance is checked in full and stored as C-STORE stores it; 200 all stored, 202
    some failed (FailedSOPSequence, with FailureReason), 409 none stored."""
    return await _stow(request, service, device, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
async def store_study_instances(study: str, request: Request, service: ServiceDep, device: DeviceDep) -> JSONResponse:
    return await _stow(request, service, device, study)
