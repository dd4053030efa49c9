"""jobsvc.client.exits: a refused request becomes one stderr line and its exit code."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from jobsvc.client import exits
from jobsvc.client.http import ClientError


def refusing(status: int) -> Any:
    def run(args: argparse.Namespace) -> int:
        raise ClientError(f"refused (HTTP {status})", status=status, unavailable=status == 503)

    return run


@pytest.mark.parametrize(
    ("status", "bad_request", "code"),
    [
        (400, exits.EXIT_USAGE, 2),  # get, cancel, retry, download, watch: a malformed id or file
        (400, exits.EXIT_FAILED, 1),  # enqueue: also a URL that is not a reachable image
        (404, exits.EXIT_USAGE, 1),
        (409, exits.EXIT_FAILED, 1),
        (503, exits.EXIT_USAGE, 3),
    ],
)
def test_refused_requests_map_to_exit_codes(
    status: int, bad_request: int, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    command = exits.command(refusing(status), bad_request=bad_request)
    assert command(argparse.Namespace(command_name="get")) == code
    assert capsys.readouterr().err == f"jobsvc get: refused (HTTP {status})\n"
