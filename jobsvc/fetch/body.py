"""A response body: streamed under the size cap, decoded in bounded steps, checked by its bytes.

The size cap (``max_image_bytes``): a Content-Length over it is refused at
once, and both the bytes received and the bytes decoded (Content-Encoding is
undone here, in bounded steps, so a compression bomb cannot inflate memory) are
counted against it while streaming. Image-ness is decided from the first bytes
with `filetype`, never from Content-Type. A download larger than 256 KiB is
spooled to a temporary file, so memory stays flat whatever the image size; a
smaller one stays in memory (`Spill`). See docs/ARCHITECTURE.md, "The fetcher".

Accepted formats (`ACCEPTED_MIMES`): JPEG, PNG, APNG, GIF, WebP, BMP, TIFF,
AVIF, HEIC, ICO, JPEG 2000 and PSD: the image formats `filetype` 1.2 detects
that are ordinary raster images. Refused although `filetype` calls them
images: camera raw (CR2), JPEG XR, DWG drawings and GIMP's XCF. Not detected
by `filetype` at all, hence refused: SVG (also a script vector), JPEG XL,
animated AVIF, some HEIF brands, TGA, QOI. A magic-byte match means "claims to
be an image", not "decodes".
"""

from __future__ import annotations

import logging
import tempfile
import zlib
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, BinaryIO, cast

import filetype
import trio

from jobsvc.errors import PermanentError
from jobsvc.fetch.pool import FetchResponse

__all__ = ["ACCEPTED_MIMES", "Spill", "discard", "image_kind", "open_temp", "read_head", "save_body"]

log = logging.getLogger("jobsvc.fetch")  # the package's logger: operators filter on it

ACCEPTED_MIMES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/apng",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "image/avif",
        "image/heic",
        "image/x-icon",
        "image/jpx",
        "image/vnd.adobe.photoshop",
    }
)

_HEAD_BYTES = 8192  # what filetype inspects at most
_WRITE_BUFFER = 256 * 1024  # one thread hop per 256 KiB written, not per network read
_DECODE_STEP = 64 * 1024  # most bytes one decompression step may produce


def image_kind(head: bytes) -> Any:
    """The `filetype` kind of ``head`` when it is an accepted image; PermanentError otherwise."""
    if not head:
        raise PermanentError("the content is not an image (the body is empty)")
    kind = filetype.guess(head)
    if kind is None:
        raise PermanentError("the content is not an image (unrecognised format)")
    if kind.mime not in ACCEPTED_MIMES:
        if kind.mime.startswith("image/"):
            raise PermanentError(f"the image format {kind.mime} is not accepted")
        raise PermanentError(f"the content is not an image (detected {kind.mime})")
    return kind


def _is_accepted(kind: Any) -> bool:
    return kind is not None and kind.mime in ACCEPTED_MIMES


def _too_large(cap: int) -> PermanentError:
    return PermanentError(f"the image is larger than {cap} bytes")


class _Decoder:
    """Undoes a Content-Encoding in bounded steps: no chunk ever inflates past _DECODE_STEP."""

    def __init__(self, encoding: str) -> None:
        name = encoding.strip().lower()
        self._zlib: Any = None
        if name in ("gzip", "x-gzip", "deflate"):
            self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
        elif name not in ("", "identity"):
            raise PermanentError(f"the content encoding {encoding!r:.40} is not supported")

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            if data:
                yield data
            return
        while True:
            out = self._zlib.decompress(data, _DECODE_STEP)
            data = self._zlib.unconsumed_tail
            if out:
                yield out
            if not data and len(out) < _DECODE_STEP:
                return

    def finish(self) -> Iterator[bytes]:
        if self._zlib is not None:
            if not self._zlib.eof:
                raise PermanentError("the compressed content is truncated")
            yield from self.feed(b"")


