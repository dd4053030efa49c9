"""`Fetcher`: the probe at enqueue and the download in the worker, composed from the checks.

Each request goes through `policy.check_url` (every hop, at most
`policy.MAX_REDIRECTS` redirects, a loop refused, every Location checked by
`policy.redirect_target`), connects through `guard.GuardedBackend`, must answer
2xx (`policy.classify_status`), and its body is read by `body` under the size
cap and checked by its bytes. See docs/ARCHITECTURE.md, "The fetcher".

Our own decisions raise PermanentError/TransientError where they are made;
exceptions of the layers below (httpx, httpcore, idna, trio, zlib, OS) are
translated in one place, `_translate_errors`. Cancellation is never translated.

One `pool.GuardedTransport` per `Fetcher`, driving httpcore's HTTP/1.1
connections in its own keep-alive pools (no httpx client, no httpcore pool:
together they were about half of a small download's CPU): connections are kept
alive between jobs, but every request resolves and checks its host again and
only reuses a connection to an address that lookup returned (see
`GuardedTransport`). A response closed before its end (an error, a cancelled
download) closes its TCP connection at once. Nothing keeps cookies, so nothing
but idle sockets is shared between jobs. httpx's URL type still parses every
URL and Location (`policy`), as before.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpcore
import httpx
import trio

from jobsvc.config import Settings
from jobsvc.errors import InvalidRequest, JobError, PermanentError, TransientError
from jobsvc.fetch import body, policy
from jobsvc.fetch.guard import GuardedBackend
from jobsvc.fetch.policy import IPAddress
from jobsvc.fetch.pool import FetchResponse, GuardedTransport
from jobsvc.fetch.pool import ssl_context as default_ssl_context

__all__ = ["Download", "Fetcher"]

#: Sent with every request, after Host. No cookies, no credentials: nothing carries between jobs.
_HEADERS = [
    (b"User-Agent", b"jobsvc/0.1"),
    (b"Accept", b"image/*"),
    # Images are compressed already; anything else sent anyway is decoded by the body reader.
    (b"Accept-Encoding", b"identity"),
]


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


@dataclass(frozen=True, slots=True)
class Download:
    """A verified image, valid inside `Fetcher.download`'s block: in memory (``data``) when it
    is under 256 KiB, else in a local temporary file (``path``); exactly one of them is set."""

    size: int
    mime: str
    extension: str
    path: Path | None = None
    data: bytes | None = None


class Fetcher:
    """Downloads untrusted URLs safely (see the `jobsvc.fetch` docstring).

    ``allow`` overrides the address policy (tests use it to allow loopback only);
    by default it is `is_public_address`, or anything when
    ``settings.allow_private_urls``. ``tmp_dir`` is where downloads are spooled
    (default: the system temporary directory). ``ssl_context`` verifies https
    servers (default: the certifi bundle, `pool.ssl_context`; tests pass their own CA).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        allow: Callable[[IPAddress], bool] | None = None,
        tmp_dir: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        if allow is None:
            allow = policy.allow_any if settings.allow_private_urls else policy.is_public_address
        self._backend = GuardedBackend(allow)
        self._ssl_context = ssl_context or default_ssl_context()
        self._tmp_dir = tmp_dir
        # httpcore's per-phase timeouts, as httpx.Timeout(fetch_timeout, connect=connect_timeout) gave.
        total = settings.fetch_timeout
        self._timeouts = {"connect": settings.connect_timeout, "read": total, "write": total, "pool": total}
        self._transport = GuardedTransport(self._backend, self._ssl_context)

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        await _close_shielded(self._transport.aclose)

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[Download]:
        """Download ``url`` and yield it as a verified `Download` (in memory or a temporary file).

        The whole transfer (DNS, connect, redirects, body) is bounded by
        ``fetch_timeout``; the block of the ``async with`` is not. The
        temporary file, if one was needed, is removed when the block exits,
        whether it returns, raises or is cancelled. On cancellation the HTTP
        connection is closed at once and `trio.Cancelled` propagates untranslated.
        """
        timeout_message = f"the download took longer than {self._settings.fetch_timeout:g} seconds"
        spill = body.Spill(self._tmp_dir)
        try:
            with _translate_errors(timeout_message), trio.fail_after(self._settings.fetch_timeout):
                async with self._response(url) as response:
                    size, kind, data = await body.save_body(response, spill, self._settings.max_image_bytes)
            yield Download(size=size, mime=kind.mime, extension=kind.extension, path=spill.path, data=data)
        finally:
            await spill.discard()

    async def probe(self, url: str) -> None:
        """Enqueue-time check: the address rules, then the first bytes must be an accepted image.

        Bounded by ``probe_timeout``. Raises `InvalidRequest` with the reason.
        Cancelling it closes the connection.
        """
        timeout_message = f"the server did not answer within {self._settings.probe_timeout:g} seconds"
        try:
            with _translate_errors(timeout_message), trio.fail_after(self._settings.probe_timeout):
                async with self._response(url) as response:
                    body.image_kind(await body.read_head(response, self._settings.max_image_bytes))
        except JobError as exc:
            raise InvalidRequest(f"imgUrl is not a reachable image: {exc}") from exc

    @asynccontextmanager
    async def _response(self, url: str) -> AsyncIterator[FetchResponse]:
        """The final response after checked redirects, with a 2xx status; everything closed on exit."""
        transport = self._transport
        response: FetchResponse | None = None
        try:
            target = policy.check_url(url)
            seen = {str(target)}
            for _hop in range(policy.MAX_REDIRECTS + 1):
                response = await transport.send(target, _HEADERS, self._timeouts)
                location = policy.redirect_target(target, response.status, response.header(b"location"))
                if location is None:
                    break
                await _close_shielded(response.aclose)
                response = None
                target = policy.check_url(location)
                if str(target) in seen:
                    raise PermanentError("the server redirects in a loop")
                seen.add(str(target))
            else:
                raise PermanentError(f"the server redirected more than {policy.MAX_REDIRECTS} times")
            assert response is not None
            error = policy.classify_status(response.status)
            if error is not None:
                raise error(f"the server answered {policy.status_text(response.status)}")
            yield response
        finally:
            # Shielded: under a cancellation, an unshielded close raises at its first
            # checkpoint and can leave the socket open until garbage collection. A
            # response closed before its end closes its connection: only a response
            # read to its end returns its connection to the pool.
            if response is not None:
                await _close_shielded(response.aclose)


async def _close_shielded(aclose: Callable[[], Awaitable[None]]) -> None:
    """Close a response or client even while cancelled, bounded to one second."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + 1.0):  # one scope: both at once
        await aclose()
