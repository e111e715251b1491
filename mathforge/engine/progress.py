"""The engine's progress display: samples done, rate, ETA, tokens/s, cost and failures.

On a terminal it is a rich progress bar. Elsewhere (batch jobs, CI, `nohup`) a bar would print
nothing until the end, so a plain status line is written every `LOG_EVERY_S` seconds instead.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

LOG_EVERY_S = 30.0


class EngineProgress:
    """Progress over samples; a no-op when disabled (tests, quiet runs)."""

    def __init__(self, desc: str, total: int | None, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.desc = desc
        self.total = total
        self.done = 0
        self.tokens = 0
        self.cost = 0.0
        self.failed = 0
        self.fresh = 0
        self.start = time.monotonic()
        self._console = console or Console(stderr=True, soft_wrap=True)  # a line stays one line
        self._bar: Progress | None = None
        self._logged = self.start

    def __enter__(self) -> EngineProgress:
        if self.enabled and self._console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} req/s"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[tps]} tok/s  ${task.fields[cost]}  fail {task.fields[failed]}"),
                console=self._console,
                refresh_per_second=4,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.desc, total=self.total, **self._fields())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, **self._fields())
            self._bar.stop()
        elif self.enabled:
            self._log()

    def _fields(self) -> dict[str, str]:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return {
            "rate": f"{self.fresh / elapsed:.1f}",
            "tps": f"{self.tokens / elapsed:.0f}",
            "cost": f"{self.cost:.4f}",
            "failed": str(self.failed),
        }

    def _log(self) -> None:
        f = self._fields()
        of = f"/{self.total}" if self.total is not None else ""
        self._console.print(
            f"{self.desc}: {self.done}{of} samples, {f['rate']} req/s, {f['tps']} tok/s, "
            f"${f['cost']}, {f['failed']} failed",
            highlight=False,
        )
        self._logged = time.monotonic()

    def _tick(self, advance: int) -> None:
        self.done += advance
        if self._bar is not None:
            self._bar.update(self._task, advance=advance, **self._fields())
        elif self.enabled and time.monotonic() - self._logged >= LOG_EVERY_S:
            self._log()

    def advance_cached(self, n: int) -> None:
        if n:
            self._tick(n)

    def advance(self, tokens: int, cost: float, failed: bool = False) -> None:
        self.tokens += tokens
        self.cost = cost
        self.fresh += 1
        self.failed += failed
        self._tick(1)

    def complete_to(self, n: int) -> None:
        """Align with the samples resolved so far (duplicates in a chunk are sent once)."""
        self._tick(n - self.done)
