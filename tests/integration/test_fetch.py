"""jobsvc.fetch against the local image server: real HTTP over loopback."""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path
from typing import Any

import httpcore
import pytest
import trio

from jobsvc.config import Settings
from jobsvc.errors import InvalidRequest, PermanentError, TransientError
from jobsvc.fetch import Fetcher, IPAddress, is_public_address
from jobsvc.fetch.guard import GuardedBackend
from tests.fixtures.images import GIF, JPEG, PNG, WEBP, ImageServer


def settings(**changes: Any) -> Settings:
    base = Settings(allow_private_urls=True, fetch_timeout=10, connect_timeout=5, probe_timeout=5)
    return base.replace(**changes)


def unique() -> str:
    return uuid.uuid4().hex


def loopback_only(ip: IPAddress) -> bool:
    """Lets the tests reach the image server while every other non-public address stays refused."""
    return ip == ipaddress.ip_address("127.0.0.1") or is_public_address(ip)


@pytest.fixture
def fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(settings(), tmp_dir=tmp_path)


async def leftovers(directory: Path) -> list[str]:
    return [path.name for path in await trio.Path(directory).iterdir()]


# ------------------------------------------------------------------------- success


@pytest.mark.parametrize(
    ("extension", "body", "mime"),
    [
        ("png", PNG, "image/png"),
        ("jpg", JPEG, "image/jpeg"),
        ("gif", GIF, "image/gif"),
        ("webp", WEBP, "image/webp"),
    ],
)
async def test_download_image_ok(
    image_server: ImageServer, fetcher: Fetcher, tmp_path: Path, extension: str, body: bytes, mime: str
) -> None:
    async with fetcher.download(image_server.url(f"/img/{unique()}.{extension}")) as download:
        assert download.mime == mime
        assert download.size == len(body)
        # Under 256 KiB a body stays in memory: no temporary file at all.
        assert download.data == body
        assert download.path is None
        assert await leftovers(tmp_path) == []
    assert await leftovers(tmp_path) == []


async def test_download_large_image_is_spooled_to_disk(
    image_server: ImageServer, fetcher: Fetcher, tmp_path: Path
) -> None:
    padding = 3 * 1024 * 1024 + 17
    async with fetcher.download(image_server.url(f"/big/{padding}.png")) as download:
        assert download.size == len(PNG) + padding
        assert download.path is not None
        assert download.data is None
        assert download.path.parent == tmp_path
        assert (await trio.Path(download.path).stat()).st_size == download.size
        assert download.extension == "png"


async def test_download_follows_two_redirects(image_server: ImageServer, fetcher: Fetcher) -> None:
    name = f"{unique()}.png"
    async with fetcher.download(image_server.url(f"/redirect/2/{name}")) as download:
        assert download.mime == "image/png"
    assert [image_server.hits(f"/redirect/{n}/{name}") for n in (2, 1, 0)] == [1, 1, 1]


async def test_download_follows_five_redirects_but_not_six(
    image_server: ImageServer, fetcher: Fetcher
) -> None:
    async with fetcher.download(image_server.url(f"/redirect/5/{unique()}.png")) as download:
        assert download.mime == "image/png"
    with pytest.raises(PermanentError, match="redirected more than 5 times"):
        async with fetcher.download(image_server.url(f"/redirect/6/{unique()}.png")):
            pass


async def test_download_gzip_body_is_decoded(image_server: ImageServer, fetcher: Fetcher) -> None:
    async with fetcher.download(image_server.url("/gzip/1000.png")) as download:
        assert download.mime == "image/png"
        assert download.size == len(PNG) + 1000
        assert download.data is not None and download.data.startswith(PNG)


async def test_download_gzip_cap_counts_decoded_bytes(image_server: ImageServer, tmp_path: Path) -> None:
    fetcher = Fetcher(settings(max_image_bytes=100_000), tmp_dir=tmp_path)
    with pytest.raises(PermanentError, match="larger than 100000 bytes"):
        async with fetcher.download(image_server.url("/gzip/200000.png")):
            pass
    assert await leftovers(tmp_path) == []


# ------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("route", "detected"), [("mp4", "detected video/mp4"), ("html", "unrecognised format")]
)
async def test_download_not_an_image_is_permanent(
    image_server: ImageServer, fetcher: Fetcher, tmp_path: Path, route: str, detected: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        async with fetcher.download(image_server.url(f"/{route}/{unique()}.png")):
            pytest.fail("a non-image must not be yielded")
    assert str(caught.value) == f"the content is not an image ({detected})"
    assert await leftovers(tmp_path) == []


async def test_download_404_is_permanent(image_server: ImageServer, fetcher: Fetcher) -> None:
    with pytest.raises(PermanentError) as caught:
        async with fetcher.download(image_server.url(f"/404/{unique()}.png")):
            pass
    assert str(caught.value) == "the server answered 404 Not Found"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (403, PermanentError),
        (410, PermanentError),
        (408, TransientError),
        (429, TransientError),
        (502, TransientError),
    ],
)
async def test_download_status_is_classified(
    image_server: ImageServer, fetcher: Fetcher, status: int, error: type[Exception]
) -> None:
    with pytest.raises(error, match=f"the server answered {status} "):
        async with fetcher.download(image_server.url(f"/status/{status}/{unique()}.png")):
            pass


