"""Per-process spool directories for downloads, and the sweep of dead processes' ones.

A worker streams every download to a temporary file (docs/ARCHITECTURE.md, "The
fetcher") and removes it when the job ends, but a SIGKILL (or the OOM killer, or
a power cut) gives it no chance: the partial file would stay forever. So each
worker process spools into its own directory, ``<base>/jobsvc-spool-<pid>-<random>``,
and every worker sweeps at start-up the directories whose owner is gone.

"Gone" is decided by a lock, never by a pid (pids are reused): the owner holds
an exclusive `flock` on the directory itself for its whole life. The kernel drops
it when the process ends, however it ends, so a directory whose lock can be taken
belongs to nobody. The owner takes the lock before the directory gets its final
name (it is made under a ``.jobsvc-spool-new-`` name, locked, then renamed: a
rename keeps the inode, hence the lock), so no sweeper ever sees a live spool
unlocked. The lock descriptor is close-on-exec: a child process that execs does
not keep a dead worker's spool alive.

Blocking (file system calls): call from a thread in trio code.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["PREFIX", "Spool", "sweep"]

log = logging.getLogger(__name__)

PREFIX = "jobsvc-spool-"
_NEW_PREFIX = ".jobsvc-spool-new-"
#: A directory still under its creation name this long after it was made belongs to a
#: process that died in the microseconds between mkdtemp and rename.
_NEW_GRACE = 60.0


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding ``path``'s exclusive flock, or None if another holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None  # removed by another sweeper meanwhile, or not a directory of ours
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep(base: Path) -> list[Path]:
    """Remove the spool directories under ``base`` whose owner process is gone; return them.

    A live owner's directory is never touched (its lock is held). Errors are logged,
    not raised: a sweep that cannot remove something must not stop a worker starting.
    """
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError as exc:
        log.warning("cannot list the spool base %s: %s", base, exc.strerror)
        return removed
    now = time.time()
    for path in entries:
        if path.name.startswith(_NEW_PREFIX):
            try:
                if now - path.stat().st_mtime < _NEW_GRACE:
                    continue  # being created right now, maybe
            except OSError:
                continue
        elif not path.name.startswith(PREFIX):
            continue
        fd = _try_lock(path)
        if fd is None:
            continue  # its owner lives
        try:
            shutil.rmtree(path)
            removed.append(path)
        except FileNotFoundError:
            pass  # another sweeper was quicker
        except OSError as exc:
            log.warning("cannot remove the stale spool %s: %s", path, exc)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d stale spool director%s", len(removed), "y" if len(removed) == 1 else "ies")
    return removed


class Spool:
    """This process's own spool directory, locked for as long as it is open.

    `open` sweeps dead owners' directories first, then makes and locks a new one.
    `close` removes it (and everything in it) and releases the lock.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def open(cls, base: Path | str | None = None) -> Spool:
        """Sweep ``base`` (default: the system temporary directory), then make this process's spool."""
        root = Path(base) if base is not None else Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        sweep(root)
        new = Path(tempfile.mkdtemp(prefix=_NEW_PREFIX, dir=root))  # mode 0700
        fd = _try_lock(new)
        if fd is None:  # nobody else knows this fresh random name
            raise RuntimeError(f"could not lock the new spool directory {new}")
        final = root / f"{PREFIX}{os.getpid()}-{new.name.removeprefix(_NEW_PREFIX)}"
        try:
            new.rename(final)
        except BaseException:
            os.close(fd)
            shutil.rmtree(new, ignore_errors=True)
            raise
        log.debug("spooling downloads under %s", final)
        return cls(final, fd)

    def close(self) -> None:
        """Remove the directory, then drop the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
