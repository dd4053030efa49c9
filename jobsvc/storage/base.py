"""What every storage backend promises: the `Storage` protocol, `StoredObject`, `check_key`.

Keys are ``{jobId}/{resultFile}``, given by the caller (`Job.storage_key`).
Backends refuse keys that could escape their root or prefix (`check_key`):
empty, ``.`` or ``..`` segments, a leading ``/``, a backslash or a NUL. Unicode
is fine.

Guarantee of `Storage.put`: if it raises (error or cancellation), nothing is
left under the key. Backends write out of sight first, and if a cancellation
arrives during the final, uncancellable step, the freshly stored object is
deleted again, shielded.

Errors: a refused key is a `PermanentError`. Everything a backend's own layer
raises (``OSError``, botocore's errors) is a `TransientError`, translated in one
place per backend: storage hiccups are retried (docs/ARCHITECTURE.md, "Storage"). That includes
configuration mistakes such as AccessDenied or an uncreatable bucket, on
purpose: an operator can fix them while jobs wait, and ``maxAttempts`` bounds
the cost.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jobsvc.errors import PermanentError

__all__ = ["READ_CHUNK", "Storage", "StoredObject", "check_key"]

#: The size of the chunks `StoredObject.chunks` yields.
READ_CHUNK = 256 * 1024


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

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` (a small download kept in memory); the same guarantee as `put`."""

    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    async def open(self, key: str) -> StoredObject | None:
        """The stored object, or None when there is none."""

    async def presign(self, key: str, expires_s: int) -> str | None:
        """A time-limited URL for ``key``, or None when the backend has no such thing."""

    async def check(self) -> None:
        """Raise `TransientError` unless results can be stored now (creating the directory or
        bucket if missing). A probe for callers that want one: neither ``/readyz`` nor the
        worker calls it today (a missing bucket shows as a retried job instead)."""

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
