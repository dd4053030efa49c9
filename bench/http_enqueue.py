"""(5) Enqueue over HTTP: one ``jobsvc api`` process, concurrent clients in another.

Probe off (``JOBSVC_VERIFY_ON_ENQUEUE=false``), then on against the local image
server (``JOBSVC_ALLOW_PRIVATE_URLS=true``): requests/s, p50 and p99 of
``POST /results/enqueue``, every request a new job (202), no worker running.
Two load clients (see bench/http_load.py): httpx, and a minimal raw HTTP/1.1
client that leaves more of the two cores to the server. The API process's CPU
time per request (user + system, from /proc) shows what one process costs
whatever the client.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import cancel
from bench.context import SETTLE, Context
from bench.pg import connect
from bench.procs import clean_env

NAME = "http"
CONCURRENCY = 32
REQUESTS = {False: 5_000, True: 2_000}
WARMUP = 300
CLIENTS = ("raw", "httpx")


def once(
    ctx: Context,
    img_port: int,
    probe: bool,
    client: str,
    *,
    batch: int = 0,
    total: int | None = None,
    warmup: int = WARMUP,
    concurrency: int = CONCURRENCY,
    workers: int = 1,
    keys: bool = False,
    **env: str,
) -> dict[str, Any]:
    """One API process under load: ``total`` requests (default `REQUESTS`), each one new
    job, or with ``batch`` a ``POST /results/batch`` of that many new jobs."""
    total = REQUESTS[probe] if total is None else total
    jobs = total * max(batch, 1)
    with ctx.pg.database("http") as url:
        environ = clean_env(
            JOBSVC_DATABASE_URL=url,
            JOBSVC_PORT="0",
            JOBSVC_VERIFY_ON_ENQUEUE=str(probe).lower(),
            JOBSVC_ALLOW_PRIVATE_URLS="true",
            # Off: the enqueue path itself; the "auth keys" lever row measures a key.
            JOBSVC_AUTH="keys" if keys else "off",
            JOBSVC_STORAGE_URL=f"file://{ctx.workdir / 'http-results'}",
            **env,
        )
        token = _create_key(url) if keys else ""
        api = ctx.children.python("jobsvc-api", "jobsvc.cli", "api", "--workers", str(workers), env=environ)
        try:
            base = api.wait_for("jobsvc api: listening on").split()[4]
            time.sleep(SETTLE)
            args = [base, f"http://127.0.0.1:{img_port}", "--client", client]
            args += ["--concurrency", str(concurrency), "--requests", str(total), "--warmup", str(warmup)]
            args += ["--batch", str(batch)] if batch else []
            args += ["--token", token] if token else []
            load = ctx.children.python("http-load", "bench.http_load", *args, env=clean_env())
            procs = [psutil.Process(api.pid)]
            if workers > 1:  # the API's CPU is its worker processes'
                procs = procs[0].children()
            load.wait_for("bench-http-load measuring", timeout=120)
            before = [p.cpu_times() for p in procs]
            load.wait(timeout=300)
            after = [p.cpu_times() for p in procs]
            result = json.loads(load.wait_for("bench-http-load {", timeout=5).split(" ", 1)[1])
        finally:
            api.stop()
        if batch:
            ok = result["statuses"] == {"200": total} and result["items"] == {"202": jobs}
        else:
            ok = result["statuses"] == {"202": total}
        if not ok:
            raise RuntimeError(f"unexpected statuses {result['statuses']} {result.get('items')}")
        with connect(url) as conn:
            row = conn.execute("SELECT count(*) AS n FROM jobsvc_results").fetchone()
            if row is None or row["n"] != (total + warmup) * max(batch, 1):
                raise RuntimeError(f"{row and row['n']} rows, expected {(total + warmup) * max(batch, 1)}")
    cpu = sum((a.user - b.user) + (a.system - b.system) for a, b in zip(after, before, strict=True))
    result["cpu_ms"] = cpu / total * 1000
    result["cpu_ms_per_job"] = cpu / jobs * 1000
    result.setdefault("jobs_per_s", result["rps"])
    ctx.say(
        f"  {client} probe={'on' if probe else 'off'} batch={batch} {env or ''}: {result['rps']:,.0f} req/s, "
        f"{result['jobs_per_s']:,.0f} jobs/s, "
        f"p99 {result['p99_ms']:.1f} ms, api CPU {result['cpu_ms']:.2f} ms/request"
    )
    out: dict[str, Any] = result
    return out


#: One request at a time (a raw keep-alive client): the latency targets of issue 14.
SEQUENTIAL = 1_000


def _create_key(url: str) -> str:
    from jobsvc import keys

    with connect(url) as conn:
        _, token = keys.create_key(conn, "bench", (keys.Scope.ENQUEUE,), "bench")
    return token


#: Lever rows of the http benchmark (raw client, probe off): label note → `once` options.
LEVERS: dict[str, dict[str, Any]] = {
    "auth keys (a cached key lookup)": {"keys": True},
    "no quota (JOBSVC_TENANT_MAX_QUEUED=0)": {"JOBSVC_TENANT_MAX_QUEUED": "0"},
    "log level WARNING (no per-enqueue line)": {"JOBSVC_LOG_LEVEL": "WARNING"},
    "jobsvc api --workers 2": {"workers": 2},
}


def floor_once(ctx: Context, img_port: int, *, concurrency: int, total: int) -> dict[str, Any]:
    """The framework's floor (bench/floor_app.py) under the raw client, as `once` loads jobsvc."""
    floor = ctx.children.python("bench-floor", "bench.floor_app", env=clean_env())
    try:
        base = floor.wait_for("bench-floor: listening on").split()[3]
        time.sleep(SETTLE)
        args = [base, f"http://127.0.0.1:{img_port}", "--client", "raw"]
        args += ["--concurrency", str(concurrency), "--requests", str(total), "--warmup", str(WARMUP)]
        load = ctx.children.python("http-load", "bench.http_load", *args, env=clean_env())
        load.wait(timeout=300)
        result: dict[str, Any] = json.loads(load.wait_for("bench-http-load {", timeout=5).split(" ", 1)[1])
    finally:
        floor.stop()
    if result["statuses"] != {"202": total}:
        raise RuntimeError(f"floor: unexpected statuses {result['statuses']}")
    ctx.say(f"  floor c={concurrency}: {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms")
    return result


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"1 `jobsvc api` process (hypercorn, trio); load from another process (uvloop): raw HTTP/1.1 "
        f"and httpx clients, {CONCURRENCY} requests in flight, {REQUESTS[False]:,} requests probe off, "
        f"{REQUESTS[True]:,} probe on (local image server), after {WARMUP} warm-up; no worker running"
    )
    images, port = cancel.start_images(ctx)
    try:
        for i in range(ctx.runs):
            ctx.say(f"http run {i + 1}/{ctx.runs}")
            for client in CLIENTS:
                for probe in (False, True):
                    result = once(ctx, port, probe, client)
                    label = f"api, probe {'on' if probe else 'off'}, {client} client"
                    ctx.results.add(NAME, label, "throughput", "req/s", result["rps"])
                    ctx.results.add(NAME, label, "p50", "ms", result["p50_ms"])
                    ctx.results.add(NAME, label, "p99", "ms", result["p99_ms"])
                    ctx.results.add(NAME, label, "api CPU per request", "ms", result["cpu_ms"])
            # Issue 14: the same requests against the framework's floor, and one at a time.
            floor = floor_once(ctx, port, concurrency=CONCURRENCY, total=REQUESTS[False])
            ctx.results.add(
                NAME, "floor (bare QuartTrio JSON POST), raw client", "throughput", "req/s", floor["rps"]
            )
            floor = floor_once(ctx, port, concurrency=1, total=SEQUENTIAL)
            ctx.results.add(NAME, "floor, one request at a time", "p50", "ms", floor["p50_ms"])
            one = once(ctx, port, False, "raw", total=SEQUENTIAL, concurrency=1)
            ctx.results.add(NAME, "api, probe off, one request at a time", "p50", "ms", one["p50_ms"])
            for note, options in LEVERS.items():
                lever = once(ctx, port, False, "raw", **options)
                label = f"api, probe off, raw client, {note.split(' (')[0]}"
                ctx.results.add(NAME, label, "throughput", "req/s", lever["rps"], note=f"lever: {note}")
                ctx.results.add(
                    NAME, label, "api CPU per request", "ms", lever["cpu_ms"], note=f"lever: {note}"
                )
    finally:
        images.stop()
