"""What may be fetched: the URL rules, the address rule, what an HTTP answer means.

Pure rules, no I/O (docs/ARCHITECTURE.md, "The fetcher"). `check_url` runs on
the first hop and on every redirect hop, `redirect_target` on every redirect's
Location; `is_public_address` is the default rule that `guard.GuardedBackend`
applies to every address at connect time; `classify_status` says which HTTP
answers are permanent failures and which are transient (whether and when a job
is retried is `jobsvc.retry`'s decision, not this module's).
"""

from __future__ import annotations

import ipaddress
from http import HTTPStatus

import httpx

from jobsvc.errors import JobError, PermanentError, TransientError, quoted

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 5

_SHARED_V4 = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64_V6 = ipaddress.IPv6Network("64:ff9b::/96")  # embeds an IPv4 address (RFC 6052)


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


def allow_any(ip: IPAddress) -> bool:
    """The address rule under ``allow_private_urls``: every address."""
    return True


def classify_status(status_code: int) -> type[JobError] | None:
    """None for 2xx; TransientError for 408, 429 and 5xx; PermanentError otherwise."""
    if 200 <= status_code <= 299:
        return None
    if status_code in (408, 429) or 500 <= status_code <= 599:
        return TransientError
    return PermanentError


def status_text(status_code: int) -> str:
    """``404 Not Found``: the server's own reason phrase is untrusted text, so the standard one."""
    try:
        return f"{status_code} {HTTPStatus(status_code).phrase}"
    except ValueError:
        return str(status_code)


def check_url(url: str | httpx.URL) -> httpx.URL:
    """Syntactic checks, for the first hop and every redirect hop."""
    parsed = httpx.URL(url)  # httpx.InvalidURL and IDNAError are translated by fetcher._translate_errors
    if parsed.scheme not in ("http", "https"):
        raise PermanentError(f"only http and https URLs can be fetched, not {parsed.scheme or 'this'!r:.20}")
    if not parsed.host:
        raise PermanentError("the URL names no host")
    if parsed.userinfo:
        raise PermanentError("the URL must not carry credentials")
    if parsed.port is not None and not 0 < parsed.port <= 65535:  # httpx parses any number
        raise PermanentError("the URL's port is not a TCP port (1 to 65535)")
    return parsed


#: The statuses httpx follows as redirects (with a Location); the fetcher follows the same.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def redirect_target(url: httpx.URL, status_code: int, location: str | None) -> httpx.URL | None:
    """Where a response to a GET of ``url`` redirects to, built as httpx builds it; None if
    it is not a redirect (not a redirect status, or no Location).

    An unusable Location (unparsable, an invalid IDNA host) is a PermanentError: a
    server that answers nonsense will answer it again. The target's own policy checks
    (`check_url`, the address guard) run on the next hop, as for the first.
    """
    if status_code not in REDIRECT_STATUSES or location is None:
        return None
    try:
        target = httpx.URL(location)
        if target.scheme and not target.host:  # "https:/path": httpx keeps the host
            target = target.copy_with(host=url.host)
        if target.is_relative_url:
            target = url.join(target)
        if url.fragment and not target.fragment:  # RFC 7231 7.1.2, as httpx
            target = target.copy_with(fragment=url.fragment)
        target.host  # noqa: B018 (IDNA-decodes the host, as httpx does: raises on an invalid A-label)
    except (httpx.InvalidURL, UnicodeError) as exc:
        reason = f"{exc!s:.100}"
        raise PermanentError(f"the server redirects to an invalid URL {quoted(location)} ({reason})") from exc
    return target
