"""Request, response and query models: the same pydantic models validate requests,
generate ``/openapi.json`` (quart-schema, shaped by `jobsvc.api.openapi`) and, for the
job view, write the answers (`job_view`); plus the error sentences built from their
validation errors. Pydantic only: the library's enqueue path imports this module
without the web stack."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import pydantic
from pydantic import ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

from jobsvc.model import (
    MAX_TYPE_LENGTH,
    MAX_URL_LENGTH,
    Job,
    Status,
    epoch_ms,
)

M = TypeVar("M", bound=pydantic.BaseModel)

# --------------------------------------------------------------------------- models
# The same models validate requests and generate /openapi.json.

#: 9999-12-31T23:59:59.999Z: a runAt after this is a client bug, not a schedule.
MAX_RUN_AT_MS = 253_402_300_799_999


class _Camel(pydantic.BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    #: The response's media type in the OpenAPI document (None: no body).
    media_type: ClassVar[str | None] = "application/json"


class EnqueueRequest(_Camel):
    """One result of a job. Unknown fields are ignored; null in an optional field means absent."""

    job_id: Annotated[
        StrictStr, Field(description="a UUID, not the nil UUID", json_schema_extra={"format": "uuid"})
    ]
    type: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TYPE_LENGTH)]
    img_url: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=MAX_URL_LENGTH,
            description="absolute http(s) URL; its last path segment names the result file",
            json_schema_extra={"format": "uri"},
        ),
    ]
    priority: Annotated[StrictInt, Field(ge=-100, le=100)] | None = Field(
        default=None, description="higher first; default 0"
    )
    run_at: Annotated[StrictInt, Field(ge=0, le=MAX_RUN_AT_MS)] | None = Field(
        default=None, description="epoch milliseconds; not claimed before; default now"
    )
    max_attempts: Annotated[StrictInt, Field(ge=1, le=10)] | None = Field(
        default=None, description="default JOBSVC_MAX_ATTEMPTS"
    )


#: The most items of one ``POST /results/batch``.
MAX_BATCH_ITEMS = 1000


class BatchRequest(_Camel):
    """Up to 1,000 enqueue requests, each judged as ``POST /results/enqueue`` judges it."""

    jobs: list[EnqueueRequest] = Field(
        min_length=1, max_length=MAX_BATCH_ITEMS, description="more than 1,000 items is a 413"
    )


class JobView(_Camel):
    """A job's result, as every endpoint and event shows it. Timestamps are epoch milliseconds."""

    job_id: uuid.UUID
    type: str
    img_url: str
    status: Status
    result_file: str
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None
    duration_ms: int | None = Field(
        description="from creation to finish, so any runAt delay and retry backoff included; "
        "null until finished"
    )
    # A default, so that a client of this version still reads an older server's views.
    run_ms: int | None = Field(
        default=None,
        description="from the start of the last attempt to finish; null until finished, "
        "or when it never started",
    )
    attempts: int
    max_attempts: int
    priority: int
    run_at: int
    cancel_requested: bool
    error: str | None = Field(description="a sentence; null unless failed or retrying")
    # A default, so that clients of this version still read a server from before tenants.
    tenant: str = Field("default", description="the tenant of the key that enqueued it")

    @classmethod
    def of(cls, job: Job) -> JobView:
        """The view of a row; not validated (the row is ours, and this is per listed row)."""
        return cls.model_construct(
            job_id=job.job_id,
            type=job.type,
            img_url=job.img_url,
            status=job.status,
            result_file=job.result_file,
            created_at=_ms(job.created_at),
            updated_at=_ms(job.updated_at),
            started_at=epoch_ms(job.started_at),
            finished_at=epoch_ms(job.finished_at),
            duration_ms=job.duration_ms,
            run_ms=job.run_ms,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            priority=job.priority,
            run_at=_ms(job.run_at),
            cancel_requested=job.cancel_requested_at is not None,
            error=job.error,
            tenant=job.tenant,
        )


def job_view(job: Job) -> dict[str, Any]:
    """The JSON view of a result, as every endpoint and event shows it: `JobView`'s keys
    in its field order, with the values its JSON dump has (tests/unit/test_job_view.py
    compares the two on generated rows, so the answers and ``/openapi.json`` cannot
    disagree). Built as a dict: per listed row and per batch item, pydantic's
    construct-and-dump cost 2-3 times as much."""
    finished_at = job.finished_at
    started_at = job.started_at
    return {
        "jobId": str(job.job_id),
        "type": job.type,
        "imgUrl": job.img_url,
        "status": job.status.value,
        "resultFile": job.result_file,
        "createdAt": _ms(job.created_at),
        "updatedAt": _ms(job.updated_at),
        "startedAt": None if started_at is None else _ms(started_at),
        "finishedAt": None if finished_at is None else _ms(finished_at),
        "durationMs": job.duration_ms,
        "runMs": job.run_ms,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "priority": job.priority,
        "runAt": _ms(job.run_at),
        "cancelRequested": job.cancel_requested_at is not None,
        "error": job.error,
        "tenant": job.tenant,
    }


def _ms(moment: datetime) -> int:
    # The rows of a batch (and of a claim or a finish) share their timestamps: now() of
    # one transaction, in createdAt, updatedAt and runAt alike. So the last conversion is
    # kept: an equal moment costs a comparison (~30 ns), not timestamp() in psycopg's
    # ZoneInfo zone (~550 ns); three per view, 1,000 views per batch answer. One
    # immutable pair, replaced whole: threads that share it read a consistent one.
    global _last_ms
    last = _last_ms
    if moment == last[0]:
        return last[1]
    ms = int(moment.timestamp() * 1000)
    _last_ms = (moment, ms)
    return ms


