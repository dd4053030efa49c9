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
from jobsvc import __version__
from jobsvc.config import Settings
from jobsvc.dbtools import (
    add_keys,
    add_purge,
    check_schema,
    cmd_migrate,
    cmd_purge,
    migrate,
    settings_from_args,
)
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
    add_purge(server("purge", "delete old finished rows now (as the cleaner does)", cmd_purge))
    add_keys(sub)
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


# --- servers ------------------------------------------------------------------------


def cmd_api(args: argparse.Namespace) -> int:
    import trio

    settings = settings_from_args(args)
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

    settings = settings_from_args(args)
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
    settings = settings_from_args(args, **defaults)
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
    serving.install_one_write_responses()  # a response in one socket write, not three
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
