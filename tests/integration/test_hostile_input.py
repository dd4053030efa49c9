"""Hostile input (issue 3, "Hostile input") against the in-process app and both storage backends.

- Table tests of enqueue bodies that test_api.py does not cover: huge strings,
  unicode file names, percent-encoded path tricks, query strings, credentials,
  IPv6 literals and ports, with and without the probe.
- A property: whatever name `result_file_from_url` accepts, both storage backends
  keep the result strictly under its ``{jobId}/`` prefix.

The fuzz run of a real `jobsvc api` process is tests/system/test_fuzz.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import trio
from hypothesis import HealthCheck, given

from jobsvc.errors import InvalidRequest, PermanentError
from jobsvc.model import Job, Status, check_image_url, result_file_from_url
from jobsvc.storage import FileStorage, S3Storage
from tests.fixtures.app import Api, OpenApi, error_of
from tests.fixtures.images import PNG, ImageServer
from tests.helpers import SEGMENTS, enqueue_body

# --------------------------------------------------------------------------- table tests


def _body(**fields: Any) -> dict[str, Any]:
    return enqueue_body("http://h.test/a/x.png", **fields)


async def test_enqueue_huge_strings_are_413_or_400(api: Api) -> None:
    megabyte = await api.client.post("/results/enqueue", json=_body(type="t" * 1_000_000))
    assert "larger than 65536 bytes" in await error_of(megabyte, 413)
    long_type = await api.client.post("/results/enqueue", json=_body(type="t" * 60_000))
    assert "type" in await error_of(long_type, 400)
    long_id = await api.client.post("/results/enqueue", json=_body(jobId="a" * 60_000))
    assert "jobId must be a UUID" in await error_of(long_id, 400)
    long_url = await api.client.post("/results/enqueue", json=_body(imgUrl="http://h.test/" + "a" * 60_000))
    assert "imgUrl" in await error_of(long_url, 400)


ACCEPTED_URLS = [
    ("http://h.test/a/%E6%97%A5%E6%9C%AC.png", "日本.png"),
    ("http://h.test/a/日本.png", "日本.png"),
    ("http://h.test/a/x.png?next=../../etc/passwd&y=%2F", "x.png"),
    ("http://h.test/a/x.png#../../y.png", "x.png"),
    ("http://h.test/a/..%2E.png", "....png"),
    ("http://h.test/%2E%2E/%2E%2E/x.png", "x.png"),  # dot segments before the name are not the name
    ("http://h.test/a/x%3Fy.png", "x?y.png"),
    ("http://h.test/a/%25252F.png", "%252F.png"),  # decoded once, never twice
    ("http://[::1]:8080/x.png", "x.png"),
    ("http://[2001:db8::1]/x.png", "x.png"),
    ("http://[::ffff:127.0.0.1]/x.png", "x.png"),
    ("https://h.test:65535/x.png", "x.png"),
    ("http://127.0.0.1:1/x.png", "x.png"),
]


@pytest.mark.parametrize(("url", "name"), ACCEPTED_URLS, ids=[u for u, _ in ACCEPTED_URLS])
async def test_enqueue_accepts_odd_but_valid_urls_without_the_probe(api: Api, url: str, name: str) -> None:
    response = await api.client.post("/results/enqueue", json=_body(imgUrl=url))
    assert response.status_code == 202, await response.get_data(as_text=True)
    view = await response.get_json()
    assert view["resultFile"] == name and view["imgUrl"] == url


REFUSED_URLS = [
    ("http://h.test/a/..%2Fb.png", "path separator"),
    ("http://h.test/a/..%2F..%2Fetc%2Fpasswd", "path separator"),
    ("http://h.test/a/..%2f..%2fx.png", "path separator"),
    ("http://h.test/a/..%5C..%5Cx.png", "path separator"),
    ("http://h.test/a/%2E%2E", "file name"),
    ("http://h.test/a/%2e", "file name"),
    ("http://h.test/a/..", "file name"),
    ("http://h.test/a/x%00.png", "control characters"),
    ("http://h.test/a/%00", "control characters"),
    ("http://h.test/a/x%0A.png", "control characters"),
    ("http://h.test/a/%E2%80%AEgnp.exe", "control characters"),  # right-to-left override
    ("http://h.test/a/%C3%28.png", "not valid UTF-8"),
    ("http://h.test/a/%20x.png", "whitespace"),
    ("http://h.test/a/?file=x.png", "file name"),
    ("http://h.test/a/#x.png", "file name"),
    ("http://h.test", "file name"),
    ("http://user@h.test/x.png", "credentials"),
    ("http://:secret@h.test/x.png", "credentials"),
    ("https://user:pa%40ss@h.test:8443/x.png", "credentials"),
    ("http://h.test:0/x.png", "port 0"),
    ("http://h.test:65536/x.png", "not a valid URL"),
    ("http://h.test:-1/x.png", "not a valid URL"),
    ("http://[::1/x.png", "not a valid URL"),
    ("http:///x.png", "host"),
    ("file:///etc/passwd", "http or https"),
    ("javascript:alert(1)//x.png", "http or https"),
    ("http://h.test/a b.png", "whitespace"),
    ("http://h.test/a\x00.png", "control characters"),
]


@pytest.mark.parametrize(("url", "expected"), REFUSED_URLS, ids=[repr(u) for u, _ in REFUSED_URLS])
async def test_enqueue_refuses_tricky_urls_with_a_clear_sentence(api: Api, url: str, expected: str) -> None:
    response = await api.client.post("/results/enqueue", json=_body(imgUrl=url))
    assert expected in await error_of(response, 400)


@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "127.1", "[0:0:0:0:0:0:0:1]"])
async def test_probe_refuses_loopback_literals_on_any_port(
    open_api: OpenApi, image_server: ImageServer, host: str
) -> None:
    """The image server is really there (IPv4 loopback): the refusal is the address check."""
    async with open_api(verify_on_enqueue=True, allow_private_urls=False) as api:
        url = f"http://{host}:{image_server.port}/img/{uuid.uuid4().hex}.png"
        response = await api.client.post("/results/enqueue", json=_body(imgUrl=url))
        error = await error_of(response, 400)
    assert "not a reachable image" in error
    assert "is not allowed" in error, error


# --------------------------------------------------------------------------- names never escape


def _job(result_file: str) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=1, job_id=uuid.uuid4(), result_file=result_file, type="ingest", img_url="http://h.test/x",
        status=Status.PROCESSING, priority=0, run_at=now, attempts=1, max_attempts=3, error=None,
        cancel_requested_at=None, worker_id="w", created_at=now, updated_at=now, started_at=now,
        finished_at=None,
    )  # fmt: skip


@pytest.mark.slow  # 200 hypothesis examples against moto
async def test_result_file_never_escapes_its_job_prefix_in_either_backend(
    tmp_path: Path, moto_server: Any, s3_bucket: str
) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(PNG)
    s3_client = moto_server.client()
    s3 = S3Storage(s3_bucket, "results", endpoint_url=moto_server.endpoint_url)
    seen = {"accepted": 0, "refused": 0}

    @hypothesis.settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(segment=SEGMENTS)
    def check(segment: str) -> None:  # runs in a thread; stores through the test's trio loop
        url = "http://h.test/base/" + segment
        try:
            name = result_file_from_url(check_image_url(url))
        except InvalidRequest:
            seen["refused"] += 1
            return
        seen["accepted"] += 1
        job = _job(name)
        prefix = f"{job.job_id}/"
        assert job.storage_key == prefix + name and "/" not in name

        root = tmp_path / "files" / uuid.uuid4().hex

        async def store() -> None:
            await FileStorage(root).put(job.storage_key, source, "image/png")
            await s3.put(job.storage_key, source, "image/png")

        try:
            trio.from_thread.run(store)
        except PermanentError as exc:  # a backend refusing a name the API accepted is a bug too
            raise AssertionError(f"{name!r} accepted by the API but refused by storage: {exc}") from exc

        stored = [p for p in root.rglob("*") if p.is_file()]
        assert stored == [root / str(job.job_id) / name]
        assert stored[0].resolve().parent == (root / str(job.job_id)).resolve()

        listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"results/{job.job_id}")
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert keys == [f"results/{prefix}{name}"]
        assert not {"", ".", ".."} & set(keys[0].split("/"))

    try:
        await trio.to_thread.run_sync(check)
    finally:
        await s3.aclose()
    print(f"\nresult file names: {seen}")
    assert seen["accepted"] >= 30 and seen["refused"] >= 30  # both sides were explored
