"""``jobsvc api --workers N``: N API processes accepting on one listening socket.

One API process tops out at one core (trio, the GIL). The parent binds and listens
once, then starts N ``jobsvc api --listen-fd FD`` children that inherit the socket;
every child accepts from it, so the kernel hands each new connection to a process
that is waiting in accept (a busy or stopped one takes none), and port 0 works (one
port for all). Each child is a whole API process: its own pool, announcer and events
listener. The parent only supervises: SIGTERM/SIGINT are passed on once (SIGTERM, so
each child shuts down gracefully), and when one child exits the others are stopped
and the parent exits with its code, for the process manager to restart the set.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading

from jobsvc.config import Settings

__all__ = ["listen", "serve_workers"]

#: Seconds a child gets to stop after SIGTERM (hypercorn's graceful timeout is 5 s).
STOP_GRACE = 10.0

_PR_SET_PDEATHSIG = 1


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """The listening socket the children share (inheritable, TCP_NODELAY as hypercorn sets)."""
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # A parent killed with SIGKILL cannot pass SIGTERM on: the kernel does it (Linux).
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def serve_workers(settings: Settings, workers: int) -> int:
    """Run ``workers`` API processes on ``settings.host:settings.port`` until a signal."""
    sock = listen(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    env = {**os.environ, "JOBSVC_DATABASE_URL": settings.require_database_url()}
    command = [sys.executable, "-m", "jobsvc.cli", "api", "--listen-fd", str(sock.fileno())]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    children = [
        # Own process group: a terminal's Ctrl-C reaches the parent only, which passes
        # one SIGTERM on (a second signal would make a child stop at once).
        subprocess.Popen(
            command, env=env, pass_fds=(sock.fileno(),), process_group=0, preexec_fn=_die_with_parent
        )
        for _ in range(workers)
    ]
    sock.close()  # the children hold it
    shown = f"[{host}]" if ":" in host else host
    print(f"jobsvc api: listening on http://{shown}:{port}  ({workers} worker processes)", flush=True)
    while not stop.is_set() and all(child.poll() is None for child in children):
        stop.wait(0.2)  # a supervisor's poll: a child's exit is noticed within 0.2 s
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=STOP_GRACE))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    failed = [c for c in codes if c not in (0, -signal.SIGTERM)]
    return 0 if stop.is_set() and not failed else (failed[0] if failed and failed[0] > 0 else 1)
