"""PostgreSQL access from trio (docs/ARCHITECTURE.md, "Database access").

psycopg's async API is asyncio-only, so jobsvc uses the sync API: every unit of
work is one function ``fn(conn)`` run in one `trio.to_thread.run_sync` hop on a
connection, inside one transaction; a few hot units are instead sent from the trio
thread with psycopg's non-blocking calls (jobsvc.pgtrio). Four shapes:

- `Database`: a small pool for request-shaped work (API queries, the rescuer).
- `Session`: one dedicated connection, for the worker's claims and finishes, because
  the session advisory locks it takes belong to that connection. Its hot path (the
  worker's cycle) is sent from the trio thread instead (`Session.run_plan`, jobsvc.pgtrio).
- `Link`: one dedicated autocommit connection whose units are sent from the trio
  thread, for the API's lone enqueue (one statement, jobsvc.pgtrio).
- `jobsvc.listening.Listener`: one autocommit connection that LISTENs, waiting on its
  socket with `trio.lowlevel.wait_readable` (no thread, no polling).

Errors: psycopg's ``OperationalError`` and the pool's ``PoolTimeout`` become
`DatabaseUnavailable` in one place, `translate_errors`, used by every call here.

A unit cannot be cancelled halfway: once a statement is sent, trio waits for its
transaction to end (a thread hop with ``abandon_on_cancel=False``; a unit sent from
trio under a shield, `pgtrio.run`), so a cancelled caller never leaves a transaction
in an unknown state.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import trio
from psycopg.rows import dict_row

from jobsvc import pgtrio
from jobsvc.errors import DatabaseUnavailable

T = TypeVar("T")
Conn = psycopg.Connection[dict[str, Any]]

#: TCP keepalives on every connection, so a host that vanished without a FIN or
#: RST is noticed within about idle + interval * count = 10 s (tcp_user_timeout
#: bounds unacknowledged writes the same way). libpq ignores them on Unix sockets.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 4,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "connect_timeout": 5,
}


#: The same bounds on the server's end of every connection. libpq's keepalives only
#: guard the client's socket: without these, a backend whose client host vanished
#: keeps its session, hence the advisory locks of that worker's jobs, until the
#: kernel's defaults give up (2 h idle, ~15 min with unacknowledged data), and no
#: rescuer can take the jobs back. Set per session (the settings are user-settable,
#: PostgreSQL 12+), so nothing on the server needs configuring; ignored on Unix sockets.
SERVER_KEEPALIVES_SQL = """
SELECT set_config('tcp_keepalives_idle', %(idle)s, false),
       set_config('tcp_keepalives_interval', %(interval)s, false),
       set_config('tcp_keepalives_count', %(count)s, false),
       set_config('tcp_user_timeout', %(user_timeout)s, false)
