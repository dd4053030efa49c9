"""An enqueue request, judged: the one path from a client's fields to a `queue.NewResult`.

`POST /results/enqueue` (and the batch endpoint, item by item) and the library's
transactional `jobsvc.enqueue` all come through here, so a job is named and
refused by the same rules wherever it enters: the `EnqueueRequest` model (types
and ranges, with the API's error sentences), then `jobsvc.model`'s
`parse_job_id` and `image_url_and_file` (`check_image_url` and `result_file_from_url`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic

from jobsvc.errors import InvalidRequest
from jobsvc.model import DEFAULT_TENANT, image_url_and_file, parse_job_id
from jobsvc.queue import NewResult
from jobsvc.schemas import EnqueueRequest, error_sentence

__all__ = ["new_result", "parse_request"]


def parse_request(data: Any) -> EnqueueRequest:
    """A JSON-shaped enqueue object as the model; `InvalidRequest` with the API's sentence."""
    try:
        return EnqueueRequest.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidRequest(error_sentence(exc)) from None


def new_result(req: EnqueueRequest, default_max_attempts: int, tenant: str = DEFAULT_TENANT) -> NewResult:
    """The validated row to insert for ``tenant``; raises `InvalidRequest` with a sentence."""
    job_id = parse_job_id(req.job_id)
    if not req.type.isprintable():
        raise InvalidRequest("type must not contain control characters")
    img_url, result_file = image_url_and_file(req.img_url)
    run_at = None
    if req.run_at is not None:
        run_at = datetime.fromtimestamp(req.run_at / 1000, UTC)
    return NewResult(
        job_id=job_id,
        result_file=result_file,
        type=req.type,
        img_url=img_url,
        priority=req.priority if req.priority is not None else 0,
        run_at=run_at,
        max_attempts=req.max_attempts if req.max_attempts is not None else default_max_attempts,
        tenant=tenant,
    )
