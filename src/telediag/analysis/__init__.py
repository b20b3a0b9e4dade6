"""The analyse stage: one analysis job, from the stored object to the recorded result.

:func:`run_analysis_job` is the use case a worker runs for a job id: claim the job (with a
lease, so two deliveries of one job never run at once), read the object from the store,
decode and analyse it with the pure DSP of :mod:`telediag.ecg` under the job's critical-value
rule set, then record the result, the job's end, the case's status and priority, the alarms
it raised and their push deliveries in one transaction, and announce
:class:`~telediag.domain.AnalysisCompleted` and (when alarms were raised)
:class:`~telediag.domain.AlarmEventsRecorded`. Running a job twice is harmless: a finished
job is skipped, results are kept per object and an object's alarms are recorded once.

An image's job (``render_preview``) records what :func:`telediag.imaging.describe` says of
it and keeps its preview (first frame, header window, full size) and thumbnail (middle frame,
128 px) as PNG in the object store under :func:`preview_keys`, so a reader opening a study
reads pictures instead of decoding its instances; an image that cannot be drawn is described
by its findings (the header check's quality finding), and the job still ends ``done``.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

from telediag import imaging
from telediag.domain import (AlarmEventsRecorded, AnalysisCompleted, AnalysisFailed, CaseStatus, JobKind, MediaType,
                             PushChannel)
from telediag.ecg import Recording, WaveformError
from telediag.messagebus import MessageBus
from telediag.store import Database, ObjectRef, ObjectStore

log = logging.getLogger(__name__)


def _default_analyze(recording: Recording, rules: str) -> dict[str, Any]:
    from telediag.ecg.analysis import analyze

    return analyze(recording, rules=rules)


@dataclass
class AnalysisContext:
    """What running a job needs: the database, the object store, the bus, the DSP entry
    point ``analyze(recording, rules)`` (replaceable in tests), the push channels whose
    deliveries an alarm gets, and how long a claim holds before it lapses."""

    db: Database
    store: ObjectStore
    bus: MessageBus
    analyze: Callable[[Recording, str], dict[str, Any]] = _default_analyze
    channels: tuple[PushChannel, ...] = ()
    lease_s: float = 20.0
    #: Keeps the lease of a running job alive (the worker runtime renews it periodically).
    hold: Callable[[int], AbstractContextManager[None]] = field(default=lambda job_id: nullcontext())


def load_recording(store: ObjectStore, obj: ObjectRef, siblings: tuple[ObjectRef, ...]) -> Recording:
    """Turn a stored ECG object (a DICOM waveform, a WFDB header with its files, or a vendor
    ECG file) into a Recording, verifying each object's sha256 as it is read."""
    from telediag.ecg.readers import read_bytes, read_dicom_waveform, read_wfdb_files

    if obj.media_type == MediaType.WFDB_HEADER:
        files = {item.key.rsplit("/", 1)[-1]: store.get(item.key, item.sha256) for item in siblings}
        return read_wfdb_files(files, obj.record_name or "")
    data = store.get(obj.key, obj.sha256)
    if obj.media_type == MediaType.DICOM:
        return read_dicom_waveform(data)
    return read_bytes(data)[1]


#: The side of the thumbnail a worker keeps (what the case list and the study thumbnail show).
THUMBNAIL_SIDE = 128


def preview_keys(sha256: str) -> tuple[str, str]:
    """Where an image's preview and thumbnail are kept: named by its bytes, so an image sent
    again (or by two sites) shares them."""
    return f"previews/{sha256}.png", f"previews/{sha256}-thumb.png"


def render_previews(store: ObjectStore, obj: ObjectRef) -> dict[str, Any]:
    """Describe an image and keep its preview and thumbnail (``{"imaging": ..., "preview": bool}``)."""
    data = store.get(obj.key, obj.sha256)
    result: dict[str, Any] = {"imaging": imaging.describe(data), "preview": False}
    try:
        frames = imaging.decode_frames(data)
        preview, thumb = imaging.render_png(frames, 0), imaging.thumbnail(frames, THUMBNAIL_SIDE)
    except imaging.ImageError as exc:  # the description's findings say why
        log.info("object %s has no preview: %s", obj.id, exc)
        return result
    preview_key, thumb_key = preview_keys(obj.sha256)
    store.put(preview_key, preview, "image/png")
    store.put(thumb_key, thumb, "image/png")
    result["preview"] = True
    return result


def run_analysis_job(ctx: AnalysisContext, job_id: int, final_attempt: bool) -> None:
    """Run one analysis job to its end state, or raise so the broker retries it later."""
    with ctx.db.uow() as uow:
        task = uow.jobs.claim_for_run(job_id, ctx.lease_s)
        state = None if task is not None else uow.jobs.state(job_id)
        uow.commit()
    if task is None:
        log.info("job %s not run: %s", job_id, "it does not exist" if state is None
                 else f"it is {state.value}" + (" by another worker" if state.value == "running" else ""))
        return
    obj = task.object
    try:
        with ctx.hold(job_id):
            if task.kind is JobKind.RENDER_PREVIEW:
                result = render_previews(ctx.store, obj)
            else:
                result = ctx.analyze(load_recording(ctx.store, obj, task.siblings), task.rules)
    except Exception as exc:
        permanent = isinstance(exc, WaveformError)
        dead = permanent or final_attempt
        with ctx.db.uow() as uow:
            uow.jobs.fail(job_id, f"{type(exc).__name__}: {exc}", dead=dead)
            if dead:
                uow.cases.set_status(obj.case_id, CaseStatus.ANALYSIS_FAILED)
            uow.commit()
        (log.error if dead else log.warning)("job %s failed (%s)%s", job_id, type(exc).__name__,
                                             "; dead-lettered" if dead else "; will retry")
        ctx.bus.handle(AnalysisFailed(job_id, obj.id, obj.case_id, dead))
        if permanent:
            return
        raise
    with ctx.db.uow() as uow:
        uow.results.save(obj.id, result)
        events, deliveries = uow.alarms.record(obj.case_id, obj.id, list(result.get("alarms") or []), ctx.channels)
        uow.jobs.finish(job_id)
        uow.cases.set_status(obj.case_id, CaseStatus.ANALYSED)
        uow.commit()
    log.info("job %s done (object %s%s)", job_id, obj.id, f", {len(events)} alarm(s)" if events else "")
    ctx.bus.handle(AnalysisCompleted(job_id, obj.id, obj.case_id))
    if events:
        ctx.bus.handle(AlarmEventsRecorded(tuple(events), tuple(deliveries)))


__all__ = ["AnalysisContext", "run_analysis_job", "load_recording", "render_previews", "preview_keys",
           "THUMBNAIL_SIDE"]
