"""The HTTP API: the Quart-Trio app factory `create_app`, and the one place that
maps errors to answers (docs/ARCHITECTURE.md, "The API").

Every error is ``{"error": "<sentence>"}`` JSON. The status of each `JobsvcError`
is decided in `ERROR_STATUS`, and nowhere else; the routes raise those. Errors
Quart and werkzeug raise themselves (unknown path, wrong method, a body over
``MAX_CONTENT_LENGTH`` noticed while reading it) get their sentence in
`_register_errors`, the too-large body the same as the one the routes raise.
"""

from __future__ import annotations

import logging
from functools import partial

import pydantic
from quart import Response, request
from quart_schema import RequestSchemaValidationError
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from jobsvc.api import auth, batch, dashboard, events, openapi, ops, ratelimit, results
from jobsvc.api.collector import IN_FLIGHT
from jobsvc.api.services import Services, serve
from jobsvc.api.wire import MAX_BATCH_BODY_BYTES, body_too_large, json_response
from jobsvc.config import Settings
from jobsvc.errors import (
    BodyTooLarge,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidRequest,
    JobsvcError,
    NotFound,
    QuotaExceeded,
    RateLimited,
    TooManyRequests,
    TransientError,
    Unauthorized,
    UnsupportedMedia,
    quoted,
)
from jobsvc.events import DEFAULT_LINGER
from jobsvc.metrics import Metrics
from jobsvc.schemas import error_sentence

__all__ = ["ERROR_STATUS", "create_app", "end_event_streams", "status_for"]

log = logging.getLogger("jobsvc.api")

ERROR_STATUS: dict[type[JobsvcError], int] = {
    InvalidRequest: 400,
    BodyTooLarge: 413,
    UnsupportedMedia: 415,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    QuotaExceeded: 429,  # with Retry-After, as every TooManyRequests
    RateLimited: 429,
    DatabaseUnavailable: 503,
    TransientError: 503,  # storage hiccups while serving a download
}


def status_for(exc: JobsvcError) -> int:
    """The HTTP status of a jobsvc error: the one place that decides it."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def create_app(
    settings: Settings,
    *,
    heartbeat: float = 15.0,
    subscriber_buffer: int = 256,
    events_linger: float = DEFAULT_LINGER,
    notify_window: float = 0.002,
    storage_check_timeout: float = 2.0,
    metrics: Metrics | None = None,
    key_cache_seconds: float = auth.CACHE_SECONDS,
    key_flush_interval: float = auth.FLUSH_SECONDS,
    enqueue_groups_in_flight: int = IN_FLIGHT,
) -> QuartTrio:
    """The API app. ``metrics``: the process's registry when a worker in the same process
    shares it (`jobsvc dev`); else the app makes its own. ``heartbeat`` (seconds between
    SSE comments), ``subscriber_buffer`` (event batches a subscriber may lag before it is
    dropped), ``events_linger`` (seconds the events LISTEN outlives the last stream),
    ``notify_window`` (seconds between coalesced wake-ups),
    ``storage_check_timeout`` (how long ``/readyz`` waits for the storage),
    ``key_cache_seconds`` (how long a key lookup is trusted: the bound on a revocation
    taking effect), ``key_flush_interval`` (seconds between last-used writes) and
    ``enqueue_groups_in_flight`` (groups of single enqueues written at once,
    jobsvc/api/collector.py) exist for tests and tuning."""
    app = QuartTrio("jobsvc")
    app.config.update(
        BACKGROUND_TASK_SHUTDOWN_TIMEOUT=None,  # cancel background tasks at once on shutdown
        MAX_CONTENT_LENGTH=MAX_BATCH_BODY_BYTES,  # the largest; each route checks its own
    )
    openapi.install(app)
    options = {
        "heartbeat": heartbeat,
        "subscriber_buffer": subscriber_buffer,
        "events_linger": events_linger,
        "notify_window": notify_window,
        "storage_check_timeout": storage_check_timeout,
        "key_cache_seconds": key_cache_seconds,
        "key_flush_interval": key_flush_interval,
        "enqueue_groups_in_flight": enqueue_groups_in_flight,
    }

    @app.before_serving
    async def start_services() -> None:
        app.extensions["jobsvc"] = await app.nursery.start(partial(serve, settings, options, metrics=metrics))

    _register_errors(app)
    app.before_request(auth.check_request)
    ratelimit.install(app, settings.rate_limit)  # after authentication: the limit is per key
    for module in (results, batch, events, ops, dashboard, auth):
        app.register_blueprint(module.blueprint)
    return app


def end_event_streams(app: QuartTrio) -> None:
    """End every open SSE stream (and any opened later): call it when shutdown begins,
    before the server's graceful wait, which an endless stream would otherwise use up."""
    services = app.extensions.get("jobsvc")
    if isinstance(services, Services):
        services.broadcaster.end_streams()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def _register_errors(app: QuartTrio) -> None:
    @app.errorhandler(JobsvcError)
    async def jobsvc_error(exc: JobsvcError) -> Response:
        headers: dict[str, str] | None = None
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": exc.challenge}
        elif isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return _error(status_for(exc), str(exc), headers)

    @app.errorhandler(RequestSchemaValidationError)
    async def schema_error(exc: RequestSchemaValidationError) -> Response:
        error = exc.validation_error
        if isinstance(error, pydantic.ValidationError):
            return _error(400, error_sentence(error))
        return _error(400, f"the request is invalid: {error}")

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(exc: RequestEntityTooLarge) -> Response:
        return await jobsvc_error(body_too_large())

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
        else:
            message = exc.description or exc.name
        return _error(code, message, headers)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return _error(500, "internal server error; the details are in the server's log")
