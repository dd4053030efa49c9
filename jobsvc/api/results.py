"""The results routes: enqueue, list, get, cancel, download.

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
import re
from urllib.parse import quote, urlencode

from quart import Blueprint, Response, request
from quart_schema import document_headers, document_querystring, document_request

from jobsvc import intake, queue
from jobsvc.api.services import services
from jobsvc.api.wire import documented, json_body, json_response, query, validate
from jobsvc.config import Settings
from jobsvc.errors import InvalidRequest, NotFound, quoted
from jobsvc.model import (
    Job,
    Status,
    check_file_name,
    parse_job_id,
)
from jobsvc.schemas import (
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

__all__ = ["PRESIGN_SECONDS", "blueprint"]

#: How long a presigned download URL stays valid.
PRESIGN_SECONDS = 300

blueprint = Blueprint("results", __name__)


@blueprint.post("/results/enqueue")
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
    identical retry; 409 when the (jobId, resultFile) exists from another request;
    429 with Retry-After when the tenant already has JOBSVC_TENANT_MAX_QUEUED
    unfinished results.
    """
    svc = services()
    req = validate(EnqueueRequest, await json_body())
    new = _new_result(req, svc.settings)
    if svc.settings.verify_on_enqueue:
        existing = await svc.run(lambda c: queue.get_result(c, new.job_id, new.result_file))
        if existing is None:
            await svc.fetcher.probe(new.img_url)
    # Until keys and tenants exist (DESIGN §8), every enqueue is tenant `default`'s.
    cap = svc.settings.tenant_max_queued
    job, created = await svc.run(lambda c: queue.enqueue(c, new, tenant=queue.DEFAULT_TENANT, max_queued=cap))
    if not created:
        return json_response(job_view(job), 200)
    svc.announcer.add(job.id)
    svc.metrics.enqueued.inc()
    return json_response(job_view(job), 202, {"Location": f"/results/{job.job_id}"})


@blueprint.get("/results/list")
@document_querystring(ListQuery)
@document_headers(ListRequestHeaders)
@documented((200, JobViews, ListResponseHeaders), (304, NoBody, None))
async def list_results() -> Response:
    """List results, oldest first (order=desc: newest first), a page at a time.

    A `Link: <…>; rel="next"` header is present when more rows exist; every answer
    has an ETag, and If-None-Match with the current tag answers 304 without a body.
    """
    q = query(ListQuery)
    job_id = parse_job_id(q.job_id) if q.job_id is not None else None
    after = _decode_cursor(q.after) if q.after is not None else 0
    jobs = await services().run(
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


@blueprint.get("/results/<jobId>")
@documented((200, JobViews, None), (404, ErrorBody, None))
async def get_job(jobId: str) -> Response:  # the path parameter names the API documents
    """All results of a job (404 when the job does not exist)."""
    jid = parse_job_id(jobId)
    jobs = await services().run(lambda c: queue.get_job(c, jid))
    if not jobs:
        raise NotFound(f"job {jid} does not exist")
    return json_response([job_view(j) for j in jobs])


@blueprint.post("/results/<jobId>/cancel")
@documented((200, CancelResponse, None), (404, ErrorBody, None))
async def cancel(jobId: str) -> Response:
    """Cancel every unfinished result of a job (idempotent).

    Queued results become Canceled at once; Processing ones get a cancel request
    that their worker honours within milliseconds. The top-level status is
    Processing while any result still runs, else Canceled if any was canceled,
    else Failed if any failed, else Completed.
    """
    jid = parse_job_id(jobId)
    svc = services()
    jobs = await svc.run(lambda c: queue.cancel(c, jid))
    svc.metrics.cancels.inc()
    return json_response(
        {
            "jobId": str(jid),
            "status": _cancel_summary(jobs),
            "results": [{"resultFile": j.result_file, "status": j.status.value} for j in jobs],
        }
    )


@blueprint.get("/results/<jobId>/<resultFile>")
@documented((200, ImageBody, None), (307, NoBody, LocationHeaders), (404, ErrorBody, None))
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
    job = await svc.run(lambda c: queue.get_result(c, jid, name))
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


def _new_result(req: EnqueueRequest, settings: Settings) -> queue.NewResult:
    return intake.new_result(req, settings.max_attempts)


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
