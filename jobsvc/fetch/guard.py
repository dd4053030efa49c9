"""The network seam: every connection the fetcher makes goes to an address that was checked.

`GuardedBackend` is an httpcore network backend: it resolves the host itself,
checks every address against the rule it was given (`policy.is_public_address`
unless ``allow_private_urls``), and connects the socket to an address it
checked. DNS rebinding and redirects to internal hosts are therefore caught
before a single byte is sent, on every hop. TLS still verifies the certificate
against the host name (httpcore passes the URL's host as ``server_hostname`` to
``start_tls``). The keep-alive pools on top of it (`pool.GuardedTransport`)
connect through `GuardedBackend.connect_checked`, only to the addresses a
request's own lookup returned and checked.

A refused address is named in the error only when the URL spelled it: what a
host name resolves to is logged, never told to the client (enqueue would
otherwise be a DNS oracle). See docs/ARCHITECTURE.md, "The fetcher".
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import trio

from jobsvc.errors import PermanentError
from jobsvc.fetch.policy import IPAddress

__all__ = ["GuardedBackend"]

log = logging.getLogger("jobsvc.fetch")  # the package's logger: operators filter on it

_SHOWN_HOST = 80  # most characters of a host name an error repeats


class GuardedBackend(httpcore.AsyncNetworkBackend):
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
        return await self.connect_checked(host, addresses, port, deadline, local_address, socket_options)

    async def resolve(self, host: str, port: int, limit: float | None) -> tuple[IPAddress, ...]:
        """Every address ``host`` resolves to, each checked against the rule (PermanentError if any fails)."""
        deadline = trio.current_time() + (float("inf") if limit is None else limit)
        return tuple(await self._resolve(host, port, deadline))

    async def connect_checked(
        self,
        host: str,
        addresses: Iterable[IPAddress],
        port: int,
        deadline: float,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to the first of ``addresses`` (already checked by `resolve`) that answers."""
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
        numeric = _numeric(host)
        if numeric is not None:  # an address spelled out: nothing to look up, the same rule
            if not self._allow(numeric):
                raise PermanentError(f"the address {numeric} is not allowed")
            return [numeric]
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


def _numeric(host: str) -> IPAddress | None:
    """``host`` as an address when it is one in canonical spelling (``192.0.2.1``, ``::1``);
    None otherwise. Other spellings (``127.1``, ``2130706433``, ``0x7f.1``) go to the
    resolver, which reads them as the kernel does, and are checked the same way."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return ip if str(ip) == host else None
