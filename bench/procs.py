"""Child processes of the harness: workers, servers, load generators.

Each writes to its own log file; `Child.wait_for` waits (bounded) for a line in
it; `Children` stops whatever is still running when the harness leaves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ChildFailed(RuntimeError):
    """A child process exited early or never said it was ready."""


class Child:
    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            list(args),
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for(self, marker: str, timeout: float = 30.0) -> str:
        """Wait until a line of the log contains ``marker``; returns that line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if marker in line:
                    return line
            if self.popen.poll() is not None:
                raise ChildFailed(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            time.sleep(0.02)
        raise ChildFailed(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()
        return self.popen.returncode

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ChildFailed(f"{self.name} still running after {timeout:.0f}s:\n{self.tail()}") from None


class Children:
    """Starts children and stops every one still running on exit (`close`)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[Child] = []

    def python(self, name: str, module: str, *args: str, env: Mapping[str, str] | None = None) -> Child:
        """``python -m module args`` with the harness's interpreter."""
        return self.spawn(name, [sys.executable, "-m", module, *args], env=env)

    def spawn(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        path = self.log_dir / f"{len(self._started):03d}-{name}.log"
        child = Child(name, args, full_env, path)
        self._started.append(child)
        return child

    def close(self) -> None:
        for child in reversed(self._started):
            if child.popen.poll() is None:
                child.stop(timeout=5)


def clean_env(**extra: str) -> dict[str, str]:
    """The harness's environment without any JOBSVC_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSVC_")}
    env.update(extra)
    return env
