"""``python -m bench``: run the benchmarks and print one table."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

from bench import machine, targets
from bench.context import Context
from bench.pg import PgServer, temp_workdir
from bench.procs import Children
from bench.report import results_table, table

#: Benchmark name → module, in the order they run.
BENCHMARKS = {
    "throughput": "bench.throughput",
    "ceiling": "bench.ceiling",
    "pickup": "bench.pickup",
    "cancel": "bench.cancel",
    "http": "bench.http_enqueue",
    "batch": "bench.batch_enqueue",
    "pipeline": "bench.pipeline",
    "memory": "bench.memory",
    "scale": "bench.scale",
    "fairshare": "bench.fairshare",
}
#: Benchmarks that need nothing beyond jobsvc itself (no bench extra).
STANDALONE = {"scale", "fairshare"}


#: Modules of the bench extra (pyproject.toml) that the harness imports.
NEEDS = ("procrastinate", "pgqueuer", "asyncpg", "uvloop", "psutil", "moto")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="jobsvc benchmarks (issue 5): one table with the median and min-max of the runs.",
    )
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"which to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    parser.add_argument(
        "--jobs", type=int, default=20_000, help="no-op jobs per throughput run (default 20000)"
    )
    parser.add_argument(
        "--database-url",
        help="use this PostgreSQL server (a superuser URI; a database is created per run) "
        "instead of an embedded PostgreSQL 18 in a temporary directory",
    )
    parser.add_argument("--output", type=Path, help="also write the report (Markdown) to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (the child processes' logs)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = args.benchmarks or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    needs = () if set(names) <= STANDALONE else NEEDS
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        parser.error(
            f"missing {', '.join(missing)}: install the bench extra first "
            "(.venv/bin/pip install -e '.[dev,bench]')"
        )
    modules: list[ModuleType] = [importlib.import_module(BENCHMARKS[n]) for n in names]
    workdir = temp_workdir()
    (workdir / "logs").mkdir()
    children = Children(workdir / "logs")
    started = time.monotonic()
    print(f"bench: work directory {workdir}", flush=True)
    pg = PgServer(args.database_url, workdir)
    ctx = Context(pg=pg, children=children, workdir=workdir, runs=args.runs, jobs=args.jobs)
    head = machine.header(pg)
    failed: list[str] = []
    try:
        for name, module in zip(names, modules, strict=True):
            ctx.say(f"== {name}")
            try:
                module.run(ctx)
            except Exception as exc:  # one broken benchmark must not hide the others' rows
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
                ctx.say(f"!! {name} failed: {type(exc).__name__}: {exc}")
    finally:
        children.close()
        pg.close()
    head.append(("load average at end", machine.load()))
    head.append(("runs", f"{args.runs} per row; wall time {time.monotonic() - started:,.0f} s"))
    report = render(head, ctx, failed)
    print()
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        sys.exit(1)


def render(head: list[tuple[str, str]], ctx: Context, failed: list[str]) -> str:
    parts = [
        "### Machine and versions",
        table(["", ""], [[k, v] for k, v in head]),
        "",
        "### Settings",
        table(["benchmark", "settings"], [[k, v] for k, v in ctx.settings.items()]),
        "",
        "### Results (median and min-max of the runs)",
        results_table(ctx.results),
    ]
    goals = targets.evaluate(ctx.results)
    if goals:
        parts += ["", "### Targets (issues 5 and 14)", table(["target", "measured", "met"], goals)]
    if failed:
        parts += ["", "### Failed", *(f"- {f}" for f in failed)]
    return "\n".join(parts)
