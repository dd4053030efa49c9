"""The client side of jobsvc: the ``enqueue``, ``list``, ``cancel`` and ``watch`` commands.

    core.py      sans-I/O: each call's request and the reading of its answer, `ClientError`,
                 the event stream's resumption (shared by both clients)
    http.py      `Client` / `AsyncClient` (public as `jobsvc.Client`, `jobsvc.AsyncClient`):
                 the two thin transports over `core`, blocking and async (trio or asyncio)
    sse.py       the Server-Sent Events parser (pure)
    display.py   the table, the watch lines and progress line, `JobTracker`
    commands.py  argparse wiring and the commands, thin users of `http`

`jobsvc.cli` imports `add_commands`; the rest is re-exported as before the split.
"""

from jobsvc.client.commands import add_commands, parse_run_at
from jobsvc.client.display import (
    Display,
    JobTracker,
    format_change,
    format_duration,
    format_table,
    progress_line,
)
from jobsvc.client.http import ClientError, error_sentence
from jobsvc.client.sse import SSEEvent, SSEParser

__all__ = [
    "ClientError",
    "Display",
    "JobTracker",
    "SSEEvent",
    "SSEParser",
    "add_commands",
    "error_sentence",
    "format_change",
    "format_duration",
    "format_table",
    "parse_run_at",
    "progress_line",
]
