"""LISTEN from trio: `Listener`, one autocommit connection that LISTENs on channels and
waits on its socket with `trio.lowlevel.wait_readable` (no thread, no polling), and the
notifications it reads (`Notification`) (docs/ARCHITECTURE.md, "Database access"; jobsvc.db has the
other shapes of database access)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

import psycopg
import trio

from jobsvc.db import Conn, connect, translate_errors
from jobsvc.errors import DatabaseUnavailable


@dataclass(frozen=True, slots=True)
class Notification:
    channel: str
    payload: str


class Listener:
    """A LISTEN connection read on its socket, without a thread.

    Use as ``async with Listener.open(url, channels) as listener: async for n in listener``.
    Iteration raises `DatabaseUnavailable` when the connection breaks; cancelling
    it leaves the connection usable. Closing the context closes the connection.

    An owner that LISTENs on demand (the API's events, `jobsvc.events.Broadcaster`)
    opens it with no channel and drives it by hand: `listen` / `unlisten`, `drain`,
    `wait_readable`, all from one task (the connection is never shared).
    """

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, url: str, channels: Sequence[str]) -> Listener:
        def setup() -> Conn:
            conn = connect(url, autocommit=True, application_name="jobsvc-listener")
            try:
                for channel in channels:
                    _execute_listen(conn, "LISTEN", channel)
            except DatabaseUnavailable:
                conn.close()
                raise
            return conn

        return cls(await trio.to_thread.run_sync(setup))

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._conn.close()  # closing a socket does not block

    async def listen(self, channel: str) -> None:
        """``LISTEN channel``: in effect when this returns (autocommit), so every NOTIFY
        committed from then on is delivered. One thread hop; waits for it when cancelled."""
        await trio.to_thread.run_sync(_execute_listen, self._conn, "LISTEN", channel)

    async def unlisten(self, channel: str) -> None:
        """``UNLISTEN channel``. Notifications that arrived before it are still drained."""
        await trio.to_thread.run_sync(_execute_listen, self._conn, "UNLISTEN", channel)

    def drain(self) -> list[Notification]:
        """The notifications already received (also those read during a LISTEN): never blocks."""
        with translate_errors("lost the LISTEN connection"):
            # timeout=0 only drains what has already arrived: it never blocks.
            return [Notification(n.channel, n.payload) for n in self._conn.notifies(timeout=0)]

    async def wait_readable(self) -> None:
        """Until the server sends something (a notification, or the end of the connection,
        which the next `drain` raises). Cancelling it leaves the connection usable."""
        await trio.lowlevel.wait_readable(self._conn.fileno())

    def __aiter__(self) -> AsyncIterator[Notification]:
        return self._notifications()

    async def _notifications(self) -> AsyncIterator[Notification]:
        while True:
            batch = self.drain()
            for notification in batch:
                yield notification
            if not batch:
                await self.wait_readable()


_LISTEN_COMMANDS = {"LISTEN": psycopg.sql.SQL("LISTEN {}"), "UNLISTEN": psycopg.sql.SQL("UNLISTEN {}")}


def _execute_listen(conn: Conn, command: Literal["LISTEN", "UNLISTEN"], channel: str) -> None:
    """``LISTEN`` or ``UNLISTEN`` on ``conn`` (blocking: a thread, or setup in one)."""
    with translate_errors(f"cannot {command}"):
        conn.execute(_LISTEN_COMMANDS[command].format(psycopg.sql.Identifier(channel)))
