"""(7) Memory: a worker's peak RSS (VmHWM) after 50 x 20 MB images vs 50 x 10 KB images.

A fresh ``jobsvc worker`` process per run, concurrency 16, so each figure is
the process's high-water mark for that workload alone. Target (issue 5): peak
with 20 MB images ≤ 1.10 x peak with 10 KB images + concurrency x 1 MiB.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from bench import cancel, jobs, pipeline
from bench.context import Context
from bench.procs import Child

NAME = "memory"
CONCURRENCY = 16
COUNT = 50
#: (label, bytes after the PNG header): 20 MB stays under the default 20 MiB cap.
SIZES = (("10 KB", 10 * 1000), ("20 MB", 20 * 1000 * 1000))


def vm(pid: int, field: str) -> float:
    """A /proc/<pid>/status field in MiB (VmHWM: peak RSS, VmRSS: current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def memory_once(ctx: Context, img_port: int, padding: int, storage: str) -> float:
    moto: Child | None = None
    root = ctx.workdir / f"memory-{uuid.uuid4().hex[:8]}"
    try:
        if storage == "s3":
            moto, endpoint = pipeline.start_moto(ctx)
            storage_url = f"s3://bench-{uuid.uuid4().hex[:12]}"
            env = {"JOBSVC_S3_ENDPOINT_URL": endpoint, **pipeline.FAKE_AWS}
        else:
            storage_url = f"file://{root}"
            env = {}
        with ctx.pg.database("memory") as url:
            worker = cancel.start_worker(ctx, url, storage_url, CONCURRENCY, **env)
            try:
                base = f"http://127.0.0.1:{img_port}/big/{padding}/"
                jobs.bulk_enqueue(url, COUNT, type="ingest", base=base, prefix="m")
                jobs.wait_finished(url, 600)
                jobs.throughput(url, COUNT)  # raises unless every job Completed
                peak = vm(worker.pid, "VmHWM")
            finally:
                worker.stop()
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(root, ignore_errors=True)
    return peak


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"fresh `jobsvc worker` per run, concurrency {CONCURRENCY}, {COUNT} images of each size, "
        "file storage and moto S3; peak RSS = VmHWM from /proc/<pid>/status"
    )
    images, port = cancel.start_images(ctx)
    try:
        for i in range(ctx.runs):
            ctx.say(f"memory run {i + 1}/{ctx.runs}")
            for storage in ("file", "s3"):
                peaks = {}
                for label, padding in SIZES:
                    peaks[label] = memory_once(ctx, port, padding, storage)
                    where = "moto S3" if storage == "s3" else "file"
                    ctx.results.add(NAME, f"{COUNT} x {label} → {where}", "peak RSS", "MiB", peaks[label])
                    ctx.say(f"  {label} → {storage}: peak RSS {peaks[label]:.1f} MiB")
                growth = peaks["20 MB"] - peaks["10 KB"]
                ctx.results.add(NAME, f"20 MB - 10 KB → {where}", "peak RSS growth", "MiB", growth)
    finally:
        images.stop()
