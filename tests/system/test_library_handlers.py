"""Handlers of your own (DESIGN §3, §11) in real `jobsvc worker` processes: one from
``--handler TYPE=module:function``, one from the ``jobsvc.handlers`` entry-point group,
beside the image pipeline; and a worker whose handler cannot be loaded exits at once."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import jobsvc
from jobsvc.handlers import ENTRY_POINT_GROUP, load_handlers, parse_handler_flag
from tests.fixtures.processes import Spawn, service_env
from tests.helpers import enqueue, wait_status
from tests.system import library_handlers

ROOT = Path(__file__).resolve().parents[2]


def plugin_dist(where: Path, entry: str) -> Path:
    """An installed distribution (a ``.dist-info`` on the path) declaring ``entry``
    in the ``jobsvc.handlers`` group, as a plugin package would."""
    info = where / "jobsvc_test_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jobsvc-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry}\n")
    return where


def worker_env(database_url: str, results: Path, *paths: Path) -> dict[str, str]:
    return service_env(
        database_url,
        f"file://{results}",
        PYTHONPATH=":".join(str(p) for p in (*paths, ROOT)),
        JOBSVC_CONCURRENCY="4",
    )


async def test_worker_runs_custom_handlers_beside_the_image_pipeline(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    plugins = plugin_dist(tmp_path / "plugins", "refuse = tests.system.library_handlers:refuse")
    worker = spawn(
        "worker",
        "--handler",
        "echo=tests.system.library_handlers:complete",
        env=worker_env(database_url, tmp_path / "results", plugins),
    )
    echo = enqueue(database_url, "https://example.invalid/echo/a.txt", type="echo")
    refused = enqueue(database_url, "https://example.invalid/refuse/b.bin", type="refuse")
    image = enqueue(database_url, image_server.url(f"/img/{uuid.uuid4().hex}/cat.png"), type="ingest")

    done = await wait_status(database_url, echo.id, jobsvc.Status.COMPLETED, jobsvc.Status.FAILED, timeout=20)
    assert (done.status, done.error) == (jobsvc.Status.COMPLETED, None), worker.output()
    failed = await wait_status(database_url, refused.id, jobsvc.Status.FAILED, timeout=20)
    assert failed.error == f"refused b.bin of {refused.job_id}"
    assert failed.attempts == 1  # PermanentError: no retry
    stored = await wait_status(database_url, image.id, jobsvc.Status.COMPLETED, jobsvc.Status.FAILED)
    assert stored.status is jobsvc.Status.COMPLETED, stored.error
    assert (tmp_path / "results" / str(image.job_id) / "cat.png").read_bytes()[:4] == b"\x89PNG"
    assert "handlers echo=tests.system.library_handlers.complete" in worker.output()
    assert "refuse=tests.system.library_handlers.refuse" in worker.output()


@pytest.mark.parametrize(
    ("flag", "sentence"),
    [
        (
            "echo=no_such_module_here:run",
            "the handler for type 'echo' (no_such_module_here:run) cannot be imported",
        ),
        ("echo=tests.system.library_handlers:missing", "has no attribute 'missing'"),
        ("echo=tests.system.library_handlers:not_async", "must be an async function"),
        ("echo", "--handler expects TYPE=module:function"),
    ],
)
def test_worker_with_unloadable_handler_exits_at_once_with_a_sentence(
    spawn: Spawn, database_url: str, tmp_path: Path, flag: str, sentence: str
) -> None:
    worker = spawn("worker", "--handler", flag, env=worker_env(database_url, tmp_path))
    assert worker.wait(timeout=20) == 2
    output = worker.output()
    assert "jobsvc: configuration error: " in output and sentence in output, output
    assert "Traceback" not in output


def test_broken_entry_point_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(plugin_dist(tmp_path, "thumb = tests.system.library_handlers:nope")))
    with pytest.raises(jobsvc.JobsvcError, match=r"'thumb'.*has no attribute 'nope'"):
        load_handlers([])


def test_flag_wins_over_entry_point_for_the_same_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin_dist(tmp_path, "echo = tests.system.library_handlers:refuse")))
    assert load_handlers([]) == {"echo": library_handlers.refuse}
    flag = "echo=tests.system.library_handlers:complete"
    assert load_handlers([flag]) == {"echo": library_handlers.complete}
    assert parse_handler_flag(" echo = a.b:c ") == ("echo", "a.b:c")
