"""The readers' queue, cases, the viewer's data, reports and their signatures.

Routes translate HTTP into :class:`~telediag.review.ReviewService` calls; what a caller may
do is decided there, and its refusals become 403/404/409/422 in ``web.app``.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from telediag.review import statements as catalogue
from telediag.web.deps import AddressDep, PrincipalDep, SystemDep, UserDep

router = APIRouter(prefix="/api/v1", tags=["review"])


class ReportBody(BaseModel):
    statements: list[str] = Field(default_factory=list, description="statement codes (GET /api/v1/statements)")
    findings: str = Field("", max_length=20000, description="an imaging report's free-text findings")
    conclusion: str = Field("", max_length=20000, description="the conclusion (an imaging report's impression)")
    measurements: dict[str, float | None] | None = None


class AmendBody(ReportBody):
    reason: str = Field(..., min_length=1, max_length=2000)


@router.get("/queue")
def queue(system: SystemDep, user: UserDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
    """The caller's center's open cases, most urgent first (severity, deadline, arrival): the
    first ``limit`` of them, and their ``total``."""
    return system.review.queue(user, limit)


@router.get("/cases")
def cases(system: SystemDep, caller: PrincipalDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          open_only: bool = False) -> dict[str, Any]:
    """The cases the caller may see, newest first."""
    return system.review.cases(caller, limit, open_only)


@router.get("/cases/{case_id}")
def case(case_id: int, system: SystemDep, caller: PrincipalDep, address: AddressDep) -> dict[str, Any]:
    """A case with its objects, analyses, alarms, review state, latest report and the patient's earlier cases."""
    return system.review.case(caller, case_id, address)


