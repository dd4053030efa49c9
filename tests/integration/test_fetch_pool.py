"""Kept-alive connections in the fetcher (`pool.GuardedTransport`) never weaken the guard.

A keep-alive server listens on two loopback addresses (127.0.0.1 and
127.0.0.2, same port) and records, per request, which address it was reached
on and from which client port (one port = one TCP connection). A fake resolver
(trio's public `set_custom_hostname_resolver`) answers ``pool.test`` with
whatever address the test sets, so the tests can move the name between
requests, as DNS rebinding would.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from jobsvc.config import Settings
from jobsvc.errors import PermanentError
from jobsvc.fetch import Fetcher, IPAddress
from tests.fixtures.images import PNG

ALLOWED = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("127.0.0.2")}


@dataclass(frozen=True)
class Seen:
    server: str  # the address the request reached
    client_port: int  # one TCP connection
    cookie: str | None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: no Connection: close
    disable_nagle_algorithm = True
    server: _KeepAliveServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.connection.settimeout(5)
        with self.server.lock:
            self.server.seen.append(
                Seen(self.connection.getsockname()[0], self.client_address[1], self.headers.get("Cookie"))
            )
        if self.path.startswith("/slow/"):
            self._drip()
            return
        if self.path.startswith("/hangup/"):
            # Answers, then closes the connection without having said so (no Connection: close):
            # the client finds out only from the socket.
            self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.send_header("Set-Cookie", f"session={uuid.uuid4().hex}; Path=/")
        self.end_headers()
        self.wfile.write(PNG)

    def _drip(self) -> None:
        """A PNG that claims 10 MB and arrives one byte per 20 ms, until the client closes."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(PNG) + 10_000_000))
        self.end_headers()
        try:
            self.wfile.write(PNG)
            for _ in range(500):
                self.wfile.write(b"\x00")
                if self.server.closed.wait(0.02):
                    break
        except OSError:
            self.server.closed.set()
        self.close_connection = True


class _KeepAliveServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], seen: list[Seen], lock: threading.Lock, closed: threading.Event
    ) -> None:
        self.seen = seen
        self.lock = lock
        self.closed = closed
        super().__init__(address, _Handler)


@dataclass
class KeepAlive:
    port: int
    seen: list[Seen]
    lock: threading.Lock
    closed: threading.Event  # set when a client closed the slow route's connection

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)


@pytest.fixture
def keep_alive() -> Iterator[KeepAlive]:
    seen: list[Seen] = []
    lock = threading.Lock()
    closed = threading.Event()
    first = _KeepAliveServer(("127.0.0.1", 0), seen, lock, closed)
    port = first.server_address[1]
    try:
        second = _KeepAliveServer(("127.0.0.2", port), seen, lock, closed)
    except OSError:
        first.server_close()
        pytest.skip("127.0.0.2 is not usable here")
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for s in (first, second)
    ]
    for thread in threads:
        thread.start()
    try:
        yield KeepAlive(port, seen, lock, closed)
    finally:
        for s in (first, second):
            s.shutdown()
            s.server_close()


class MovableResolver(trio.abc.HostnameResolver):
    """Every ``*.test`` name resolves to ``self.address``; numeric hosts resolve to themselves."""

    def __init__(self) -> None:
        self.address = "127.0.0.1"

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        address = self.address if (host or b"").endswith(b".test") else (host or b"").decode()
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> Any:
        raise NotImplementedError


@pytest.fixture
async def dns() -> AsyncIterator[MovableResolver]:
    resolver = MovableResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        yield resolver
    finally:
        trio.socket.set_custom_hostname_resolver(None)


def two_loopbacks(ip: IPAddress) -> bool:
    return ip in ALLOWED


@pytest.fixture
async def fetcher(tmp_path: Path) -> AsyncIterator[Fetcher]:
    settings = Settings(allow_private_urls=False, fetch_timeout=5, connect_timeout=2)
    fetcher = Fetcher(settings, allow=two_loopbacks, tmp_dir=tmp_path)
    try:
        yield fetcher
    finally:
        await fetcher.aclose()


async def fetch(fetcher: Fetcher, url: str) -> bytes | None:
    async with fetcher.download(url) as download:
        return download.data


async def test_a_connection_is_reused_for_the_same_checked_address(
    keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher
) -> None:
    url = f"http://pool.test:{keep_alive.port}/x.png"
    for _ in range(3):
        assert await fetch(fetcher, url) == PNG
    seen = keep_alive.requests()
    assert [s.server for s in seen] == ["127.0.0.1"] * 3
    assert len({s.client_port for s in seen}) == 1  # one TCP connection for the three


