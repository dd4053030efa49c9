"""The ``jobsvc`` commands that work on the database directly: ``migrate``, ``purge``
and ``keys`` (README, "Operations" and "Security"), and how every command reads its
settings. Only the standard library at load: each command imports what it uses.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jobsvc import logs
from jobsvc.config import Settings
from jobsvc.errors import ConfigError, DatabaseUnavailable, SchemaMismatch

log = logging.getLogger("jobsvc")


def settings_from_args(args: argparse.Namespace, **defaults: Any) -> Settings:
    """The settings of a command: JOBSVC_* variables, overridden by its flags; logging set up."""
    flags = {
        name: getattr(args, name, None)
        for name in ("database_url", "host", "port", "concurrency", "metrics_port")
    }
    settings = Settings.from_env(defaults=defaults, **flags)
    logs.configure(settings)
    return settings


def add_purge(purge: argparse.ArgumentParser) -> None:
    """The flags of ``jobsvc purge``."""
    purge.add_argument(
        "--older-than",
        required=True,
        metavar="DURATION",
        help="finishedAt older than this: 7d, 12h, 30m, 45s (0: every finished row)",
    )
    purge.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help="only these finished statuses (Completed, Failed, Canceled); repeat or comma-separate "
        "(default: all three)",
    )


def add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``jobsvc keys create | list | revoke``."""
    keys = sub.add_parser(
        "keys",
        help="manage API keys on the database: create, list, revoke",
        description="API keys, on the database directly (README, Security). A token is shown once, "
        "by create, and stored only as a hash.",
    )
    actions = keys.add_subparsers(title="actions", required=True, metavar="ACTION")

    def action(name: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        p.add_argument("--database-url", help="PostgreSQL URI (JOBSVC_DATABASE_URL)")
        p.set_defaults(func=func)
        return p

    create = action("create", "create a key and print its token alone on stdout (once)", cmd_keys_create)
    create.add_argument("--tenant", required=True, help="the tenant whose results the key enqueues and reads")
    scopes = create.add_mutually_exclusive_group()
    scopes.add_argument(
        "--scopes",
        default="enqueue,read,cancel",
        help="comma-separated: enqueue, read, cancel (default: all three, for its tenant only)",
    )
    scopes.add_argument("--admin", action="store_true", help="every scope, for every tenant")
    create.add_argument("--label", help="a note saying whose key it is (shown by keys list)")
    action("list", "list keys: id, tenant, scopes, label, created, last used, revoked", cmd_keys_list)
    revoke = action("revoke", "revoke a key (refused by the API within 5 s)", cmd_keys_revoke)
    revoke.add_argument("id", type=int, help="the key's id (from keys list)")


def cmd_migrate(args: argparse.Namespace) -> int:
    from jobsvc import queue

    settings = settings_from_args(args)
    migrate(settings.require_database_url())
    print(f"jobsvc: schema is current (version {queue.SCHEMA_VERSION})")
    return 0


def migrate(url: str) -> None:
    from jobsvc import db, queue

    with db.connect(url) as conn, conn.transaction():
        queue.migrate(conn, queue.load_schema())


def check_schema(url: str) -> None:
    """Refuse to start against a schema that is not this code's (`SchemaMismatch`). An
    unreachable database is not refused: the worker waits for it with backoff."""
    from jobsvc import db, queue

    try:
        with db.connect(url) as conn:
            problem = queue.schema_problem(queue.schema_version(conn))
    except DatabaseUnavailable as exc:
        log.warning("schema version not checked: %s", exc)
        return
    if problem is not None:
        raise SchemaMismatch(f"worker not started: {problem}")


def cmd_purge(args: argparse.Namespace) -> int:
    from jobsvc import db, queue
    from jobsvc.config import parse_duration

    settings = settings_from_args(args)
    url = settings.require_database_url()
    try:
        older_than = parse_duration(args.older_than)
    except ValueError as exc:
        raise ConfigError(f"--older-than {args.older_than!r:.40}: {exc}") from None
    statuses = _finished_statuses(args.status)
    deleted = 0
    with db.connect(url, autocommit=True) as conn, db.translate_errors("purge interrupted"):
        problem = queue.schema_problem(queue.schema_version(conn))
        if problem is not None:
            raise SchemaMismatch(f"nothing purged: {problem}")
        while True:  # one short transaction per batch, as the cleaner
            with conn.transaction():
                n = queue.clean_batch(conn, older_than, statuses=statuses, wait=True) or 0
            deleted += n
            if n < queue.CLEAN_BATCH:
                break
    print(f"jobsvc: purged {deleted} finished row{'s' if deleted != 1 else ''}")
    return 0


def _key_hop(args: argparse.Namespace, fn: Callable[[Any], Any]) -> Any:
    """Run ``fn(conn)`` in one transaction on a database at this code's schema version."""
    from jobsvc import db, queue

    settings = settings_from_args(args)
    with db.connect(settings.require_database_url(), autocommit=True) as conn, db.translate_errors("keys"):
        problem = queue.schema_problem(queue.schema_version(conn))
        if problem is not None:
            raise SchemaMismatch(f"keys not changed: {problem}")
        with conn.transaction():
            return fn(conn)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from jobsvc import keys

    scopes = (keys.Scope.ADMIN,) if args.admin else keys.parse_scopes([args.scopes])
    key, token = _key_hop(args, lambda c: keys.create_key(c, args.tenant, scopes, args.label))
    # The token alone on stdout (for `$(jobsvc keys create …)`); what it is, on stderr.
    print(token, flush=True)
    print(
        f"jobsvc: created key {key.id} for tenant {key.tenant} with scopes {','.join(key.scopes)}; "
        "the token is shown only this once",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from jobsvc import keys

    def when(moment: Any) -> str:
        return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    rows = [("ID", "TENANT", "SCOPES", "LABEL", "CREATED", "LAST USED", "REVOKED")]
    for key in _key_hop(args, keys.list_keys):
        created, used, revoked = (when(_utc(m)) for m in (key.created_at, key.last_used_at, key.revoked_at))
        rows.append((str(key.id), key.tenant, ",".join(key.scopes), key.label or "-", created, used, revoked))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _utc(moment: Any) -> Any:
    from datetime import UTC

    return None if moment is None else moment.astimezone(UTC)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from jobsvc import keys

    key = _key_hop(args, lambda c: keys.revoke_key(c, args.id))
    print(f"jobsvc: revoked key {key.id} of tenant {key.tenant} (the API refuses it within 5 s)")
    return 0


def _finished_statuses(given: Sequence[str] | None) -> tuple[str, ...]:
    from jobsvc import queue

    if not given:
        return queue.FINISHED
    by_name = {s.lower(): s for s in queue.FINISHED}
    chosen: list[str] = []
    for part in (p.strip() for g in given for p in g.split(",")):
        if part.lower() not in by_name:
            raise ConfigError(f"--status {part!r:.40}: expected one of {', '.join(queue.FINISHED)}")
        chosen.append(by_name[part.lower()])
    return tuple(dict.fromkeys(chosen))
