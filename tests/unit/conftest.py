"""The unit tier does no I/O: a test here that opens a network socket or a PostgreSQL
connection fails at once, saying where it belongs (tests/integration)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

_INET = (socket.AF_INET, socket.AF_INET6)


def _refuse(what: str) -> AssertionError:
    return AssertionError(f"a unit test opened {what}; a test that needs one belongs in tests/integration")


@pytest.fixture(autouse=True)
def no_network_no_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_connect, real_bind = socket.socket.connect, socket.socket.bind

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in _INET:
            raise _refuse(f"a network connection to {address!r}")
        real_connect(self, address)

    def bind(self: socket.socket, address: Any) -> None:
        if self.family in _INET:
            raise _refuse(f"a listening socket on {address!r}")
        real_bind(self, address)

    def database(*args: Any, **kw: Any) -> Any:
        raise _refuse("a PostgreSQL connection")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(psycopg, "connect", database)  # an alias of Connection.connect
    monkeypatch.setattr(psycopg.Connection, "connect", database)
    monkeypatch.setattr(psycopg.AsyncConnection, "connect", database)
    yield
