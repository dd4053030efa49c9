"""jobsvc.client.display: the list table, the watch lines, the progress line and the
bookkeeping of a followed job."""

from __future__ import annotations

import io
import json

import pytest

from jobsvc.client.display import (
    Display,
    JobTracker,
    format_change,
    format_duration,
    format_elapsed,
    format_table,
    progress_line,
)
from tests.unit.client.support import JOB, OTHER, raw_view, view

# --- text output -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (-5, "0ms"),
        (850, "850ms"),
        (12_345, "12.3s"),
        (245_000, "4m05s"),
        (7_380_000, "2h03m"),
        (273_600_000, "3d04h"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_format_table_aligns_columns_and_shows_age_and_duration() -> None:
    rows = [
        view("Completed", result_file="a.png", attempts=1, durationMs=1_500),
        view("Queued", result_file="longer-name.png"),
    ]
    lines = format_table(rows, now_ms=13_345).splitlines()
    assert lines[0].split() == [
        "JOB",
        "ID",
        "RESULT",
        "FILE",
        "STATUS",
        "ATTEMPTS",
        "AGE",
        "DURATION",
        "ERROR",
    ]
    assert lines[1].split() == [JOB, "a.png", "Completed", "1/3", "12.3s", "1.5s"]
    assert lines[2].split() == [JOB, "longer-name.png", "Queued", "0/3", "12.3s", "-"]
    assert lines[0].index("STATUS") == lines[1].index("Completed") == lines[2].index("Queued")


def test_format_table_truncates_long_file_names_and_errors_to_one_line() -> None:
    error = "the server answered 404 Not Found\nwhile fetching " + "x" * 200
    rows = [view("Failed", result_file="f" * 100 + ".png", error=error)]
    line = format_table(rows, now_ms=2_000, file_width=20, error_width=30).splitlines()[1]
    assert "f" * 19 + "…" in line
    assert line.endswith("the server answered 404 Not F…")
    assert "\n" not in line.strip()


def test_format_change_shows_time_ids_status_attempt_and_error() -> None:
    line = format_change(view("Failed", updated=1_767_323_045_678, attempts=3, error="not an image"))
    assert line.split("  ") == [
        "2026-01-02T03:04:05.678Z",
        JOB,
        "a.png",
        "Failed",
        "attempt 3/3",
        "not an image",
    ]


def test_format_change_marks_a_requested_cancel_until_finished() -> None:
    assert "cancel requested" in format_change(view("Processing", cancelRequested=True))
    assert "cancel requested" not in format_change(view("Canceled", cancelRequested=True))


# --- watch bookkeeping -------------------------------------------------------------------


def test_tracker_ignores_repeats_older_states_and_other_jobs() -> None:
    tracker = JobTracker(JOB)
    assert tracker.update(view("Processing", updated=2_000))
    assert not tracker.update(view("Processing", updated=2_000))  # the stream's snapshot
    assert not tracker.update(view("Queued", updated=1_000))
    assert not tracker.update(view("Completed", updated=3_000, jobId=OTHER))
    assert tracker.update(view("Processing", updated=2_500, cancelRequested=True))
    assert tracker.results["a.png"].cancel_requested is True


def test_tracker_matches_any_spelling_of_the_job_id() -> None:
    tracker = JobTracker(JOB.upper().replace("-", ""))
    assert tracker.update(view("Queued"))


def test_tracker_finished_and_exit_code() -> None:
    tracker = JobTracker(JOB)
    assert not tracker.finished
    tracker.update(view("Completed", updated=2, result_file="a.png"))
    tracker.update(view("Processing", updated=2, result_file="b.png"))
    assert not tracker.finished
    assert progress_line(tracker) == f"job {JOB}: 1/2 finished (1 Processing, 1 Completed)"
    tracker.update(view("Completed", updated=3, result_file="b.png"))
    assert tracker.finished
    assert tracker.all_completed
    tracker.update(view("Canceled", updated=4, result_file="c.png"))
    assert not tracker.all_completed
    assert tracker.summary() == "2 Completed, 1 Canceled"


def test_display_plain_writes_one_line_per_change_and_no_progress() -> None:
    out = io.StringIO()
    display = Display(out, as_json=False, live=False)
    display.show(view("Queued"))
    display.progress("job x: 0/1 finished")
    display.close()
    assert out.getvalue() == format_change(view("Queued")) + "\n"


def test_display_json_writes_one_view_per_line() -> None:
    out = io.StringIO()
    Display(out, as_json=True, live=False).show(view("Queued"))
    assert json.loads(out.getvalue()) == raw_view("Queued")


def test_display_live_keeps_the_progress_line_below_the_changes() -> None:
    out = io.StringIO()
    display = Display(out, as_json=False, live=True)
    display.progress("P1")
    display.show(view("Processing"))
    display.close()
    erase = "\r\x1b[K"
    assert out.getvalue() == f"{erase}P1{erase}{format_change(view('Processing'))}\nP1{erase}"


def test_format_change_time_is_utc_with_milliseconds() -> None:
    assert format_change(view(updated=0)).startswith("1970-01-01T00:00:00.000Z  ")


@pytest.mark.parametrize(("ms", "text"), [(-300, "0s"), (999, "0s"), (14_700, "14s"), (245_000, "4m05s")])
def test_format_elapsed_counts_whole_seconds(ms: int, text: str) -> None:
    assert format_elapsed(ms) == text


def test_progress_line_elapsed_since_created_then_since_the_first_start() -> None:
    tracker = JobTracker(JOB)
    assert progress_line(tracker, now_ms=9_000) == f"job {JOB}: 0/0 finished"
    tracker.update(view("Queued", updated=1_000, result_file="a.png", createdAt=1_000))
    tracker.update(view("Queued", updated=2_000, result_file="b.png", createdAt=2_000))
    assert progress_line(tracker) == f"job {JOB}: 0/2 finished (2 Queued)"
    assert progress_line(tracker, now_ms=6_500) == f"job {JOB}: 0/2 finished (2 Queued), 5s since created"
    tracker.update(view("Processing", updated=8_000, result_file="b.png", startedAt=8_000))
    tracker.update(view("Processing", updated=9_000, result_file="a.png", startedAt=9_000))
    assert progress_line(tracker, now_ms=20_000).endswith("(2 Processing), 12s since started")