"""


def _set_server_keepalives(conn: Conn) -> None:
    """Apply SERVER_KEEPALIVES_SQL and leave the connection idle (a pool's ``configure``)."""
    conn.execute(
        SERVER_KEEPALIVES_SQL,
        {
            "idle": str(KEEPALIVES["keepalives_idle"]),
            "interval": str(KEEPALIVES["keepalives_interval"]),
            "count": str(KEEPALIVES["keepalives_count"]),
            "user_timeout": str(KEEPALIVES["tcp_user_timeout"]),
        },
    )
    if not conn.autocommit:
        conn.commit()


def check_idle_connection(conn: Conn) -> None:
    """The pool's check of a connection it hands out: a round trip only when needed.

    `ConnectionPool.check_connection` sends an empty query on every checkout, one
    round trip per transaction (0.13 ms of a 2.6 ms enqueue here, issue 14). An idle
    connection's socket has nothing to read unless the server spoke: a terminated
    backend sends its FATAL error and closes, which makes the socket readable, and
    then the full check runs (and raises, so the pool replaces the connection). A
    host that vanished silently is not seen by either check before a query's own
    timeouts (KEEPALIVES).
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    if _server_spoke(conn):
        psycopg_pool.ConnectionPool.check_connection(conn)


def _server_spoke(conn: Conn) -> bool:
    """Whether an idle connection's socket has something to read (it should not)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


#: Seconds the pool keeps retrying one failed connection (see `Database`).
RECONNECT_CYCLE = 5.0


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """The one place driver errors become `DatabaseUnavailable("<what>: <reason>")`."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise DatabaseUnavailable(f"{what}: no connection in time") from exc
    except psycopg.OperationalError as exc:
        text = str(exc).strip()
        raise DatabaseUnavailable(f"{what}: {text.splitlines()[0] if text else type(exc).__name__}") from exc


def connect(url: str, *, autocommit: bool = False, application_name: str = "jobsvc") -> Conn:
    """Open one connection with keepalives and dict rows. Blocking: call from a thread."""
    with translate_errors("cannot connect to PostgreSQL"):
        conn = psycopg.connect(
            url,
            autocommit=autocommit,
            row_factory=dict_row,
            application_name=application_name,
            **KEEPALIVES,
        )
    try:
        with translate_errors("cannot connect to PostgreSQL"):
            _set_server_keepalives(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class Database:
    """A bounded pool of connections used one thread hop at a time.

    `run` waits at most ``timeout`` seconds for a connection and then raises
    `DatabaseUnavailable`; the pool reconnects in the background by itself.
    """

    def __init__(
        self, url: str, *, max_size: int = 4, timeout: float = 5.0, application_name: str = "jobsvc"
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(max_size)
        self._pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            connection_class=psycopg.Connection[dict[str, Any]],
            kwargs={"row_factory": dict_row, "application_name": application_name, **KEEPALIVES},
            check=check_idle_connection,
            configure=_set_server_keepalives,
            # The pool retries a failed connection with doubling delays (1, 2, 4, 8… s,
            # uncapped) until reconnect_timeout: after a long outage it would wait as long
            # again before trying. A short cycle gives up early instead, and the next
            # request starts a fresh attempt at once: back within ~2 s of PostgreSQL.
            reconnect_timeout=RECONNECT_CYCLE,
            name=application_name,
        )

    async def open(self) -> None:
        # wait=False: a service starts even while PostgreSQL is down (/readyz says so).
        await trio.to_thread.run_sync(lambda: self._pool.open(wait=False))

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: self._pool.close(timeout=2))

    async def run(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(conn)`` in a thread, in one transaction committed when it returns."""

        def hop() -> T:
            with (
                translate_errors("PostgreSQL is not reachable"),
                self._pool.connection(timeout=self._timeout) as conn,
            ):
                return fn(conn)

        return await trio.to_thread.run_sync(hop, limiter=self._limiter)


class Session:
    """One dedicated connection, used by one task at a time.

    The worker claims and finishes jobs through its session because the advisory
    locks it takes belong to the connection: when the connection dies, every lock
    goes with it and `broken` becomes true; the owner must then give up its jobs.
    The connection is in autocommit mode: `run` opens a transaction (BEGIN … COMMIT)
    around its unit of work, `run_statements` does not (each statement commits by
    itself unless the unit opens a transaction), which saves the BEGIN and COMMIT
    round trips of a unit that is one statement (the worker's cycle, issue 14).
    """

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._lock = trio.Lock()
        self.broken = False

    @classmethod
    async def connect(cls, url: str, application_name: str = "jobsvc-session") -> Session:
        conn = await trio.to_thread.run_sync(
            lambda: connect(url, autocommit=True, application_name=application_name)
        )
        return cls(conn)

    @property
    def backend_pid(self) -> int:
        return self._conn.info.backend_pid

    async def run(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(conn)`` in one transaction. Raises `DatabaseUnavailable` when the link breaks."""

        def in_transaction(conn: Conn) -> T:
            with conn.transaction():
                return fn(conn)

        return await self.run_statements(in_transaction)

    async def run_statements(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(conn)`` on the autocommit connection: each statement is its own
        transaction unless ``fn`` opens one. Raises `DatabaseUnavailable` when the link breaks."""

        def hop() -> T:
            try:
                with translate_errors("lost the worker's session"):
                    return fn(self._conn)
            except DatabaseUnavailable:
                self.broken = True
                raise

        if self.broken:
            raise DatabaseUnavailable("the worker's session is broken")
        async with self._lock:
            return await trio.to_thread.run_sync(hop)

    async def run_plan(self, plan: pgtrio.Plan[T]) -> T:
        """Run ``plan`` on the autocommit connection from the trio thread (`pgtrio.run`:
        no thread hop), as `run_statements` would run it. Raises `DatabaseUnavailable`
        when the link breaks. Cancelled before it starts, nothing is sent; once started,
        its statements all run (`pgtrio.run`) and the cancellation comes after."""
        if self.broken:
            raise DatabaseUnavailable("the worker's session is broken")
        async with self._lock:
            try:
                with translate_errors("lost the worker's session"):
                    return await pgtrio.run(self._conn, plan)
            except DatabaseUnavailable:
                self.broken = True
                raise

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            async with self._lock:
                await trio.to_thread.run_sync(self._conn.close)


class Link:
    """One dedicated autocommit connection whose units are sent from the trio thread
    (`pgtrio.run`: no thread hop, no pool checkout), one at a time: the API's lone
    enqueue, one statement that is its own transaction (issue 14, round 5).

    A caller checks `free` and otherwise uses its pool. The connection is opened on
    first use (a thread hop) and replaced when it is lost: an idle connection whose
    socket is readable (the server spoke while nobody asked: a terminated backend's
    FATAL, a restart's close) is closed and a new one opened before the unit is sent,
    as the pool's checkout check (`check_idle_connection`) does; a unit that fails with
    `DatabaseUnavailable` closes it, and the next use opens a new one.
    """

    def __init__(self, url: str, application_name: str) -> None:
        self._url = url
        self._application_name = application_name
        self._conn: Conn | None = None
        self._busy = False

    @property
    def free(self) -> bool:
        return not self._busy

    async def run(self, plan: pgtrio.Plan[T]) -> T:
        """Run ``plan``, each statement its own transaction (autocommit). Raises
        `DatabaseUnavailable` when PostgreSQL cannot be reached, psycopg's error when a
        statement fails. Cancelled before its statements are sent, nothing is sent;
        afterwards they all run (`pgtrio.run`) and the cancellation comes after."""
        if self._busy:
            raise RuntimeError("the link is in use: check `free` first")
        self._busy = True
        try:
            if self._conn is not None and not _idle_and_sound(self._conn):
                self._drop()
            if self._conn is None:
                # A thread hop, once per connection: cancelled meanwhile, the connection
                # is still kept (the hop is not abandoned) and the cancellation comes next.
                self._conn = await trio.to_thread.run_sync(
                    lambda: connect(self._url, autocommit=True, application_name=self._application_name)
                )
            try:
                with translate_errors("PostgreSQL is not reachable"):
                    return await pgtrio.run(self._conn, plan)
            except DatabaseUnavailable:
                self._drop()
                raise
        finally:
            self._busy = False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # closing a socket does not block

    async def close(self) -> None:
        self._drop()


def _idle_and_sound(conn: Conn) -> bool:
    """Whether ``conn`` is open, outside any transaction, and the server has not spoken
    since its last answer (nothing to read on its socket: the link never LISTENs)."""
    if conn.closed or conn.broken or conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    return not _server_spoke(conn)
