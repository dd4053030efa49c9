"""The client side of jobsvc: the ``enqueue``, ``list``, ``cancel`` and ``watch`` commands.

    http.py      `Client` / `AsyncClient`: one typed method per API call, `ClientError`
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
