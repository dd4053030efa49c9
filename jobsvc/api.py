"""The HTTP API: the Quart-Trio app factory `create_app` (DESIGN §2).

Resources (the database pool, the URL prober, the storage, the wake-up
`Announcer` and the events `Broadcaster`) are created when serving starts, by
one task of ``app.nursery`` that owns them and closes them in its ``finally``;
they live on the app as ``app.extensions["jobsvc"]`` (a `Services`), never in
request globals. Background tasks are supervised (logged, restarted with
backoff) and ``/readyz`` reports a dead one.

Every error is ``{"error": "<sentence>"}`` JSON; the status of each
`JobsvcError` is decided in `ERROR_STATUS`, and nowhere else.

Choices where DESIGN §2 is silent:

- ``POST /results/enqueue`` ignores unknown fields (forward compatibility), and
  takes ``null`` in an optional field as "absent". Required fields must be
  present and non-null; ints must be JSON integers (``true`` and ``1.0`` are not).
  When the URL is probed, a retry of an existing (jobId, resultFile) is answered
  without probing again (a presigned source URL may have expired by then).
- ``POST /results/{jobId}/cancel`` summarises the job's results in one status:
  ``Processing`` if any result is still running (its cancel is requested), else
  ``Canceled`` if any result was canceled, else ``Failed`` if any failed, else
  ``Completed``.
- ``GET /results/{jobId}/{resultFile}`` redirects (307) to a presigned URL valid
  for `PRESIGN_SECONDS` when the storage is S3, and streams the file otherwise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import quote, urlencode

import pydantic
import trio
from quart import Response, current_app, request
from quart_schema import (
    QuartSchema,
    RequestSchemaValidationError,
    document_headers,
    document_querystring,
    document_request,
    document_response,
)
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from jobsvc import dashboard, intake, queue
from jobsvc.config import Settings
from jobsvc.db import Conn, Database
from jobsvc.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidRequest,
    JobsvcError,
    NotFound,
    TransientError,
    quoted,
)
from jobsvc.events import Announcer, Broadcaster, event_stream
from jobsvc.fetch import Fetcher
from jobsvc.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from jobsvc.metrics import Metrics
from jobsvc.model import (
    Job,
    Status,
    check_file_name,
    job_view,
    parse_job_id,
)
from jobsvc.schemas import (
    CancelResponse,
    EnqueueRequest,
    ErrorBody,
    EventsHeaders,
    EventsQuery,
    EventStreamBody,
    HealthBody,
    ImageBody,
    JobView,
    JobViews,
    ListQuery,
    ListRequestHeaders,
    ListResponseHeaders,
    LocationHeaders,
    MetricsBody,
    NoBody,
    ReadyBody,
    SchemaProvider,
    error_sentence,
)
from jobsvc.storage import Storage, storage_from_settings

log = logging.getLogger("jobsvc.api")

#: The largest enqueue body accepted (Content-Length and bytes actually received).
MAX_BODY_BYTES = 64 * 1024
#: How long a presigned download URL stays valid.
PRESIGN_SECONDS = 300

ERROR_STATUS: dict[type[JobsvcError], int] = {
    InvalidRequest: 400,
    NotFound: 404,
    Conflict: 409,
    DatabaseUnavailable: 503,
    TransientError: 503,  # storage hiccups while serving a download
}

M = TypeVar("M", bound=pydantic.BaseModel)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def status_for(exc: JobsvcError) -> int:
    """The HTTP status of a jobsvc error: the one place that decides it."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


# --------------------------------------------------------------------------- services


@dataclass
class TaskHealth:
    alive: bool = False
    restarts: int = 0
    last_error: str | None = None


@dataclass
class Services:
    """What the request handlers use; created when serving starts, closed when it stops."""

    settings: Settings
    database: Database
    fetcher: Fetcher
    storage: Storage
    announcer: Announcer
    broadcaster: Broadcaster
    heartbeat: float
    tasks: dict[str, TaskHealth] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)

    async def run(self, fn: Callable[[Conn], T]) -> T:
        return await self.database.run(fn)


