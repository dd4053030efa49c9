"""`S3Storage`: results as objects ``{prefix}/{jobId}/{resultFile}`` in one bucket, via boto3
(any S3-compatible endpoint; docs/ARCHITECTURE.md, "Storage").

`put` is a single PUT up to `PART_SIZE`, else a multipart upload (`_put_multipart`)
in `PART_SIZE` parts. boto3 is blocking: each call runs in ``trio.to_thread.run_sync``
and cannot be cancelled mid-flight, which is why large uploads go in parts with a
checkpoint between them (STACK-NOTES). botocore's ``ClientError``/``BotoCoreError``
and ``OSError`` become `TransientError` in one place, `_call`.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import boto3
import trio
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobsvc.errors import TransientError
from jobsvc.storage.base import READ_CHUNK, StoredObject, check_key
from jobsvc.storage.signed import SignedPut

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["PART_SIZE", "S3Storage"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PART_SIZE = 8 * 1024 * 1024  # multipart part size, and the largest single PUT


# --------------------------------------------------------------------------- boto3 calls


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


async def _call(action: str, call: Callable[[], T]) -> T:
    """Run one blocking boto3 call in a thread: the one place botocore errors are translated.

    A call in flight cannot be cancelled: trio waits for it to return, then the
    cancellation is delivered at the caller's next checkpoint.
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


