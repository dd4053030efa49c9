"""Results and the one table the harness prints: median and min-max of the runs per row."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Row:
    """One line of the table: a measured quantity, one value per run."""

    bench: str
    label: str
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def low(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def high(self) -> float:
        return max(self.values) if self.values else math.nan


class Results:
    """Rows in the order they were first recorded; `add` appends one run's value."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], Row] = {}

    def add(self, bench: str, label: str, metric: str, unit: str, value: float, note: str = "") -> None:
        key = (bench, label, metric)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = Row(bench, label, metric, unit)
        row.values.append(value)
        if note:
            row.note = note

    def get(self, bench: str, label: str, metric: str) -> Row | None:
        return self._rows.get((bench, label, metric))

    def rows(self, bench: str | None = None) -> list[Row]:
        return [r for r in self._rows.values() if bench is None or r.bench == bench]


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit in ("ms",) and value < 10:
        return f"{value:.2f}"
    if unit in ("%", "x") or abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A GitHub-flavoured Markdown table (also readable as plain text)."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    align = align or "l" * len(headers)

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, width, a in zip(cells, widths, align, strict=False):
            out.append(str(cell).rjust(width) if a == "r" else str(cell).ljust(width))
        return "| " + " | ".join(out) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
            for w, a in zip(widths, align, strict=False)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def results_table(results: Results) -> str:
    headers = ["benchmark", "system / setting", "metric", "median", "min-max", "runs", "note"]
    body = []
    for r in results.rows():
        body.append(
            [
                r.bench,
                r.label,
                f"{r.metric} ({r.unit})",
                fmt(r.median, r.unit),
                f"{fmt(r.low, r.unit)}-{fmt(r.high, r.unit)}",
                str(len(r.values)),
                r.note,
            ]
        )
    return table(headers, body, "lllrrrl")
