"""A local image server for the benchmarks: ``python -m bench.images`` (127.0.0.1, port 0).

Prints ``bench-images listening <port>`` and serves until SIGTERM. Every route
accepts any file name (so each job has its own URL). Modelled on the test
suite's server (tests/fixtures/images.py), with only the routes benchmarks need::

    /img/<name>.png          a tiny real PNG (Content-Length)
    /big/<n>/<name>.png      a PNG followed by n zero bytes, in 64 KiB writes (Content-Length)
    /slow/<name>.png         a PNG, then one byte every 20 ms for at most BOUND seconds
                             (claims 10 MB): a download that never ends on its own
"""

from __future__ import annotations

import signal
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import urlsplit

BOUND = 60.0
DRIP_INTERVAL = 0.02
CHUNK = 64 * 1024


def png_bytes() -> bytes:
    """A real 1x1 RGBA PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00\xff"))
        + chunk(b"IEND", b"")
    )


PNG = png_bytes()
_stopping = threading.Event()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up mid-response on purpose (cancel benchmark)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body are two writes: with Nagle on, the body waits for the
    # client's delayed ACK of the headers (40 ms on Linux) on a kept-alive connection,
    # which capped this server near 16 / 40 ms = 400 requests/s. Real servers set it too.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.connection.settimeout(10)
        route, *rest = urlsplit(self.path).path.strip("/").split("/")
        if route == "img" and rest:
            self._head(len(PNG))
            self.wfile.write(PNG)
        elif route == "big" and len(rest) >= 2 and rest[0].isdigit():
            padding = int(rest[0])
            self._head(len(PNG) + padding)
            self.wfile.write(PNG)
            zeros = bytes(CHUNK)
            while padding > 0:
                self.wfile.write(zeros[: min(padding, CHUNK)])
                padding -= CHUNK
        elif route == "slow" and rest:
            self._head(len(PNG) + 10_000_000)
            self._drip()
        else:
            body = b"no such route\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _head(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _drip(self) -> None:
        deadline = time.monotonic() + BOUND
        try:
            self.wfile.write(PNG)
            while time.monotonic() < deadline and not _stopping.wait(DRIP_INTERVAL):
                self.wfile.write(b"\x00")
        except OSError:
            pass  # the client closed: the job was canceled
        self.close_connection = True


def main() -> None:
    server = _Server(("127.0.0.1", 0), _Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        _stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"bench-images listening {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
