"""`jobsvc purge` as a real process (DESIGN §9): deletes finished rows on demand, by age
and status, and refuses bad arguments with exit code 2; the status counters stay exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.fixtures.processes import JobsvcProcess, service_env
from tests.helpers import counts_agree, fill, remaining


async def run_purge(spawn: Any, url: str, tmp_path: Path, *args: str) -> JobsvcProcess:
    proc: JobsvcProcess = spawn("purge", *args, env=service_env(url, f"file://{tmp_path}"))
    await trio.to_thread.run_sync(proc.wait, 60)
    return proc


async def test_purge_deletes_on_demand_by_age_and_status(
    database_url: str, spawn: Any, tmp_path: Path
) -> None:
    failed = fill(database_url, "Failed", "3 hours", 1200)
    canceled = fill(database_url, "Canceled", "3 hours", 2)
    completed = fill(database_url, "Completed", "3 hours", 3)
    recent = fill(database_url, "Failed", "1 minute")
    queued = fill(database_url, "Queued", "3 hours")

    proc = await run_purge(spawn, database_url, tmp_path, "--older-than", "2h", "--status", "failed,Canceled")
    assert proc.popen.returncode == 0, proc.output()
    assert "purged 1202 finished rows" in proc.output()
    assert remaining(database_url) == completed | recent | queued
    assert not failed & remaining(database_url) and not canceled & remaining(database_url)

    proc = await run_purge(spawn, database_url, tmp_path, "--older-than", "0")
    assert proc.popen.returncode == 0 and "purged 4 finished rows" in proc.output()
    assert remaining(database_url) == queued
    assert counts_agree(database_url)


async def test_purge_refuses_bad_arguments(database_url: str, spawn: Any, tmp_path: Path) -> None:
    bad_age = await run_purge(spawn, database_url, tmp_path, "--older-than", "a week")
    assert bad_age.popen.returncode == 2 and "such as 7d, 12h, 30m or 45s" in bad_age.output()
    bad_status = await run_purge(spawn, database_url, tmp_path, "--older-than", "1d", "--status", "Queued")
    assert bad_status.popen.returncode == 2
    assert "expected one of Completed, Failed, Canceled" in bad_status.output()