async def test_a_host_that_now_resolves_elsewhere_gets_a_new_connection(
    keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher
) -> None:
    url = f"http://pool.test:{keep_alive.port}/x.png"
    await fetch(fetcher, url)
    dns.address = "127.0.0.2"
    await fetch(fetcher, url)
    first, second = keep_alive.requests()
    assert (first.server, second.server) == ("127.0.0.1", "127.0.0.2")
    assert first.client_port != second.client_port


async def test_a_host_that_now_resolves_to_a_refused_address_never_reuses_the_old_connection(
    keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher
) -> None:
    url = f"http://pool.test:{keep_alive.port}/x.png"
    await fetch(fetcher, url)
    dns.address = "10.0.0.1"  # rebinding to an internal address: refused before any pool
    with pytest.raises(PermanentError, match="resolves to an address that is not allowed"):
        await fetch(fetcher, url)
    assert len(keep_alive.requests()) == 1  # the idle connection to 127.0.0.1 was not used


async def test_a_pooled_connection_is_not_shared_between_host_names(
    keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher
) -> None:
    # Same address, different name: another origin, so another connection (TLS would
    # verify another name on it).
    await fetch(fetcher, f"http://pool.test:{keep_alive.port}/x.png")
    await fetch(fetcher, f"http://127.0.0.1:{keep_alive.port}/x.png")
    first, second = keep_alive.requests()
    assert first.client_port != second.client_port


async def test_cookies_never_carry_from_one_download_to_the_next(
    keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher
) -> None:
    url = f"http://pool.test:{keep_alive.port}/x.png"
    for _ in range(3):
        await fetch(fetcher, url)
    assert [s.cookie for s in keep_alive.requests()] == [None, None, None]


async def test_a_cancelled_download_closes_its_kept_alive_connection_at_once(
    keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher
) -> None:
    await fetch(fetcher, f"http://pool.test:{keep_alive.port}/x.png")  # a connection to reuse
    with trio.move_on_after(0.3) as scope:
        await fetch(fetcher, f"http://pool.test:{keep_alive.port}/slow/x.png")
    assert scope.cancelled_caught
    assert await trio.to_thread.run_sync(keep_alive.closed.wait, 1.0)  # the server saw the close
    await fetch(fetcher, f"http://pool.test:{keep_alive.port}/x.png")
    first, slow, last = keep_alive.requests()
    assert slow.client_port == first.client_port  # the slow one reused the idle connection...
    assert last.client_port != slow.client_port  # ...which was closed, not pooled, on cancel


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher
) -> None:
    assert await fetch(fetcher, f"http://pool.test:{keep_alive.port}/hangup/x.png") == PNG
    assert await fetch(fetcher, f"http://pool.test:{keep_alive.port}/x.png") == PNG
    first, second = keep_alive.requests()
    assert second.client_port != first.client_port


async def test_concurrent_downloads_each_get_a_connection_and_give_it_back(
    keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher
) -> None:
    url = f"http://pool.test:{keep_alive.port}/x.png"
    bodies: list[bytes | None] = []

    async def one() -> None:
        bodies.append(await fetch(fetcher, url))

    for _ in range(3):  # three rounds of four at once: at most four connections in all
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
    assert bodies == [PNG] * 12
    ports = {s.client_port for s in keep_alive.requests()}
    assert 1 <= len(ports) <= 4


async def test_idle_pools_are_bounded(keep_alive: KeepAlive, dns: MovableResolver, fetcher: Fetcher) -> None:
    for n in range(24):
        await fetch(fetcher, f"http://host{n}.test:{keep_alive.port}/x.png")
    assert fetcher._transport.pool_count <= 16  # the oldest idle pools (and sockets) were closed
    assert len(keep_alive.requests()) == 24


# --------------------------------------------------------------------------- small bodies in memory


async def test_a_small_body_in_memory_is_still_size_capped(
    keep_alive: KeepAlive, dns: MovableResolver, tmp_path: Path
) -> None:
    settings = Settings(allow_private_urls=False, fetch_timeout=5, max_image_bytes=len(PNG) - 1)
    fetcher = Fetcher(settings, allow=two_loopbacks, tmp_dir=tmp_path)
    try:
        with pytest.raises(PermanentError, match=f"larger than {len(PNG) - 1} bytes"):
            await fetch(fetcher, f"http://pool.test:{keep_alive.port}/x.png")
    finally:
        await fetcher.aclose()
    assert list(await trio.Path(tmp_path).iterdir()) == []