async def test_download_too_large_content_length_refused_early(
    image_server: ImageServer, tmp_path: Path
) -> None:
    fetcher = Fetcher(settings(max_image_bytes=1_000_000), tmp_dir=tmp_path)
    with pytest.raises(PermanentError) as caught:
        async with fetcher.download(image_server.url("/big/2000000.png")):
            pass
    assert str(caught.value) == "the image is larger than 1000000 bytes"


async def test_download_oversize_without_length_stops_promptly(
    image_server: ImageServer, tmp_path: Path
) -> None:
    key = unique()
    fetcher = Fetcher(settings(max_image_bytes=200_000), tmp_dir=tmp_path)
    with trio.fail_after(5), pytest.raises(PermanentError, match="larger than 200000 bytes"):
        async with fetcher.download(image_server.url(f"/oversize/{key}/x.png")):
            pass
    assert await trio.to_thread.run_sync(image_server.wait_closed, key, 2.0)
    assert await leftovers(tmp_path) == []


async def test_download_redirect_loop_is_permanent(image_server: ImageServer, fetcher: Fetcher) -> None:
    with pytest.raises(PermanentError, match="redirects in a loop"):
        async with fetcher.download(image_server.url(f"/loop/{unique()}.png")):
            pass


async def test_download_redirect_to_private_address_refused(
    image_server: ImageServer, tmp_path: Path
) -> None:
    # Loopback is allowed for the image server itself; 10.0.0.1 must be refused before connecting.
    fetcher = Fetcher(settings(allow_private_urls=False), allow=loopback_only, tmp_dir=tmp_path)
    path = f"/redirect-private/{unique()}.png"
    with pytest.raises(PermanentError) as caught:
        async with fetcher.download(image_server.url(path)):
            pass
    assert str(caught.value) == "the address 10.0.0.1 is not allowed"
    assert image_server.hits(path) == 1


async def test_download_redirect_private_first_hop_refused_by_default(
    image_server: ImageServer, tmp_path: Path
) -> None:
    fetcher = Fetcher(settings(allow_private_urls=False), tmp_dir=tmp_path)
    path = f"/redirect-private/{unique()}.png"
    with pytest.raises(PermanentError, match="is not allowed"):
        async with fetcher.download(image_server.url(path)):
            pass
    assert image_server.hits(path) == 0


SSRF_URLS = [
    "http://127.0.0.1:{port}{path}",
    "http://localhost:{port}{path}",
    "http://[::1]:{port}{path}",
    "http://2130706433:{port}{path}",
    "http://127.1:{port}{path}",
    "http://0x7f.1:{port}{path}",
    "http://0x7f000001:{port}{path}",
    "http://017700000001:{port}{path}",
    "http://169.254.169.254{path}",
    "http://0.0.0.0:{port}{path}",
    "http://[::ffff:127.0.0.1]:{port}{path}",
    "http://[::ffff:7f00:1]:{port}{path}",
    "http://10.0.0.1{path}",
    "http://100.64.0.1{path}",
    "http://[fd00::1]{path}",
    "https://127.0.0.1:{port}{path}",
]


@pytest.mark.parametrize("template", SSRF_URLS)
async def test_download_ssrf_refused_before_any_byte(
    image_server: ImageServer, tmp_path: Path, template: str
) -> None:
    fetcher = Fetcher(settings(allow_private_urls=False), tmp_dir=tmp_path)
    path = f"/img/{unique()}.png"
    url = template.format(port=image_server.port, path=path)
    with trio.fail_after(5), pytest.raises(PermanentError, match="is not allowed"):
        async with fetcher.download(url):
            pass
    assert image_server.hits(path) == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/x.png", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://127.0.0.1:70/x", "only http and https"),
        ("http://user:secret@127.0.0.1:{port}{path}", "must not carry credentials"),
        ("http:///x.png", "no host"),
    ],
)
async def test_download_bad_url_refused(
    image_server: ImageServer, fetcher: Fetcher, url: str, reason: str
) -> None:
    path = f"/img/{unique()}.png"
    with pytest.raises(PermanentError, match=reason):
        async with fetcher.download(url.format(port=image_server.port, path=path)):
            pass
    assert image_server.hits(path) == 0


class RecordingBackend(httpcore.AsyncMockBackend):
    def __init__(self) -> None:
        super().__init__([])
        self.hosts: list[str] = []

    async def connect_tcp(
        self, host: str, port: int, *args: Any, **kwargs: Any
    ) -> httpcore.AsyncNetworkStream:
        self.hosts.append(host)
        return await super().connect_tcp(host, port, *args, **kwargs)


