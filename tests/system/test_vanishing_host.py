"""A worker whose host drops off the network mid-job: no RST, no FIN (issue 7).

The worker runs on a test host (a network namespace, `tests.fixtures.netns`) and
reaches a dedicated PostgreSQL and the image server over a switch that the test
switches off. PostgreSQL listens on the link's root-side address itself (no proxy:
a proxy would hold the server's end of the connection open and hide the very
thing under test, the server noticing that its peer is gone).

The job must be rescued by a worker in the root namespace within the bound the
README states, and the cut-off worker, once its host is back, must record
nothing for the job it no longer owns.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from jobsvc.cli import migrate
from jobsvc.model import Status
from tests.fixtures.netns import Link
from tests.fixtures.processes import Spawn, service_env
from tests.helpers import connect, enqueue, row, until, wait_status
from tests.system.test_recovery import OwnPostgres

pytestmark = pytest.mark.slow


#: README, failure modes: keepalives (idle 4 s, 3 probes 2 s apart) and tcp_user_timeout
#: 10 s on every connection, "noticed in about 10 s".
DETECTION_BOUND = 10.0
RESCUE_INTERVAL = 0.5


class LinkedPostgres(OwnPostgres):
    """A dedicated embedded PostgreSQL that also listens on TCP on the link's root-side address."""

    def __init__(self, datadir: Path, link: Link) -> None:
        super().__init__(datadir)
        with socket.create_server((link.host_ip, 0)) as probe:
            port = probe.getsockname()[1]
        with (Path(self.server.pgdata) / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {link.worker_ip}/32 trust\n")
        self.stop()
        self._run(
            "-w",
            "-o",
            f"-h {link.host_ip} -p {port} -k {self.socket_dir}",
            "-l",
            str(self.server.log),
            "start",
        )
        self.unix_url = f"postgresql://postgres@/postgres?host={self.socket_dir}&port={port}"
        self.tcp_url = f"postgresql://postgres@{link.host_ip}:{port}/postgres"


@pytest.fixture
def linked_postgres(netns_link: Link) -> Iterator[LinkedPostgres]:
    # Not under tmp_path: see the own_postgres fixture (the server's system user must reach it).
    parent = Path(tempfile.mkdtemp(prefix="jobsvc-test-netns-"))
    try:
        pg = LinkedPostgres(parent / "pg", netns_link)
        try:
            yield pg
        finally:
            pg.close()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def backends_from(url: str, address: str) -> set[int]:
    with connect(url) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE client_addr = %s::inet", [address])
        return {r["pid"] for r in rows}


def local_listeners(url: str) -> int:
    with connect(url) as conn:
        found = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE application_name = 'jobsvc-listener' AND client_addr IS NULL"
        ).fetchone()
    return int(found["n"]) if found else 0


async def test_a_worker_whose_host_vanishes_mid_job_is_rescued_and_records_nothing_after(
    spawn: Spawn,
    netns_link: Link,
    linked_postgres: LinkedPostgres,
    image_server: Any,
    tcp_proxy: Any,
    tmp_path: Path,
) -> None:
    link, pg = netns_link, linked_postgres
    migrate(pg.unix_url)
    # The image server listens on loopback only: forward the link's address to it.
    images = tcp_proxy(("127.0.0.1", image_server.port), host=link.host_ip)
    images.start()
    results = f"file://{tmp_path / 'results'}"
    common = {"JOBSVC_RESCUE_INTERVAL": str(RESCUE_INTERVAL), "JOBSVC_CONCURRENCY": "1"}

    cut_off = spawn(
        "worker",
        env=service_env(pg.tcp_url, results, JOBSVC_WORKER_ID="worker-a", **common),
        prefix=link.exec_prefix,
    )
    path = f"/stall-once/{uuid.uuid4().hex}/a.png"  # endless the first time, a PNG the second
    job = enqueue(pg.unix_url, f"{images.url}{path}")
    await until(lambda: row(pg.unix_url, job.id).worker_id == "worker-a", timeout=20, thread=True)
    await until(lambda: image_server.hits(path) == 1, timeout=10, thread=True)  # mid-download
    cut_off_backends = backends_from(pg.unix_url, link.worker_ip)
    assert len(cut_off_backends) >= 3, cut_off.output()  # session, listener, pool: all over the link

    rescuer = spawn("worker", env=service_env(pg.unix_url, results, JOBSVC_WORKER_ID="worker-b", **common))
    await until(lambda: local_listeners(pg.unix_url) == 1, timeout=20, thread=True)

    link.cut()
    cut_at = trio.current_time()
    try:
        # The server notices the silent peer: the worker's backends end, its advisory lock
        # is released, and the rescuer requeues the job.
        await until(
            lambda: not (backends_from(pg.unix_url, link.worker_ip) & cut_off_backends),
            timeout=60,
            thread=True,
        )
        server_noticed = trio.current_time() - cut_at
        await until(lambda: row(pg.unix_url, job.id).worker_id != "worker-a", timeout=30, thread=True)
        rescued = trio.current_time() - cut_at
        done = await wait_status(pg.unix_url, job.id, Status.COMPLETED, Status.FAILED, timeout=20)
        assert (done.status, done.attempts, done.worker_id) == (Status.COMPLETED, 2, None), rescuer.output()
        # The cut-off worker notices too, by itself, and gives up the job it no longer owns
        # (its attempt may have ended already, waiting to be recorded: it never is).
        await until(lambda: "session lost, its jobs abandoned" in cut_off.output(), timeout=60, interval=0.1)
        worker_noticed = trio.current_time() - cut_at
    finally:
        link.restore()
    print(
        f"\nvanished host: server dropped the worker's backends {server_noticed:.1f}s after the cut, "
        f"job rescued {rescued:.1f}s after, the worker itself noticed {worker_noticed:.1f}s after"
    )
    assert rescued <= DETECTION_BOUND + 2 * RESCUE_INTERVAL + 1.0

    # Back on the network, the cut-off worker reconnects: it could record now, and must not.
    await until(lambda: backends_from(pg.unix_url, link.worker_ip), timeout=30, thread=True)
    after = row(pg.unix_url, job.id)
    assert after == done, cut_off.output()
    # Its only line about the job is the claim: no outcome recorded, none logged.
    about = [line for line in cut_off.output().splitlines() if f"job {job.job_id}/" in line]
    assert all(" Processing attempt=" in line for line in about), about
    assert f"job {job.job_id}/a.png Completed" in rescuer.output()
