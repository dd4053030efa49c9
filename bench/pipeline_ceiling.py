"""The pipeline's neighbours on their own: ``python -m bench.pipeline_ceiling get|put ...``.

Run as a separate process by bench/pipeline.py, at the worker's concurrency, so
the pipeline's rate can be read against what its neighbours can do at all:

    get PORT ROUTE COUNT CONCURRENCY
        bare GETs of ``/ROUTE/<n>.png`` from the image server on keep-alive
        connections (raw HTTP/1.1 over trio sockets: the cheapest client there is)
    put ENDPOINT BUCKET SIZE COUNT CONCURRENCY
        bare boto3 ``put_object`` calls of SIZE-byte bodies, one shared client,
        CONCURRENCY threads (the client stack the worker uses)

Prints ``bench-ceiling <requests/s>``.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import trio


async def _receive(stream: trio.SocketStream) -> bytes:
    data = await stream.receive_some(65536)
    if not data:
        raise ConnectionError("the image server closed the connection")
    return data


async def _get_loop(port: int, route: str, count: int, concurrency: int) -> float:
    left = iter(range(count))

    async def one_connection() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buffer = b""
        async with stream:
            for n in left:
                await stream.send_all(f"GET /{route}/{n}.png HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                while b"\r\n\r\n" not in buffer:
                    buffer += await _receive(stream)
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                # Count the body's bytes, do not keep them (a 5 MB body in one buffer grows quadratically).
                remaining = length - len(buffer)
                buffer = buffer[length:]
                while remaining > 0:
                    data = await _receive(stream)
                    if len(data) > remaining:
                        buffer = data[remaining:]
                    remaining -= len(data)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(one_connection)
    return count / (time.perf_counter() - started)


def _put_loop(endpoint: str, bucket: str, size: int, count: int, concurrency: int) -> float:
    import boto3
    from botocore.config import Config

    client: Any = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        config=Config(signature_version="s3v4", max_pool_connections=64, s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=bucket)
    body = b"\x89PNG" + bytes(max(size - 4, 0))
    client.put_object(Bucket=bucket, Key="warm-up", Body=body)
    lock = threading.Lock()
    left = iter(range(count))

    def worker() -> None:
        while True:
            with lock:
                n = next(left, None)
            if n is None:
                return
            client.put_object(Bucket=bucket, Key=f"c/{n}.png", Body=body, ContentType="image/png")

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.perf_counter() - started)


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "get":
        port, route, count, concurrency = args
        rate = trio.run(_get_loop, int(port), route, int(count), int(concurrency))
    elif mode == "put":
        endpoint, bucket, size, count, concurrency = args
        rate = _put_loop(endpoint, bucket, int(size), int(count), int(concurrency))
    else:
        raise SystemExit(f"unknown mode {mode!r}: get or put")
    print(f"bench-ceiling {rate:.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
