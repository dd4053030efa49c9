"""jobsvc.client.arguments: ``--run-at`` (the other types are met through the parser in
test_commands.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from jobsvc.client.arguments import parse_run_at


def test_parse_run_at_epoch_milliseconds() -> None:
    assert parse_run_at("1795988911605") == 1795988911605


def test_parse_run_at_iso_with_zone() -> None:
    assert parse_run_at("2026-01-02T03:04:05Z") == 1767323045000
    assert parse_run_at("2026-01-02T05:04:05.678+02:00") == 1767323045678


def test_parse_run_at_iso_without_zone_is_local_time() -> None:
    expected = int(datetime(2026, 1, 2, 3, 4, 5).astimezone().timestamp() * 1000)
    assert parse_run_at("2026-01-02T03:04:05") == expected
    assert parse_run_at("2026-01-02 03:04:05") == expected


def test_parse_run_at_refuses_epoch_seconds() -> None:
    with pytest.raises(ValueError, match="epoch seconds"):
        parse_run_at("1700000000")


@pytest.mark.parametrize("text", ["tomorrow", "", "-5", "2026-13-01", "12:00"])
def test_parse_run_at_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_run_at(text)
