"""The results routes: enqueue, batch, list, get, cancel, retry, download.

Choices the contract (README, "HTTP API") leaves open:

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
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from quart import Blueprint, Response, request
from quart_schema import document_headers, document_querystring, document_request, operation_id

from jobsvc import intake, queue
from jobsvc.api.auth import principal, reads, requires
from jobsvc.api.services import services
from jobsvc.api.wire import documented, json_body, json_response, query, validate
from jobsvc.config import Settings
from jobsvc.errors import InvalidRequest, NotFound, quoted
from jobsvc.keys import DEFAULT_TENANT, Scope
from jobsvc.model import (
    Job,
    Status,
    check_file_name,
    parse_job_id,
)
from jobsvc.schemas import (
    MAX_RUN_AT_MS,
    CancelResponse,
    EnqueueRequest,
    ErrorBody,
    ImageBody,
    JobView,
    JobViews,
    ListQuery,
    ListRequestHeaders,
    ListResponseHeaders,
    LocationHeaders,
    NoBody,
    job_view,
)

__all__ = ["PRESIGN_SECONDS", "blueprint", "judge"]

#: How long a presigned download URL stays valid.
PRESIGN_SECONDS = 300

blueprint = Blueprint("results", __name__)
log = logging.getLogger("jobsvc.api")


@blueprint.post("/results/enqueue")
@document_request(EnqueueRequest)
@documented(
    (202, JobView, LocationHeaders),
    (200, JobView, None),
    (409, ErrorBody, None),
    (413, ErrorBody, None),
    (415, ErrorBody, None),
)
@requires(Scope.ENQUEUE)
async def enqueue() -> Response:
    """Enqueue one result of a job.

    202 with the new job view and a Location; 200 with the existing view for an
    identical retry; 409 when the (jobId, resultFile) exists from another request;
    429 with Retry-After when the tenant already has JOBSVC_TENANT_MAX_QUEUED
    unfinished results.
    """
    svc = services()
    new = judge(await json_body(), svc.settings, principal().tenant)
    if svc.settings.verify_on_enqueue:
        existing = await svc.run(lambda c: queue.get_result(c, new.job_id, new.result_file, new.tenant))
        if existing is None:
            await svc.fetcher.probe(new.img_url)
    # Written with the other enqueues in flight, in one transaction (jobsvc/api/collector.py).
    job, created = await svc.collector.submit(new)
    if not created:
        return json_response(job_view(job), 200)
    return json_response(job_view(job), 202, {"Location": f"/results/{job.job_id}"})


@blueprint.get("/results/list")
@document_querystring(ListQuery)
@document_headers(ListRequestHeaders)
@documented((200, JobViews, ListResponseHeaders), (304, NoBody, None))
@requires(Scope.READ)
async def list_results() -> Response:
    """List results, oldest first (order=desc: newest first), a page at a time.

    A `Link: <…>; rel="next"` header is present when more rows exist; every answer
    has an ETag, and If-None-Match with the current tag answers 304 without a body.
    """
    q = query(ListQuery)
    where = queue.ListFilter(
        tenant=reads(q.tenant),
        statuses=_statuses(q.status) if q.status is not None else (),
        job_id=parse_job_id(q.job_id) if q.job_id is not None else None,
        type=_type_filter(q.type) if q.type is not None else None,
        created_from=_later_than(q.created_after) if q.created_after is not None else None,
        created_before=_moment(q.created_before) if q.created_before is not None else None,
        order=q.order,
    )
    after = _decode_cursor(q.after) if q.after is not None else None
    jobs = await services().run(lambda c: queue.list_jobs(c, where, after=after, limit=q.limit + 1))
    page = jobs[: q.limit]
    body = json.dumps([job_view(j) for j in page], ensure_ascii=False, separators=(",", ":")).encode()
    etag = hashlib.sha256(body).hexdigest()[:32]
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
    if len(jobs) > q.limit:
        params = {k: v for k, v in request.args.items() if k != "after"}
        params["after"] = _encode_cursor(queue.ListCursor.of(page[-1]))
        headers["Link"] = f'</results/list?{urlencode(params)}>; rel="next"'
    if request.if_none_match.contains_weak(etag):
        return Response(b"", status=304, headers=headers)
    return Response(body, status=200, headers=headers, content_type="application/json")


@blueprint.get("/results/<jobId>")
@documented((200, JobViews, None), (404, ErrorBody, None))
@requires(Scope.READ)
async def get_job(jobId: str) -> Response:  # the path parameter names the API documents
    """All results of a job (404 when the job does not exist, or is another tenant's)."""
    jid = parse_job_id(jobId)
    tenant = reads()
    jobs = await services().run(lambda c: queue.get_job(c, jid, tenant))
    if not jobs:
        raise NotFound(f"job {jid} does not exist")
    return json_response([job_view(j) for j in jobs])


@blueprint.post("/results/<jobId>/cancel")
@operation_id("cancel_job")
@documented((200, CancelResponse, None), (404, ErrorBody, None))
@requires(Scope.CANCEL)
async def cancel(jobId: str) -> Response:
    """Cancel every unfinished result of a job (idempotent).

    Queued results become Canceled at once; Processing ones get a cancel request
    that their worker honours within milliseconds. The top-level status is
    Processing while any result still runs, else Canceled if any was canceled,
    else Failed if any failed, else Completed.
    """
    jid = parse_job_id(jobId)
    svc = services()
    tenant = reads()
    jobs = await svc.run(lambda c: queue.cancel(c, jid, tenant))
    svc.metrics.cancel_requests.inc()
    return _summary_response(jid, jobs)


@blueprint.post("/results/<jobId>/retry")
@documented((200, CancelResponse, None), (404, ErrorBody, None), (429, ErrorBody, None))
@requires(Scope.CANCEL)
async def retry(jobId: str) -> Response:
    """Put every Failed or Canceled result of a job back to Queued.

    Attempts start from 0 again, the error is cleared and the result is due now;
    other results are left as they are. The answer has the cancel answer's shape.
    429 with Retry-After, and nothing retried, when the retried results would take
    the tenant past JOBSVC_TENANT_MAX_QUEUED unfinished results.
    """
    jid = parse_job_id(jobId)
    tenant = reads()
    svc = services()
    cap = svc.settings.tenant_max_queued
    jobs = await svc.run(lambda c: queue.retry(c, jid, tenant, max_queued=cap))
    return _summary_response(jid, jobs)


def _summary_response(jid: uuid.UUID, jobs: list[Job]) -> Response:
    return json_response(
        {
            "jobId": str(jid),
            "status": _cancel_summary(jobs),
            "results": [{"resultFile": j.result_file, "status": j.status.value} for j in jobs],
        }
    )


@blueprint.get("/results/<jobId>/<resultFile>")
@operation_id("download_result")
@documented((200, ImageBody, None), (307, NoBody, LocationHeaders), (404, ErrorBody, None))
@requires(Scope.READ)
async def download(jobId: str, resultFile: str) -> Response:
    """The stored image of a Completed result.

    Streamed with its content type, or a 307 redirect to a short-lived presigned
    URL when the storage is S3; 404 unless the result exists and is Completed.
    """
    svc = services()
    jid = parse_job_id(jobId)
    # The rule enqueue names results by: a name it refuses (NUL, separators, over
    # 255 bytes) was never stored, and must not reach SQL, which refuses NUL.
    name = check_file_name(resultFile)
    tenant = reads()
    job = await svc.run(lambda c: queue.get_result(c, jid, name, tenant))
    if job is None:
        raise NotFound(f"job {jid} has no result named {quoted(name)}")
    if job.status is not Status.COMPLETED:
        raise NotFound(f"result {quoted(name)} of job {jid} is {job.status.value}, not Completed")
    url = await svc.storage.presign(job.storage_key, PRESIGN_SECONDS)
    if url is not None:
        return Response(b"", status=307, headers={"Location": url, "Cache-Control": "no-store"})
    stored = await svc.storage.open(job.storage_key)
    if stored is None:
        raise NotFound(f"the stored file of result {quoted(name)} of job {jid} is missing")
    disposition = f"inline; filename*=UTF-8''{quote(job.result_file, safe='')}"
    return Response(
        stored.chunks(),
        content_type=stored.content_type,
        headers={"Content-Length": str(stored.size), "Content-Disposition": disposition},
    )


def judge(item: Any, settings: Settings, tenant: str = DEFAULT_TENANT) -> queue.NewResult:
    """An enqueue request (the parsed JSON) of ``tenant``, validated: the one judgement of
    ``POST /results/enqueue`` and of each item of ``POST /results/batch``.
    Raises `InvalidRequest` with the sentence of the first problem."""
    return intake.new_result(validate(EnqueueRequest, item), settings.max_attempts, tenant)


def _statuses(text: str) -> tuple[Status, ...]:
    try:
        return tuple(Status(part) for part in text.split(","))
    except ValueError:
        raise InvalidRequest(
            "status must be one of " + ", ".join(s.value for s in Status) + ", or several of them "
            f"separated by commas, not {quoted(text)}"
        ) from None


def _type_filter(text: str) -> str:
    # The rule enqueue applies: a type it refuses was never stored (and NUL must not reach SQL).
    if not text.isprintable():
        raise InvalidRequest("type must not contain control characters")
    return text


def _moment(epoch_ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=epoch_ms)


def _later_than(epoch_ms: int) -> datetime:
    """Where "createdAt after ``epoch_ms``" starts: createdAt is shown in whole
    milliseconds, so from T + 1 ms on. Past the last millisecond datetime holds
    (year 9999, the query's upper bound), the end of datetime: nothing is later."""
    return _moment(epoch_ms + 1) if epoch_ms < MAX_RUN_AT_MS else datetime.max.replace(tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# The cursor is the last row's (created_at in microseconds, id): exact, and the same
# for both orders (the next page is past that row, whichever way the list runs).
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,60}")
_CURSOR_TEXT = re.compile(r"(\d{1,17})\.(\d{1,19})")


def _encode_cursor(cursor: queue.ListCursor) -> str:
    text = f"{(cursor.created_at - _EPOCH) // _MICROSECOND}.{cursor.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> queue.ListCursor:
    try:
        if not _CURSOR.fullmatch(cursor):
            raise ValueError
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        match = _CURSOR_TEXT.fullmatch(text)
        if match is None or int(match[2]) >= 2**63:
            raise ValueError
        return queue.ListCursor(_EPOCH + int(match[1]) * _MICROSECOND, int(match[2]))
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("after is not a cursor from a previous page's Link header") from None


def _cancel_summary(jobs: list[Job]) -> str:
    statuses = {job.status for job in jobs}
    for status in (Status.PROCESSING, Status.QUEUED, Status.CANCELED, Status.FAILED):
        if status in statuses:
            return status.value
    return Status.COMPLETED.value
