"""https downloads: the fetcher's own connections verify the certificate against the URL's host.

A local TLS server whose certificate (made here, signed by a throwaway CA) names
``localhost`` only; the fetcher trusts that CA. Connections go to the checked
address, but the certificate is checked against the host name of the URL.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from jobsvc.config import Settings
from jobsvc.errors import TransientError
from jobsvc.fetch import Fetcher, IPAddress
from tests.fixtures.images import PNG
from tests.fixtures.tls import certificates


@dataclass(frozen=True)
class Tls:
    port: int
    ca_pem: bytes
    client_ports: list[int]  # one per request: one port = one TCP connection


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Tls]:
    ca_pem, cert_file, key_file = certificates(tmp_path)
    client_ports: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            client_ports.append(self.client_address[1])
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Tls(server.server_address[1], ca_pem, client_ports)
    finally:
        server.shutdown()
        server.server_close()


def _loopback(ip: IPAddress) -> bool:
    return ip.is_loopback  # localhost may also resolve to ::1, where nothing listens: tried in turn


def _fetcher(tls: Tls, tmp_path: Path) -> Fetcher:
    context = ssl.create_default_context(cadata=tls.ca_pem.decode())
    settings = Settings(allow_private_urls=False, fetch_timeout=5, connect_timeout=2)
    return Fetcher(settings, allow=_loopback, tmp_dir=tmp_path, ssl_context=context)


async def test_https_download_verifies_the_host_name_and_keeps_the_connection(
    tls_server: Tls, tmp_path: Path
) -> None:
    fetcher = _fetcher(tls_server, tmp_path)
    try:
        for _ in range(2):
            async with fetcher.download(f"https://localhost:{tls_server.port}/x.png") as download:
                assert download.data == PNG
    finally:
        await fetcher.aclose()
    assert len(tls_server.client_ports) == 2
    assert len(set(tls_server.client_ports)) == 1  # one TLS connection for both


async def test_https_certificate_for_another_name_is_refused(tls_server: Tls, tmp_path: Path) -> None:
    # The same server, reached by its address: the certificate names localhost only.
    fetcher = _fetcher(tls_server, tmp_path)
    try:
        with pytest.raises(TransientError, match="could not connect"):
            async with fetcher.download(f"https://127.0.0.1:{tls_server.port}/x.png"):
                pass
    finally:
        await fetcher.aclose()
    assert tls_server.client_ports == []  # no request was sent
