"""Critical-value alarms for the devices and the people of a site: list, show, acknowledge,
and the Server-Sent Events stream.

The stream (``GET /api/v1/alarms/stream``) sends ``alarm``, ``ack`` and ``escalation`` events,
and ``report`` (a signed report or amendment) and ``report_ack`` events, of the caller's site
and of the sites below it, each with ``id:`` = the event's id; a client
that reconnects with ``Last-Event-ID`` first gets what it missed, from the database, so a
reconnect to another API process loses nothing either.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from telediag.domain import AlarmEventInfo, AlarmNotFound, AlarmState, UnknownSite
from telediag.push import acknowledge_alarm, alarm_detail, alarm_json, events_since, last_event_id, list_alarms
from telediag.web.deps import PrincipalDep, SystemDep

router = APIRouter(prefix="/api/v1", tags=["alarms"])

#: A comment line this often keeps proxies from closing an idle stream, and finds gone clients.
KEEPALIVE_S = 15.0
REPLAY_BATCH = 1000


def _sse(event: AlarmEventInfo) -> bytes:
    data = json.dumps(event.payload, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


@router.get("/alarms")
def alarms(system: SystemDep, caller: PrincipalDep, site: Annotated[str | None, Query()] = None,
           state: Annotated[AlarmState | None, Query()] = None) -> list[dict[str, Any]]:
    """Alarms of the caller's site and the sites below it (or of one of them: ``site``, id or
    name), newest first; ``state`` is ``open`` or ``acknowledged``."""
    try:
        return [alarm_json(a) for a in list_alarms(system.db, caller.site_id, site, state)]
    except UnknownSite as exc:
        raise HTTPException(404, str(exc)) from exc


@router.get("/alarms/stream")
async def alarm_stream(system: SystemDep, caller: PrincipalDep,
                       last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None
                       ) -> StreamingResponse:
    """Server-Sent Events: ``alarm``, ``ack`` and ``escalation`` events for the caller's sites."""
    if last_event_id_header is not None and not last_event_id_header.strip().isdigit():
        raise HTTPException(400, "Last-Event-ID must be an event id")
    queue: asyncio.Queue[AlarmEventInfo] = asyncio.Queue()
    feed = system.alarm_feed
    # Subscribe before reading where to start: nothing committed in between is missed.
    token = await run_in_threadpool(feed.subscribe, caller.site_id, asyncio.get_running_loop(), queue)
    replay_from = int(last_event_id_header) if last_event_id_header is not None else None
    cursor = replay_from if replay_from is not None else await run_in_threadpool(last_event_id, system.db)

    async def stream() -> AsyncIterator[bytes]:
        nonlocal cursor
        try:
            yield b"retry: 2000\n\n"
            while replay_from is not None:
                batch = await run_in_threadpool(events_since, system.db, caller.site_id, cursor, REPLAY_BATCH)
                for event in batch:
                    cursor = event.id
                    yield _sse(event)
                if len(batch) < REPLAY_BATCH:
                    break
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if event.id > cursor:
                    cursor = event.id
                    yield _sse(event)
        finally:
            feed.unsubscribe(token)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/alarms/{alarm_id}")
def alarm(alarm_id: int, system: SystemDep, caller: PrincipalDep) -> dict[str, Any]:
    """One alarm with who was notified and when, and the delivery log of its pushes."""
    try:
        return alarm_detail(system.db, caller.site_id, alarm_id)
    except AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@router.post("/alarms/{alarm_id}/ack")
def acknowledge(alarm_id: int, system: SystemDep, caller: PrincipalDep) -> dict[str, Any]:
    """Acknowledge the alarm as the calling device (recorded with the time); the first
    acknowledgement stops its escalation and is pushed as an ``ack`` event."""
    try:
        acked = acknowledge_alarm(system.db, system.bus, system.push_channels, caller.site_id, alarm_id,
                                  caller.username if caller.is_user else f"device:{caller.username}")
    except AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return alarm_json(acked)
