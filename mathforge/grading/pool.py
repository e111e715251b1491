"""Symbolic grading in worker processes, each verdict within a wall-time bound.

Hand-written because no pool in the standard library can enforce a per-item bound:
`concurrent.futures` cannot cancel a running task, and `multiprocessing.Pool` timeouts leave the
stuck worker running. Here each worker gets one item at a time over its own pipe; a worker that
overruns its deadline (sympy expanding `9^{9^{9^{9}}}` in C ignores signals) is killed and
replaced, and its item gets a "timeout" verdict.

Workers are plain `python -m mathforge.grading.worker` subprocesses rather than `multiprocessing`
children: they never re-import the caller's `__main__` (scripts and notebooks need no
`if __name__ == "__main__"` guard) and are never forks of a parent running threads (llama.cpp,
torch). A worker says "ready" once sympy is imported; until then it gets no work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

from mathforge.grading.symbolic import extract
from mathforge.grading.verdict import Verdict

DEFAULT_TIMEOUT_S = 5.0
MAX_FAILED_STARTS = 3
READY = "ready"


class _Worker:
    def __init__(self) -> None:
        child_in, parent_out = os.pipe()
        parent_in, child_out = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mathforge.grading.worker", str(child_in), str(child_out)],
            pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        os.close(child_in)
        os.close(child_out)
        self.send_conn = Connection(parent_out, readable=False)
        self.conn = Connection(parent_in, writable=False)
        self.ready = False
        self.job: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.send_conn.close()
        self.conn.close()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class GradingPool:
    """A pool of symbolic-grading workers; use as a context manager or call `close()`."""

    def __init__(self, workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._failed_starts = 0  # in a row: one killed while starting is replaced, a broken install is not
        self._workers = [_Worker() for _ in range(workers or default_workers())]

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            try:
                w.send_conn.send(None)
                w.proc.wait(timeout=1)
            except (OSError, subprocess.TimeoutExpired):
                pass
            w.kill()
        self._workers = []

    def wait_ready(self) -> None:
        """Block until every worker has started (for timing, and before latency-sensitive work)."""
        while starting := [w for w in self._workers if not w.ready]:
            for conn in wait([w.conn for w in starting]):
                self._collect(next(w for w in starting if w.conn is conn), [])

    def grade(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> list[Verdict]:
        """Verdicts for (gold, response) pairs, in order; every one within `timeout_s` of dispatch."""
        from rich.console import Console
        from rich.progress import Progress

        results: list[Verdict | None] = [None] * len(pairs)
        todo = deque(range(len(pairs)))
        with Progress(console=Console(stderr=True), disable=not progress) as bar:
            task = bar.add_task("symbolic grading", total=len(pairs))
            while todo or any(w.job is not None for w in self._workers):
                self._dispatch(todo, pairs)
                watched = [w for w in self._workers if w.job is not None or (todo and not w.ready)]
                deadlines = [w.deadline for w in watched if w.job is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                for conn in wait([w.conn for w in watched], timeout=timeout):
                    self._collect(next(w for w in watched if w.conn is conn), results)
                self._expire(results, pairs)
                bar.update(task, completed=len(pairs) - len(todo) - sum(w.job is not None for w in self._workers))
        return results  # type: ignore[return-value]

    def _dispatch(self, todo: deque[int], pairs: Sequence[tuple[str, str]]) -> None:
        for w in self._workers:
            if w.ready and w.job is None and todo:
                i = todo.popleft()
                try:
                    w.send_conn.send((i, str(pairs[i][0]), str(pairs[i][1])))
                except OSError:  # the worker died while idle: retry the item on a fresh one
                    todo.appendleft(i)
                    self._replace(w)
                    continue
                w.job, w.deadline = i, time.monotonic() + self.timeout_s

    def _collect(self, w: _Worker, results: list[Verdict | None]) -> None:
        try:
            message = w.conn.recv()
        except (EOFError, OSError):  # the worker died (out of memory, a crash in C)
            if w.job is not None:
                results[w.job] = Verdict(False, None, "error", "grading worker died")
            elif not w.ready:
                self._failed_starts += 1
                if self._failed_starts >= MAX_FAILED_STARTS:
                    raise RuntimeError("grading workers fail to start (is math-verify installed?)") from None
            self._replace(w)
            return
        if message == READY:
            w.ready = True
            self._failed_starts = 0
            return
        idx, *fields = message
        results[idx] = Verdict(*fields)
        w.job = None

    def _expire(self, results: list[Verdict | None], pairs: Sequence[tuple[str, str]]) -> None:
        now = time.monotonic()
        for w in self._workers:
            if w.job is not None and now >= w.deadline:
                gold, response = pairs[w.job]
                results[w.job] = Verdict(False, extract(str(response)), "timeout", f"over {self.timeout_s:g}s")
                self._replace(w)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = _Worker()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and fault-injection tests)."""
        return [w.proc.pid for w in self._workers]

