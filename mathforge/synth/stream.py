"""One synthesis stage as a stream of units: per-unit request chains, in-order commits, shards.

A unit is one (seed, replica) of one method; it runs its own chain of requests (Evol steps, Xwin
write -> verify -> revise -> solve, MetaMath rewrite -> solve) as an asyncio task, awaiting each
response from the engine's shared in-flight window, so no unit ever waits for another.

Which samples fill a quota must not depend on timing (a resumed run must produce the same ids as
an uninterrupted one), so units are *committed* per method in unit order: a unit that finishes early
waits, as a finished result in a small buffer (bounded by the units in flight), until every
earlier unit of its method has finished. Committed rows up to the quota go to the stage's output
shards; the quota ledger (units committed, kept, requests, tokens, drops by reason per method) is
committed in the same step as the shard it covers (the shard file first, then the ledger
transaction). A killed run resumes from the ledger: finished shards are never re-walked, units
committed are never re-run, and units that were in flight are re-run from the request cache.

New units are launched while the rows a method expects (committed + finished + in flight times
the yield per unit measured so far, optimistic at first) are short of its quota, so the requests
spent beyond what the quota needed are the few in flight when it fills; those not yet sent are
withdrawn from the engine's queue.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mathforge.io import dataset_files, shard_name, write_records
from mathforge.ledger import Ledger
from mathforge.record import Record
from mathforge.synth.common import Ctx, Yield

UnitFn = Callable[[Ctx, Record, int], Awaitable[list[Record]]]
SHARDS = "_shards"  # the ledger key of a stage's shard count and rows
FLUSH_S = 10.0  # a partial shard is written at least this often, so a kill loses little work


@dataclass
class Method:
    """The live state of one method in one stage (rebuilt from the ledger on resume)."""

    name: str
    quota: int
    order: list[Record]  # usable seeds, in the method's seeded order; unit u = order[u % len]
    run: UnitFn
    max_units: int
    prior: float  # the most rows a unit can yield: the rate assumed before any unit was committed
    committed: int = 0  # units 0..committed-1 are in the ledger or the pending shard
    kept: int = 0
    launched: int = 0
    running: dict[int, asyncio.Task] = field(default_factory=dict)
    finished: dict[int, tuple[list[Record], Yield]] = field(default_factory=dict)

    def unit(self, u: int) -> tuple[Record, int]:
        return self.order[u % len(self.order)], u // len(self.order)

    @property
    def closed(self) -> bool:
        return self.kept >= self.quota or (self.committed >= self.max_units and not self.running)

    def wants_more(self) -> bool:
        """Launch another unit: what is committed, finished and in flight may not fill the quota."""
        if self.kept >= self.quota or self.launched >= self.max_units:
            return False
        # The measured yield per unit, shrunk towards the most a unit can yield: an optimistic guess
        # under-launches (one more round later, while other methods fill the window) rather than
        # over-launches (units past the quota are paid for and thrown away).
        rate = (self.kept + 2 * self.prior) / (self.committed + 2)
        waiting = sum(len(rows) for rows, _ in self.finished.values())
        return self.kept + waiting + len(self.running) * max(rate, 0.05) < self.quota


class ShardWriter:
    """Rows and ledger deltas of committed units, written as one shard + one ledger commit."""

    def __init__(self, out_dir: Path, ledger: Ledger, scope: str, shard_rows: int, target: int = 0,
                 log: Callable[[str], None] | None = None, on_shard: Callable[[Path, bool], None] | None = None):
        """`on_shard(path, last)` is told of each shard once it is committed (`last`: the stage's final flush)."""
        self.out_dir, self.ledger, self.scope, self.shard_rows = out_dir, ledger, scope, shard_rows
        self.on_shard = on_shard
        self.shards = ledger.read(scope).get(SHARDS, Counter())["count"]
        self.target, self.log = target, log
        self.rows_done = ledger.read(scope).get(SHARDS, Counter())["rows"]
        self.start, self.resumed_at = time.monotonic(), self.rows_done
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in dataset_files(out_dir)[self.shards:]:  # written by a run killed before its commit
            stale.unlink()
        self.rows: list[Record] = []
        self.deltas: dict[str, Counter] = {}
        self.problems: dict[str, dict[str, Counter]] = {}  # scope -> problem id -> counters
        self.last = time.monotonic()

    def add(self, method: str, rows: list[Record], delta: Counter,
            problems: dict[str, Counter] | None = None) -> None:
        self.rows += rows
        self.deltas.setdefault(method, Counter()).update(delta)
        for pid, counters in (problems or {}).items():
            self.problems.setdefault(problem_scope(self.scope, method), {}).setdefault(pid, Counter()).update(counters)
        if len(self.rows) >= self.shard_rows or time.monotonic() - self.last >= FLUSH_S:
            self.flush()

    def flush(self, last: bool = False) -> None:
        shard = self.out_dir / shard_name(self.shards) if self.rows else None
        if shard:
            write_records(shard, self.rows)
            self.deltas[SHARDS] = Counter(count=1, rows=len(self.rows))
            self.shards += 1
        if self.deltas:
            self.ledger.commit_scopes({self.scope: self.deltas, **self.problems})
        if shard and self.on_shard:
            self.on_shard(shard, last)
        self.rows_done += sum(d["rows"] for k, d in self.deltas.items() if k == SHARDS)
        self.rows, self.deltas, self.problems, self.last = [], {}, {}, time.monotonic()
        self._progress()

    def _progress(self) -> None:
        """One line per flush: rows kept of the target, their rate this run, the time left at it."""
        if self.log is None or not self.target:
            return
        rate = (self.rows_done - self.resumed_at) / max(time.monotonic() - self.start, 1e-9)
        left = (self.target - self.rows_done) / rate if rate > 0 else float("inf")
        self.log(f"{self.scope}: {self.rows_done}/{self.target} rows kept ({self.rows_done / self.target:.0%}), "
                 f"{rate:.1f} rows/s, ETA {left / 60:.1f} min, {self.shards} shards")


async def run_stage(methods: Sequence[Method], base: Ctx, writer: ShardWriter, window: int) -> None:
    """Drive every method's units until each quota is filled (or its unit budget is spent)."""
    try:
        while not all(m.closed for m in methods):
            _launch(methods, base, window)
            running = [t for m in methods for t in m.running.values()]
            if not running:
                break
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for m in methods:
                _collect(m, writer)
    finally:
        for m in methods:  # a failure or a cap: withdraw what is still queued, keep what was committed
            for task in m.running.values():
                task.cancel()
        await asyncio.gather(*(t for m in methods for t in m.running.values()), return_exceptions=True)
        writer.flush(last=True)


def _launch(methods: Sequence[Method], base: Ctx, window: int) -> None:
    """Round-robin over methods, one unit each per turn, until the window of units is full."""
    busy = sum(len(m.running) for m in methods)
    while busy < window:
        ready = [m for m in methods if m.wants_more()]
        if not ready:
            return
        for m in ready[: window - busy]:
            u = m.launched
            m.launched += 1
            m.running[u] = asyncio.create_task(_unit(m, base, u))
            busy += 1


async def _unit(m: Method, base: Ctx, u: int) -> tuple[list[Record], Yield]:
    ctx = replace(base, meter=Yield())
    seed, replica = m.unit(u)
    rows = await m.run(ctx, seed, replica)
    return rows, ctx.meter


def _collect(m: Method, writer: ShardWriter) -> None:
    """Move finished units out of `running`, then commit the contiguous prefix in unit order."""
    for u, task in list(m.running.items()):
        if task.done():
            del m.running[u]
            if not task.cancelled():  # cancelled: its method's quota was already full
                m.finished[u] = task.result()  # a unit's exception (a cap, a bug) stops the stage here
    while m.committed in m.finished and m.kept < m.quota:
        rows, meter = m.finished.pop(m.committed)
        take = rows[: m.quota - m.kept]
        m.committed += 1
        m.kept += len(take)
        writer.add(m.name, take, ledger_delta(meter, len(take), len(rows) - len(take)),
                   problem_delta(meter, len(rows) - len(take)))
    if m.kept >= m.quota:
        for task in m.running.values():
            task.cancel()  # not needed any more: withdrawn from the engine's queue if not yet sent


def ledger_delta(meter: Yield, kept: int, over: int) -> Counter:
    """One committed unit's ledger counters."""
    delta = Counter(units=1, kept=kept, requests=meter.requests, cached=meter.cached, failed=meter.failed,
                    prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens)
    delta.update({f"dropped:{k}": v for k, v in meter.dropped.items()})
    delta.update({f"repaired:{k}": v for k, v in meter.repaired.items()})
    if over:
        delta["dropped:over_quota"] = over
    return delta


def problem_delta(meter: Yield, over: int) -> dict[str, Counter]:
    """One committed unit's per-problem counters; rows cut by the quota are not `kept` (a unit
    with per-problem counters works on one problem)."""
    problems = {pid: Counter(c) for pid, c in meter.problems.items()}
    if over and len(problems) == 1:
        next(iter(problems.values()))["kept"] -= over
    return problems


def problem_scope(scope: str, method: str) -> str:
    """The ledger scope of a method's per-problem counters within a stage."""
    return f"{scope}:{method}"


def yield_of(counters: Counter, seed_drops: Counter) -> dict[str, Any]:
    """The yield-table row of one method from its ledger counters (and its unusable-seed counts)."""
    y = Yield(**{k: counters[k] for k in ("requests", "cached", "failed", "prompt_tokens", "completion_tokens", "kept")})
    y.dropped.update(seed_drops)
    for k, v in counters.items():
        kind, _, reason = k.partition(":")
        if kind == "dropped":
            y.dropped[reason] += v
        elif kind == "repaired":
            y.repaired[reason] += v
    return {**y.as_dict(), "units": counters["units"]}


def make_method(name: str, quota: int, usable: list[Record], run: UnitFn, *, seed: int, max_units: int,
                prior: float, done: Counter) -> Method:
    """A method's state, resumed from its ledger counters `done`."""
    order = list(usable)
    random.Random(f"{seed}/{name}").shuffle(order)
    m = Method(name, quota, order, run, max_units if order else 0, prior)
    m.committed = m.launched = done["units"]
    m.kept = done["kept"]
    return m


def max_units(quota: int, max_passes: int) -> int:
    """The unit budget of a method: as many attempts as passes of 1, 2, 4, ... times the quota."""
    return quota * (2 ** max(1, max_passes) - 1) if quota > 0 else 0


def units_window(concurrency: int) -> int:
    """Units in flight: enough that the engine's queue never runs dry while units do CPU work."""
    return max(4, math.ceil(concurrency * 1.5))
