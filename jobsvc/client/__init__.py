"""The client side of jobsvc: the ``enqueue``, ``list``, ``get``, ``cancel``, ``retry``,
``download`` and ``watch`` commands.

    core.py      sans-I/O: each call's request and the reading of its answer, `ClientError`,
                 the event stream's resumption (shared by both clients)
    http.py      `Client` / `AsyncClient` (public as `jobsvc.Client`, `jobsvc.AsyncClient`):
                 the two thin transports over `core`, blocking and async (trio or asyncio)
    sse.py       the Server-Sent Events parser (pure)
    display.py   the table, the watch lines and progress line, `JobTracker`
    commands.py  argparse wiring and the commands, thin users of `http`
    arguments.py what the flags accept (argparse types, ``--run-at``)
    exits.py     the exit codes; a `ClientError` to one stderr line and a code
    watching.py  ``watch``: the live line, the ticking clock, the state changes

`jobsvc.cli` imports `jobsvc.client.commands.add_commands`. The names below are
re-exported as before the split, each imported on first use (PEP 562): importing this
package must not load httpx, pydantic or trio, or ``jobsvc --version`` would wait for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobsvc.client.arguments import parse_run_at as parse_run_at
    from jobsvc.client.commands import add_commands as add_commands
    from jobsvc.client.display import Display as Display
    from jobsvc.client.display import JobTracker as JobTracker
    from jobsvc.client.display import format_change as format_change
    from jobsvc.client.display import format_duration as format_duration
    from jobsvc.client.display import format_table as format_table
    from jobsvc.client.display import progress_line as progress_line
    from jobsvc.client.http import ClientError as ClientError
    from jobsvc.client.http import error_sentence as error_sentence
    from jobsvc.client.sse import SSEEvent as SSEEvent
    from jobsvc.client.sse import SSEParser as SSEParser

_EXPORTS = {
    "ClientError": "jobsvc.client.http",
    "Display": "jobsvc.client.display",
    "JobTracker": "jobsvc.client.display",
    "SSEEvent": "jobsvc.client.sse",
    "SSEParser": "jobsvc.client.sse",
    "add_commands": "jobsvc.client.commands",
    "error_sentence": "jobsvc.client.http",
    "format_change": "jobsvc.client.display",
    "format_duration": "jobsvc.client.display",
    "format_table": "jobsvc.client.display",
    "parse_run_at": "jobsvc.client.arguments",
    "progress_line": "jobsvc.client.display",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobsvc.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
