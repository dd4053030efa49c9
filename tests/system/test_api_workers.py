"""``jobsvc api --workers N``: N real API processes on one port (jobsvc/apiworkers.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import trio

from tests.fixtures.processes import Spawn, api_env
from tests.helpers import until


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_both_answer_and_stop_with_the_parent(
    spawn: Spawn, database_url: str, tmp_path: Path
) -> None:
    api = spawn("api", "--workers", "2", env=api_env(database_url, f"file://{tmp_path}"))
    url = await until(
        lambda: next((w for w in api.output().split() if w.startswith("http://")), None), timeout=30
    )
    assert "(2 worker processes)" in api.output()
    pids = children(api.pid)
    assert len(pids) == 2
    # Stop every worker but one: a new connection can then only be answered by that one.
    for serving in pids:
        others = [p for p in pids if p != serving]
        for p in others:
            os.kill(p, signal.SIGSTOP)
        try:
            with trio.fail_after(30):
                while True:  # the worker may still be starting: /readyz until 200
                    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as client:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    await trio.sleep(0.05)
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
                body = {
                    "jobId": f"6f1c1d3e-0000-4000-8000-{serving:012d}",
                    "type": "t",
                    "imgUrl": "http://h.test/x.png",
                }
                assert (await client.post("/results/enqueue", json=body)).status_code == 202
        finally:
            for p in others:
                os.kill(p, signal.SIGCONT)
    api.signal(signal.SIGTERM)
    assert await trio.to_thread.run_sync(api.wait, 20) == 0
    assert not any(alive(p) for p in pids)
