"""The pure rules of jobsvc.fetch: which addresses are public, how a status is classified,
where a redirect goes."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from jobsvc.errors import PermanentError, TransientError
from jobsvc.fetch import ACCEPTED_MIMES, classify_status, is_public_address
from jobsvc.fetch.body import image_kind
from jobsvc.fetch.policy import redirect_target
from tests.fixtures.images import GIF, HTML, JPEG, MP4, PNG, WEBP

BLOCKED = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "10.0.0.1",
    "10.255.255.255",
    "192.168.1.1",
    "172.16.0.1",
    "172.31.255.255",
    "169.254.169.254",  # cloud metadata
    "0.0.0.0",
    "::",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "100.127.255.254",
    "fd00::1",  # unique local
    "fc00::1",
    "fe80::1",  # link-local
    "fec0::1",  # site-local (deprecated)
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "2002:c0a8:101::",  # 6to4 of 192.168.1.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:db8::1",  # documentation
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",  # mapped, judged by the IPv4 address
    "2002:808:808::",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize("address", BLOCKED)
def test_is_public_address_refuses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_is_public_address_allows(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (203, None),
        (206, None),
        (299, None),
        (304, PermanentError),
        (400, PermanentError),
        (401, PermanentError),
        (403, PermanentError),
        (404, PermanentError),
        (410, PermanentError),
        (418, PermanentError),
        (408, TransientError),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
        (599, TransientError),
    ],
)
def test_classify_status_table(status: int, expected: type[Exception] | None) -> None:
    assert classify_status(status) is expected


@pytest.mark.parametrize(
    ("body", "mime"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")],
)
def test_image_kind_accepts_images(body: bytes, mime: str) -> None:
    assert image_kind(body).mime == mime
    assert mime in ACCEPTED_MIMES


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (MP4, "the content is not an image (detected video/mp4)"),
        (HTML, "the content is not an image (unrecognised format)"),
        (b"", "the content is not an image (the body is empty)"),
        (
            b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(64),
            "the image format image/x-canon-cr2 is not accepted",
        ),
    ],
)
def test_image_kind_refuses_non_images(body: bytes, reason: str) -> None:
    with pytest.raises(PermanentError) as caught:
        image_kind(body)
    assert str(caught.value) == reason


# --------------------------------------------------------------------------- redirect targets


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/b.png", "http://h.example/b.png#f"),
        ("c.png", "http://h.example/a/c.png#f"),
        ("https://o.example/x.png#g", "https://o.example/x.png#g"),
        ("//o.example/y.png", "http://o.example/y.png#f"),
        ("https:/z.png", "https://h.example/z.png#f"),
    ],
)
def test_redirect_target_is_built_as_httpx_builds_it(location: str, expected: str) -> None:
    url = httpx.URL("http://h.example/a/b.png#f")
    assert str(redirect_target(url, 302, location)) == expected


@pytest.mark.parametrize(("status", "location"), [(200, "/x"), (304, "/x"), (300, "/x"), (302, None)])
def test_redirect_target_is_none_unless_a_redirect_with_a_location(status: int, location: str | None) -> None:
    assert redirect_target(httpx.URL("http://h.example/"), status, location) is None


@pytest.mark.parametrize("location", ["http://[::1", "http://xn--a.example/"])
def test_redirect_target_refuses_an_unusable_location(location: str) -> None:
    with pytest.raises(PermanentError, match="redirects to an invalid URL"):
        redirect_target(httpx.URL("http://h.example/"), 301, location)
