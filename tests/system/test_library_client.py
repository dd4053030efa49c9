"""`jobsvc.Client` and `jobsvc.AsyncClient` (DESIGN §11) against a real API: `jobsvc api`
and `jobsvc worker` processes on a real PostgreSQL, file storage, the local image
server. The async client runs each scenario under trio and under asyncio."""

from __future__ import annotations

import io
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import jobsvc
from tests.fixtures.database import PgServer, migrated_database
from tests.fixtures.images import IMAGES, ImageServer
from tests.fixtures.processes import open_stack
from tests.fixtures.proxy import TcpProxy

PNG = IMAGES["png"][0]
LATER = datetime.now(UTC) + timedelta(days=1)
BACKENDS = ["trio", "asyncio"]


@pytest.fixture(scope="module")
def api_url(pg_server: PgServer, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`jobsvc api` and `jobsvc worker`, ready, shared by the module; both must exit 0 on SIGTERM."""
    tmp = tmp_path_factory.mktemp("library-client")
    with (
        migrated_database(pg_server, template_db, prefix="jobsvc_lib") as database_url,
        open_stack(database_url, tmp, JOBSVC_CONCURRENCY="4") as stack,
    ):
        yield stack.url


def image(server: ImageServer, name: str = "cat.png") -> str:
    return server.url(f"/img/{uuid.uuid4().hex}/{name}")


# --- the blocking client ---------------------------------------------------------------


def test_client_enqueue_watch_get_download(api_url: str, image_server: ImageServer, tmp_path: Path) -> None:
    job_id = uuid.uuid4()
    with jobsvc.Client(api_url) as client:
        first = client.enqueue(job_id, image(image_server), priority=5)
        assert first.created and first.view.status is jobsvc.Status.QUEUED and first.view.priority == 5
        again = client.enqueue(job_id, first.view.img_url, priority=5)
        assert not again.created and again.view.job_id == job_id
        seen = [view.status for view in client.watch(job_id)]
        assert seen[-1] is jobsvc.Status.COMPLETED and jobsvc.Status.QUEUED not in seen[1:]
        [view] = client.get(job_id)
        assert (view.result_file, view.status, view.attempts) == ("cat.png", jobsvc.Status.COMPLETED, 1)
        assert client.download(job_id, "cat.png", tmp_path / "out.png") == len(PNG)
        assert (tmp_path / "out.png").read_bytes() == PNG
        assert not (tmp_path / "out.png.part").exists()
        buffer = io.BytesIO()
        assert client.download(str(job_id), "cat.png", buffer) == len(PNG)
        assert buffer.getvalue() == PNG


def test_client_list_iterates_every_page(api_url: str, image_server: ImageServer) -> None:
    job_id = uuid.uuid4()
    with jobsvc.Client(api_url) as client:
        names = [f"p{i}.png" for i in range(5)]
        for name in names:
            client.enqueue(job_id, image(image_server, name), run_at=LATER)
        views = list(client.list(job_id=job_id, limit=2))  # three pages
        assert [v.result_file for v in views] == names
        newest_first = list(client.list(job_id=job_id, order="desc", limit=2, status=["Queued"]))
        assert [v.result_file for v in newest_first] == names[::-1]


def test_client_cancel_and_refusals(api_url: str, image_server: ImageServer, tmp_path: Path) -> None:
    job_id = uuid.uuid4()
    with jobsvc.Client(api_url) as client:
        client.enqueue(job_id, image(image_server), run_at=LATER)
        answer = client.cancel(job_id)
        assert answer.status is jobsvc.Status.CANCELED
        assert [(r.result_file, r.status) for r in answer.results] == [("cat.png", jobsvc.Status.CANCELED)]
        with pytest.raises(jobsvc.ClientError) as bad:
            client.enqueue(uuid.uuid4(), "ftp://images.test/a.png")
        assert bad.value.status == 400
        assert bad.value.error == "imgUrl must be an absolute http or https URL"
        with pytest.raises(jobsvc.ClientError) as missing:
            client.get(uuid.uuid4())
        assert missing.value.status == 404 and missing.value.error is not None
        with pytest.raises(jobsvc.ClientError) as unfinished:
            client.download(job_id, "cat.png", tmp_path / "never.png")
        assert unfinished.value.status == 404
        assert not (tmp_path / "never.png").exists() and not (tmp_path / "never.png.part").exists()


def test_client_watch_resumes_after_the_stream_drops(
    api_url: str, image_server: ImageServer, tcp_proxy: type[TcpProxy]
) -> None:
    host, port = api_url.removeprefix("http://").rsplit(":", 1)
    proxy = tcp_proxy((host, int(port)))
    proxy.start()
    job_id = uuid.uuid4()
    with jobsvc.Client(proxy.url) as client:
        client.enqueue(
            job_id, image(image_server, "soon.png"), run_at=datetime.now(UTC) + timedelta(seconds=2)
        )
        seen = []
        dropped_at = None
        for view in client.watch(job_id):
            seen.append((view.result_file, view.status))
            if len(seen) == 1:  # the GET's (soon.png Queued): now.png's events come by the stream
                client.enqueue(job_id, image(image_server, "now.png"))
            elif view.result_file == "now.png" and dropped_at is None:
                # An event of the stream: drop it (and every connection) while soon.png is still
                # to run. (Not "the third view": a fast worker may finish now.png before the
                # watch's GET, and soon.png's Processing and Completed may come as one event.)
                dropped_at = len(seen)
                proxy.stop()
                proxy.start()
    assert dropped_at is not None, seen
    assert ("soon.png", jobsvc.Status.COMPLETED) in seen[dropped_at:]  # told after the stream was resumed
    assert {file: status for file, status in seen} == {
        "now.png": jobsvc.Status.COMPLETED,
        "soon.png": jobsvc.Status.COMPLETED,
    }


def test_client_enqueue_many(api_url: str, image_server: ImageServer) -> None:
    job_id = uuid.uuid4()
    with jobsvc.Client(api_url) as client:
        items = client.enqueue_many(
            [
                jobsvc.EnqueueRequest(
                    job_id=str(job_id), type="ingest", img_url=image(image_server, "a.png")
                ),
                {"jobId": str(job_id), "type": "ingest", "imgUrl": "ftp://nope/b.png"},
            ]
        )
    assert [item.status for item in items] == [202, 400]
    assert items[0].job is not None and items[0].job.result_file == "a.png"
    assert items[1].job is None and items[1].error == "imgUrl must be an absolute http or https URL"


def test_client_retry(api_url: str, image_server: ImageServer) -> None:
    job_id = uuid.uuid4()
    with jobsvc.Client(api_url) as client:
        client.enqueue(job_id, image(image_server), run_at=LATER)
        client.cancel(job_id)
        answer = client.retry(job_id)
    assert [r.status for r in answer.results] == [jobsvc.Status.QUEUED]


# --- the async client, under trio and under asyncio --------------------------------------


def run(backend: str, scenario: Callable[[], Awaitable[None]]) -> None:
    """``scenario`` under a fresh event loop of ``backend``, in a thread of its own: the
    thread is the user's program, whatever loop an earlier test left on this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, scenario, backend=backend).result(timeout=120)


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_client_every_method(
    backend: str, api_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        job_id = uuid.uuid4()
        async with jobsvc.AsyncClient(api_url) as client:
            first = await client.enqueue(job_id, image(image_server))
            assert first.created
            assert not (await client.enqueue(job_id, first.view.img_url)).created
            seen = [view.status async for view in client.watch(job_id)]
            assert seen[-1] is jobsvc.Status.COMPLETED
            [view] = await client.get(job_id)
            assert view.status is jobsvc.Status.COMPLETED
            assert await client.download(job_id, "cat.png", tmp_path / f"{backend}.png") == len(PNG)
            assert (tmp_path / f"{backend}.png").read_bytes() == PNG
            async with await anyio.open_file(tmp_path / "async-file.png", "wb") as file:
                assert await client.download(job_id, "cat.png", file) == len(PNG)
            assert (tmp_path / "async-file.png").read_bytes() == PNG

            later = uuid.uuid4()
            for i in range(3):
                await client.enqueue(later, image(image_server, f"l{i}.png"), run_at=LATER)
            listed = [v.result_file async for v in client.list(job_id=later, limit=2)]
            assert listed == ["l0.png", "l1.png", "l2.png"]
            canceled = await client.cancel(later)
            assert canceled.status is jobsvc.Status.CANCELED
            with pytest.raises(jobsvc.ClientError) as missing:
                await client.get(uuid.uuid4())
            assert missing.value.status == 404

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_client_enqueue_many_and_retry(backend: str, api_url: str, image_server: ImageServer) -> None:
    async def scenario() -> None:
        job_id = uuid.uuid4()
        async with jobsvc.AsyncClient(api_url) as client:
            new = {"jobId": str(job_id), "type": "ingest", "imgUrl": image(image_server), "runAt": 9 * 10**12}
            [item] = await client.enqueue_many([new])
            assert item.status == 202
            await client.cancel(job_id)
            answer = await client.retry(job_id)
            assert [r.status for r in answer.results] == [jobsvc.Status.QUEUED]

    run(backend, scenario)


def test_unreachable_api_is_an_unavailable_client_error(dead_url: str) -> None:
    with jobsvc.Client(dead_url) as client, pytest.raises(jobsvc.ClientError) as refused:
        client.get(uuid.uuid4())
    assert refused.value.unavailable and refused.value.status is None


@pytest.fixture
def dead_url() -> Iterator[str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
