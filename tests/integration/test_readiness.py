"""``/readyz`` asks the storage too (`Storage.check`), within a deadline and one check at a time."""

from __future__ import annotations

from pathlib import Path

import trio

from jobsvc.config import Settings
from tests.fixtures.app import OpenApi
from tests.fixtures.s3 import MotoServer


async def test_readyz_is_503_while_the_result_directory_cannot_be_used(
    open_api: OpenApi, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")  # a file where the result directory's parent should be
    async with open_api(storage_url=f"file://{blocker / 'results'}") as api:
        response = await api.client.get("/readyz")
        doc = await response.get_json()
        assert response.status_code == 503, doc
        assert doc["checks"]["storage"].startswith("unreachable: ")
        assert "storage unreachable" in doc["error"]
        assert doc["checks"]["database"] == "ok" and doc["checks"]["schema"] == "ok"

        blocker.unlink()  # the operator fixes it: ready at the next probe
        response = await api.client.get("/readyz")
        assert response.status_code == 200 and (await response.get_json())["checks"]["storage"] == "ok"


async def test_readyz_with_s3_creates_the_bucket_and_is_ready(
    open_api: OpenApi, s3_settings: Settings, moto_server: MotoServer
) -> None:
    async with open_api(
        storage_url=s3_settings.storage_url, s3_endpoint_url=s3_settings.s3_endpoint_url
    ) as api:
        response = await api.client.get("/readyz")
        assert response.status_code == 200 and (await response.get_json())["checks"]["storage"] == "ok"


async def test_readyz_answers_within_its_deadline_when_s3_never_answers(
    open_api: OpenApi, s3_settings: Settings
) -> None:
    """An endpoint that accepts connections and never answers: /readyz says so after its
    deadline (boto3 would wait 60 s), and a second probe waits on the same check rather
    than opening another connection."""
    accepted: list[trio.SocketStream] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    accepting = trio.CancelScope()

    async def silent() -> None:
        with accepting:
            while True:
                accepted.append(await listeners[0].accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(silent)
        async with open_api(
            storage_url=s3_settings.storage_url,
            s3_endpoint_url=f"http://127.0.0.1:{port}",
            app_options={"storage_check_timeout": 0.5},
        ) as api:
            for _ in range(2):
                began = trio.current_time()
                response = await api.client.get("/readyz")
                took = trio.current_time() - began
                doc = await response.get_json()
                assert response.status_code == 503, doc
                assert doc["checks"]["storage"] == "no answer within 0.5s"
                assert doc["checks"]["database"] == "ok"
                # The deadline, not boto3's 60 s; the slack is for a loaded CI machine.
                assert 0.5 <= took < 4.0, took
            assert len(accepted) == 1  # one check in flight, however many probes
            # Hang up, so that the check in flight ends and the app can stop.
            accepting.cancel()
            for stream in accepted:
                await stream.aclose()
            await listeners[0].aclose()
