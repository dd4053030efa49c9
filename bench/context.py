"""What every benchmark gets: the PostgreSQL server, child processes, sizes, results."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.pg import PgServer
from bench.procs import Children
from bench.report import Results

#: Seconds an idle worker is given after saying it is ready (LISTEN in place, first pass done).
SETTLE = 0.5


@dataclass
class Context:
    pg: PgServer
    children: Children
    workdir: Path
    runs: int
    jobs: int
    results: Results = field(default_factory=Results)
    #: Lines for the "settings" part of the header, per benchmark.
    settings: dict[str, str] = field(default_factory=dict)
    #: Facts found by one benchmark that a later one uses (e.g. the best concurrency).
    found: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.log.append(line)
        print(line, flush=True)
