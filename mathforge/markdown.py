"""Markdown tables for the reports every command writes (run, eval, scale, arms, dataset cards)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A GitHub table as lines: header, rule, one line per row. `align` has one letter per column,
    `l` or `r` (columns past its end are left-aligned). A `|` or a line break in a cell is escaped,
    since either would end the cell or the row."""
    rule = "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(headers), "l"))
    return [_line(headers), f"|{rule}", *(_line(row) for row in rows)]


def _line(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