async def test_guard_connects_to_the_checked_address_not_the_name() -> None:
    # The name is resolved once, checked, and the socket opened to that address: no second
    # lookup that a rebinding DNS server could answer differently.
    checked: list[IPAddress] = []
    inner = RecordingBackend()
    backend = GuardedBackend(lambda ip: checked.append(ip) or True, inner=inner)
    await backend.connect_tcp("localhost", 80, timeout=5)
    assert inner.hosts
    assert inner.hosts[0] in {str(ip) for ip in checked}
    assert all(ip.is_loopback for ip in checked)


async def test_guard_refuses_any_blocked_address_before_connecting() -> None:
    inner = RecordingBackend()
    backend = GuardedBackend(is_public_address, inner=inner)
    with pytest.raises(PermanentError, match=r"^localhost resolves to an address that is not allowed$"):
        await backend.connect_tcp("localhost", 80, timeout=5)
    assert inner.hosts == []


# ------------------------------------------------------------------------- transient and time


async def test_download_503_is_transient_then_succeeds(image_server: ImageServer, fetcher: Fetcher) -> None:
    url = image_server.url(f"/flaky/{unique()}/x.png")
    for _ in range(2):
        with pytest.raises(TransientError, match="503 Service Unavailable"):
            async with fetcher.download(url):
                pass
    async with fetcher.download(url) as download:
        assert download.mime == "image/png"


async def test_download_hang_is_transient_within_timeout(image_server: ImageServer, tmp_path: Path) -> None:
    key = unique()
    fetcher = Fetcher(settings(fetch_timeout=0.5), tmp_dir=tmp_path)
    start = trio.current_time()
    with trio.fail_after(5), pytest.raises(TransientError):
        async with fetcher.download(image_server.url(f"/hang/{key}/x.png")):
            pass
    assert trio.current_time() - start < 2
    assert await trio.to_thread.run_sync(image_server.wait_closed, key, 2.0)
    assert await leftovers(tmp_path) == []


async def test_download_cancelled_closes_connection_and_removes_file(
    image_server: ImageServer, tmp_path: Path
) -> None:
    key = unique()
    fetcher = Fetcher(settings(), tmp_dir=tmp_path)
    with trio.move_on_after(0.5) as scope:
        async with fetcher.download(image_server.url(f"/slow/{key}/x.png")):
            pytest.fail("the slow download cannot complete in time")
    assert scope.cancelled_caught
    assert await trio.to_thread.run_sync(image_server.wait_closed, key, 1.0)
    assert await leftovers(tmp_path) == []


async def test_download_lying_content_length_is_an_error_not_a_hang(
    image_server: ImageServer, fetcher: Fetcher
) -> None:
    with trio.fail_after(5), pytest.raises(TransientError, match="connection failed"):
        async with fetcher.download(image_server.url(f"/lying-length/{unique()}.png")):
            pass


async def test_download_connection_refused_is_transient(fetcher: Fetcher) -> None:
    with trio.socket.socket() as sock:  # a port that is certainly closed: bound, never listening
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(TransientError, match="could not connect"):
            async with fetcher.download(f"http://127.0.0.1:{port}/x.png"):
                pass


# ------------------------------------------------------------------------- probe


async def test_probe_image_ok(image_server: ImageServer, fetcher: Fetcher) -> None:
    await fetcher.probe(image_server.url(f"/img/{unique()}.jpg"))


async def test_probe_reads_only_the_head_of_a_large_image(image_server: ImageServer, tmp_path: Path) -> None:
    fetcher = Fetcher(settings(probe_timeout=2), tmp_dir=tmp_path)
    with trio.fail_after(3):
        await fetcher.probe(image_server.url(f"/slow/{unique()}/x.png"))


async def test_probe_404_is_invalid_request(image_server: ImageServer, fetcher: Fetcher) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await fetcher.probe(image_server.url(f"/404/{unique()}.png"))
    assert str(caught.value) == "imgUrl is not a reachable image: the server answered 404 Not Found"


async def test_probe_not_an_image_is_invalid_request(image_server: ImageServer, fetcher: Fetcher) -> None:
    with pytest.raises(InvalidRequest, match=r"not a reachable image: the content is not an image"):
        await fetcher.probe(image_server.url(f"/mp4/{unique()}.png"))


async def test_probe_private_address_is_invalid_request(image_server: ImageServer, tmp_path: Path) -> None:
    fetcher = Fetcher(settings(allow_private_urls=False), tmp_dir=tmp_path)
    path = f"/img/{unique()}.png"
    with pytest.raises(InvalidRequest, match=r"the address 127\.0\.0\.1 is not allowed"):
        await fetcher.probe(image_server.url(path))
    assert image_server.hits(path) == 0


async def test_probe_hang_times_out(image_server: ImageServer, tmp_path: Path) -> None:
    fetcher = Fetcher(settings(probe_timeout=0.3), tmp_dir=tmp_path)
    with trio.fail_after(5), pytest.raises(InvalidRequest, match=r"did not answer within 0\.3 seconds"):
        await fetcher.probe(image_server.url(f"/hang/{unique()}/x.png"))
