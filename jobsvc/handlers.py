"""Handlers of your own, by job type (DESIGN §3, §11): where a worker finds them.

Two sources, merged by `load_handlers`:

- ``jobsvc worker --handler TYPE=module:function`` (repeatable; `parse_handler_flag`);
- the entry-point group ``jobsvc.handlers`` of the installed distributions: the
  entry point's name is the job type, its value ``module:function``.

A flag wins over an entry point for the same type. A handler is ``async def
handler(job: jobsvc.Job) -> None``: it runs inside the job's cancel scope, and
raises `jobsvc.PermanentError` (Failed at once) or `jobsvc.TransientError`
(retried with backoff); any other exception counts as transient (`jobsvc.retry`).
Types without a handler go to the image pipeline.

Anything that cannot be loaded (no such module, an import that raises, no such
attribute, not an async callable) is a `ConfigError` with a sentence: a worker
must not start and then fail every job of a type it was told to run.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from jobsvc.errors import ConfigError, quoted
from jobsvc.model import MAX_TYPE_LENGTH
from jobsvc.worker.executor import Handler

__all__ = ["ENTRY_POINT_GROUP", "describe", "import_handler", "load_handlers", "parse_handler_flag"]

ENTRY_POINT_GROUP = "jobsvc.handlers"


def parse_handler_flag(text: str) -> tuple[str, str]:
    """``TYPE=module:function`` → ``(type, "module:function")``; `ConfigError` if malformed."""
    job_type, equals, target = text.partition("=")
    job_type, target = job_type.strip(), target.strip()
    if not equals or not job_type or ":" not in target:
        raise ConfigError(f"--handler expects TYPE=module:function, got {quoted(text)}")
    _check_type(job_type, f"--handler {quoted(text)}")
    return job_type, target


def _check_type(job_type: str, where: str) -> None:
    if len(job_type) > MAX_TYPE_LENGTH or not job_type.isprintable():
        raise ConfigError(f"{where}: a job type is 1..{MAX_TYPE_LENGTH} printable characters")


def import_handler(target: str, *, job_type: str) -> Handler:
    """Import ``module:function`` (the function may be dotted: ``module:Class.method``)."""
    module_name, _, attribute = target.partition(":")
    where = f"the handler for type {quoted(job_type)} ({target})"
    if not module_name or not attribute:
        raise ConfigError(f"{where}: expected module:function")
    try:
        found: object = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise ConfigError(f"{where} cannot be imported: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(f"{where}: {module_name} has no attribute {attribute!r}") from None
    return _checked(found, where)


def _checked(found: object, where: str) -> Handler:
    if not callable(found):
        raise ConfigError(f"{where} is not callable")
    call = found if inspect.isfunction(found) or inspect.ismethod(found) else type(found).__call__
    if not inspect.iscoroutinefunction(call):
        raise ConfigError(f"{where} must be an async function: async def handler(job) -> None")
    return found  # checked above: an async callable


def load_handlers(flags: Iterable[str] = (), *, use_entry_points: bool = True) -> dict[str, Handler]:
    """The handlers by type: the ``jobsvc.handlers`` entry points, then the ``--handler``
    flags (which win). Raises `ConfigError` for the first that cannot be loaded."""
    targets: dict[str, str] = {}
    if use_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            _check_type(point.name, f"entry point {point.name!r} of group {ENTRY_POINT_GROUP}")
            targets[point.name] = point.value
    for flag in flags:
        job_type, target = parse_handler_flag(flag)
        targets[job_type] = target
    return {job_type: import_handler(target, job_type=job_type) for job_type, target in targets.items()}


def describe(handlers: Mapping[str, Handler]) -> str:
    """``type=module.function, …`` for the worker's start-up line."""
    return ", ".join(
        f"{job_type}={getattr(h, '__module__', '?')}.{getattr(h, '__qualname__', type(h).__qualname__)}"
        for job_type, h in sorted(handlers.items())
    )
