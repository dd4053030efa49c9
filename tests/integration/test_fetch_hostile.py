"""Hostile URLs and redirect Locations through the fetcher: only jobsvc errors come out.

`Fetcher.probe` may only raise `InvalidRequest` and `Fetcher.download` only a
`JobError` (`PermanentError` or `TransientError`): anything else reaches the
API as a 500 or the worker as an "unexpected error" retried with a traceback.

`fake_dns` installs a resolver through trio's public
`set_custom_hostname_resolver`: every name that reaches it resolves to the
image server's address (names containing ``internal`` to 10.0.0.1), so fuzzed
host names reach a real HTTP server over loopback and no query leaves the
machine. Numeric hosts and the IDNA encoding still go through trio and the
standard library, as in production.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import hypothesis
import pytest
import trio
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from jobsvc.config import Settings
from jobsvc.errors import InvalidRequest, JobError, PermanentError
from jobsvc.fetch import Fetcher, IPAddress, is_public_address
from tests.fixtures.images import ImageServer

INTERNAL = "10.0.0.1"


class FakeResolver(trio.abc.HostnameResolver):
    """Every name is the image server (IPv4 loopback); a name containing ``internal`` is 10.0.0.1."""

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        address = INTERNAL if host is not None and b"internal" in host.lower() else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> Any:
        raise NotImplementedError


@pytest.fixture
async def fake_dns() -> AsyncIterator[None]:
    trio.socket.set_custom_hostname_resolver(FakeResolver())
    try:
        yield
    finally:
        trio.socket.set_custom_hostname_resolver(None)


def loopback_only(ip: IPAddress) -> bool:
    return ip == ipaddress.ip_address("127.0.0.1") or is_public_address(ip)


@pytest.fixture
def fetcher(tmp_path: Path) -> Fetcher:
    base = Settings(allow_private_urls=False, fetch_timeout=5, connect_timeout=2, probe_timeout=5)
    return Fetcher(base, allow=loopback_only, tmp_dir=tmp_path)


async def download(fetcher: Fetcher, url: str) -> None:
    async with fetcher.download(url):
        pass


def redirect_to(image_server: ImageServer, location: str) -> str:
    return image_server.url(f"/redirect-to/{uuid.uuid4().hex}.png?to={quote(location, safe='')}")


# --------------------------------------------------------------------------- host names


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("xn--zz.invalid", "not a valid internationalized domain name"),
        ("xn--", "not a valid internationalized domain name"),
        ("a..b", "not a valid DNS name"),
        ("a" * 64 + ".test", "not a valid DNS name"),
        (".", "not a valid DNS name"),
    ],
)
async def test_invalid_host_name_is_permanent_in_download_and_400_in_probe(
    fake_dns: None, fetcher: Fetcher, image_server: ImageServer, host: str, says: str
) -> None:
    url = f"http://{host}:{image_server.port}/img/{uuid.uuid4().hex}.png"
    with pytest.raises(PermanentError, match=says):
        await download(fetcher, url)
    with pytest.raises(InvalidRequest, match=f"^imgUrl is not a reachable image: .*{says}"):
        await fetcher.probe(url)


LOCATIONS = [
    ("http://[::1", "redirects to an invalid URL"),
    ("http://xn--zz.invalid/a.png", "redirects to an invalid URL"),
    ("//xn--zz/a.png", "redirects to an invalid URL"),
    ("http://h.test:99999/a.png", "not a TCP port"),
    ("http://h.test:0/a.png", "not a TCP port"),
    ("http://a..b/x.png", "not a valid DNS name"),
    ("http://" + "a" * 64 + ".test/x.png", "not a valid DNS name"),
    ("ftp://h.test/x.png", "only http and https"),
]


@pytest.mark.parametrize(("location", "says"), LOCATIONS, ids=[loc for loc, _ in LOCATIONS])
async def test_redirect_to_an_unusable_location_is_permanent(
    fake_dns: None, fetcher: Fetcher, image_server: ImageServer, location: str, says: str
) -> None:
    with pytest.raises(PermanentError, match=says):
        await download(fetcher, redirect_to(image_server, location))


async def test_redirect_to_a_huge_invalid_location_is_echoed_bounded(
    fake_dns: None, fetcher: Fetcher, image_server: ImageServer
) -> None:
    with pytest.raises(PermanentError) as caught:
        await download(fetcher, redirect_to(image_server, "http://[::1/" + "x" * 5000))
    assert "redirects to an invalid URL 'http://[::1/xxx" in str(caught.value)
    assert len(str(caught.value)) < 300


# --------------------------------------------------------------------------- no DNS oracle


async def test_a_refused_host_name_is_not_told_its_address(
    fake_dns: None, fetcher: Fetcher, image_server: ImageServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://internal.test:{image_server.port}/img/{uuid.uuid4().hex}.png"
    with caplog.at_level(logging.WARNING, logger="jobsvc.fetch"):
        with pytest.raises(PermanentError) as caught:
            await download(fetcher, url)
        with pytest.raises(InvalidRequest) as probed:
            await fetcher.probe(url)
    assert str(caught.value) == "internal.test resolves to an address that is not allowed"
    assert str(probed.value) == "imgUrl is not a reachable image: " + str(caught.value)
    # The operator still learns the address, from the server's log.
    assert [r.getMessage() for r in caplog.records] == [
        f"refused internal.test: it resolves to {INTERNAL}, which is not allowed"
    ] * 2


# --------------------------------------------------------------------------- fuzz

_HOST_PIECES = st.sampled_from(
    ["xn--", "zz", "xn--zz", "XN--ZZ", "xn--fiqs8s", ".", "..", "a", "b", "a" * 63, "a" * 64, "-", "é",
     "日本", "ß", "\u200d", "\u202e", "[", "]", "::1", "[::1]", "%", "%00", "%41", "@", ":", "internal",
     "127.0.0.1", "0x7f.1", "10.0.0.1", " ", "\t", "\x00", "\\", "/", "?", "#", "localhost", "h.test"]
)  # fmt: skip
HOSTS = st.lists(st.one_of(_HOST_PIECES, st.text(max_size=4)), min_size=1, max_size=6).map("".join)
SCHEMES = st.sampled_from(["http", "https", "HTTP", "ftp", "", "http:", "javascript"])
PATHS = st.sampled_from(["/img/x.png", "/404/x.png", "", "/html/x.png", "?q", "#f", "/%00"])


@st.composite
def urls(draw: st.DrawFn, port: int) -> str:
    """Hostile URLs whose names resolve (through `fake_dns`) to the image server on ``port``."""
    host = draw(HOSTS)
    port_part = draw(st.sampled_from([f":{port}", "", ":", ":0", ":99999", ":x", f":{port}:{port}"]))
    return f"{draw(SCHEMES)}://{host}{port_part}{draw(PATHS)}"


FUZZ = hypothesis.settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,  # the same URLs every run: a failure reproduces
    suppress_health_check=list(HealthCheck),
)


async def test_fuzzed_urls_raise_only_jobsvc_errors(
    fake_dns: None, fetcher: Fetcher, image_server: ImageServer
) -> None:
    outcomes: Counter[str] = Counter()

    async def one(url: str) -> None:
        try:
            await fetcher.probe(url)
            outcomes["probe ok"] += 1
        except InvalidRequest:
            outcomes["probe refused"] += 1
        try:
            await download(fetcher, url)
            outcomes["download ok"] += 1
        except JobError as exc:
            outcomes[type(exc).__name__] += 1

    @FUZZ
    @given(url=urls(image_server.port))
    def check(url: str) -> None:  # runs in a thread; each URL through the test's trio loop
        trio.from_thread.run(one, url)

    await trio.to_thread.run_sync(check)
    print(f"\nfuzzed URLs: {dict(outcomes)}")
    # Both sides were explored: most URLs refused for good, some reached the server (on a
    # loaded machine a fetch that should succeed may time out: transient, still a JobError).
    assert outcomes["PermanentError"] >= 50
    assert outcomes["download ok"] >= 1 and outcomes["download ok"] + outcomes["TransientError"] >= 5


LOCATION_PIECES = st.sampled_from(
    ["http://", "https://", "//", "/", "xn--zz", "xn--", "[", "]", "::1", "[::1", ":", ":99999", "..", ".",
     "a" * 64, "é", "%", "%00", "?", "#", "@", "img/x.png", "/img/x.png", "internal", "h.test", "\\", " ",
     "ftp://", "http:", "\x00", "\x7f", "\u0085", "data:,x"]
)  # fmt: skip
LOCATIONS_FUZZ = st.lists(st.one_of(LOCATION_PIECES, st.text(max_size=4)), min_size=1, max_size=6).map(
    "".join
)


async def test_fuzzed_redirect_locations_raise_only_jobsvc_errors(
    fake_dns: None, fetcher: Fetcher, image_server: ImageServer
) -> None:
    outcomes: Counter[str] = Counter()

    async def one(location: str) -> None:
        try:
            await download(fetcher, redirect_to(image_server, location))
            outcomes["ok"] += 1
        except JobError as exc:
            outcomes[type(exc).__name__] += 1

    @FUZZ
    @given(location=LOCATIONS_FUZZ)
    def check(location: str) -> None:
        trio.from_thread.run(one, location.replace("\r", "").replace("\n", ""))

    await trio.to_thread.run_sync(check)
    print(f"\nfuzzed Locations: {dict(outcomes)}")
    assert outcomes["PermanentError"] >= 50 and outcomes["ok"] + outcomes["TransientError"] >= 5
