"""(6) Image pipeline: real downloads from the local image server into moto S3 and into
file storage, one ``jobsvc worker`` process at its default concurrency → images/s.

Every job must end Completed and its object must exist (counted in the bucket or
the directory). Beside each rate: the CPU milliseconds per image of each process
(worker, image server, moto, PostgreSQL when embedded), since 2 cores are shared
by all of them; and the neighbours' own ceilings at the same concurrency
(bench/pipeline_ceiling.py, a separate process): the image server's bare GET
rate, and moto's bare boto3 PUT rate for the same object size (issue 14).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import cancel, jobs, throughput
from bench.context import Context
from bench.procs import Child, clean_env

NAME = "pipeline"
CONCURRENCY = 16
#: (label, route prefix, count, body bytes)
SIZES = (
    ("small (70 B PNG)", "img", 1000, 70),
    ("5 MB", f"big/{5 * 1000 * 1000}", 100, 5 * 1000 * 1000 + 70),
)
#: Requests per ceiling measurement, by label.
CEILING_COUNT = {"small (70 B PNG)": 3000, "5 MB": 50}

#: Fake credentials for moto; nothing may reach a real AWS endpoint.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def start_moto(ctx: Context) -> tuple[Child, str]:
    server = ctx.children.python("moto", "bench.moto_server", env=clean_env(**FAKE_AWS))
    port = int(server.wait_for("bench-moto listening").split()[-1])
    return server, f"http://127.0.0.1:{port}"


def s3_count(endpoint: str, bucket: str) -> int:
    import boto3

    client: Any = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
    )
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        count += len(page.get("Contents", []))
    return count


def file_count(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def _cpu_seconds(pids: Mapping[str, list[int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        out[name] = total
    return out


def postgres_pids(ctx: Context) -> list[int]:
    """The embedded server's processes (its own, so their CPU is ours); none for a shared server."""
    if not ctx.pg.embedded:
        return []
    datadir = str(ctx.workdir / "pgdata")
    for proc in psutil.process_iter(["cmdline"]):
        if datadir in " ".join(proc.info["cmdline"] or ()):
            return [proc.pid, *(c.pid for c in proc.children(recursive=True))]
    return []


@contextmanager
def cpu_split(ctx: Context, pids: Mapping[str, list[int]], out: dict[str, float]) -> Iterator[None]:
    """CPU seconds each process group spent inside the block, into ``out``."""
    groups = {**pids, "PostgreSQL": postgres_pids(ctx)}
    before = _cpu_seconds(groups)
    yield
    groups["PostgreSQL"] = postgres_pids(ctx)  # backends started meanwhile count from zero
    after = _cpu_seconds(groups)
    out.update({name: after[name] - before.get(name, 0.0) for name in groups if groups[name]})


def pipeline_once(
    ctx: Context,
    img_port: int,
    route: str,
    count: int,
    storage: str,
    concurrency: int = CONCURRENCY,
    *,
    cpu: dict[str, float] | None = None,
    img_pid: int | None = None,
    worker_env: Mapping[str, str] | None = None,
) -> float:
    """Run ``count`` image jobs; returns images/s (CPU seconds per process into ``cpu``)."""
    moto: Child | None = None
    root = ctx.workdir / f"results-{uuid.uuid4().hex[:8]}"
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    try:
        if storage == "s3":
            moto, endpoint = start_moto(ctx)
            env = {"JOBSVC_STORAGE_URL": f"s3://{bucket}", "JOBSVC_S3_ENDPOINT_URL": endpoint, **FAKE_AWS}
        else:
            env = {"JOBSVC_STORAGE_URL": f"file://{root}"}
        env.update(worker_env or {})
        with ctx.pg.database("pipeline") as url:
            worker = cancel.start_worker(ctx, url, env.pop("JOBSVC_STORAGE_URL"), concurrency, **env)
            pids = {"worker": [worker.pid]}
            if img_pid is not None:
                pids["image server"] = [img_pid]
            if moto is not None:
                pids["moto"] = [moto.pid]
            try:
                base = f"http://127.0.0.1:{img_port}/{route}/"
                with cpu_split(ctx, pids, cpu if cpu is not None else {}):
                    jobs.bulk_enqueue(url, count, type="ingest", base=base, prefix="i")
                    jobs.wait_finished(url, 600)
                rate = jobs.throughput(url, count)
            finally:
                worker.stop()
        stored = s3_count(endpoint, bucket) if moto is not None else file_count(root)
        if stored != count:
            raise RuntimeError(f"{stored} objects stored, expected {count}")
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rate


