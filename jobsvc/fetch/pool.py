"""Keep-alive connections for the fetcher that never weaken the guard.

`GuardedTransport` keeps one small pool of httpcore HTTP/1.1 connections per (origin,
checked addresses); every request resolves and checks its host first
(`guard.GuardedBackend.resolve`) and is sent only on a pool whose connections go to
exactly the addresses that lookup returned. `FetchResponse` is one response, its body
streamed. See docs/ARCHITECTURE.md, "The fetcher".
"""

from __future__ import annotations

import functools
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterable

import httpcore
import httpx
import trio

from jobsvc.fetch.guard import GuardedBackend
from jobsvc.fetch.policy import IPAddress

__all__ = ["FetchResponse", "GuardedTransport", "ssl_context"]

_PoolKey = tuple[bytes, bytes, int, frozenset[IPAddress]]

#: Errors of a request on a kept-alive connection that the server closed meanwhile
#: (it races our reuse): raised before any response, so one more try is safe for a GET.
_STALE_CONNECTION = (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)


class _Pool:
    """The kept-alive connections of one (origin, checked addresses): it connects only to
    those addresses, which `GuardedBackend.resolve` returned and checked for the request
    that made the pool; every later request reaches the pool only after its own lookup
    returned the same set (`GuardedTransport`).

    Idle connections are a stack (the most recently used first: the least likely to have
    expired); one is reused only while httpcore says it is idle and not expired (its
    keep-alive expiry, or the server closed it: the socket is readable). httpcore's own
    pool re-examined every connection on every request and every close (a `select` each),
    about a third of a small image's CPU at concurrency 16.
    """

    def __init__(
        self,
        guard: GuardedBackend,
        addresses: tuple[IPAddress, ...],
        ssl_context: ssl.SSLContext,
        *,
        max_idle: int,
        keepalive_expiry: float,
    ) -> None:
        self._guard = guard
        self._addresses = addresses
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self.idle: list[httpcore.AsyncHTTP11Connection] = []
        self.users = 0  # requests whose response is still open
        self._closed = False  # the transport closed it (evicted, or shut down): keep nothing

    async def send(self, request: httpcore.Request) -> FetchResponse:
        """Send ``request`` on an idle connection (once more on a new one if the server had
        closed it meanwhile) or on a new one; the response owns its connection until closed."""
        connection = await self._connection(request)
        try:
            response = await connection.handle_async_request(request)
        except _STALE_CONNECTION:
            await _close_connection(connection)
            connection = await self._connection(request)
            try:
                response = await connection.handle_async_request(request)
            except BaseException:
                await _close_connection(connection)
                raise
        except BaseException:
            await _close_connection(connection)
            raise
        return FetchResponse(response, self, connection)

    async def _connection(self, request: httpcore.Request) -> httpcore.AsyncHTTP11Connection:
        while self.idle:
            connection = self.idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            await _close_connection(connection)
        url = request.url
        host = url.host.decode("ascii")
        timeout = request.extensions.get("timeout", {}).get("connect")
        deadline = trio.current_time() + (float("inf") if timeout is None else timeout)
        port = url.port or (443 if url.scheme == b"https" else 80)
        stream = await self._guard.connect_checked(host, self._addresses, port, deadline)
        if url.scheme == b"https":
            try:
                # TLS verifies the certificate against the URL's host name, not the address.
                stream = await stream.start_tls(
                    self._ssl_context, server_hostname=host, timeout=max(deadline - trio.current_time(), 0.0)
                )
            except BaseException:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                raise
        return httpcore.AsyncHTTP11Connection(
            origin=url.origin, stream=stream, keepalive_expiry=self._keepalive_expiry
        )

    async def release(self, connection: httpcore.AsyncHTTP11Connection) -> None:
        """Take back a response's connection: kept if it is idle again (its body was read to
        the end) and there is room, closed otherwise."""
        if connection.is_idle() and len(self.idle) < self._max_idle and not self._closed:
            self.idle.append(connection)
        else:
            await _close_connection(connection)

    async def aclose(self) -> None:
        """Close the idle connections; those of open responses are closed when released."""
        self._closed = True
        idle, self.idle = self.idle, []
        for connection in idle:
            await _close_connection(connection)


async def _close_connection(connection: httpcore.AsyncHTTP11Connection) -> None:
    # Shielded and bounded: a socket must be closed even while cancelled.
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await connection.aclose()


