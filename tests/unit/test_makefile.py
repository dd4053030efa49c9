"""`make dev` installs the runtime only; `make test` and `make lint` add the dev tools.

Checked with ``make -n`` (print, do not run) against a venv path that does not exist,
as on a fresh clone.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def planned(target: str, venv: Path) -> list[str]:
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if not line.startswith("make")]


def test_make_dev_on_a_fresh_clone_installs_the_runtime_only(tmp_path: Path) -> None:
    steps = planned("dev", tmp_path / "venv")
    installs = [step for step in steps if " install " in step and "--upgrade pip" not in step]
    assert installs == [f"{tmp_path / 'venv'}/bin/pip install --quiet -e ."]
    assert steps[-1] == f"{tmp_path / 'venv'}/bin/jobsvc dev"


@pytest.mark.parametrize("target", ["test", "lint"])
def test_make_test_and_lint_install_the_dev_tools(tmp_path: Path, target: str) -> None:
    steps = planned(target, tmp_path / "venv")
    assert any(step.endswith("pip install --quiet -e '.[dev]'") for step in steps), steps
