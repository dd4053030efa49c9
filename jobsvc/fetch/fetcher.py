"""Safe download of untrusted URLs: the security boundary of jobsvc (DESIGN §5).

A client names any URL it likes, so every download is checked at four points:

1. the URL, syntactically (`_check_url`): http or https only, a host, no
   credentials; for the first hop and every redirect hop (at most 5, a loop is
   refused);
2. the address, at connect time (`_GuardedBackend`, an httpcore network
   backend): the host is resolved, every address must pass the policy
   (`is_public_address` unless ``allow_private_urls``), and the socket is
   connected to the address that was checked, so DNS rebinding and redirects
   to internal hosts are caught before a single byte is sent. TLS still
   verifies the certificate against the host name (httpcore passes the URL's
   host as ``server_hostname`` to ``start_tls``);
3. the size: a Content-Length over ``max_image_bytes`` is refused at once, and
   both the bytes received and the bytes decoded (Content-Encoding is undone
   here, in bounded steps, so a compression bomb cannot inflate memory) are
   counted against the cap while streaming;
4. the content: image-ness is decided from the bytes with `filetype`, never
   from Content-Type.

Accepted formats (`ACCEPTED_MIMES`): JPEG, PNG, APNG, GIF, WebP, BMP, TIFF,
AVIF, HEIC, ICO, JPEG 2000 and PSD: the image formats `filetype` 1.2 detects
that are ordinary raster images. Refused although `filetype` calls them
images: camera raw (CR2), JPEG XR, DWG drawings and GIMP's XCF. Not detected
by `filetype` at all, hence refused: SVG (also a script vector), JPEG XL,
animated AVIF, some HEIF brands, TGA, QOI. A magic-byte match means "claims to
be an image", not "decodes".

Errors (see `jobsvc.errors`)::

    PermanentError   scheme not http(s), credentials in the URL, an invalid URL
                     or host name (bad IDNA, empty or over-long label), a redirect
                     to an unparsable Location, blocked address, a host name
                     that resolves to nothing, 4xx except 408/429, not an image,
                     too large, too many redirects or a loop, an unsupported or
                     corrupt Content-Encoding
    TransientError   timeouts (connect, read, total), connection errors, 5xx,
                     408, 429, a body shorter than its Content-Length,
                     a local temporary file that cannot be written
    InvalidRequest   only from `Fetcher.probe`: "imgUrl is not a reachable image: …"

Our own decisions raise these where they are made; exceptions of the layers
below (httpx, httpcore, idna, trio, zlib, OS) are translated in one place,
`_translate_errors`. Cancellation is never translated. A refused address is
named in the error only when the URL spelled it: what a host name resolves to
is logged, never told to the client (enqueue would otherwise be a DNS oracle).

Every download gets its own connection pool (sharing the backend and one SSL
context), closed when the download ends: cancelling a download closes its
TCP connection at once, and no state is shared between jobs.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import ssl
import tempfile
import zlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO, cast

import filetype
import httpcore
import httpx
import trio

from jobsvc.config import Settings
from jobsvc.errors import InvalidRequest, JobError, PermanentError, TransientError, quoted

__all__ = [
    "ACCEPTED_MIMES",
    "MAX_REDIRECTS",
    "Download",
    "Fetcher",
    "IPAddress",
    "classify_status",
    "is_public_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5

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
_SHOWN_HOST = 80  # most characters of a host name an error repeats
_HEADERS = {
    "User-Agent": "jobsvc/0.1",
    "Accept": "image/*",
    # Images are compressed already; anything else sent anyway is decoded by _Decoder.
    "Accept-Encoding": "identity",
}

_SHARED_V4 = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64_V6 = ipaddress.IPv6Network("64:ff9b::/96")  # embeds an IPv4 address (RFC 6052)


# --------------------------------------------------------------------------- pure rules


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses.

    Addresses that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged
    by the address they embed; Teredo and IPv4-compatible (``::a.b.c.d``)
    addresses are refused outright.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64_V6:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if ip.teredo is not None or ip.is_site_local:
            return False
    elif ip in _SHARED_V4:
        return False
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return False
    return ip.is_global


def classify_status(status_code: int) -> type[JobError] | None:
    """None for 2xx; TransientError for 408, 429 and 5xx; PermanentError otherwise."""
    if 200 <= status_code <= 299:
        return None
    if status_code in (408, 429) or 500 <= status_code <= 599:
        return TransientError
    return PermanentError


def _status_text(status_code: int) -> str:
    # The server's own reason phrase is untrusted text: use the standard one.
    try:
        return f"{status_code} {HTTPStatus(status_code).phrase}"
    except ValueError:
        return str(status_code)


def _check_url(url: str | httpx.URL) -> httpx.URL:
    """Syntactic checks, for the first hop and every redirect hop."""
    parsed = httpx.URL(url)  # httpx.InvalidURL and IDNAError are translated by _translate_errors
    if parsed.scheme not in ("http", "https"):
        raise PermanentError(f"only http and https URLs can be fetched, not {parsed.scheme or 'this'!r:.20}")
    if not parsed.host:
        raise PermanentError("the URL names no host")
    if parsed.userinfo:
        raise PermanentError("the URL must not carry credentials")
    if parsed.port is not None and not 0 < parsed.port <= 65535:  # httpx parses any number
        raise PermanentError("the URL's port is not a TCP port (1 to 65535)")
    return parsed


async def _check_redirect(response: httpx.Response) -> None:
    """An httpx response hook: a redirect's Location must parse as a URL we could fetch.

    httpx builds the next request (``response.next_request``) inside ``send``,
    right after this hook, and its errors there are transport errors (an
    unparsable Location is a ``RemoteProtocolError``, a bad IDNA host an
    ``IDNAError``) that would read as a transient failure, or escape as an
    unexpected one. Building the target the way httpx does, here, makes a bad
    Location a PermanentError (httpx closes the response). The next hop's
    policy checks (`_check_url`, the address guard) stay where they are.
    """
    if not response.has_redirect_location:
        return
    location = response.headers["Location"]
    try:
        target = httpx.URL(location)
        if target.scheme and not target.host:
            target = target.copy_with(host=response.request.url.host)
        if target.is_relative_url:
            target = response.request.url.join(target)
        target.host  # noqa: B018 (IDNA-decodes the host, as httpx will: raises on an invalid A-label)
    except (httpx.InvalidURL, UnicodeError) as exc:
        reason = f"{exc!s:.100}"
        raise PermanentError(f"the server redirects to an invalid URL {quoted(location)} ({reason})") from exc


def _image_kind(head: bytes) -> Any:
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


# --------------------------------------------------------------------------- network seam


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address against ``allow``, then connects to a checked address.

    A refused address raises PermanentError before any connection is attempted.
    Cancelling ``connect_tcp`` abandons the DNS lookup and closes any half-open socket.
    """

    def __init__(
        self, allow: Callable[[IPAddress], bool], inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._inner = inner or httpcore.TrioBackend()
        self._allow = allow

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = trio.current_time() + (float("inf") if timeout is None else timeout)
        addresses = await self._resolve(host, port, deadline)
        error: Exception = httpcore.ConnectError(f"{host} has no address to connect to")
        for ip in addresses:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise httpcore.ConnectTimeout(f"connecting to {host} took too long")
            try:
                return await self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:  # try the next address, as a resolver-aware client does
                error = exc
        raise error

    async def _resolve(self, host: str, port: int, deadline: float) -> list[IPAddress]:
        shown = host if len(host) <= _SHOWN_HOST else host[:_SHOWN_HOST] + "…"  # a Location can be long
        with trio.move_on_at(deadline):
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                    raise PermanentError(f"the host name {shown} does not resolve") from exc
                raise httpcore.ConnectError(f"could not resolve {shown}: {exc.strerror}") from exc
            except UnicodeError as exc:  # the IDNA codec: an empty or over-long label
                raise PermanentError(f"the host name {shown} is not a valid DNS name") from exc
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
            if not addresses:
                raise PermanentError(f"the host name {shown} does not resolve")
            for ip in addresses:
                if not self._allow(ip):
                    if str(ip) == host:  # the URL spelled the address: no secret in saying it
                        raise PermanentError(f"the address {ip} is not allowed")
                    log.warning("refused %s: it resolves to %s, which is not allowed", host, ip)
                    raise PermanentError(f"{shown} resolves to an address that is not allowed")
            return addresses
        raise httpcore.ConnectTimeout(f"resolving {host} took too long")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise PermanentError("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class _PoolTransport(httpx.AsyncBaseTransport):
    """httpx's view of an httpcore pool: httpx's own transport cannot take a network backend."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        response = await self._pool.handle_async_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_PoolStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _PoolStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        await self._stream.aclose()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle takes tens of milliseconds: once per process, shared by all."""
    return httpx.create_ssl_context(trust_env=False)


# --------------------------------------------------------------------------- body


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


async def _body(response: httpx.Response, cap: int) -> AsyncGenerator[bytes, None]:
    """The decoded body, in chunks; PermanentError as soon as received or decoded bytes pass ``cap``."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > cap:
        raise _too_large(cap)
    decoder = _Decoder(response.headers.get("Content-Encoding", ""))
    received = decoded = 0
    async with aclosing(cast(AsyncGenerator[bytes, None], response.aiter_raw())) as raw_chunks:
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


async def _save_body(response: httpx.Response, file: BinaryIO, cap: int) -> tuple[int, Any]:
    """Stream the body into ``file``; return (size, filetype kind). Stops early on a non-image."""
    head = bytearray()
    kind = None
    pending = bytearray()
    size = 0
    async with aclosing(_body(response, cap)) as chunks:
        async for chunk in chunks:
            size += len(chunk)
            if kind is None:
                head += chunk[: _HEAD_BYTES - len(head)]
                if len(head) >= _HEAD_BYTES:
                    kind = _image_kind(bytes(head))
            pending += chunk
            if len(pending) >= _WRITE_BUFFER:
                # The thread writes the buffer itself (no copy); it is cleared once written.
                await trio.to_thread.run_sync(file.write, pending)
                pending.clear()
    if kind is None:
        kind = _image_kind(bytes(head))
    await trio.to_thread.run_sync(file.write, pending)
    await trio.to_thread.run_sync(file.flush)
    return size, kind


@contextmanager
def _translate_errors(timeout_message: str) -> Iterator[None]:
    """The one place where exceptions of the layers below become PermanentError/TransientError."""
    try:
        yield
    except trio.TooSlowError as exc:
        raise TransientError(timeout_message) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpcore.UnsupportedProtocol) as exc:
        raise PermanentError(f"the URL cannot be fetched: {exc}") from exc
    except UnicodeError as exc:  # idna.IDNAError: httpx IDNA-decodes an "xn--" host when asked for it
        raise PermanentError(f"the URL's host is not a valid internationalized domain name ({exc})") from exc
    except (httpx.ConnectTimeout, httpcore.ConnectTimeout) as exc:
        raise TransientError("the server could not be reached in time") from exc
    except (httpx.TimeoutException, httpcore.TimeoutException) as exc:
        raise TransientError("the server did not answer in time") from exc
    except (httpx.ConnectError, httpcore.ConnectError) as exc:
        raise TransientError(f"could not connect to the server ({exc})") from exc
    except (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise TransientError(f"the connection failed during the download ({exc})") from exc
    except zlib.error as exc:
        raise PermanentError("the compressed content could not be decoded") from exc
    except OSError as exc:
        raise TransientError(f"could not write the download to a temporary file ({exc.strerror})") from exc


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True, slots=True)
class Download:
    """A verified image in a local temporary file, valid inside `Fetcher.download`'s block."""

    path: Path
    size: int
    mime: str
    extension: str


def _open_temp(directory: Path | None) -> tuple[Path, BinaryIO]:
    fd, name = tempfile.mkstemp(prefix="jobsvc-", suffix=".download", dir=directory)
    return Path(name), open(fd, "wb")  # closed by _discard


def _discard(path: Path, file: BinaryIO) -> None:
    # Runs in a `finally`: raising here would replace the exception that matters.
    try:
        file.close()
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove the temporary download %s", path, exc_info=True)


def _allow_any(ip: IPAddress) -> bool:
    return True


class Fetcher:
    """Downloads untrusted URLs safely (see the module docstring).

    ``allow`` overrides the address policy (tests use it to allow loopback only);
    by default it is `is_public_address`, or anything when
    ``settings.allow_private_urls``. ``tmp_dir`` is where downloads are spooled
    (default: the system temporary directory).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        allow: Callable[[IPAddress], bool] | None = None,
        tmp_dir: Path | None = None,
    ) -> None:
        self._settings = settings
        if allow is None:
            allow = _allow_any if settings.allow_private_urls else is_public_address
        self._backend = _GuardedBackend(allow)
        self._ssl_context = _ssl_context()
        self._tmp_dir = tmp_dir
        self._timeout = httpx.Timeout(settings.fetch_timeout, connect=settings.connect_timeout)

    async def aclose(self) -> None:
        """Nothing is pooled across downloads, so there is nothing left to close."""

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[Download]:
        """Download ``url`` into a temporary file and yield it as a verified `Download`.

        The whole transfer (DNS, connect, redirects, body) is bounded by
        ``fetch_timeout``; the block of the ``async with`` is not. The
        temporary file is removed when the block exits, whether it returns,
        raises or is cancelled. On cancellation the HTTP connection is closed
        at once and `trio.Cancelled` propagates untranslated.
        """
        timeout_message = f"the download took longer than {self._settings.fetch_timeout:g} seconds"
        with _translate_errors(timeout_message):
            path, file = await trio.to_thread.run_sync(_open_temp, self._tmp_dir)
        try:
            with _translate_errors(timeout_message), trio.fail_after(self._settings.fetch_timeout):
                async with self._response(url) as response:
                    size, kind = await _save_body(response, file, self._settings.max_image_bytes)
            await trio.to_thread.run_sync(file.close)
            yield Download(path=path, size=size, mime=kind.mime, extension=kind.extension)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_discard, path, file)

    async def probe(self, url: str) -> None:
        """Enqueue-time check: the address rules, then the first bytes must be an accepted image.

        Bounded by ``probe_timeout``. Raises `InvalidRequest` with the reason.
        Cancelling it closes the connection.
        """
        timeout_message = f"the server did not answer within {self._settings.probe_timeout:g} seconds"
        try:
            with _translate_errors(timeout_message), trio.fail_after(self._settings.probe_timeout):
                async with self._response(url) as response:
                    head = bytearray()
                    async with aclosing(_body(response, self._settings.max_image_bytes)) as chunks:
                        async for chunk in chunks:
                            head += chunk
                            # An accepted match on fewer bytes is enough for a probe: the
                            # worker checks the full head again when it downloads.
                            if len(head) >= _HEAD_BYTES or _is_accepted(filetype.guess(bytes(head))):
                                break
                    _image_kind(bytes(head[:_HEAD_BYTES]))
        except JobError as exc:
            raise InvalidRequest(f"imgUrl is not a reachable image: {exc}") from exc

    @asynccontextmanager
    async def _response(self, url: str) -> AsyncIterator[httpx.Response]:
        """The final response after checked redirects, with a 2xx status; everything closed on exit."""
        pool = httpcore.AsyncConnectionPool(ssl_context=self._ssl_context, network_backend=self._backend)
        client = httpx.AsyncClient(
            transport=_PoolTransport(pool),
            trust_env=False,
            timeout=self._timeout,
            headers=_HEADERS,
            follow_redirects=False,
            event_hooks={"response": [_check_redirect]},
        )
        try:
            request = client.build_request("GET", _check_url(url))
            seen = {str(request.url)}
            for _hop in range(MAX_REDIRECTS + 1):
                response = await client.send(request, stream=True)
                if response.next_request is None:
                    break
                await response.aclose()
                request = response.next_request
                _check_url(request.url)
                if str(request.url) in seen:
                    raise PermanentError("the server redirects in a loop")
                seen.add(str(request.url))
            else:
                raise PermanentError(f"the server redirected more than {MAX_REDIRECTS} times")
            try:
                error = classify_status(response.status_code)
                if error is not None:
                    raise error(f"the server answered {_status_text(response.status_code)}")
                yield response
            finally:
                await _close_shielded(response.aclose)
        finally:
            # Shielded: under a cancellation, an unshielded close raises at its first
            # checkpoint and can leave the socket open until garbage collection.
            await _close_shielded(client.aclose)


async def _close_shielded(aclose: Callable[[], Awaitable[None]]) -> None:
    """Close a response or client even while cancelled, bounded to one second."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await aclose()