async def _decoded(response: FetchResponse, cap: int) -> AsyncGenerator[bytes, None]:
    """The decoded body, in chunks; PermanentError as soon as received or decoded bytes pass ``cap``."""
    length = response.header(b"content-length") or ""
    if length.isdigit() and int(length) > cap:
        raise _too_large(cap)
    decoder = _Decoder(response.header(b"content-encoding") or "")
    received = decoded = 0
    # aclosing: a generator left at a break is finalized now, not by the garbage collector.
    async with aclosing(cast(AsyncGenerator[bytes, None], aiter(response.stream))) as raw_chunks:
        async for raw in raw_chunks:
            received += len(raw)
            if received > cap:
                raise _too_large(cap)
            for piece in decoder.feed(raw):
                decoded += len(piece)
                if decoded > cap:
                    raise _too_large(cap)
                yield piece
    for piece in decoder.finish():
        decoded += len(piece)
        if decoded > cap:
            raise _too_large(cap)
        yield piece


async def read_head(response: FetchResponse, cap: int) -> bytes:
    """The first bytes of the body, enough to tell its format (at most what `filetype` inspects).

    Stops early once they are an accepted image: enough for a probe, as the
    worker checks the full head again when it downloads.
    """
    head = bytearray()
    async with aclosing(_decoded(response, cap)) as chunks:
        async for chunk in chunks:
            head += chunk
            if len(head) >= _HEAD_BYTES or _is_accepted(filetype.guess(bytes(head))):
                break
    return bytes(head[:_HEAD_BYTES])


class Spill:
    """The temporary file of one download, made only once its body outgrows memory.

    A body that ends before `_WRITE_BUFFER` bytes never touches the disk: it stays
    in the buffer `save_body` fills anyway (so memory per download is bounded by
    `_WRITE_BUFFER` either way), and costs no thread hop for a file.
    """

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self.path: Path | None = None
        self.file: BinaryIO | None = None

    async def write(self, data: bytearray) -> None:
        """Append ``data`` to the file (made on first use), in one thread hop."""
        await trio.to_thread.run_sync(self._write, data)

    def _write(self, data: bytearray) -> None:
        if self.file is None:
            self.path, self.file = open_temp(self._directory)
        self.file.write(data)

    async def finish(self, data: bytearray) -> None:
        """Write the rest and close the file, in one thread hop."""
        await trio.to_thread.run_sync(self._finish, data)

    def _finish(self, data: bytearray) -> None:
        self._write(data)
        assert self.file is not None
        self.file.close()

    async def discard(self) -> None:
        """Remove the file if one was made; shielded, never raises (runs in a `finally`)."""
        if self.path is not None and self.file is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(discard, self.path, self.file)


async def save_body(response: FetchResponse, spill: Spill, cap: int) -> tuple[int, Any, bytes | None]:
    """Stream the body; return (size, filetype kind, the body if it stayed in memory).

    The body stays in memory when it ends before `_WRITE_BUFFER` bytes; otherwise it
    goes to ``spill``'s file, one thread hop per `_WRITE_BUFFER`, and None is
    returned for it. Stops early on a non-image.
    """
    head = bytearray()
    kind = None
    pending = bytearray()
    size = 0
    async with aclosing(_decoded(response, cap)) as chunks:
        async for chunk in chunks:
            size += len(chunk)
            if kind is None:
                head += chunk[: _HEAD_BYTES - len(head)]
                if len(head) >= _HEAD_BYTES:
                    kind = image_kind(bytes(head))
            pending += chunk
            if len(pending) >= _WRITE_BUFFER:
                # The thread writes the buffer itself (no copy); it is cleared once written.
                await spill.write(pending)
                pending.clear()
    if kind is None:
        kind = image_kind(bytes(head))
    if spill.file is None:
        return size, kind, bytes(pending)
    await spill.finish(pending)
    return size, kind, None


def open_temp(directory: Path | None) -> tuple[Path, BinaryIO]:
    """A new temporary file for one download (blocking: call from a thread)."""
    fd, name = tempfile.mkstemp(prefix="jobsvc-", suffix=".download", dir=directory)
    return Path(name), open(fd, "wb")  # closed by discard


def discard(path: Path, file: BinaryIO) -> None:
    """Close and remove a download's temporary file (blocking: call from a thread); never raises."""
    # Runs in a `finally`: raising here would replace the exception that matters.
    try:
        file.close()
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove the temporary download %s", path, exc_info=True)