def _services() -> Services:
    return cast(Services, current_app.extensions["jobsvc"])


async def _supervise(name: str, fn: Callable[[], Awaitable[None]], health: TaskHealth) -> None:
    """Run ``fn`` forever: a crash is logged and ``fn`` restarted with backoff; cancellation ends it."""
    delay = 0.2
    while True:
        health.alive = True
        try:
            await fn()
            health.last_error = "returned unexpectedly"
            log.error("background task %s returned; restarting in %.1fs", name, delay)
        except Exception as exc:
            health.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("background task %s crashed; restarting in %.1fs", name, delay)
        health.alive = False
        health.restarts += 1
        await trio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def _serve(
    settings: Settings,
    options: Mapping[str, float],
    *,
    task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Own every resource of the API process; cancelled at shutdown, it closes them all."""
    url = settings.require_database_url()
    database = Database(url, max_size=8, timeout=3.0, application_name="jobsvc-api")
    fetcher = Fetcher(settings)
    storage: Storage | None = None
    try:
        await database.open()
        storage = storage_from_settings(settings)
        services = Services(
            settings=settings,
            database=database,
            fetcher=fetcher,
            storage=storage,
            announcer=Announcer(database, window=options["notify_window"]),
            broadcaster=Broadcaster(database, url, buffer=int(options["subscriber_buffer"])),
            heartbeat=options["heartbeat"],
        )
        async with trio.open_nursery() as nursery:
            for name, fn in (("announcer", services.announcer.run), ("events", services.broadcaster.run)):
                services.tasks[name] = TaskHealth()
                nursery.start_soon(_supervise, name, fn, services.tasks[name])
            # Subscribers that connect right after start-up must not miss events:
            # wait (briefly, PostgreSQL may be down) for the first LISTEN attempt.
            with trio.move_on_after(settings.connect_timeout):
                await services.broadcaster.first_attempt.wait()
            task_status.started(services)
    finally:
        with trio.CancelScope(shield=True):
            await fetcher.aclose()
            if storage is not None:
                await storage.aclose()
            await database.close()


# --------------------------------------------------------------------------- helpers


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status=status, headers=dict(headers or {}), content_type="application/json")


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidRequest(error_sentence(exc)) from None


def _query(model: type[M]) -> M:
    args = request.args
    for key in args:
        if len(args.getlist(key)) > 1:
            raise InvalidRequest(f"query parameter {quoted(key)} is given more than once")
    return _validate(model, args.to_dict())


async def _json_body() -> Any:
    """The request's JSON body, with the 413 / 415 / 400 checks in that order."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise _TooLarge()
    mimetype = request.mimetype
    if not (
        mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))
    ):
        raise _UnsupportedMedia(
            f"the body must be JSON (Content-Type: application/json), not {quoted(mimetype or 'none')}"
        )
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise _UnsupportedMedia(f"the body must be UTF-8 JSON, not {charset}")
    body = cast(bytes, await request.get_data(cache=False, as_text=False))
    if len(body) > MAX_BODY_BYTES:
        raise _TooLarge()
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _TooLarge(HTTPException):
    code = 413


class _UnsupportedMedia(HTTPException):
    code = 415


def _encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(str(row_id).encode()).decode().rstrip("=")


