"""One row per measurement, and how rows are printed (a text table, Markdown, JSON).

``ratio`` always reads "times better for us": for a time (unit ``s``, ``ms``) it is theirs / ours
(a speed-up), for a rate (``img/s``, ``samples/s``) ours / theirs, and for memory (``MiB``) it is
ours / theirs, where less is better: the unit decides, see ``HIGHER_IS_BETTER``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: units whose larger value is better (rates); times and memory are better smaller
HIGHER_IS_BETTER = ("img/s", "samples/s", "GFLOP/s", "%", "tokens/s")
MEMORY_UNITS = ("MiB", "GiB")


@dataclass
class Row:
    """One measurement: ``ours`` against ``theirs`` (transformers; None where it has no counterpart)."""

    name: str
    ours: float
    theirs: float | None
    unit: str
    agreement: str = ""
    note: str = ""
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Speed-up for times and rates (> 1: ours faster); ours / theirs for memory (< 1: ours smaller)."""
        if self.theirs is None or not self.ours or not self.theirs:
            return None
        if self.unit in HIGHER_IS_BETTER or self.unit in MEMORY_UNITS:
            return self.ours / self.theirs
        return self.theirs / self.ours

    def as_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "ratio": self.ratio}
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2e}"


def ratio_text(row: Row) -> str:
    return "-" if row.ratio is None else f"{row.ratio:.2f}x"


COLUMNS = ("name", "ours", "theirs", "unit", "ratio", "agreement")


def cells(row: Row) -> list[str]:
    return [row.name, _number(row.ours), _number(row.theirs), row.unit, ratio_text(row), row.agreement]


def text_table(rows: list[Row]) -> str:
    """Aligned plain-text table for the terminal."""
    table = [list(COLUMNS)] + [cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i in (0, 3, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in table)


def notes_text(rows: list[Row]) -> str:
    """The rows' notes and targets, one line each (for the terminal, under the table)."""
    return "\n".join(f"  {row.name}: {'; '.join(x for x in (row.note, row.target and 'target ' + row.target) if x)}"
                     for row in rows if row.note or row.target)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[Row]) -> str:
    """Markdown table with the target and note columns too."""
    head = [*COLUMNS, "target", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(_escape(c) for c in [*cells(row), row.target, row.note]) + " |")
    return "\n".join(lines)
