"""Exit codes of the client commands against a real HTTP server on loopback that answers
400, as the API answers a malformed id (the commands build their own `Client`, so no
transport can be injected: this needs a socket, hence the integration tier)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from jobsvc import cli

JOB = "7d3b1c9e-2f4a-4b6c-9d8e-1a2b3c4d5e6f"


def parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(list(argv))


@pytest.fixture
def api_answering_400() -> Iterator[str]:
    """A real HTTP server on loopback that answers every request 400, as the API answers
    a malformed id (the commands build their own `Client`, so no transport can be given)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = json.dumps({"error": "jobId must be a UUID"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["get", JOB], 2),
        (["cancel", JOB], 2),
        (["retry", JOB], 2),
        (["download", JOB, "a.png", "-o", "-"], 2),
        (["watch", JOB], 2),
        (["enqueue", "http://i.test/a.png"], 1),  # a 400 there also means "not a reachable image"
    ],
)
def test_the_apis_400_exit_code(
    argv: list[str], code: int, api_answering_400: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(*argv, "--url", api_answering_400)
    assert args.func(args) == code
    assert "jobId must be a UUID (HTTP 400)" in capsys.readouterr().err
