"""moto's S3 in its own process on loopback: ``python -m bench.moto_server``.

Prints ``bench-moto listening <port>``; serves until SIGTERM. Its own process, so
its parsing of uploads does not share a GIL with the harness or the worker.
"""

from __future__ import annotations

import logging
import signal
import threading

from moto.server import ThreadedMotoServer


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"bench-moto listening {port}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
