"""`FileStorage`: results as files under a directory, ``root/{jobId}/{resultFile}``.

`put` (a file) and `put_bytes` (a small download kept in memory) write a hidden
temporary name next to the target, fsync it, then rename it (atomic), all in
one thread hop. ``OSError`` becomes `TransientError` in one place, `_file_errors`.
Blocking file I/O runs in ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import filetype
import trio

from jobsvc.errors import PermanentError, TransientError
from jobsvc.storage.base import READ_CHUNK, StoredObject, check_key

__all__ = ["FileStorage"]


@contextmanager
def _file_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise TransientError(f"the result directory could not {action} ({exc.strerror or exc})") from exc


def _write_file(source: Path, out: int) -> None:
    with open(source, "rb") as src:
        # In the kernel (sendfile): no user-space buffer per job in flight.
        size, offset = os.fstat(src.fileno()).st_size, 0
        while offset < size:
            sent = os.sendfile(out, src.fileno(), offset, size - offset)
            if sent == 0:
                break
            offset += sent


def _write_bytes(data: bytes, out: int) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(out, view) :]


def _store(target: Path, write: Callable[[int], None]) -> None:
    """Write a durable temporary file next to ``target`` with ``write``, then rename it to
    ``target`` (atomic): the whole put in one thread hop. Leaves nothing behind if it raises."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".jobsvc-", suffix=".tmp", dir=target.parent)
    try:
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from a separate reader
            write(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(name, target)
    except BaseException:
        os.unlink(name)
        raise


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

        One thread hop does it all (`_store`): it cannot be interrupted, so a
        cancellation that arrives meanwhile is honoured right after it: the
        renamed result is removed, shielded, and `trio.Cancelled` propagates.
        """
        await self._put(key, functools.partial(_write_file, path))

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Like `put`, from memory."""
        await self._put(key, functools.partial(_write_bytes, data))

    async def _put(self, key: str, write: Callable[[int], None]) -> None:
        with _file_errors("store the result"):
            target = await trio.to_thread.run_sync(self._store, key, write)
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(functools.partial(target.unlink, missing_ok=True))
                raise

    def _store(self, key: str, write: Callable[[int], None]) -> Path:
        target = self._target(key)
        _store(target, write)
        return target

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
                while chunk := await file.read(READ_CHUNK):
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
