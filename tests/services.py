"""Real `jobsvc api` / `jobsvc worker` processes over HTTP, for the recovery, load and fuzz tests.

`start_api` starts ``jobsvc api`` on a free port (port 0: the kernel picks it, the
process prints the address it bound) and waits, with a deadline, until ``/readyz``
answers 200. `follow_events` reads the API's Server-Sent Events into a list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from tests.fixtures.processes import JobsvcProcess, service_env
from tests.support import wait_until

Spawn = Callable[..., JobsvcProcess]

_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class ApiProcess:
    proc: JobsvcProcess
    url: str

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, trust_env=False, timeout=kw.pop("timeout", 10.0), **kw)


def api_env(database_url: str, storage_url: str, **extra: str) -> dict[str, str]:
    """The environment of a test API: port 0, no probe on enqueue (unless ``extra`` says so)."""
    return service_env(database_url, storage_url, JOBSVC_PORT="0", JOBSVC_VERIFY_ON_ENQUEUE="false", **extra)


def start_worker(spawn: Spawn, database_url: str, storage_url: str, name: str, **env: str) -> JobsvcProcess:
    """Start ``jobsvc worker`` named ``name`` (rescue sweep every 0.5 s unless ``env`` says)."""
    env.setdefault("JOBSVC_RESCUE_INTERVAL", "0.5")
    return spawn("worker", env=service_env(database_url, storage_url, JOBSVC_WORKER_ID=name, **env))


async def start_api(
    spawn: Spawn, env: dict[str, str], *, ready: bool = True, timeout: float = 30
) -> ApiProcess:
    """Start ``jobsvc api`` and return its base URL once it listens (and, if ``ready``, is ready)."""
    proc = spawn("api", env=env)

    def bound() -> str | None:
        if proc.popen.poll() is not None:
            raise AssertionError(f"jobsvc api exited with {proc.popen.returncode}:\n{proc.output()}")
        found = _LISTENING.search(proc.output())
        return found.group(1) if found else None

    api = ApiProcess(proc, await wait_until(bound, timeout=timeout, interval=0.05))
    if ready:
        await wait_ready(api, timeout=timeout)
    return api


async def until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> None:
    """Wait (deadline ``timeout``) until the in-memory ``condition()`` holds; no thread hop."""
    with trio.fail_after(timeout):
        while True:
            if condition():
                return
            await trio.sleep(interval)


async def wait_ready(api: ApiProcess, timeout: float = 30) -> float:
    """Poll ``/readyz`` until 200 (deadline ``timeout``); returns how long it took."""
    start = trio.current_time()
    async with api.client(timeout=5.0) as client:
        with trio.fail_after(timeout):
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return trio.current_time() - start
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


async def follow_events(
    client: httpx.AsyncClient,
    events: list[dict[str, Any]],
    job_id: str | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Append the ``data`` of every ``job`` event of ``GET /results/events`` to ``events``.

    Started with `trio.Nursery.start`, it reports started once the stream says
    ``: connected`` (the subscription exists). Returns when the stream ends.
    """
    params = {"jobId": job_id} if job_id else {}
    timeout = httpx.Timeout(10.0, read=None)
    async with client.stream("GET", "/results/events", params=params, timeout=timeout) as response:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        started = False
        async for line in response.aiter_lines():
            if line.startswith(": connected") and not started:
                started = True
                task_status.started()
            elif line.startswith("data:"):
                events.append(json.loads(line[5:]))