class FetchResponse:
    """One response from `GuardedTransport.send`: status, raw headers, and the body as it
    arrives (``async for chunk in response.stream``). `aclose` releases it: a body read to
    its end returns the connection to its pool, one closed earlier closes the connection."""

    __slots__ = ("_connection", "_pool", "_response", "headers", "status", "stream")

    def __init__(
        self, response: httpcore.Response, pool: _Pool, connection: httpcore.AsyncHTTP11Connection
    ) -> None:
        self.status = response.status
        self.headers = response.headers
        assert isinstance(response.stream, AsyncIterable)
        self.stream: AsyncIterable[bytes] = response.stream
        self._response = response
        self._pool: _Pool | None = pool  # counted as a user of its pool until closed
        self._connection = connection

    def header(self, name: bytes) -> str | None:
        """The value of header ``name`` (lower case), several joined with ", " as httpx does;
        None when absent. Decoded as UTF-8, else Latin-1: header bytes are untrusted."""
        values = [value for key, value in self.headers if key.lower() == name]
        if not values:
            return None
        joined = b", ".join(values)
        try:
            return joined.decode("utf-8")
        except UnicodeDecodeError:
            return joined.decode("latin-1")

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            # httpcore makes the connection idle again only if the body was read to its end.
            await self._response.aclose()
        finally:
            try:
                await pool.release(self._connection)  # closed unless idle again
            finally:
                pool.users -= 1


class GuardedTransport:
    """Keep-alive connections without weakening the guard: one pool per (origin, checked addresses).

    Every request, every redirect hop included, resolves its host and checks every
    address first (`GuardedBackend.resolve`), exactly as a fresh connection would;
    a refused address fails here, before any pool is chosen. The request then goes
    to the pool keyed by its scheme, host, port *and the set of addresses this
    lookup returned*, which connects only to those addresses. So a reused
    connection is always to an address this request's own lookup returned and the
    rule allowed: a host that now resolves elsewhere gets another pool (a fresh,
    checked connection), never the old socket.

    The fetcher drives httpcore's HTTP/1.1 connections directly (`send`, `_Pool`):
    httpx's client layer (request and response models, cookies, hooks) and
    httpcore's connection pool cost about half of a small image's CPU, and the
    fetcher does its own redirects, headers and timeouts anyway.

    A response closed before its end (an error, a cancelled download) closes its
    connection (httpcore does not make a half-read connection idle again), so
    cancellation still drops the TCP connection at once. Idle connections expire
    after ``keepalive_expiry`` seconds; at most ``max_pools`` pools are kept (idle
    ones are closed first), each with at most ``max_idle`` idle connections.
    """

    def __init__(
        self,
        guard: GuardedBackend,
        ssl_context: ssl.SSLContext,
        *,
        max_pools: int = 16,
        max_idle: int = 16,
        keepalive_expiry: float = 2.0,
    ) -> None:
        self._guard = guard
        self._ssl_context = ssl_context
        ssl_context.set_alpn_protocols(["http/1.1"])  # as httpcore sets it: HTTP/1.1 only
        self._max_pools = max_pools
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._pools: OrderedDict[_PoolKey, _Pool] = OrderedDict()

    @property
    def pool_count(self) -> int:
        return len(self._pools)

    async def send(
        self, url: httpx.URL, headers: list[tuple[bytes, bytes]], timeouts: dict[str, float]
    ) -> FetchResponse:
        """GET ``url`` (checked by `policy.check_url`) with ``headers``; the response's head.

        ``timeouts`` are httpcore's (``connect``, ``read``, ``write``); resolving and
        connecting share the connect timeout. Close the response with `FetchResponse.aclose`.
        """
        scheme, raw_host = url.raw_scheme, url.raw_host
        port = url.port or (443 if scheme == b"https" else 80)
        connect = timeouts.get("connect")
        started = trio.current_time()
        addresses = await self._guard.resolve(raw_host.decode("ascii"), port, connect)
        if connect is not None:
            timeouts = {**timeouts, "connect": max(connect - (trio.current_time() - started), 0.0)}
        request = httpcore.Request(
            method=b"GET",
            url=httpcore.URL(scheme=scheme, host=raw_host, port=url.port, target=url.raw_path),
            headers=[(b"Host", url.netloc), *headers],
            extensions={"timeout": timeouts},
        )
        pool = await self._acquire((scheme, raw_host, port, frozenset(addresses)), addresses)
        try:
            return await pool.send(request)
        except BaseException:
            pool.users -= 1
            raise

    async def _acquire(self, key: _PoolKey, addresses: tuple[IPAddress, ...]) -> _Pool:
        """The pool for ``key``, counted as used (before any await: eviction skips it)."""
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            pool.users += 1
            return pool
        pool = _Pool(
            self._guard,
            addresses,
            self._ssl_context,
            max_idle=self._max_idle,
            keepalive_expiry=self._keepalive_expiry,
        )
        pool.users += 1
        self._pools[key] = pool
        idle = [k for k, p in self._pools.items() if p.users == 0]
        for old in idle[: max(len(self._pools) - self._max_pools, 0)]:
            await self._pools.pop(old).aclose()
        return pool

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle takes tens of milliseconds: once per process, shared by all."""
    return httpx.create_ssl_context(trust_env=False)