def noop_once(ctx: Context, count: int, *, cpu: dict[str, float] | None = None) -> float:
    """The same number of jobs through a no-op worker at the same concurrency: the queue's share."""
    with ctx.pg.database("pipeline_noop") as url:
        (worker,) = throughput.start_noop_workers(ctx, url, 1, CONCURRENCY)
        try:
            with cpu_split(ctx, {"worker": [worker.pid]}, cpu if cpu is not None else {}):
                jobs.bulk_enqueue(url, count)
                jobs.wait_finished(url, 600)
            return jobs.throughput(url, count)
        finally:
            worker.stop()


def ceiling(ctx: Context, *args: str) -> float:
    """One run of bench/pipeline_ceiling.py (its own process); requests/s."""
    child = ctx.children.python("ceiling", "bench.pipeline_ceiling", *args, env=clean_env(**FAKE_AWS))
    child.wait(600)
    return float(child.wait_for("bench-ceiling").split()[-1])


def get_ceiling(ctx: Context, img_port: int, route: str, count: int) -> float:
    return ceiling(ctx, "get", str(img_port), route, str(count), str(CONCURRENCY))


def put_ceiling(ctx: Context, size: int, count: int) -> float:
    moto, endpoint = start_moto(ctx)
    try:
        return ceiling(
            ctx, "put", endpoint, f"ceiling-{uuid.uuid4().hex[:12]}", str(size), str(count), str(CONCURRENCY)
        )
    finally:
        moto.stop()


def add_cpu_rows(ctx: Context, label: str, cpu: Mapping[str, float], count: int) -> None:
    for name, seconds in cpu.items():
        ctx.results.add(NAME, f"{label}: {name}", "CPU per image", "ms", seconds / count * 1000)


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"1 `jobsvc worker` process, concurrency {CONCURRENCY}; "
        + "; ".join(f"{n} x {label}" for label, _, n, _ in SIZES)
        + "; local image server (own process) → moto S3 (own process) or file storage; "
        + f"ceilings: bare GETs / bare boto3 PUTs at concurrency {CONCURRENCY} from another process"
    )
    images, port = cancel.start_images(ctx)
    try:
        for i in range(ctx.runs):
            ctx.say(f"pipeline run {i + 1}/{ctx.runs}")
            cpu: dict[str, float] = {}
            count = SIZES[0][2]
            rate = noop_once(ctx, count, cpu=cpu)
            ctx.results.add(NAME, "no-op handler (the queue alone)", "1 worker", "jobs/s", rate)
            add_cpu_rows(ctx, "no-op handler", cpu, count)
            ctx.say(
                f"  no-op handler: {rate:,.1f} jobs/s; CPU ms/job: {cpu.get('worker', 0) / count * 1000:.2f}"
            )
            for label, route, count, size in SIZES:
                rate = get_ceiling(ctx, port, route, CEILING_COUNT[label])
                ctx.results.add(NAME, f"{label}: image server GET ceiling", "bare GETs", "requests/s", rate)
                ctx.say(f"  {label}: image server GET ceiling {rate:,.1f}/s")
                rate = put_ceiling(ctx, size, CEILING_COUNT[label])
                ctx.results.add(NAME, f"{label}: moto PUT ceiling", "bare boto3 PUTs", "requests/s", rate)
                ctx.say(f"  {label}: moto PUT ceiling {rate:,.1f}/s")
                for storage in ("s3", "file"):
                    started = time.monotonic()
                    cpu = {}
                    rate = pipeline_once(ctx, port, route, count, storage, cpu=cpu, img_pid=images.pid)
                    where = f"{label} → {'moto S3' if storage == 's3' else 'file'}"
                    ctx.results.add(NAME, where, "1 worker", "images/s", rate)
                    add_cpu_rows(ctx, where, cpu, count)
                    split = ", ".join(f"{k} {v / count * 1000:.2f}" for k, v in cpu.items())
                    ctx.say(
                        f"  {label} → {storage}: {rate:,.1f} images/s ({time.monotonic() - started:.0f} s); "
                        f"CPU ms/image: {split}"
                    )
    finally:
        images.stop()