def _new_client(endpoint_url: str | None) -> tuple[S3Client, Any]:
    """The client, and the credentials object it signs with (None without credentials)."""
    config = Config(
        signature_version="s3v4",  # the default made SigV2 presigned URLs
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=64,  # a worker runs up to JOBSVC_CONCURRENCY uploads at once
        # S3-compatible servers (MinIO, moto) rarely resolve bucket subdomains.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=endpoint_url, config=config)
    return client, session.get_credentials()  # the botocore session's one object, shared with the client


def _ensure_bucket(client: S3Client, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    region = client.meta.region_name
    try:
        if region and region != "us-east-1":
            client.create_bucket(
                Bucket=bucket,
                CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
            )
        else:
            client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    log.info("created bucket %s", bucket)


def _put_small(client: S3Client, bucket: str, name: str, path: Path, content_type: str) -> int | None:
    """One PUT of ``path`` if it fits in one (returns None), else its size, for a multipart upload."""
    with open(path, "rb") as body:
        size = os.fstat(body.fileno()).st_size
        if size > PART_SIZE:
            return size
        client.put_object(Bucket=bucket, Key=name, Body=body, ContentType=content_type)
    return None


def _head(client: S3Client, bucket: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(client.head_object(Bucket=bucket, Key=name))
    except ClientError as exc:
        if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


# --------------------------------------------------------------------------- multipart upload


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


@dataclass(frozen=True)
class _Upload:
    """One started multipart upload of object ``name``: its parts, completion or abort."""

    client: S3Client
    bucket: str
    name: str
    upload_id: str

    async def send_part(self, number: int, path: Path, offset: int, length: int) -> dict[str, Any]:
        """Upload bytes ``[offset, offset + length)`` of ``path`` as part ``number``."""
        # A window on the file, streamed by botocore: no part-sized buffer in memory.
        part = await _call("read the download", functools.partial(_FilePart, path, offset, length))
        try:
            send = functools.partial(
                self.client.upload_part,
                Bucket=self.bucket,
                Key=self.name,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=cast(IO[bytes], part),
            )
            uploaded = await _call("upload a part", send)
        finally:
            part.close()
        return {"ETag": uploaded["ETag"], "PartNumber": number}

    async def complete(self, parts: list[dict[str, Any]]) -> None:
        complete = functools.partial(
            self.client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=self.name,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )
        await _call("complete an upload", complete)

    async def abort(self) -> None:
        """Abort the upload; a failure is logged, not raised (the caller's error matters more)."""
        abort = functools.partial(
            self.client.abort_multipart_upload, Bucket=self.bucket, Key=self.name, UploadId=self.upload_id
        )
        try:
            await _call("abort an upload", abort)
        except TransientError:
            # The bucket's lifecycle rule for incomplete uploads is the backstop (README).
            log.warning("could not abort multipart upload %s of %s", self.upload_id, self.name, exc_info=True)


async def _put_multipart(
    client: S3Client, bucket: str, name: str, path: Path, size: int, content_type: str
) -> None:
    """Upload ``path`` in `PART_SIZE` parts. Cancellation takes effect between parts (each
    part is one uncancellable call); on any error or cancellation the upload is aborted,
    shielded, so no part is left behind."""
    start = functools.partial(
        client.create_multipart_upload, Bucket=bucket, Key=name, ContentType=content_type
    )
    upload = _Upload(client, bucket, name, (await _call("start an upload", start))["UploadId"])
    try:
        parts: list[dict[str, Any]] = []
        for offset in range(0, size, PART_SIZE):
            await trio.lowlevel.checkpoint()  # where a cancellation can stop the upload
            parts.append(await upload.send_part(len(parts) + 1, path, offset, min(PART_SIZE, size - offset)))
        await upload.complete(parts)
    except BaseException:
        with trio.CancelScope(shield=True):
            await upload.abort()
        raise


# --------------------------------------------------------------------------- the backend


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
        self._credentials: Any = None
        self._bucket_ready = False
        self._signed: SignedPut | None = None  # small PUTs without boto3 (signed.py); None: boto3 only
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
                    self._client, self._credentials = await _call(
                        "start a client", functools.partial(_new_client, self._endpoint_url)
                    )
                if not self._bucket_ready:
                    client = self._client
                    assert client is not None
                    await _call("create the bucket", functools.partial(_ensure_bucket, client, self._bucket))
                    self._bucket_ready = True
                    await self._prepare_signed(client)
        assert self._client is not None
        return self._client

    async def _prepare_signed(self, client: S3Client) -> None:
        """Set up the signed small PUTs (`SignedPut`); without them boto3 does every PUT."""
        make = functools.partial(SignedPut.for_client, client, self._credentials, self._bucket)
        try:
            self._signed = await _call("prepare signed uploads", make)
        except TransientError:
            log.warning("signed PUTs are not available: boto3 uploads", exc_info=True)

    async def put(self, key: str, path: Path, content_type: str) -> None:
        """A single PUT up to `PART_SIZE`, else a multipart upload (`_put_multipart`).

        A cancellation that arrives during the final call deletes the object
        again, shielded: if this raises, nothing is left under ``key``.
        """
        name = self.object_name(key)
        client = await self.client()
        put = functools.partial(_put_small, client, self._bucket, name, path, content_type)
        size = await _call("store the result", put)  # the size check and the PUT: one thread hop
        if size is not None:
            await _put_multipart(client, self._bucket, name, path, size, content_type)
        await self._settle(client, name)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """One PUT from memory (a small download); the same guarantee as `put`.

        Signed and sent from trio (`SignedPut`: no thread, no botocore call) while that
        works; boto3's ``put_object`` for a PUT it could not do, and for every PUT once
        it is no longer `SignedPut.usable`.
        A cancellation during the signed PUT deletes the object, shielded (it may have landed).
        """
        name = self.object_name(key)
        client = await self.client()
        signed = self._signed
        if signed is not None:
            try:
                stored = await signed.put(name, data, content_type)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._delete(client, name)
                raise
            if stored:
                await self._settle(client, name)
                return
            if not signed.usable and self._signed is signed:
                log.warning("signed PUTs to %s do not work: boto3 uploads from now on", self._bucket)
                self._signed = None
                await signed.aclose()
        put = functools.partial(
            client.put_object, Bucket=self._bucket, Key=name, Body=data, ContentType=content_type
        )
        await _call("store the result", put)
        await self._settle(client, name)

    async def _settle(self, client: S3Client, name: str) -> None:
        """A cancellation that arrived during the last, uncancellable call deletes the object again."""
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._delete(client, name)
            raise

    async def delete(self, key: str) -> None:
        name = self.object_name(key)
        await self._delete(await self.client(), name)

    async def _delete(self, client: S3Client, name: str) -> None:
        await _call(
            "delete the result", functools.partial(client.delete_object, Bucket=self._bucket, Key=name)
        )

    async def open(self, key: str) -> StoredObject | None:
        name = self.object_name(key)
        client = await self.client()
        head = await _call("read the result", functools.partial(_head, client, self._bucket, name))
        if head is None:
            return None
        stream = functools.partial(self._stream, client, name, head["ETag"])
        return StoredObject(
            head.get("ContentType") or "application/octet-stream", head["ContentLength"], stream
        )

    async def _stream(self, client: S3Client, name: str, etag: str) -> AsyncGenerator[bytes, None]:
        # IfMatch: the bytes must be those of the version whose size open() reported.
        got = await _call(
            "read the result",
            functools.partial(client.get_object, Bucket=self._bucket, Key=name, IfMatch=etag),
        )
        body = got["Body"]
        try:
            while chunk := await _call("read the result", functools.partial(body.read, READ_CHUNK)):
                yield chunk
        finally:
            body.close()  # returns the connection to the pool (or drops it); never blocks

    async def presign(self, key: str, expires_s: int) -> str | None:
        name = self.object_name(key)
        client = await self.client()
        params = {"Bucket": self._bucket, "Key": name}
        sign = functools.partial(
            client.generate_presigned_url, "get_object", Params=params, ExpiresIn=expires_s
        )
        return await _call("sign a URL", sign)

    async def check(self) -> None:
        """The bucket answers (created first if missing)."""
        client = await self.client()
        await _call("reach the bucket", functools.partial(client.head_bucket, Bucket=self._bucket))

    async def aclose(self) -> None:
        signed, self._signed = self._signed, None
        if signed is not None:
            await signed.aclose()
        if self._client is not None:
            client, self._client = self._client, None
            self._bucket_ready = False
            await trio.to_thread.run_sync(client.close)
