"""HTTP load for ``POST /results/enqueue``: ``python -m bench.http_load URL IMG_BASE``.

``--concurrency`` requests in flight, ``--requests`` in total after ``--warmup``;
every request is a new job (``--batch N``: a ``POST /results/batch`` of N new jobs,
raw client only). Two clients (asyncio on uvloop when installed):

- ``httpx``: one ``httpx.AsyncClient`` with keep-alive connections (what a Python
  client of the service would use); it costs about 1 ms of CPU per request, on
  the same two cores as the server.
- ``raw``: one keep-alive HTTP/1.1 connection per slot, each request written in
  one ``send``, the response read by Content-Length: a client that costs a tenth
  of that, to show what the server itself can do.

Prints one JSON line: requests, seconds, requests/s, latency percentiles (ms), the
status codes seen and, for batches, the items' statuses and jobs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx


def body_for(img_base: str) -> bytes:
    job = uuid.uuid4()
    doc = {"jobId": str(job), "type": "ingest", "imgUrl": f"{img_base}/img/{job.hex}.png"}
    return json.dumps(doc).encode()


def batch_body_for(img_base: str, size: int) -> bytes:
    jobs = []
    for _ in range(size):
        job = uuid.uuid4()
        jobs.append({"jobId": str(job), "type": "ingest", "imgUrl": f"{img_base}/img/{job.hex}.png"})
    return json.dumps({"jobs": jobs}).encode()


async def load_raw(
    url: str, img_base: str, concurrency: int, total: int, warmup: int, batch: int = 0, token: str = ""
) -> dict[str, object]:
    parts = urlsplit(url)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    statuses: Counter[int] = Counter()
    items: Counter[int] = Counter()
    latencies: list[float] = []
    path = "/results/batch" if batch else "/results/enqueue"

    async def connection(counts: list[int]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for phase, count in enumerate(counts):
                for _ in range(count):
                    body = batch_body_for(img_base, batch) if batch else body_for(img_base)
                    head = (
                        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                    )
                    started = time.perf_counter()
                    writer.write(head.encode() + body)
                    header = await reader.readuntil(b"\r\n\r\n")
                    status = int(header.split(b" ", 2)[1])
                    length = 0
                    close = False
                    for line in header.split(b"\r\n"):
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                        elif line.lower() == b"connection: close":
                            close = True
                    answer = await reader.readexactly(length)
                    if close:  # hypercorn's keep_alive_max_requests (1,000 per connection)
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
                    if phase == 1:
                        latencies.append((time.perf_counter() - started) * 1000)
                        statuses[status] += 1
                        if batch and status == 200:
                            items.update(r["status"] for r in json.loads(answer)["results"])
                if phase == 0:
                    await barrier.wait()
        finally:
            writer.close()

    class Barrier:
        def __init__(self, n: int, on_start: Callable[[], None]) -> None:
            self.n, self.event = n, asyncio.Event()
            self.started = 0.0
            self.on_start = on_start

        async def wait(self) -> None:
            self.n -= 1
            if self.n == 0:
                self.on_start()
                self.started = time.perf_counter()
                self.event.set()
            await self.event.wait()

    barrier = Barrier(concurrency, on_start=lambda: print("bench-http-load measuring", flush=True))
    tasks = []
    for i in range(concurrency):
        share = [
            warmup // concurrency + (i < warmup % concurrency),
            total // concurrency + (i < total % concurrency),
        ]
        tasks.append(connection(share))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - barrier.started
    result = summary(total, seconds, latencies, statuses)
    if batch:
        result["items"] = {str(k): v for k, v in items.items()}
        result["jobs_per_s"] = total * batch / seconds
    return result


def summary(total: int, seconds: float, latencies: list[float], statuses: Counter[int]) -> dict[str, object]:
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, round((len(latencies) - 1) * p / 100))]

    return {
        "requests": total,
        "seconds": seconds,
        "rps": total / seconds,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def load_httpx(url: str, img_base: str, concurrency: int, total: int, warmup: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0, trust_env=False) as client:
        headers = {"Content-Type": "application/json"}

        async def one(record: bool) -> None:
            body = body_for(img_base)
            started = time.perf_counter()
            response = await client.post("/results/enqueue", content=body, headers=headers)
            if record:
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[response.status_code] += 1

        async def worker(count: int, record: bool) -> None:
            for _ in range(count):
                await one(record)

        async def phase(count: int, record: bool) -> float:
            share, extra = divmod(count, concurrency)
            started = time.perf_counter()
            await asyncio.gather(*(worker(share + (i < extra), record) for i in range(concurrency)))
            return time.perf_counter() - started

        await phase(warmup, False)
        print("bench-http-load measuring", flush=True)
        seconds = await phase(total, True)
    return summary(total, seconds, latencies, statuses)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_load")
    parser.add_argument("url", help="the API's base URL")
    parser.add_argument("img_base", help="base URL of the image server (imgUrl = IMG_BASE/img/<id>.png)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx")
    parser.add_argument("--batch", type=int, default=0, help="jobs per POST /results/batch (raw client)")
    parser.add_argument("--token", default="", help="send this API key (raw client)")
    args = parser.parse_args()
    if args.batch or args.token:
        if args.client != "raw":
            parser.error("--batch and --token need --client raw")
        coro = load_raw(
            args.url, args.img_base, args.concurrency, args.requests, args.warmup, args.batch, args.token
        )
    else:
        load = load_httpx if args.client == "httpx" else load_raw
        coro = load(args.url, args.img_base, args.concurrency, args.requests, args.warmup)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print("bench-http-load " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
