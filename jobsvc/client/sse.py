"""The Server-Sent Events parser of ``GET /results/events``: pure, fed one line at a time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["SSEEvent", "SSEParser"]


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its type (``message`` by default), data and last id."""

    event: str
    data: str
    id: str


@dataclass
class SSEParser:
    """The WHATWG event-stream interpretation, fed one line (without its end) at a time.

    Comments (``: heartbeat``) are skipped; ``data`` lines accumulate, joined by
    ``\\n``; a blank line dispatches; ``id`` persists across events (it is what a
    reconnect sends as ``Last-Event-ID``); ``retry`` sets the reconnect delay.
    """

    last_event_id: str = ""
    retry_ms: int = 1000
    _event: str = field(default="", repr=False)
    _data: list[str] = field(default_factory=list, repr=False)
    _first: bool = field(default=True, repr=False)

    @property
    def retry_seconds(self) -> float:
        return self.retry_ms / 1000

    def reset(self) -> None:
        """Forget a half-received event (a new connection starts clean; the id stays)."""
        self._event, self._data, self._first = "", [], True

    def feed(self, line: str) -> SSEEvent | None:
        """Interpret one line; returns the event a blank line completes, else None."""
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if line == "":
            event = None
            if self._data:
                event = SSEEvent(self._event or "message", "\n".join(self._data), self.last_event_id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            self.retry_ms = int(value)
        return None

    def feed_all(self, lines: Iterable[str]) -> list[SSEEvent]:
        return [event for line in lines if (event := self.feed(line)) is not None]