def _case_action(action: str, summary: str) -> None:
    """``POST /cases/{id}/<action>``: a reader's claim, release or consultation request."""

    def route(case_id: int, system: SystemDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
        return getattr(system.review, action)(user, case_id, address)

    router.add_api_route(f"/cases/{{case_id}}/{action}", route, methods=["POST"], name=action, summary=summary)


for _action, _summary in (("claim", "Claim the case (a lease; 409 when another reader holds it)"),
                          ("release", "Release the case"),
                          ("consult", "Send the case to the center above for a consultation")):
    _case_action(_action, _summary)


def _encoded(use_case: Callable[..., dict[str, Any]], *args: Any) -> Response:
    """Run a use case whose answer is tens of thousands of numbers and encode it there, in the
    worker thread, with orjson: FastAPI would check and encode the dict on the event loop (a
    10-s 12-lead window at 1 kHz is 120,000 numbers, ~25 ms with the standard encoder), and
    every other request of the page (the case, the claim) would wait behind it. A sample that
    is not a number (a gap) is ``null``, as pydantic wrote it."""
    return Response(orjson.dumps(use_case(*args), option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.get("/cases/{case_id}/objects/{object_id}/waveform", response_class=Response,
            responses={200: {"content": {"application/json": {}}}})
async def waveform(case_id: int, object_id: int, system: SystemDep, caller: PrincipalDep,
                   start: Annotated[float, Query(ge=0)] = 0.0,
                   seconds: Annotated[float, Query(gt=0, le=60)] = 10.0) -> Response:
    """One window of an ECG in mV, with its beats, rhythm episodes and alarms."""
    return await run_in_threadpool(_encoded, system.review.waveform, caller, case_id, object_id, start, seconds)


@router.get("/cases/{case_id}/objects/{object_id}/overview", response_class=Response,
            responses={200: {"content": {"application/json": {}}}})
async def overview(case_id: int, object_id: int, system: SystemDep, caller: PrincipalDep,
                   points: Annotated[int, Query(ge=10, le=5000)] = 1000, lead: str | None = None) -> Response:
    """Min/max envelope of one lead over the whole recording (a long recording's overview strip)."""
    return await run_in_threadpool(_encoded, system.review.overview, caller, case_id, object_id, points, lead)


_IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg"}
_IMAGE_CACHE = "private, max-age=3600"  # an object's pixels never change; a preview is the caller's only


@router.get("/cases/{case_id}/objects/{object_id}/preview.{ext}", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
async def preview(case_id: int, object_id: int, ext: Literal["png", "jpg"], system: SystemDep, caller: PrincipalDep,
                  frame: Annotated[int, Query(ge=0)] = 0,
                  wc: Annotated[float | None, Query(description="window center, in modality units (HU for CT)")] = None,
                  ww: Annotated[float | None, Query(ge=1, description="window width, with wc")] = None,
                  size: Annotated[int | None, Query(ge=16, le=4096, description="fit into size x size")] = None
                  ) -> Response:
    """One frame of an image rendered in the header's window, or in ``wc``/``ww`` applied to the
    full-depth pixels (the viewer's window/level); 404 for an object with nothing to render."""
    if (wc is None) != (ww is None):
        raise HTTPException(422, "give wc and ww together")
    window = None if wc is None else (wc, ww)
    data = await run_in_threadpool(system.review.preview, caller, case_id, object_id, frame, window, size,
                                   "jpeg" if ext == "jpg" else "png")
    return Response(data, media_type=_IMAGE_TYPES[ext], headers={"Cache-Control": _IMAGE_CACHE})


@router.get("/cases/{case_id}/thumbnail.{ext}", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
async def thumbnail(case_id: int, ext: Literal["png", "jpg"], system: SystemDep, caller: PrincipalDep,
                    size: Annotated[int, Query(ge=16, le=1024)] = 128) -> Response:
    """The study thumbnail: the middle frame of the case's first image; 404 for a case without one."""
    data = await run_in_threadpool(system.review.thumbnail, caller, case_id, size, "jpeg" if ext == "jpg" else "png")
    return Response(data, media_type=_IMAGE_TYPES[ext], headers={"Cache-Control": _IMAGE_CACHE})


@router.get("/statements")
def statements() -> dict[str, Any]:
    """The coded diagnostic statements, in English and Chinese."""
    return {"statements": [{"code": s.code, "category": s.category, "en": s.en, "zh": s.zh}
                           for s in catalogue.STATEMENTS]}


@router.get("/cases/{case_id}/report")
def report(case_id: int, system: SystemDep, caller: PrincipalDep) -> dict[str, Any]:
    """The latest version (clinics and devices: the latest signed one); before any draft, a
    proposal from the automated analysis (``version`` 0)."""
    return system.review.report(caller, case_id)


@router.put("/cases/{case_id}/report")
def save_draft(case_id: int, body: ReportBody, system: SystemDep, user: UserDep,
               address: AddressDep) -> dict[str, Any]:
    """Save the draft (the reader holding the claim only; 409 once signed)."""
    return system.review.save_draft(user, case_id, body.statements, body.conclusion, body.measurements, address,
                                    body.findings)


@router.post("/cases/{case_id}/report/sign")
async def sign(case_id: int, system: SystemDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    """Sign the draft with the reader's own key (Ed25519 or SM2); the report becomes immutable and its PDF is made."""
    return await run_in_threadpool(system.review.sign, user, case_id, address)


@router.post("/cases/{case_id}/report/amend")
async def amend(case_id: int, body: AmendBody, system: SystemDep, user: UserDep,
                address: AddressDep) -> dict[str, Any]:
    """A signed correction: a new version that replaces the last one."""
    return await run_in_threadpool(system.review.amend, user, case_id, body.statements, body.conclusion,
                                   body.reason, body.measurements, address, body.findings)


class AckBody(BaseModel):
    version: int | None = Field(None, ge=1, description="the signed version being acknowledged (default: the latest)")


@router.post("/cases/{case_id}/report/ack")
def acknowledge_report(case_id: int, system: SystemDep, caller: PrincipalDep, address: AddressDep,
                       body: AckBody | None = None) -> dict[str, Any]:
    """The clinic (its people or its devices) confirms receiving the latest signed version;
    recorded once, audited and pushed as a ``report_ack`` event. 409 when ``version`` was replaced."""
    return system.review.acknowledge_report(caller, case_id, body.version if body else None, address)


@router.get("/cases/{case_id}/report.pdf")
async def report_pdf(case_id: int, system: SystemDep, caller: PrincipalDep, address: AddressDep) -> Response:
    """The latest signed version as PDF."""
    data = await run_in_threadpool(system.review.report_pdf, caller, case_id, address)
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="telediag-case-{case_id}-report.pdf"'})
