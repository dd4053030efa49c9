"""jobsvc.storage on a real directory and on moto's S3 server; jobsvc.pipeline end to end."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from jobsvc.config import Settings
from jobsvc.errors import PermanentError, TransientError
from jobsvc.fetch import Fetcher
from jobsvc.model import Job, Status
from jobsvc.pipeline import ImagePipeline
from jobsvc.storage import PART_SIZE, FileStorage, S3Storage, Storage, StoredObject, storage_from_settings
from jobsvc.storage.signed import SignedPut
from tests.fixtures.images import PNG, ImageServer
from tests.fixtures.s3 import MotoServer


@pytest.fixture(params=["file", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "file":
        backend: Storage = FileStorage(tmp_path / "results")
    else:
        backend = storage_from_settings(request.getfixturevalue("s3_settings"))
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def s3_storage(s3_settings: Settings) -> AsyncIterator[S3Storage]:
    backend = storage_from_settings(s3_settings)
    assert isinstance(backend, S3Storage)
    try:
        yield backend
    finally:
        await backend.aclose()


async def write_file(path: Path, data: bytes) -> Path:
    await trio.Path(path).write_bytes(data)
    return path


async def read_all(stored: StoredObject) -> bytes:
    return b"".join([chunk async for chunk in stored.chunks()])


def new_key(name: str = "result.png") -> str:
    return f"{uuid.uuid4()}/{name}"


# ------------------------------------------------------------------------- both backends


async def test_put_open_delete_round_trip(storage: Storage, tmp_path: Path) -> None:
    source = await write_file(tmp_path / "source.png", PNG)
    key = new_key()
    await storage.put(key, source, "image/png")
    stored = await storage.open(key)
    assert stored is not None
    assert (stored.content_type, stored.size) == ("image/png", len(PNG))
    assert await read_all(stored) == PNG
    assert await read_all(stored) == PNG  # each chunks() call streams anew
    await storage.delete(key)
    assert await storage.open(key) is None
    await storage.delete(key)  # deleting a missing key is fine


async def test_put_overwrites_same_key(storage: Storage, tmp_path: Path) -> None:
    key = new_key()
    await storage.put(key, await write_file(tmp_path / "a", b"first"), "image/png")
    await storage.put(key, await write_file(tmp_path / "b", PNG), "image/png")
    stored = await storage.open(key)
    assert stored is not None
    assert await read_all(stored) == PNG


async def test_put_unicode_file_name(storage: Storage, tmp_path: Path) -> None:
    key = new_key("résumé 画像 ✓ (1).png")
    await storage.put(key, await write_file(tmp_path / "source.png", PNG), "image/png")
    stored = await storage.open(key)
    assert stored is not None
    assert await read_all(stored) == PNG


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../x.png",
        "a/../../x.png",
        "a/..",
        "/etc/x.png",
        "a//b.png",
        "a/./b.png",
        "a\\..\\b.png",
        "a/b\x00.png",
        "a/",
    ],
)
async def test_key_escaping_prefix_refused(storage: Storage, tmp_path: Path, key: str) -> None:
    source = await write_file(tmp_path / "source.png", PNG)
    with pytest.raises(PermanentError, match="storage key"):
        await storage.put(key, source, "image/png")
    with pytest.raises(PermanentError, match="storage key"):
        await storage.open(key)
    with pytest.raises(PermanentError, match="storage key"):
        await storage.delete(key)


async def test_put_bytes_round_trip(storage: Storage) -> None:
    # A small download kept in memory (jobsvc.fetch) is stored from its bytes.
    key = new_key()
    await storage.put_bytes(key, PNG, "image/png")
    stored = await storage.open(key)
    assert stored is not None
    assert (stored.content_type, stored.size) == ("image/png", len(PNG))
    assert await read_all(stored) == PNG


async def test_put_bytes_refuses_a_key_that_escapes(storage: Storage) -> None:
    with pytest.raises(PermanentError):
        await storage.put_bytes("../escape.png", PNG, "image/png")


async def test_put_bytes_cancelled_before_start_leaves_nothing(storage: Storage) -> None:
    key = new_key()
    with trio.CancelScope() as scope:
        scope.cancel()
        await storage.put_bytes(key, PNG, "image/png")
    assert scope.cancelled_caught
    assert await storage.open(key) is None


async def test_file_put_cancelled_during_its_one_thread_hop_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write, fsync and rename are one uncancellable hop: a cancel that arrives
    # meanwhile is honoured right after it, and the renamed result is removed again.
    import jobsvc.storage.file as file_module

    storage = FileStorage(tmp_path / "results")
    write = file_module._write_bytes

    def write_then_cancel(data: bytes, out: int) -> None:
        trio.from_thread.run_sync(scope.cancel)
        write(data, out)

    monkeypatch.setattr(file_module, "_write_bytes", write_then_cancel)
    key = new_key()
    with trio.CancelScope() as scope:
        await storage.put_bytes(key, PNG, "image/png")
    assert scope.cancelled_caught
    assert await storage.open(key) is None
    job_dir = trio.Path(tmp_path / "results" / key.split("/")[0])
    assert list(await job_dir.iterdir()) == []  # no temporary file either


async def test_open_missing_key_is_none(storage: Storage) -> None:
    assert await storage.open(new_key()) is None


async def test_failed_put_leaves_nothing(storage: Storage, tmp_path: Path) -> None:
    key = new_key()
    with pytest.raises(TransientError):
        await storage.put(key, tmp_path / "does-not-exist.png", "image/png")
    assert await storage.open(key) is None


async def test_put_cancelled_before_start_leaves_nothing(storage: Storage, tmp_path: Path) -> None:
    source = await write_file(tmp_path / "source.png", PNG)
    key = new_key()
    with trio.CancelScope() as scope:
        scope.cancel()
        await storage.put(key, source, "image/png")
    assert scope.cancelled_caught
    assert await storage.open(key) is None


async def test_check_is_ready(storage: Storage) -> None:
    await storage.check()


# ------------------------------------------------------------------------- file storage


async def test_file_storage_layout_and_no_temporary_leftovers(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "results")
    key = new_key("a.png")
    await storage.put(key, await write_file(tmp_path / "source.png", PNG), "image/png")
    job_dir = trio.Path(tmp_path / "results" / key.split("/")[0])
    assert [path.name for path in await job_dir.iterdir()] == ["a.png"]
    assert await storage.presign(key, 60) is None


async def test_file_storage_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    outside = trio.Path(tmp_path / "outside")
    await outside.mkdir()
    root = trio.Path(tmp_path / "results")
    await root.mkdir()
    await (root / "jobdir").symlink_to(outside)
    storage = FileStorage(Path(root))
    with pytest.raises(PermanentError, match="leaves the result directory"):
        await storage.put("jobdir/x.png", await write_file(tmp_path / "source.png", PNG), "image/png")
    assert list(await outside.iterdir()) == []


async def test_file_storage_check_creates_directory(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "a" / "b")
    await storage.check()
    assert await trio.Path(tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("file:///srv/results", Path("/srv/results")),
        ("file://localhost/srv/results", Path("/srv/results")),
        ("file://./relative/dir", Path.cwd() / "relative" / "dir"),
    ],
)
def test_storage_from_settings_file(url: str, root: Path) -> None:
    storage = storage_from_settings(Settings(storage_url=url))
    assert isinstance(storage, FileStorage)
    assert storage.root == root


def test_storage_from_settings_s3() -> None:
    storage = storage_from_settings(Settings(storage_url="s3://bucket/some/prefix/"))
    assert isinstance(storage, S3Storage)
    assert storage.bucket == "bucket"
    assert storage.object_name("j/f.png") == "some/prefix/j/f.png"


# ------------------------------------------------------------------------- S3 storage


async def test_s3_bucket_created_if_missing(s3_storage: S3Storage, moto_server: MotoServer) -> None:
    client = moto_server.client()
    names = [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]
    assert s3_storage.bucket not in names
    await s3_storage.check()
    await trio.to_thread.run_sync(lambda: client.head_bucket(Bucket=s3_storage.bucket))


async def test_s3_object_under_prefix_with_content_type(
    s3_storage: S3Storage, moto_server: MotoServer, tmp_path: Path
) -> None:
    key = new_key()
    await s3_storage.put(key, await write_file(tmp_path / "s.png", PNG), "image/png")
    client = moto_server.client()
    head = await trio.to_thread.run_sync(
        lambda: client.head_object(Bucket=s3_storage.bucket, Key=f"results/{key}")
    )
    assert head["ContentType"] == "image/png"


async def test_s3_small_put_is_signed_without_boto3_and_keeps_key_and_content_type(
    s3_storage: S3Storage, moto_server: MotoServer
) -> None:
    key = new_key("a b ü+x~y.png")  # every character class botocore encodes in a key
    await s3_storage.put_bytes(key, PNG, "image/png")
    assert s3_storage._signed is not None  # the signed path did the PUT and is still on
    client = moto_server.client()
    got = await trio.to_thread.run_sync(
        lambda: client.get_object(Bucket=s3_storage.bucket, Key=f"results/{key}")
    )
    assert got["ContentType"] == "image/png"
    assert got["Body"].read() == PNG


async def _signed_put_to(s3_storage: S3Storage, port: int) -> SignedPut:
    """A signed-PUT path of ``s3_storage`` aimed at 127.0.0.1:``port`` instead of moto."""
    await s3_storage.client()  # the client, the bucket, the credentials
    return SignedPut(f"http://127.0.0.1:{port}/{s3_storage.bucket}/", s3_storage._credentials, "us-east-1")


async def test_s3_signed_put_without_an_answer_falls_back_to_boto3_and_gives_up_after_three(
    s3_storage: S3Storage, moto_server: MotoServer
) -> None:
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    s3_storage._signed = signed = await _signed_put_to(s3_storage, port)
    keys = [new_key() for _ in range(3)]
    for n, key in enumerate(keys):
        assert s3_storage._signed is signed  # a failure or two: a blip, the signed path stays
        await s3_storage.put_bytes(key, PNG, "image/png")  # done by boto3 each time
        assert signed.usable == (n < 2)
    assert s3_storage._signed is None  # boto3 from now on
    for key in keys:
        stored = await s3_storage.open(key)
        assert stored is not None
        assert await read_all(stored) == PNG


class _Refusing(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()


async def test_s3_signed_put_answered_other_than_2xx_hands_over_to_boto3_at_once(
    s3_storage: S3Storage, moto_server: MotoServer
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        s3_storage._signed = await _signed_put_to(s3_storage, server.server_address[1])
        key = new_key()
        await s3_storage.put_bytes(key, PNG, "image/png")
        assert s3_storage._signed is None
        stored = await s3_storage.open(key)
        assert stored is not None
        assert await read_all(stored) == PNG
    finally:
        server.shutdown()
        server.server_close()


async def test_s3_signed_put_cancelled_mid_flight_returns_at_once_and_leaves_nothing(
    s3_storage: S3Storage, moto_server: MotoServer
) -> None:
    silent = trio.socket.socket()  # accepts connections (the kernel does) and never answers
    await silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        s3_storage._signed = await _signed_put_to(s3_storage, silent.getsockname()[1])
        key = new_key()
        started = trio.current_time()
        with trio.move_on_after(0.3) as scope:
            await s3_storage.put_bytes(key, PNG, "image/png")
        assert scope.cancelled_caught
        assert trio.current_time() - started < 5  # not the 60 s read timeout: cancelled mid-PUT
        assert await s3_storage.open(key) is None
    finally:
        silent.close()


async def test_s3_presign_is_sigv4(s3_storage: S3Storage) -> None:
    # moto does not check presigned signatures or expiry: this only shows the URL's shape.
    url = await s3_storage.presign(new_key(), 60)
    assert url is not None
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert "X-Amz-Expires=60" in url


async def big_file(tmp_path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(1024 * 1024) * (size // (1024 * 1024)) + b"tail"
    path = await write_file(tmp_path / "big.bin", data)
    return path, hashlib.sha256(data).hexdigest()


async def test_s3_multipart_round_trip(s3_storage: S3Storage, tmp_path: Path) -> None:
    source, digest = await big_file(tmp_path, 20 * 1024 * 1024)
    key = new_key("big.png")
    await s3_storage.put(key, source, "image/png")
    stored = await s3_storage.open(key)
    assert stored is not None
    assert stored.size == 20 * 1024 * 1024 + 4
    assert hashlib.sha256(await read_all(stored)).hexdigest() == digest


async def test_s3_cancel_during_multipart_leaves_nothing(
    s3_storage: S3Storage, moto_server: MotoServer, tmp_path: Path
) -> None:
    source, _ = await big_file(tmp_path, 20 * 1024 * 1024)
    assert (await trio.Path(source).stat()).st_size > 2 * PART_SIZE
    key = new_key("big.png")
    parts: list[int] = []
    with trio.CancelScope() as scope:

        def cancel_after_first_part(**kwargs: Any) -> None:
            # Runs in the upload's worker thread, right after the part landed.
            parts.append(kwargs["parsed"]["ResponseMetadata"]["HTTPStatusCode"])
            trio.from_thread.run_sync(scope.cancel)

        client = await s3_storage.client()
        client.meta.events.register("after-call.s3.UploadPart", cancel_after_first_part)
        try:
            await s3_storage.put(key, source, "image/png")
        finally:
            client.meta.events.unregister("after-call.s3.UploadPart", cancel_after_first_part)
    assert scope.cancelled_caught
    assert parts == [200]  # cancelled between parts, not after the whole upload
    assert await s3_storage.open(key) is None
    raw = moto_server.client()
    uploads = await trio.to_thread.run_sync(lambda: raw.list_multipart_uploads(Bucket=s3_storage.bucket))
    assert uploads.get("Uploads", []) == []


# ------------------------------------------------------------------------- pipeline


def make_job(url: str, result_file: str) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=1,
        job_id=uuid.uuid4(),
        result_file=result_file,
        type="image",
        img_url=url,
        status=Status.PROCESSING,
        priority=0,
        run_at=now,
        attempts=1,
        max_attempts=3,
        error=None,
        cancel_requested_at=None,
        worker_id="test",
        created_at=now,
        updated_at=now,
        started_at=now,
        finished_at=None,
    )


@pytest.fixture
def fetcher(tmp_path: Path) -> Fetcher:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    return Fetcher(Settings(allow_private_urls=True, fetch_timeout=10), tmp_dir=downloads)


async def test_pipeline_stores_image_at_job_key(
    storage: Storage, fetcher: Fetcher, image_server: ImageServer
) -> None:
    name = f"{uuid.uuid4().hex}.png"
    job = make_job(image_server.url(f"/img/{name}"), name)
    await ImagePipeline(fetcher, storage)(job)
    stored = await storage.open(f"{job.job_id}/{name}")
    assert stored is not None
    assert stored.content_type == "image/png"
    assert await read_all(stored) == PNG


async def test_pipeline_failed_download_stores_nothing(
    storage: Storage, fetcher: Fetcher, image_server: ImageServer
) -> None:
    job = make_job(image_server.url(f"/404/{uuid.uuid4().hex}.png"), "x.png")
    with pytest.raises(PermanentError, match="404 Not Found"):
        await ImagePipeline(fetcher, storage)(job)
    assert await storage.open(job.storage_key) is None


async def test_pipeline_cancelled_stores_nothing(
    storage: Storage, fetcher: Fetcher, image_server: ImageServer, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    job = make_job(image_server.url(f"/slow/{key}/x.png"), "x.png")
    with trio.move_on_after(0.3) as scope:
        await ImagePipeline(fetcher, storage)(job)
    assert scope.cancelled_caught
    assert await storage.open(job.storage_key) is None
    assert list(await trio.Path(tmp_path / "downloads").iterdir()) == []
    assert await trio.to_thread.run_sync(image_server.wait_closed, key, 1.0)
