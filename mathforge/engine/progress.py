"""The engine's progress bar: samples done, rate, ETA, tokens/s, cost and failures."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EngineProgress:
    """A rich progress bar over samples; a no-op when disabled (tests, quiet runs)."""

    def __init__(self, desc: str, total: int | None, enabled: bool = True):
        self.enabled = enabled
        self.desc = desc
        self.total = total
        self.tokens = 0
        self.cost = 0.0
        self.failed = 0
        self.fresh = 0
        self.start = time.monotonic()
        self._bar: Progress | None = None

    def __enter__(self) -> EngineProgress:
        if self.enabled:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} req/s"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[tps]} tok/s  ${task.fields[cost]}  fail {task.fields[failed]}"),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.desc, total=self.total, **self._fields())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, **self._fields())
            self._bar.stop()

    def _fields(self) -> dict[str, str]:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return {
            "rate": f"{self.fresh / elapsed:.1f}",
            "tps": f"{self.tokens / elapsed:.0f}",
            "cost": f"{self.cost:.4f}",
            "failed": str(self.failed),
        }

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance_cached(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.update(self._task, advance=n)

    def advance(self, tokens: int, cost: float, failed: bool = False) -> None:
        self.tokens += tokens
        self.cost = cost
        self.fresh += 1
        self.failed += failed
        if self._bar is not None:
            self._bar.update(self._task, advance=1, **self._fields())

    def complete_to(self, n: int) -> None:
        """Align the bar with the samples resolved so far (duplicates in a chunk are sent once)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=n, **self._fields())
