"""The schema's versions: the one this code expects (stated in schema.sql only),
`migrate`, and what a database at another version lacks (`schema_problem`)."""

from __future__ import annotations

import re
from importlib import resources

from psycopg.rows import tuple_row

from jobsvc.db import Conn
from jobsvc.errors import SchemaMismatch
from jobsvc.queries import MIGRATE_LOCK_SQL, SCHEMA_EXISTS_SQL, SCHEMA_VERSION_SQL

#: Two-int advisory keys live in a key space apart from the bigint row keys.
MIGRATE_LOCK = (0x6A6F6273, 1)


def load_schema() -> str:
    """The text of schema.sql, shipped inside the package."""
    return resources.files("jobsvc").joinpath("schema.sql").read_text(encoding="utf-8")


def _declared_version(schema_sql: str) -> int:
    match = re.search(r"INSERT INTO jobsvc_meta \(schema_version\) VALUES \((\d+)\)", schema_sql)
    if match is None:  # pragma: no cover - schema.sql is shipped with the code
        raise RuntimeError("schema.sql does not declare its schema_version")
    return int(match.group(1))


#: The schema version this code expects: the one schema.sql writes (stated there only).
SCHEMA_VERSION = _declared_version(load_schema())


def migrate(conn: Conn, schema_sql: str) -> None:
    """Apply schema.sql, which upgrades any earlier version in place; concurrent callers
    are serialised by a transaction advisory lock. Raises `SchemaMismatch` (and changes
    nothing) when the database is newer than ``schema_sql``."""
    conn.execute(MIGRATE_LOCK_SQL, MIGRATE_LOCK)
    with conn.cursor(row_factory=tuple_row) as cur:  # any connection's row factory will do
        exists = cur.execute(SCHEMA_EXISTS_SQL).fetchone()
        found = cur.execute(SCHEMA_VERSION_SQL).fetchone() if exists and exists[0] else None
    stored, target = (None if found is None else int(found[0])), _declared_version(schema_sql)
    if stored is not None and stored > target:
        raise SchemaMismatch(
            f"the database's schema is version {stored}, newer than this jobsvc's version {target}: "
            "upgrade jobsvc instead of migrating"
        )
    conn.execute(schema_sql.encode())  # bytes: run as one simple-protocol script


def schema_problem(version: int | None) -> str | None:
    """Why a database at schema ``version`` cannot serve this code (None: it can)."""
    if version == SCHEMA_VERSION:
        return None
    if version is None:
        return "not migrated: the database has no jobsvc schema; run `jobsvc migrate`"
    if version < SCHEMA_VERSION:
        return (
            f"the database's schema is version {version}, older than this jobsvc's version "
            f"{SCHEMA_VERSION}: run `jobsvc migrate`"
        )
    return (
        f"the database's schema is version {version}, newer than this jobsvc's version "
        f"{SCHEMA_VERSION}: upgrade jobsvc"
    )


def schema_version(conn: Conn) -> int | None:
    """The migrated schema's version, or None when jobsvc_meta does not exist yet."""
    exists = conn.execute(SCHEMA_EXISTS_SQL).fetchone()
    if not exists or not exists["ok"]:
        return None
    row = conn.execute(SCHEMA_VERSION_SQL).fetchone()
    return None if row is None else int(row["schema_version"])
