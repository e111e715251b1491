"""Executors: run one task per shard, locally (processes) or on Ray, with the same task code.

A task is a top-level function of one picklable argument that reads its shard from disk, writes its
outputs atomically and returns a small stats dict; the driver only ever sees those dicts, never the
records. `map` yields results in task order as they finish, so the caller can mark each finished
shard at once (a kill loses only unfinished shards) and outputs do not depend on the executor.

Reading order and files are fixed by the task list, so the local and the Ray executor write
byte-identical outputs. Progress (shards done, rows/s, ETA) goes to stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

RAY_OBJECT_STORE_BYTES = 256 * 1024**2  # records never enter the object store; stats dicts are tiny


class Progress:
    """One stderr line per finished shard: done/total, rows/s and ETA."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done, self.rows, self.start = label, total, 0, 0, time.time()

    def update(self, result: dict[str, Any]) -> None:
        self.done += 1
        self.rows += int(result.get("rows", 0))
        elapsed = max(time.time() - self.start, 1e-9)
        eta = elapsed / self.done * (self.total - self.done)
        print(f"{self.label}: {self.done}/{self.total} shards, {self.rows / elapsed:,.0f} rows/s, ETA {eta:.0f}s",
              file=sys.stderr, flush=True)


class LocalExecutor:
    """Shards in parallel on `workers` processes (None: one per core); a single task runs inline,
    so a small run pays no process start-up."""

    def __init__(self, workers: int | None = None):
        self.workers = workers

    def map(self, fn: Callable[[Any], dict[str, Any]], tasks: Sequence[Any], label: str) -> Iterator[dict[str, Any]]:
        progress = Progress(label, len(tasks))
        if len(tasks) <= 1 or self.workers == 1:
            yield from (_tracked(fn(t), progress) for t in tasks)
            return
        import multiprocessing as mp
        import os
        from concurrent.futures import ProcessPoolExecutor

        workers = min(self.workers or os.cpu_count() or 1, len(tasks))
        # spawn, not fork: the parent may hold threads (decontam scan, grading pool) that fork would copy mid-lock
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            yield from (_tracked(r, progress) for r in pool.map(fn, tasks))


class RayExecutor:
    """Shards as Ray tasks (a local Ray with `workers` CPUs, or a cluster at `address`)."""

    def __init__(self, workers: int | None = None, address: str | None = None):
        self.workers, self.address = workers, address

    def map(self, fn: Callable[[Any], dict[str, Any]], tasks: Sequence[Any], label: str) -> Iterator[dict[str, Any]]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, num_cpus=self.workers if self.address is None else None,
                     object_store_memory=RAY_OBJECT_STORE_BYTES if self.address is None else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        remote = ray.remote(fn)
        progress = Progress(label, len(tasks))
        refs = [remote.remote(t) for t in tasks]
        yield from (_tracked(ray.get(ref), progress) for ref in refs)


def _tracked(result: dict[str, Any], progress: Progress) -> dict[str, Any]:
    progress.update(result)
    return result


EXECUTORS: dict[str, type[LocalExecutor] | type[RayExecutor]] = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, workers: int | None = None) -> LocalExecutor | RayExecutor:
    """The executor called `name` (local or ray)."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor '{name}' (known: {', '.join(EXECUTORS)})")
    return EXECUTORS[name](workers)
