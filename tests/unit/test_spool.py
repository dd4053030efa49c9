"""The spool's owner check: a directory is swept when its lock is free, whatever its name says."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from jobsvc.spool import PREFIX, Spool, sweep

#: Holds the spool's lock in another process until its stdin closes.
_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_open_makes_a_private_locked_directory_named_after_the_pid_and_close_removes_it(
    tmp_path: Path,
) -> None:
    with Spool.open(tmp_path) as spool:
        assert spool.path.parent == tmp_path
        assert spool.path.name.startswith(f"{PREFIX}{os.getpid()}-")
        assert spool.path.stat().st_mode & 0o777 == 0o700
        (spool.path / "x.download").write_bytes(b"partial")
        assert sweep(tmp_path) == []  # our own, locked: never swept
        assert spool.path.is_dir()
    assert list(tmp_path.iterdir()) == []


def test_an_unlocked_spool_is_swept_even_when_its_pid_is_alive(tmp_path: Path) -> None:
    # The pid in the name is our own, a live process: a pid check would keep it (pid reuse).
    stale = tmp_path / f"{PREFIX}{os.getpid()}-leftover"
    stale.mkdir()
    (stale / "jobsvc-1.download").write_bytes(bytes(1000))
    unrelated = tmp_path / "something-else"
    unrelated.mkdir()
    assert sweep(tmp_path) == [stale]
    assert not stale.exists() and unrelated.is_dir()


def test_a_spool_locked_by_another_live_process_is_kept_until_it_exits(tmp_path: Path) -> None:
    held = tmp_path / f"{PREFIX}1-held"
    held.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(held)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert sweep(tmp_path) == []
        assert held.is_dir()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert sweep(tmp_path) == [held]  # its owner is gone: the kernel dropped the lock


def test_open_sweeps_dead_spools_first(tmp_path: Path) -> None:
    stale = tmp_path / f"{PREFIX}999999-dead"
    stale.mkdir()
    with Spool.open(tmp_path) as spool:
        assert [p.name for p in tmp_path.iterdir()] == [spool.path.name]


def test_a_directory_still_being_created_is_left_alone_until_it_is_old(tmp_path: Path) -> None:
    fresh = tmp_path / ".jobsvc-spool-new-abc"
    fresh.mkdir()
    assert sweep(tmp_path) == []
    old = time.time() - 3600
    os.utime(fresh, (old, old))
    assert sweep(tmp_path) == [fresh]
