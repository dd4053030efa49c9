"""(6) Image pipeline: real downloads from the local image server into moto S3 and into
file storage, one ``jobsvc worker`` process at its default concurrency → images/s.

Every job must end Completed and its object must exist (counted in the bucket or
the directory).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from bench import cancel, jobs
from bench.context import Context
from bench.procs import Child, clean_env

NAME = "pipeline"
CONCURRENCY = 16
#: (label, route prefix, count)
SIZES = (("small (70 B PNG)", "img", 1000), ("5 MB", f"big/{5 * 1000 * 1000}", 100))

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


def pipeline_once(
    ctx: Context, img_port: int, route: str, count: int, storage: str, concurrency: int = CONCURRENCY
) -> float:
    """Run ``count`` image jobs; returns images/s."""
    moto: Child | None = None
    root = ctx.workdir / f"results-{uuid.uuid4().hex[:8]}"
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    try:
        if storage == "s3":
            moto, endpoint = start_moto(ctx)
            env = {"JOBSVC_STORAGE_URL": f"s3://{bucket}", "JOBSVC_S3_ENDPOINT_URL": endpoint, **FAKE_AWS}
        else:
            env = {"JOBSVC_STORAGE_URL": f"file://{root}"}
        with ctx.pg.database("pipeline") as url:
            worker = cancel.start_worker(ctx, url, env.pop("JOBSVC_STORAGE_URL"), concurrency, **env)
            try:
                base = f"http://127.0.0.1:{img_port}/{route}/"
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


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"1 `jobsvc worker` process, concurrency {CONCURRENCY}; "
        + "; ".join(f"{n} x {label}" for label, _, n in SIZES)
        + "; local image server (own process) → moto S3 (own process) or file storage"
    )
    images, port = cancel.start_images(ctx)
    try:
        for i in range(ctx.runs):
            ctx.say(f"pipeline run {i + 1}/{ctx.runs}")
            for label, route, count in SIZES:
                for storage in ("s3", "file"):
                    started = time.monotonic()
                    rate = pipeline_once(ctx, port, route, count, storage)
                    ctx.results.add(
                        NAME,
                        f"{label} → {'moto S3' if storage == 's3' else 'file'}",
                        "1 worker",
                        "images/s",
                        rate,
                    )
                    ctx.say(
                        f"  {label} → {storage}: {rate:,.1f} images/s ({time.monotonic() - started:.0f} s)"
                    )
    finally:
        images.stop()
