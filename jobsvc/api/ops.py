"""The operator's probes: ``/healthz``, ``/readyz``, ``/metrics``. (``/openapi.json``
is quart-schema's, set up in `jobsvc.api.app`; ``/docs`` is in `jobsvc.api.dashboard`.)"""

from __future__ import annotations

import trio
from quart import Blueprint, Response
from quart_schema import document_response

from jobsvc import queue
from jobsvc.api.auth import public
from jobsvc.api.services import Services, services
from jobsvc.api.wire import json_response
from jobsvc.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from jobsvc.schemas import HealthBody, MetricsBody, ReadyBody

__all__ = ["blueprint"]

blueprint = Blueprint("ops", __name__)


@blueprint.get("/healthz")
@document_response(HealthBody, 200)
@public
async def healthz() -> Response:
    """The process is alive (no dependency is checked)."""
    return json_response({"status": "ok"})


@blueprint.get("/metrics")
@document_response(MetricsBody, 200)
@public  # counts only: no job, tenant or key is named (README, Security)
async def metrics() -> Response:
    """Prometheus text: jobs by status, queue depth and age, and this process's counters."""
    svc = services()
    await svc.run(svc.metrics.update_from_db)
    svc.metrics.subscribers.set(svc.broadcaster.subscriber_count)
    return Response(svc.metrics.render(), 200, content_type=METRICS_CONTENT_TYPE)


@blueprint.get("/readyz")
@document_response(ReadyBody, 200)
@document_response(ReadyBody, 503)
@public
async def readyz() -> Response:
    """Ready to serve: 200 when every check is ok, else 503.

    The database answers and its schema is current, the storage answers (within 2 s),
    the background tasks run and the event listener listens.
    """
    svc = services()
    database: dict[str, str] = {}
    storage: dict[str, str] = {}

    async def check_storage() -> None:
        storage["storage"] = await svc.storage_check.verdict()

    async with trio.open_nursery() as nursery:  # each check has its own deadline: wait for the longer
        nursery.start_soon(check_storage)
        database.update(await _database_checks(svc))
    checks = {**database, **storage}
    for name, health in svc.tasks.items():
        checks[f"task:{name}"] = "ok" if health.alive else f"dead: {health.last_error}"
    checks["events"] = "ok" if svc.broadcaster.connected else "not listening"
    failed = [f"{name} {state}" for name, state in checks.items() if state != "ok"]
    if failed:
        return json_response(
            {"status": "unavailable", "error": "not ready: " + "; ".join(failed), "checks": checks}, 503
        )
    return json_response({"status": "ok", "checks": checks})


async def _database_checks(svc: Services) -> dict[str, str]:
    try:
        version = await svc.run(queue.schema_version)
    except Exception as exc:  # readiness answers 503 whatever the database says
        return {"database": f"unreachable: {exc}", "schema": "unknown"}
    return {"database": "ok", "schema": queue.schema_problem(version) or "ok"}