_last_ms: tuple[datetime, int] = (datetime(1970, 1, 1, tzinfo=UTC), 0)


class JobViews(pydantic.RootModel[list[JobView]]):
    """Job views, oldest first."""

    media_type: ClassVar[str | None] = "application/json"


class BatchItemResult(_Camel):
    """One item's answer: what ``POST /results/enqueue`` would have answered for it."""

    status: Literal[202, 200, 400, 409, 429] = Field(
        description="202 new, 200 identical to an existing result, 400 invalid, 409 conflicting, "
        "429 over the tenant's quota"
    )
    job: JobView | None = Field(description="the result's view when status is 202 or 200; else null")
    error: str | None = Field(description="a sentence; null unless status is 400, 409 or 429")


class BatchResponse(_Camel):
    """One answer per item, in input order."""

    results: list[BatchItemResult]


class CancelResult(_Camel):
    result_file: str
    status: Status


class CancelResponse(_Camel):
    """The job after the cancel. status: Processing while any result still runs, else Canceled
    if any was canceled, else Failed if any failed, else Completed."""

    job_id: uuid.UUID
    status: Status
    results: list[CancelResult]


class ErrorBody(_Camel):
    """Every error: one human sentence."""

    error: str


class HealthBody(_Camel):
    """The process is alive."""

    status: Literal["ok"]


class ReadyBody(_Camel):
    """Each check is "ok" or says what is wrong; 503 also carries an error sentence."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
    error: str | None = None


class ListQuery(_Camel):
    status: str | None = Field(
        None,
        description="one status or several, comma-separated: " + ",".join(s.value for s in Status),
        examples=["Failed,Canceled"],
    )
    job_id: str | None = Field(None, json_schema_extra={"format": "uuid"})
    type: str | None = Field(None, min_length=1, max_length=MAX_TYPE_LENGTH)
    created_after: int | None = Field(
        None, ge=0, le=MAX_RUN_AT_MS, description="epoch ms; only results with a later createdAt"
    )
    created_before: int | None = Field(
        None, ge=0, le=MAX_RUN_AT_MS, description="epoch ms; only results with an earlier createdAt"
    )
    order: Literal["asc", "desc"] = Field("asc", description="asc: oldest first; desc: newest first")
    limit: int = Field(100, ge=1, le=1000)
    after: str | None = Field(
        None, description="opaque cursor from the previous page's Link header (either order)"
    )
    tenant: str | None = Field(None, description="admin keys: only this tenant's results")


class StatsBody(_Camel):
    """What the dashboard shows at the top, counted by the server (not from a page of rows)."""

    counts: dict[Status, int] = Field(description="results per status")
    queue_depth: int = Field(description="Queued results that are due")
    oldest_queued_age_ms: int | None = Field(
        description="how long the oldest due Queued result has waited; null when none is due"
    )


class EventsQuery(_Camel):
    job_id: str | None = Field(None, json_schema_extra={"format": "uuid"})
    tenant: str | None = Field(None, description="admin keys: only this tenant's results")


class StatsQuery(_Camel):
    tenant: str | None = Field(None, description="admin keys: only this tenant's results")


class WhoAmIBody(_Camel):
    """Who a token acts as."""

    tenant: str = Field(description="the tenant its enqueued results belong to")
    scopes: list[str]
    reads_tenants: list[str] | None = Field(description="the tenants it reads; null: every tenant (admin)")


class ListRequestHeaders(pydantic.BaseModel):
    if_none_match: str | None = None


class ListResponseHeaders(pydantic.BaseModel):
    etag: str
    link: str | None = Field(None, description='<…&after=…>; rel="next" when more rows exist')


class EventsHeaders(pydantic.BaseModel):
    last_event_id: str | None = Field(None, description="accepted; see GET /results/events")


class LocationHeaders(pydantic.BaseModel):
    location: str


class RetryAfterHeaders(pydantic.BaseModel):
    retry_after: int = Field(description="seconds to wait before trying again")


class NoBody(_Camel):
    """No body."""

    media_type: ClassVar[str | None] = None


class EventStreamBody(pydantic.RootModel[str]):
    """Server-Sent Events: `event: job`, `id: <rowId>-<updatedAtMs>`, `data: <job view>`."""

    media_type: ClassVar[str | None] = "text/event-stream"


class MetricsBody(pydantic.RootModel[str]):
    """Prometheus text exposition format; every name starts with ``jobsvc_``."""

    media_type: ClassVar[str | None] = "text/plain"


class ImageBody(pydantic.RootModel[bytes]):
    """The stored image, with its content type (application/octet-stream when file storage
    does not recognise the stored bytes)."""

    media_type: ClassVar[str | None] = "image/*"
    other_media_types: ClassVar[tuple[str, ...]] = ("application/octet-stream",)


def error_sentence(exc: pydantic.ValidationError) -> str:
    """A pydantic error as one sentence about the first bad field."""
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"])
    kind, value = err["type"], err.get("input")
    if not where:
        return f"the body must be a JSON object, not {_json_type(value)}"
    if kind == "missing":
        return f"{where} is required"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{where} must be an integer, not {_json_type(value)}"
    if kind == "string_type":
        return f"{where} must be a string, not {_json_type(value)}"
    if kind == "enum":
        return f"{where} must be one of " + ", ".join(s.value for s in Status)
    message = err["msg"]
    return f"{where} is invalid: {message[:1].lower()}{message[1:]}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "an array" if isinstance(value, list) else "an object"
