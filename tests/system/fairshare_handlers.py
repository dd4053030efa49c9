"""A handler for the fair-share test (tests/system/test_fairshare.py), loaded by a real `jobsvc worker`."""

from __future__ import annotations

import trio

import jobsvc


async def slow(job: jobsvc.Job) -> None:
    """Holds its slot for a while, as a real download does, then completes."""
    await trio.sleep(0.2)


async def quick(job: jobsvc.Job) -> None:
    await trio.lowlevel.checkpoint()
