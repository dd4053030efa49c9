"""Where results are stored: the `Storage` protocol, `FileStorage` and `S3Storage` (DESIGN §6).

`storage_from_settings` picks the backend from ``settings.storage_url``:
``s3://bucket[/prefix]`` or ``file:///abs/dir`` / ``file://./relative/dir``.

Keys are ``{jobId}/{resultFile}``, given by the caller (`Job.storage_key`).
Both backends refuse keys that could escape their root or prefix: empty, ``.``
or ``..`` segments, a leading ``/``, a backslash or a NUL. Unicode is fine.

Guarantee of `Storage.put`: if it raises (error or cancellation), nothing is
left under the key. Both backends write out of sight first (a temporary file
then ``os.replace``; an S3 multipart upload, or a single PUT for small files),
and if a cancellation arrives during the final, uncancellable step, the
freshly stored object is deleted again, shielded.

Errors: a refused key is a `PermanentError`. Everything the backend raises
(``OSError``, botocore's ``ClientError``/``BotoCoreError``) is a
`TransientError`, translated in one place per backend (`_file_errors`,
`S3Storage._run`): storage hiccups are retried (DESIGN §3). That includes
configuration mistakes such as AccessDenied or an uncreatable bucket, on
purpose: an operator can fix them while jobs wait, and ``maxAttempts`` bounds
the cost. `Storage.check` raises the same `TransientError` for readiness.

Blocking calls (file I/O, boto3) run in ``trio.to_thread.run_sync``; one boto3
call cannot be cancelled mid-flight, which is why large uploads go in 8 MiB
parts with a checkpoint between them (STACK-NOTES).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import tempfile
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import unquote, urlsplit

import boto3
import filetype
import trio
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobsvc.config import Settings
from jobsvc.errors import ConfigError, PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "PART_SIZE",
    "FileStorage",
    "S3Storage",
    "Storage",
    "StoredObject",
    "check_key",
    "storage_from_settings",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

PART_SIZE = 8 * 1024 * 1024  # multipart part size, and the largest single PUT
_READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A stored result: its metadata now, its bytes when `chunks` is iterated.

    Nothing is held open until `chunks` is iterated; the stream closes itself
    when the iteration ends or is abandoned (``aclose``/cancellation).
    """

    content_type: str
    size: int
    stream: Callable[[], AsyncGenerator[bytes, None]]

    def chunks(self) -> AsyncGenerator[bytes, None]:
        """The object's bytes from the start, in chunks; each call streams it anew."""
        return self.stream()


