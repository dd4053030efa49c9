"""The ``jobsvc`` command: servers (migrate, api, worker, dev), database tools
(purge, keys) and clients (enqueue, list, get, cancel, retry, download, watch) of a running API.

Exit codes: 0 success, 1 the job or request failed, 2 bad usage or configuration
(also: the database's schema is not this code's version), 3 the service or
database could not be reached.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Nothing heavier than the standard library at load: trio, psycopg (through `queue`),
# httpx and pydantic are imported by the commands that use them, so that
# ``jobsvc --version`` and ``--help`` answer at once (tests/unit/client/test_cli_imports.py).
from jobsvc import __version__, logs
from jobsvc.config import Settings
from jobsvc.errors import ConfigError, DatabaseUnavailable, JobsvcError, SchemaMismatch

if TYPE_CHECKING:
    import trio

    from jobsvc.metrics import Metrics
    from jobsvc.worker import Handler

log = logging.getLogger("jobsvc")

EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3
DEV_DIR = Path(".jobsvc")


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except ConfigError as exc:
        print(f"jobsvc: configuration error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except SchemaMismatch as exc:
        print(f"jobsvc: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except DatabaseUnavailable as exc:
        print(f"jobsvc: {exc}", file=sys.stderr)
        code = EXIT_UNAVAILABLE
    except JobsvcError as exc:
        print(f"jobsvc: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobsvc",
        description="A PostgreSQL-backed job queue service for image-ingest jobs. "
        "Settings come from JOBSVC_* environment variables; flags override them.",
    )
    parser.add_argument("--version", action="version", version=f"jobsvc {__version__}")
    sub = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def server(name: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--database-url", help="PostgreSQL URI (JOBSVC_DATABASE_URL)")
        p.set_defaults(func=func)
        return p

    server("migrate", "apply schema.sql (idempotent; safe to run concurrently)", cmd_migrate)
    api = server("api", "serve the HTTP API", cmd_api)
    _listen_flags(api)
    api.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes accepting on the same socket (default 1; one process uses one core)",
    )
    api.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a --workers child's socket
    worker = server("worker", "run a worker process", cmd_worker)
    worker.add_argument("--concurrency", type=int, help="jobs in flight (JOBSVC_CONCURRENCY)")
    worker.add_argument("--metrics-port", type=int, help="serve /metrics on this port (JOBSVC_METRICS_PORT)")
    _handler_flag(worker)
    purge = server("purge", "delete old finished rows now (as the cleaner does)", cmd_purge)
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
    _keys_commands(sub)
    dev = server("dev", "embedded PostgreSQL + migrate + API + worker in one process", cmd_dev)
    _listen_flags(dev)
    dev.add_argument("--concurrency", type=int, help="jobs in flight (JOBSVC_CONCURRENCY)")
    dev.add_argument("--data-dir", type=Path, default=DEV_DIR, help="where the embedded data lives (.jobsvc)")
    _handler_flag(dev)

    try:
        from jobsvc.client.commands import add_commands
    except ImportError:  # pragma: no cover - the client commands are optional
        return parser
    add_commands(sub)
    return parser


def _keys_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _listen_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (JOBSVC_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (JOBSVC_PORT, default 8000)")


def _handler_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--handler",
        action="append",
        default=[],
        metavar="TYPE=MODULE:FUNCTION",
        help="run jobs of TYPE with this async function (repeatable; also the entry-point group "
        "jobsvc.handlers); other types go to the image pipeline",
    )


def _handlers(args: argparse.Namespace) -> dict[str, Handler]:
    """Loaded before anything starts: a handler that cannot be imported stops the command."""
    from jobsvc.handlers import load_handlers

    return load_handlers(args.handler)


def _settings(args: argparse.Namespace, **defaults: Any) -> Settings:
    flags = {
        name: getattr(args, name, None)
        for name in ("database_url", "host", "port", "concurrency", "metrics_port")
    }
    settings = Settings.from_env(defaults=defaults, **flags)
    logs.configure(settings)
    return settings


# --- servers ------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from jobsvc import queue

    settings = _settings(args)
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

    settings = _settings(args)
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

    settings = _settings(args)
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


def cmd_api(args: argparse.Namespace) -> int:
    import trio

    settings = _settings(args)
    settings.require_database_url()
    if args.workers < 1:
        print("jobsvc: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and args.listen_fd is None:
        from jobsvc.apiworkers import serve_workers

        return serve_workers(settings, args.workers)
    trio.run(_serve_until_signal, [partial(serve_api, settings, listen_fd=args.listen_fd)])
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import trio

    settings = _settings(args)
    check_schema(settings.require_database_url())
    handlers = _handlers(args)
    trio.run(_serve_until_signal, [partial(run_worker, settings, handlers=handlers)])
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    import trio

    from jobsvc import embedded
    from jobsvc.metrics import Metrics

    data_dir: Path = args.data_dir
    defaults = {
        "auth": "off",
        "allow_private_urls": True,
        "storage_url": f"file://{(data_dir / 'results').resolve()}",
    }
    settings = _settings(args, **defaults)
    handlers = _handlers(args)
    if not settings.database_url:
        server = embedded.start(data_dir / "pg")
        settings = settings.replace(database_url=embedded.database_url(server))
    migrate(settings.require_database_url())
    print(f"jobsvc dev: PostgreSQL  {settings.database_url}", flush=True)
    print(f"jobsvc dev: results in  {settings.storage_url}", flush=True)
    if settings.auth == "off":
        print(
            "jobsvc dev: auth is OFF: every request acts as tenant default with every scope "
            "(JOBSVC_AUTH=keys to require API keys)",
            flush=True,
        )
    metrics = Metrics()  # one registry: the API's /metrics shows the worker's counters too
    trio.run(
        _serve_until_signal,
        [
            partial(serve_api, settings, metrics=metrics),
            partial(run_worker, settings, handlers=handlers, metrics=metrics),
        ],
    )
    return 0


Service = Callable[..., Coroutine[Any, Any, None]]  # (stop: trio.Event, *, task_status)


class _StatusIgnored:
    """`trio.TASK_STATUS_IGNORED` without importing trio when this module loads."""

    def started(self, value: object = None) -> None:
        pass


_STATUS_IGNORED: Any = _StatusIgnored()


async def _serve_until_signal(services: Sequence[Service]) -> None:
    """Run services until SIGTERM/SIGINT, then let each stop gracefully; a second
    signal stops them at once."""
    import trio

    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    if stop.is_set():
                        log.warning("second %s: stopping now", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s: shutting down gracefully", signal.Signals(signum).name)
                    stop.set()

            nursery.start_soon(watch)
            async with trio.open_nursery() as services_nursery:
                for service in services:
                    await services_nursery.start(service, stop)
            nursery.cancel_scope.cancel()


async def serve_api(
    settings: Settings,
    stop: trio.Event,
    task_status: Any = _STATUS_IGNORED,
    *,
    metrics: Metrics | None = None,
    listen_fd: int | None = None,
) -> None:
    import hypercorn.config
    import hypercorn.trio
    import trio

    from jobsvc import serving
    from jobsvc.api import create_app, end_event_streams

    config = hypercorn.config.Config()
    # listen_fd: a `jobsvc api --workers N` child accepts on its parent's socket.
    config.bind = [f"fd://{listen_fd}" if listen_fd is not None else f"{settings.host}:{settings.port}"]
    # JOBSVC_ACCESS_LOG: the path without its query string (presigned source URLs and
    # cursors live there); headers, hence tokens, are never logged.
    config.accesslog = logging.getLogger("jobsvc.access") if settings.access_log else None
    config.access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(L)ss'
    # Our logger, so hypercorn's lines go through our format (JSON too) exactly once.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5
    config.keep_alive_timeout = serving.KEEP_ALIVE_TIMEOUT
    serving.install_json_protocol_errors()
    app = create_app(settings, metrics=metrics)

    async def shutdown_trigger() -> None:
        await stop.wait()
        end_event_streams(app)  # open event streams would hold shutdown for graceful_timeout

    async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # shield_sends: without it no connection is ever closed by the server (jobsvc/serving.py).
        await hypercorn.trio.serve(
            serving.shield_sends(app), config, shutdown_trigger=shutdown_trigger, task_status=task_status
        )

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve)
        for bind in binds:
            print(f"jobsvc api: listening on {bind}  (docs {bind}/docs)", flush=True)
        task_status.started()


async def run_worker(
    settings: Settings,
    stop: trio.Event,
    task_status: Any = _STATUS_IGNORED,
    *,
    handlers: Mapping[str, Handler] | None = None,
    metrics: Metrics | None = None,
) -> None:
    import trio

    from jobsvc.handlers import describe
    from jobsvc.worker import Worker

    worker = Worker(settings, handlers=handlers, metrics=metrics)
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        # A daemon thread: metrics stay readable while the trio loop is busy.
        start_http_server(settings.metrics_port, addr=settings.host, registry=worker.metrics.registry)
        print(f"jobsvc worker: metrics on http://{settings.host}:{settings.metrics_port}/metrics", flush=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        print(
            f"jobsvc worker: {settings.worker_id} running {settings.concurrency} jobs at a time", flush=True
        )
        if handlers:
            print(f"jobsvc worker: handlers {describe(handlers)}; other types: image pipeline", flush=True)
        task_status.started()
        await stop.wait()
        worker.shutdown()


if __name__ == "__main__":  # pragma: no cover
    main()
