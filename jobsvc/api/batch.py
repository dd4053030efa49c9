"""``POST /results/batch``: up to 1,000 enqueues in one request.

Each item is judged as ``POST /results/enqueue`` judges it (`results.judge`, the
same function), and its answer is the status that route would have given it, in
input order. The accepted items are written as one group by the route's own write
path (`Collector.place`): one statement per tenant, one transaction, one wake-up.

Choices the contract leaves open:

- Items with the same (jobId, resultFile) are judged in input order, as if sent one
  after the other: the first is enqueued (or found), each later one is compared with
  the row that the first left: identical → 200 with that row, different → 409. When
  the first left no row (invalid for the probe, over quota), the later ones share its
  answer.
- With the probe on, only items whose (jobId, resultFile) does not exist yet are
  probed (as a single enqueue), at most `PROBE_CONCURRENCY` at a time.
- A 409's ``job`` is null, as the single enqueue answers only the error.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, Response
from quart_schema import document_request

from jobsvc import queue
from jobsvc.api.auth import principal, requires
from jobsvc.api.collector import Item, link
from jobsvc.api.results import judge
from jobsvc.api.services import Services, services
from jobsvc.api.wire import documented, json_body, json_response
from jobsvc.errors import BodyTooLarge, InvalidRequest, JobsvcError
from jobsvc.keys import Scope
from jobsvc.schemas import MAX_BATCH_ITEMS, BatchRequest, BatchResponse, ErrorBody, job_view

__all__ = ["PROBE_CONCURRENCY", "blueprint"]

#: URLs of one batch probed at the same time.
PROBE_CONCURRENCY = 16

blueprint = Blueprint("batch", __name__)


def _answer(item: Item) -> dict[str, Any]:
    shown = item.row if item.status in (200, 202) else None
    return {
        "status": item.status,
        "job": None if shown is None else job_view(shown),
        "error": None if item.refusal is None else str(item.refusal),
    }


@blueprint.post("/results/batch")
@document_request(BatchRequest)
@documented((200, BatchResponse, None), (413, ErrorBody, None), (415, ErrorBody, None))
@requires(Scope.ENQUEUE)
async def batch() -> Response:
    """Enqueue up to 1,000 results; one answer per item, in input order.

    Each item gets the status POST /results/enqueue would give it (202 new, 200
    identical to an existing result, 400 invalid, 409 conflicting, 429 over quota)
    with the job view (202, 200) or an error sentence. The accepted items are inserted
    in one transaction. 413 for more than 1,000 items or a body over 4 MiB; 400 when
    the body is not an object with a non-empty jobs array.
    """
    svc = services()
    tenant = principal().tenant
    items = [_judge(data, svc, tenant) for data in _envelope(await json_body())]
    if svc.settings.verify_on_enqueue:
        await _probe(svc, link(items))
    await svc.collector.place(items)  # one group: one transaction
    return json_response({"results": [_answer(item) for item in items]})


def _envelope(body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("jobs"), list):
        raise InvalidRequest('the body must be a JSON object with a "jobs" array')
    jobs: list[Any] = body["jobs"]
    if not jobs:
        raise InvalidRequest("jobs must hold at least one item")
    if len(jobs) > MAX_BATCH_ITEMS:
        raise BodyTooLarge(f"a batch holds at most {MAX_BATCH_ITEMS} jobs, not {len(jobs)}")
    return jobs


def _judge(data: Any, svc: Services, tenant: str) -> Item:
    item = Item()
    if not isinstance(data, dict):
        item.refuse(InvalidRequest("each item of jobs must be a JSON object (an enqueue body)"))
        return item
    try:
        item.new = judge(data, svc.settings, tenant)
    except JobsvcError as exc:
        item.refuse(exc)
    return item


async def _probe(svc: Services, leaders: list[Item]) -> None:
    """Probe the URLs of the new keys, `PROBE_CONCURRENCY` at a time; a refused URL
    refuses its item. Cancelled, it cancels the probes in flight (closing their
    connections)."""
    pending = [item for item in leaders if item.status is None and item.new is not None]
    if not pending:
        return
    keys = [(item.new.job_id, item.new.result_file) for item in pending if item.new is not None]
    existing = await svc.run(lambda c: queue.existing_keys(c, keys))
    limiter = trio.CapacityLimiter(PROBE_CONCURRENCY)

    async def probe(item: Item, url: str) -> None:
        async with limiter:
            try:
                await svc.fetcher.probe(url)
            except JobsvcError as exc:
                item.refuse(exc)

    async with trio.open_nursery() as nursery:
        for item, key in zip(pending, keys, strict=True):
            if key not in existing and item.new is not None:
                nursery.start_soon(probe, item, item.new.img_url)
