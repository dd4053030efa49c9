"""``GET /results/events``: the SSE route. The stream itself (fan-out, catch-up,
heartbeats) is `jobsvc.events`."""

from __future__ import annotations

import uuid

from quart import Blueprint, Response, request
from quart_schema import document_headers, document_querystring, operation_id

from jobsvc import queue
from jobsvc.api.auth import reads, requires
from jobsvc.api.services import services
from jobsvc.api.wire import documented, query
from jobsvc.events import event_stream
from jobsvc.keys import Scope
from jobsvc.model import Job, parse_job_id
from jobsvc.schemas import EventsHeaders, EventsQuery, EventStreamBody

__all__ = ["blueprint"]

blueprint = Blueprint("events", __name__)


@blueprint.get("/results/events")
@operation_id("follow_events")
@document_querystring(EventsQuery)
@document_headers(EventsHeaders)
@documented((200, EventStreamBody, None))
@requires(Scope.READ)
async def events() -> Response:
    """Follow status changes as Server-Sent Events.

    One `job` event per change (`data:` the job view, `id:` `<rowId>-<updatedAtMs>`),
    a `: heartbeat` comment every 15 s. With `jobId`, only that job's results, and
    the stream starts with their current state (so a reconnect catches up). A key sees
    its tenant's results only; an admin key every tenant's, or those of `tenant`.
    """
    svc = services()
    q = query(EventsQuery)
    job_id = parse_job_id(q.job_id) if q.job_id is not None else None
    tenant = reads(q.tenant)

    async def snapshot(jid: uuid.UUID) -> list[Job]:
        return await svc.run(lambda c: queue.get_job(c, jid, tenant))

    stream = event_stream(
        svc.broadcaster,
        job_id=job_id,
        tenant=tenant,
        last_event_id=request.headers.get("Last-Event-ID"),
        snapshot=snapshot,
        heartbeat=svc.heartbeat,
    )
    response = Response(
        stream,
        content_type="text/event-stream; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # an event stream lasts as long as the client wants
    return response
