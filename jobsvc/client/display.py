"""What the client commands print: the ``list`` table, ``watch``'s change lines and
progress line, and the bookkeeping of a followed job (`JobTracker`). Pure but for
`Display`, which writes to the stream it is given."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

from jobsvc.model import Status
from jobsvc.schemas import JobView

__all__ = [
    "Display",
    "JobTracker",
    "format_change",
    "format_duration",
    "format_elapsed",
    "format_table",
    "progress_line",
    "truncate",
    "view_json",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ERASE_LINE = "\r\x1b[K"


def view_json(view: JobView) -> dict[str, object]:
    """The view as the API spells it (camelCase, statuses and ids as strings)."""
    return view.model_dump(mode="json", by_alias=True)


# --- following a job ----------------------------------------------------------------


@dataclass
class JobTracker:
    """The latest known state of each result of one job."""

    job_id: str
    results: dict[str, JobView] = field(default_factory=dict)

    def update(self, view: JobView) -> bool:
        """Record ``view``; False when it is not newer than what is known (a repeat)."""
        if not _same_id(view.job_id, self.job_id):
            return False
        known = self.results.get(view.result_file)
        if known is not None and (
            view.updated_at < known.updated_at
            or (view.updated_at == known.updated_at and view.status == known.status)
        ):
            return False
        self.results[view.result_file] = view
        return True

    @property
    def finished(self) -> bool:
        return bool(self.results) and all(v.status.finished for v in self.results.values())

    @property
    def all_completed(self) -> bool:
        return all(v.status == Status.COMPLETED for v in self.results.values())

    def counts(self) -> dict[Status, int]:
        counts: dict[Status, int] = {}
        for view in self.results.values():
            counts[view.status] = counts.get(view.status, 0) + 1
        order = list(Status)
        return dict(sorted(counts.items(), key=lambda kv: order.index(kv[0])))

    def summary(self) -> str:
        return ", ".join(f"{n} {status.value}" for status, n in self.counts().items())


def _same_id(job_id: uuid.UUID, text: str) -> bool:
    try:
        return job_id == uuid.UUID(text)
    except ValueError:
        return str(job_id) == text


def progress_line(tracker: JobTracker, *, now_ms: int | None = None) -> str:
    """``job 0b6e…: 1/3 finished (1 Completed, 2 Processing), 14s since started``.

    With ``now_ms``, the time since the first result started (or, before any started,
    since the job was created) is appended; the clocks are the server's timestamps and
    the caller's, so a client clock behind the server's shows 0s, never a negative time.
    """
    done = sum(1 for v in tracker.results.values() if v.status.finished)
    line = f"job {tracker.job_id}: {done}/{len(tracker.results)} finished" + (
        f" ({tracker.summary()})" if tracker.results else ""
    )
    if now_ms is None or not tracker.results:
        return line
    started = [v.started_at for v in tracker.results.values() if v.started_at is not None]
    if started:
        return f"{line}, {format_elapsed(now_ms - min(started))} since started"
    created = min(v.created_at for v in tracker.results.values())
    return f"{line}, {format_elapsed(now_ms - created)} since created"


class Display:
    """Where ``watch`` writes: one line per change, and on a terminal an in-place
    progress line kept below them (``\\r`` + erase line)."""

    def __init__(self, out: TextIO, *, as_json: bool, live: bool) -> None:
        self._out = out
        self._json = as_json
        self._live = live
        self._progress = ""

    @property
    def live(self) -> bool:
        """True when a progress line is drawn (and worth redrawing as time passes)."""
        return self._live

    def show(self, view: JobView) -> None:
        line = json.dumps(view_json(view), ensure_ascii=False) if self._json else format_change(view)
        if self._live and self._progress:
            self._out.write(_ERASE_LINE)
        self._out.write(line + "\n")
        if self._live and self._progress:
            self._out.write(self._progress)
        self._out.flush()

    def progress(self, text: str) -> None:
        if self._live:
            self._progress = text
            self._out.write(_ERASE_LINE + text)
            self._out.flush()

    def close(self) -> None:
        """Erase the progress line (the change lines above it stay)."""
        if self._live and self._progress:
            self._out.write(_ERASE_LINE)
            self._out.flush()
            self._progress = ""


# --- text output --------------------------------------------------------------------


def format_change(view: JobView) -> str:
    """One ``watch`` line: time (UTC), job id, result file, status, attempt, error."""
    parts = [
        _utc(view.updated_at),
        str(view.job_id),
        view.result_file,
        view.status.value,
        f"attempt {view.attempts}/{view.max_attempts}",
    ]
    if view.cancel_requested and not view.status.finished:
        parts.append("cancel requested")
    if view.error:
        parts.append(_one_line(view.error))
    return "  ".join(parts)


def _utc(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_table(
    views: Sequence[JobView], *, now_ms: int, file_width: int = 40, error_width: int = 60
) -> str:
    """The ``list`` table: one row per result; long file names and errors truncated."""
    header = ("JOB ID", "RESULT FILE", "STATUS", "ATTEMPTS", "AGE", "DURATION", "ERROR")
    rows = [header]
    for view in views:
        rows.append(
            (
                str(view.job_id),
                truncate(_one_line(view.result_file), file_width),
                view.status.value,
                f"{view.attempts}/{view.max_attempts}",
                format_duration(now_ms - view.created_at),
                "-" if view.duration_ms is None else format_duration(view.duration_ms),
                truncate(_one_line(view.error or ""), error_width),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def format_duration(ms: int) -> str:
    """Short and human: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    ms = max(ms, 0)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def format_elapsed(ms: int) -> str:
    """A running clock: whole seconds below a minute (``0s``, ``14s``), then as
    `format_duration` (``4m05s``)."""
    ms = max(ms, 0)
    return f"{ms // 1000}s" if ms < 60_000 else format_duration(ms)


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())