_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _decode_cursor(cursor: str) -> int:
    try:
        if not _CURSOR.fullmatch(cursor):
            raise ValueError
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not text.isdigit() or int(text) >= 2**63:
            raise ValueError
        return int(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("after is not a cursor from a previous page's Link header") from None


def _cancel_summary(jobs: list[Job]) -> str:
    statuses = {job.status for job in jobs}
    for status in (Status.PROCESSING, Status.QUEUED, Status.CANCELED, Status.FAILED):
        if status in statuses:
            return status.value
    return Status.COMPLETED.value


# --------------------------------------------------------------------------- the app


def create_app(
    settings: Settings,
    *,
    heartbeat: float = 15.0,
    subscriber_buffer: int = 256,
    notify_window: float = 0.002,
) -> QuartTrio:
    """The API app. ``heartbeat`` (seconds between SSE comments), ``subscriber_buffer``
    (event batches a subscriber may lag before it is dropped) and ``notify_window``
    (seconds between coalesced wake-ups) exist for tests and tuning."""
    app = QuartTrio("jobsvc")
    app.config.update(
        BACKGROUND_TASK_SHUTDOWN_TIMEOUT=None,  # cancel background tasks at once on shutdown
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    QuartSchema(
        app,
        info={
            "title": "jobsvc",
            "version": "0.1.0",
            "description": (
                "A PostgreSQL-backed queue of image-ingest jobs. JSON, camelCase, timestamps in "
                'epoch milliseconds. Every error is {"error": "<sentence>"}: besides the codes '
                "listed per operation, an unknown path is 404, a wrong method 405, a body over "
                "64 KiB 413."
            ),
        },
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,  # jobsvc.dashboard serves /docs from local files (offline)
        openapi_provider_class=SchemaProvider,
    )
    options = {"heartbeat": heartbeat, "subscriber_buffer": subscriber_buffer, "notify_window": notify_window}

    @app.before_serving
    async def start_services() -> None:
        app.extensions["jobsvc"] = await app.nursery.start(_serve, settings, options)

    _register_errors(app)
    _register_routes(app)
    app.register_blueprint(dashboard.blueprint)
    return app


def end_event_streams(app: QuartTrio) -> None:
    """End every open SSE stream (and any opened later): call it when shutdown begins,
    before the server's graceful wait, which an endless stream would otherwise use up."""
    services = app.extensions.get("jobsvc")
    if isinstance(services, Services):
        services.broadcaster.end_streams()


def _register_errors(app: QuartTrio) -> None:
    @app.errorhandler(JobsvcError)
    async def jobsvc_error(exc: JobsvcError) -> Response:
        return _error(status_for(exc), str(exc))

    @app.errorhandler(RequestSchemaValidationError)
    async def schema_error(exc: RequestSchemaValidationError) -> Response:
        error = exc.validation_error
        if isinstance(error, pydantic.ValidationError):
            return _error(400, error_sentence(error))
        return _error(400, f"the request is invalid: {error}")

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        headers: dict[str, str] = {}
        if code == 404:
            message = f"there is no resource at {quoted(request.path)}"
        elif code == 405 and isinstance(exc, MethodNotAllowed):
            allowed = sorted(exc.valid_methods or [])
            headers["Allow"] = ", ".join(allowed)
            useful = [m for m in allowed if m not in ("HEAD", "OPTIONS")] or allowed
            message = f"{request.method} is not allowed on {quoted(request.path)}; use {' or '.join(useful)}"
        elif code == 413:
            message = f"the request body is larger than {MAX_BODY_BYTES} bytes"
        else:
            message = exc.description or exc.name
        return _error(code, message, headers)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return _error(500, "internal server error; the details are in the server's log")


def _register_routes(app: QuartTrio) -> None:
    errors = {code: (ErrorBody, None) for code in (400, 500, 503)}

    def documented(
        *responses: tuple[int, type[pydantic.BaseModel], type[pydantic.BaseModel] | None],
    ) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            for code, model, headers in [*responses, *((c, m, h) for c, (m, h) in errors.items())]:
                fn = document_response(model, code, headers)(fn)
            return fn

        return decorate

    @app.post("/results/enqueue")
    @document_request(EnqueueRequest)
    @documented(
        (202, JobView, LocationHeaders),
        (200, JobView, None),
        (409, ErrorBody, None),
        (413, ErrorBody, None),
        (415, ErrorBody, None),
    )
    async def enqueue() -> Response:
        """Enqueue one result of a job.

        202 with the new job view and a Location; 200 with the existing view for an
        identical retry; 409 when the (jobId, resultFile) exists from another request.
        """
        services = _services()
        req = _validate(EnqueueRequest, await _json_body())
        new = _new_result(req, services.settings)
        if services.settings.verify_on_enqueue:
            existing = await services.run(lambda c: queue.get_result(c, new.job_id, new.result_file))
            if existing is None:
                await services.fetcher.probe(new.img_url)
        job, created = await services.run(lambda c: queue.enqueue(c, new))
        if not created:
            return _json(job_view(job), 200)
        services.announcer.add(job.id)
        services.metrics.enqueued.inc()
        return _json(job_view(job), 202, {"Location": f"/results/{job.job_id}"})

    @app.get("/results/list")
    @document_querystring(ListQuery)
    @document_headers(ListRequestHeaders)
    @documented((200, JobViews, ListResponseHeaders), (304, NoBody, None))
    async def list_results() -> Response:
        """List results, oldest first (order=desc: newest first), a page at a time.

        A `Link: <…>; rel="next"` header is present when more rows exist; every answer
        has an ETag, and If-None-Match with the current tag answers 304 without a body.
        """
        services = _services()
        q = _query(ListQuery)
        job_id = parse_job_id(q.job_id) if q.job_id is not None else None
        after = _decode_cursor(q.after) if q.after is not None else 0
        jobs = await services.run(
            lambda c: queue.list_jobs(
                c, status=q.status, job_id=job_id, after=after, limit=q.limit + 1, order=q.order
            )
        )
        page = jobs[: q.limit]
        body = json.dumps([job_view(j) for j in page], ensure_ascii=False, separators=(",", ":")).encode()
        etag = hashlib.sha256(body).hexdigest()[:32]
        headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
        if len(jobs) > q.limit:
            params = {k: v for k, v in request.args.items() if k != "after"}
            params["after"] = _encode_cursor(page[-1].id)
            headers["Link"] = f'</results/list?{urlencode(params)}>; rel="next"'
        if request.if_none_match.contains_weak(etag):
            return Response(b"", status=304, headers=headers)
        return Response(body, status=200, headers=headers, content_type="application/json")

    @app.get("/results/events")
    @document_querystring(EventsQuery)
    @document_headers(EventsHeaders)
    @documented((200, EventStreamBody, None))
    async def events() -> Response:
        """Follow status changes as Server-Sent Events.

        One `job` event per change (`data:` the job view, `id:` `<rowId>-<updatedAtMs>`),
        a `: heartbeat` comment every 15 s. With `jobId`, only that job's results, and
        the stream starts with their current state (so a reconnect catches up).
        """
        services = _services()
        q = _query(EventsQuery)
        job_id = parse_job_id(q.job_id) if q.job_id is not None else None

        async def snapshot(jid: uuid.UUID) -> list[Job]:
            return await services.run(lambda c: queue.get_job(c, jid))

        stream = event_stream(
            services.broadcaster,
            job_id=job_id,
            last_event_id=request.headers.get("Last-Event-ID"),
            snapshot=snapshot,
            heartbeat=services.heartbeat,
        )
        response = Response(
            stream,
            content_type="text/event-stream; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # an event stream lasts as long as the client wants
        return response

    @app.get("/results/<jobId>")
    @documented((200, JobViews, None), (404, ErrorBody, None))
    async def get_job(jobId: str) -> Response:  # the path parameter names the API documents
        """All results of a job (404 when the job does not exist)."""
        jid = parse_job_id(jobId)
        jobs = await _services().run(lambda c: queue.get_job(c, jid))
        if not jobs:
            raise NotFound(f"job {jid} does not exist")
        return _json([job_view(j) for j in jobs])

    @app.post("/results/<jobId>/cancel")
    @documented((200, CancelResponse, None), (404, ErrorBody, None))
    async def cancel(jobId: str) -> Response:
        """Cancel every unfinished result of a job (idempotent).

        Queued results become Canceled at once; Processing ones get a cancel request
        that their worker honours within milliseconds. The top-level status is
        Processing while any result still runs, else Canceled if any was canceled,
        else Failed if any failed, else Completed.
        """
        jid = parse_job_id(jobId)
        services = _services()
        jobs = await services.run(lambda c: queue.cancel(c, jid))
        services.metrics.cancels.inc()
        return _json(
            {
                "jobId": str(jid),
                "status": _cancel_summary(jobs),
                "results": [{"resultFile": j.result_file, "status": j.status.value} for j in jobs],
            }
        )

    @app.get("/results/<jobId>/<resultFile>")
    @documented((200, ImageBody, None), (307, NoBody, LocationHeaders), (404, ErrorBody, None))
    async def download(jobId: str, resultFile: str) -> Response:
        """The stored image of a Completed result.

        Streamed with its content type, or a 307 redirect to a short-lived presigned
        URL when the storage is S3; 404 unless the result exists and is Completed.
        """
        services = _services()
        jid = parse_job_id(jobId)
        # The rule enqueue names results by: a name it refuses (NUL, separators, over
        # 255 bytes) was never stored, and must not reach SQL, which refuses NUL.
        name = check_file_name(resultFile)
        job = await services.run(lambda c: queue.get_result(c, jid, name))
        if job is None:
            raise NotFound(f"job {jid} has no result named {quoted(name)}")
        if job.status is not Status.COMPLETED:
            raise NotFound(f"result {quoted(name)} of job {jid} is {job.status.value}, not Completed")
        url = await services.storage.presign(job.storage_key, PRESIGN_SECONDS)
        if url is not None:
            return Response(b"", status=307, headers={"Location": url, "Cache-Control": "no-store"})
        stored = await services.storage.open(job.storage_key)
        if stored is None:
            raise NotFound(f"the stored file of result {quoted(name)} of job {jid} is missing")
        disposition = f"inline; filename*=UTF-8''{quote(job.result_file, safe='')}"
        return Response(
            stored.chunks(),
            content_type=stored.content_type,
            headers={"Content-Length": str(stored.size), "Content-Disposition": disposition},
        )

    @app.get("/healthz")
    @document_response(HealthBody, 200)
    async def healthz() -> Response:
        """The process is alive (no dependency is checked)."""
        return _json({"status": "ok"})

    @app.get("/metrics")
    @document_response(MetricsBody, 200)
    async def metrics() -> Response:
        """Prometheus text: jobs by status, queue depth and age, and this process's counters."""
        services = _services()
        await services.run(services.metrics.update_from_db)
        services.metrics.subscribers.set(services.broadcaster.subscriber_count)
        return Response(services.metrics.render(), 200, content_type=METRICS_CONTENT_TYPE)

    @app.get("/readyz")
    @document_response(ReadyBody, 200)
    @document_response(ReadyBody, 503)
    async def readyz() -> Response:
        """Ready: the database answers, its schema is current, background tasks run."""
        services = _services()
        checks: dict[str, str] = {}
        try:
            version = await services.run(queue.schema_version)
        except Exception as exc:  # readiness answers 503 whatever the database says
            checks["database"] = f"unreachable: {exc}"
            checks["schema"] = "unknown"
        else:
            checks["database"] = "ok"
            if version == queue.SCHEMA_VERSION:
                checks["schema"] = "ok"
            elif version is None:
                checks["schema"] = "not migrated: run `jobsvc migrate`"
            else:
                checks["schema"] = f"version {version}, expected {queue.SCHEMA_VERSION}"
        for name, health in services.tasks.items():
            checks[f"task:{name}"] = "ok" if health.alive else f"dead: {health.last_error}"
        checks["events"] = "ok" if services.broadcaster.listening else "not listening"
        failed = [f"{name} {state}" for name, state in checks.items() if state != "ok"]
        if failed:
            return _json(
                {"status": "unavailable", "error": "not ready: " + "; ".join(failed), "checks": checks}, 503
            )
        return _json({"status": "ok", "checks": checks})


def _new_result(req: EnqueueRequest, settings: Settings) -> queue.NewResult:
    return intake.new_result(req, settings.max_attempts)


__all__ = ["ERROR_STATUS", "MAX_BODY_BYTES", "Services", "create_app", "end_event_streams", "status_for"]
