"""``jobsvc --version`` and ``--help`` answer without loading the heavy libraries.

What is imported is asserted, not how long it takes (the machines are noisy): each
command runs as a real process under ``python -X importtime``, whose report names
every module the process imported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from jobsvc import cli

#: Each costs tens to hundreds of milliseconds to import; together they made
#: ``jobsvc --version`` take 1.6-1.9 s.
HEAVY = (
    *("trio", "anyio", "httpx", "pydantic", "quart", "quart_schema", "hypercorn"),
    *("psycopg", "psycopg_pool"),
)


def run_jobsvc(*argv: str) -> tuple[str, set[str]]:
    """``python -X importtime -m jobsvc.cli ARGV``: its stdout, and the top-level
    packages it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jobsvc.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "jobsvc" in imported  # the report was read
    return done.stdout, imported


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["watch", "--help"], ["download", "--help"]])
def test_version_and_help_import_no_heavy_library(argv: list[str]) -> None:
    _, imported = run_jobsvc(*argv)
    assert sorted(imported.intersection(HEAVY)) == []


def test_help_lists_every_command() -> None:
    out, _ = run_jobsvc("--help")
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(sub.choices)
    client = {"enqueue", "list", "get", "cancel", "retry", "download", "watch"}
    assert client <= commands
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()}
    assert commands <= listed, commands - listed