class Storage(Protocol):
    """Object storage for results, keyed ``{jobId}/{resultFile}``."""

    async def put(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at ``path``; if this raises or is cancelled, nothing is left under ``key``."""

    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    async def open(self, key: str) -> StoredObject | None:
        """The stored object, or None when there is none."""

    async def presign(self, key: str, expires_s: int) -> str | None:
        """A time-limited URL for ``key``, or None when the backend has no such thing."""

    async def check(self) -> None:
        """Readiness: raise `TransientError` unless results can be stored now."""

    async def aclose(self) -> None:
        """Release clients and connections."""


def check_key(key: str) -> list[str]:
    """The segments of ``key``; PermanentError when it could escape the root or prefix."""
    if not key or "\x00" in key or "\\" in key or key.startswith("/"):
        raise PermanentError(f"the storage key {key!r:.120} is not allowed")
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise PermanentError(f"the storage key {key!r:.120} is not allowed")
    return segments


def storage_from_settings(settings: Settings) -> Storage:
    """The backend named by ``settings.storage_url``. Creates no connection and no directory."""
    parts = urlsplit(settings.storage_url)
    if parts.scheme == "s3" and parts.netloc:
        return S3Storage(parts.netloc, unquote(parts.path), endpoint_url=settings.s3_endpoint_url)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost"):  # file://./relative/dir
            path = parts.netloc + path
        if path:
            return FileStorage(Path(path))
    raise ConfigError(
        f"JOBSVC_STORAGE_URL={settings.storage_url!r} is not s3://bucket[/prefix] or file:///dir"
    )


# --------------------------------------------------------------------------- files


@contextmanager
def _file_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise TransientError(f"the result directory could not {action} ({exc.strerror or exc})") from exc


def _copy_to_temp(source: Path, directory: Path) -> Path:
    """A durable copy of ``source`` under a hidden temporary name in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".jobsvc-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from a separate reader
        with open(fd, "wb") as out, open(source, "rb") as src:
            # In the kernel (sendfile): no user-space buffer per job in flight.
            size, offset = os.fstat(src.fileno()).st_size, 0
            while offset < size:
                sent = os.sendfile(out.fileno(), src.fileno(), offset, size - offset)
                if sent == 0:
                    break
                offset += sent
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _stat_and_head(path: Path) -> tuple[int, bytes] | None:
    try:
        with open(path, "rb") as file:
            return os.fstat(file.fileno()).st_size, file.read(8192)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


class FileStorage:
    """Results as files under ``root``: ``root/{jobId}/{resultFile}``.

    Files carry no metadata, so `open` detects the content type from the
    bytes again (they were proved an image when stored); `presign` is None.
    """

    def __init__(self, root: Path) -> None:
        self._root = root.absolute()

    @property
    def root(self) -> Path:
        return self._root

    def _target(self, key: str) -> Path:
        """The path for ``key``, verified to stay inside the root even through symlinks."""
        segments = check_key(key)
        root = self._root.resolve()
        target = root.joinpath(*segments)
        if not target.resolve().is_relative_to(root):
            raise PermanentError(f"the storage key {key!r:.120} leaves the result directory")
        return target

    async def put(self, key: str, path: Path, content_type: str) -> None:
        """Copy to a temporary name next to the target, then rename (atomic).

        Cancellation during the copy or the rename (neither can be
        interrupted) is honoured right after it: the temporary file or the
        renamed result is removed, shielded, and `trio.Cancelled` propagates.
        """
        with _file_errors("store the result"):
            target = await trio.to_thread.run_sync(self._target, key)
            temp = await trio.to_thread.run_sync(_copy_to_temp, path, target.parent)
            leftover = temp
            try:
                await trio.lowlevel.checkpoint()
                await trio.to_thread.run_sync(os.replace, temp, target)
                leftover = target
                await trio.lowlevel.checkpoint()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(functools.partial(leftover.unlink, missing_ok=True))
                raise

    async def delete(self, key: str) -> None:
        with _file_errors("delete the result"):
            target = await trio.to_thread.run_sync(self._target, key)
            await trio.to_thread.run_sync(functools.partial(target.unlink, missing_ok=True))

    async def open(self, key: str) -> StoredObject | None:
        with _file_errors("read the result"):
            target = await trio.to_thread.run_sync(self._target, key)
            found = await trio.to_thread.run_sync(_stat_and_head, target)
        if found is None:
            return None
        size, head = found
        kind = filetype.guess(head)
        content_type = kind.mime if kind is not None else "application/octet-stream"
        return StoredObject(content_type, size, functools.partial(self._stream, target))

    async def _stream(self, target: Path) -> AsyncGenerator[bytes, None]:
        with _file_errors("read the result"):
            async with await trio.open_file(target, "rb") as file:
                while chunk := await file.read(_READ_CHUNK):
                    yield chunk

    async def presign(self, key: str, expires_s: int) -> str | None:
        check_key(key)
        return None

    async def check(self) -> None:
        """The directory exists (created if missing) and is writable."""
        with _file_errors("be used"):
            await trio.to_thread.run_sync(functools.partial(self._root.mkdir, parents=True, exist_ok=True))
            if not await trio.to_thread.run_sync(os.access, self._root, os.W_OK):
                raise TransientError(f"the result directory {self._root} is not writable")

    async def aclose(self) -> None:
        """Nothing is held open between calls."""


# --------------------------------------------------------------------------- S3


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _FilePart(io.RawIOBase):
    """Bytes ``[offset, offset + length)`` of a file as a seekable stream (one multipart part)."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._start, self._length, self._pos = offset, length, 0
        self._file.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = min(max(base + pos, 0), self._length)
        self._file.seek(self._start + self._pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self._length - self._pos]
        n = self._file.readinto(view)
        self._pos += n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


class S3Storage:
    """Results as objects ``{prefix}/{jobId}/{resultFile}`` in one bucket, via boto3.

    The client is created once, on first use, together with the bucket when it
    does not exist; credentials and region come the standard AWS way
    (environment, shared config, instance role).
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        self._bucket = bucket
        prefix = prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._endpoint_url = endpoint_url
        self._client: S3Client | None = None
        self._bucket_ready = False
        self._lock = trio.Lock()

    @property
    def bucket(self) -> str:
        return self._bucket

    def object_name(self, key: str) -> str:
        """The S3 key under which ``key`` is stored."""
        check_key(key)
        return self._prefix + key

    async def client(self) -> S3Client:
        """The shared boto3 client (thread-safe); creates it and the bucket on first use."""
        if self._client is None or not self._bucket_ready:
            async with self._lock:
                if self._client is None:
                    self._client = await self._run("start a client", self._new_client)
                if not self._bucket_ready:
                    await self._run("create the bucket", functools.partial(self._ensure_bucket, self._client))
                    self._bucket_ready = True
        return self._client

    def _new_client(self) -> S3Client:
        config = Config(
            signature_version="s3v4",  # the default made SigV2 presigned URLs
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=64,  # a worker runs up to JOBSVC_CONCURRENCY uploads at once
            # S3-compatible servers (MinIO, moto) rarely resolve bucket subdomains.
            s3={"addressing_style": "path" if self._endpoint_url else "auto"},
        )
        return boto3.session.Session().client("s3", endpoint_url=self._endpoint_url, config=config)

    def _ensure_bucket(self, client: S3Client) -> None:
        try:
            client.head_bucket(Bucket=self._bucket)
            return
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
        region = client.meta.region_name
        try:
            if region and region != "us-east-1":
                client.create_bucket(
                    Bucket=self._bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                client.create_bucket(Bucket=self._bucket)
        except ClientError as exc:
            if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        log.info("created bucket %s", self._bucket)

    async def _run(self, action: str, call: Callable[[], T]) -> T:
        """Run one blocking boto3 call in a thread: the one place botocore errors are translated.

        A call in flight cannot be cancelled: trio waits for it to return,
        then the cancellation is delivered at the caller's next checkpoint.
        """
        try:
            return await trio.to_thread.run_sync(call)
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message") or _error_code(exc)
            raise TransientError(f"the object store could not {action} ({message})") from exc
        except BotoCoreError as exc:
            raise TransientError(f"the object store could not {action} ({exc})") from exc
        except OSError as exc:
            raise TransientError(f"the object store could not {action} ({exc.strerror or exc})") from exc

    async def put(self, key: str, path: Path, content_type: str) -> None:
        """A single PUT up to `PART_SIZE`, else a multipart upload in `PART_SIZE` parts.

        Cancellation takes effect between parts (each part is one uncancellable
        call) and aborts the upload, shielded; a cancellation that arrives
        during the final call deletes the object again, shielded.
        """
        name = self.object_name(key)
        client = await self.client()
        size = await self._run("read the download", functools.partial(os.path.getsize, path))
        if size <= PART_SIZE:
            await self._run(
                "store the result", functools.partial(self._put_small, client, name, path, content_type)
            )
        else:
            await self._put_multipart(client, name, path, content_type)
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._run(
                    "delete the result",
                    functools.partial(client.delete_object, Bucket=self._bucket, Key=name),
                )
            raise

    def _put_small(self, client: S3Client, name: str, path: Path, content_type: str) -> None:
        with open(path, "rb") as body:
            client.put_object(Bucket=self._bucket, Key=name, Body=body, ContentType=content_type)

    async def _put_multipart(self, client: S3Client, name: str, path: Path, content_type: str) -> None:
        started = await self._run(
            "start an upload",
            functools.partial(
                client.create_multipart_upload, Bucket=self._bucket, Key=name, ContentType=content_type
            ),
        )
        upload_id = started["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            size = await self._run("read the download", functools.partial(os.path.getsize, path))
            for offset in range(0, size, PART_SIZE):
                await trio.lowlevel.checkpoint()  # where a cancellation can stop the upload
                number = len(parts) + 1
                # A window on the file, streamed by botocore: no part-sized buffer in memory.
                window = functools.partial(_FilePart, path, offset, min(PART_SIZE, size - offset))
                part = await self._run("read the download", window)
                try:
                    uploaded = await self._run(
                        "upload a part",
                        functools.partial(
                            client.upload_part,
                            Bucket=self._bucket,
                            Key=name,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=cast(IO[bytes], part),
                        ),
                    )
                finally:
                    part.close()
                parts.append({"ETag": uploaded["ETag"], "PartNumber": number})
            await self._run(
                "complete an upload",
                functools.partial(
                    client.complete_multipart_upload,
                    Bucket=self._bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                ),
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort(client, name, upload_id)
            raise

    async def _abort(self, client: S3Client, name: str, upload_id: str) -> None:
        abort = functools.partial(
            client.abort_multipart_upload, Bucket=self._bucket, Key=name, UploadId=upload_id
        )
        try:
            await self._run("abort an upload", abort)
        except TransientError:
            # The original error is what the caller must see; the bucket's
            # lifecycle rule for incomplete uploads is the backstop (README).
            log.warning("could not abort multipart upload %s of %s", upload_id, name, exc_info=True)

    async def delete(self, key: str) -> None:
        name = self.object_name(key)
        client = await self.client()
        await self._run(
            "delete the result", functools.partial(client.delete_object, Bucket=self._bucket, Key=name)
        )

    async def open(self, key: str) -> StoredObject | None:
        name = self.object_name(key)
        client = await self.client()
        head = await self._run("read the result", functools.partial(self._head, client, name))
        if head is None:
            return None
        stream = functools.partial(self._stream, client, name, head["ETag"])
        return StoredObject(
            head.get("ContentType") or "application/octet-stream", head["ContentLength"], stream
        )

    def _head(self, client: S3Client, name: str) -> dict[str, Any] | None:
        try:
            return dict(client.head_object(Bucket=self._bucket, Key=name))
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    async def _stream(self, client: S3Client, name: str, etag: str) -> AsyncGenerator[bytes, None]:
        # IfMatch: the bytes must be those of the version whose size open() reported.
        got = await self._run(
            "read the result",
            functools.partial(client.get_object, Bucket=self._bucket, Key=name, IfMatch=etag),
        )
        body = got["Body"]
        try:
            while chunk := await self._run("read the result", functools.partial(body.read, _READ_CHUNK)):
                yield chunk
        finally:
            body.close()  # returns the connection to the pool (or drops it); never blocks

    async def presign(self, key: str, expires_s: int) -> str | None:
        name = self.object_name(key)
        client = await self.client()
        params = {"Bucket": self._bucket, "Key": name}
        return await self._run(
            "sign a URL",
            functools.partial(
                client.generate_presigned_url, "get_object", Params=params, ExpiresIn=expires_s
            ),
        )

    async def check(self) -> None:
        """The bucket answers (created first if missing)."""
        client = await self.client()
        await self._run("reach the bucket", functools.partial(client.head_bucket, Bucket=self._bucket))

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._bucket_ready = False
            await trio.to_thread.run_sync(client.close)
