"""The analyse stage: one analysis job, from the stored object to the recorded result.

:func:`run_analysis_job` is the use case a worker runs for a job id: claim the job (with a
lease, so two deliveries of one job never run at once), read the object from the store,
decode and analyse it with the pure DSP of :mod:`telediag.ecg` under the job's critical-value
rule set, then record the result, the job's end, the case's status and priority, the alarms
it raised and their push deliveries in one transaction, and announce
:class:`~telediag.domain.AnalysisCompleted` and (when alarms were raised)
:class:`~telediag.domain.AlarmEventsRecorded`. Running a job twice is harmless: a finished
job is skipped, results are kept per object and an object's alarms are recorded once.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

from telediag.domain import AlarmEventsRecorded, AnalysisCompleted, AnalysisFailed, CaseStatus, MediaType, PushChannel
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


__all__ = ["AnalysisContext", "run_analysis_job", "load_recording"]
