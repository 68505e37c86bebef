"""Figures of a benchmark: medians and percentiles of samples, and the one table printed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100): a value that was measured."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    figure: str
    value: float
    unit: str
    target: str = ""  # e.g. "<= 1.5"
    holds: bool | None = None  # None: reported, no target
    note: str = ""


def at_most(figure: str, value: float, unit: str, limit: float | None, note: str = "") -> Row:
    """A row whose target is `<= limit` (None: reported, no target); target and check from
    the one number, so they cannot drift apart."""
    if limit is None:
        return Row(figure, value, unit, note=note)
    return Row(figure, value, unit, f"<= {limit:g}", value <= limit, note)


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def render(self) -> str:
        head = f"{'figure':<52} {'value':>12}  {'unit':<6} {'target':<10} {'holds':<5} note"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            value = f"{r.value:,.2f}" if abs(r.value) < 1000 else f"{r.value:,.0f}"
            holds = "" if r.holds is None else ("yes" if r.holds else "NO")
            lines.append(
                f"{r.figure:<52} {value:>12}  {r.unit:<6} {r.target:<10} {holds:<5} {r.note}"
            )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": [r.__dict__ for r in self.rows],
            "details": self.details,
        }
