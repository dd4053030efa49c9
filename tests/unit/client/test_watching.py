"""jobsvc.client.watching: ``watch JOBID`` on an in-memory API (a fake clock where time matters)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from jobsvc.client import watching
from jobsvc.client.aio import AsyncClient
from jobsvc.client.display import Display, JobTracker
from jobsvc.client.http import ClientError
from tests.unit.client.support import JOB, fake_api, raw_view, sse


def job_api(current: list[dict[str, Any]], stream: bytes) -> AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/results/{JOB}":
            return httpx.Response(200, json=current)
        assert request.url.path == "/results/events"
        return httpx.Response(200, content=stream)

    return fake_api(handler)


@pytest.mark.parametrize(("final", "code"), [("Completed", 0), ("Failed", 1), ("Canceled", 1)])
async def test_watch_job_prints_state_then_changes_and_exits_when_finished(
    final: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = sse(raw_view("Queued", updated=1), raw_view("Processing", updated=2), raw_view(final, updated=3))
    out = io.StringIO()
    async with job_api([raw_view("Queued", updated=1)], stream) as api:
        assert await watching.watch_job(api, JobTracker(JOB), Display(out, as_json=False, live=False)) == code
    assert [line.split("  ")[3] for line in out.getvalue().splitlines()] == ["Queued", "Processing", final]
    assert (final in capsys.readouterr().err) is (code == 1)


async def test_watch_job_already_finished_does_not_follow() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/results/{JOB}"
        return httpx.Response(200, json=[raw_view("Completed", updated=5)])

    async with fake_api(handler) as api:
        tracker = JobTracker(JOB)
        assert await watching.watch_job(api, tracker, Display(io.StringIO(), as_json=True, live=False)) == 0


async def test_watch_job_unknown_job_is_refused() -> None:
    async with fake_api(lambda r: httpx.Response(404, json={"error": f"job {JOB} does not exist"})) as api:
        with pytest.raises(ClientError, match="does not exist") as exc:
            await watching.watch_job(api, JobTracker(JOB), Display(io.StringIO(), as_json=False, live=False))
    assert exc.value.status == 404 and not exc.value.unavailable


async def test_watch_job_on_a_terminal_ticks_the_elapsed_time_between_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Processing for 3.5 s of (virtual) time, then Completed: the progress line is
    # redrawn every second in between with no request, and each change is a line.
    started = 50_000
    processing = raw_view("Processing", updated=started, startedAt=started, attempts=1)
    completed = raw_view("Completed", updated=started + 3_500, startedAt=started, attempts=1)
    requests: list[str] = []

    async def stream() -> AsyncIterator[bytes]:
        yield sse(processing)
        await trio.sleep(3.5)
        yield sse(completed)[len(sse()) :]  # the same stream: without its opening lines

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        if request.url.path == f"/results/{JOB}":
            return httpx.Response(200, json=[raw_view("Queued", updated=1_000)])
        return httpx.Response(200, content=stream())

    def now_ms() -> int:
        return started + int(trio.current_time() * 1000)

    out = io.StringIO()
    display = Display(out, as_json=False, live=True)
    async with fake_api(handler) as api:
        code = await watching.watch_job(api, JobTracker(JOB), display, now_ms=now_ms)
    assert code == 0
    assert requests == [f"/results/{JOB}", "/results/events"]  # the clock asks the server nothing
    text = out.getvalue()
    changes = [line.rsplit("\r\x1b[K", 1)[-1] for line in text.split("\n")[:-1]]
    assert [line.split("  ")[3] for line in changes] == ["Queued", "Processing", "Completed"]
    drawn = [part for part in text.split("\r\x1b[K") if part.startswith(f"job {JOB}:")]
    assert f"job {JOB}: 0/1 finished (1 Processing), 0s since started" in drawn
    ticks = [part for part in drawn if "Processing" in part]
    assert [t.rsplit(", ", 1)[1] for t in ticks] == [
        "0s since started",
        "1s since started",
        "2s since started",
        "3s since started",
    ]
    assert text.endswith("\r\x1b[K")  # the progress line is erased at the end


async def test_watch_job_off_a_terminal_prints_only_changes(autojump_clock: trio.testing.MockClock) -> None:
    stream = sse(raw_view("Processing", updated=2, startedAt=2), raw_view("Completed", updated=3))
    out = io.StringIO()
    async with job_api([raw_view("Queued", updated=1)], stream) as api:
        assert await watching.watch_job(api, JobTracker(JOB), Display(out, as_json=False, live=False)) == 0
    assert "\r" not in out.getvalue() and len(out.getvalue().splitlines()) == 3
