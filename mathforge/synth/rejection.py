"""Difficulty-aware rejection sampling (after DART-Math, Tong et al. 2024): solve each seed with a
known answer again and again, keep only correct and distinct solutions, and spend the trials where
the problems are hard.

A unit of this method is one *round* of one seed (stream unit u = seed u % S, round u // S), so
every seed gets its first round before any seed gets its second: breadth first, so a binding
budget is shared fairly. A round asks for one solution (`round_trials`), never more than the seed
still needs:

- `uniform`: each seed needs `min_correct` distinct correct solutions;
- `prop2diff`: a seed needs ceil(min_correct * fail rate) of them (at least 1), with the fail rate
  estimated from its samples so far ((failed + 1) / (trials + 2)), so a seed that keeps failing
  keeps its trials coming while an easy one stops after its first success;

and a seed is closed once it has what it needs or `max_trials` trials. Solutions are graded
against the seed's answer (`mathforge.grading.same_answer`); a correct one that nearly repeats a
solution already kept for the seed is dropped as `near_duplicate`, by the definition cleaning's
dedup applies (`mathforge.quality.dedup.near_duplicate`, on the solutions: the problem is shared).

Where DART-Math's generator falls short, this one does not: the per-problem counters (trials,
correct, kept, rounds) live in the run's SQLite ledger under scope `<stage>:rejection`, committed
in the same transaction as the rows they produced, so a killed run resumes from them without
re-sampling (in-flight requests replay from the cache), duplicating rows or passing a target; a
round's requests never exceed what the seed still needs, so no quota is overshot by a batch; the
method's row quota from the recipe's mix caps the stage as for every method.

Each kept row records `meta["difficulty"] = {"pass_rate", "trials", "correct"}`: the seed's
estimated pass rate when the row was kept. Seeds still at 0 correct after `max_trials` are
`hopeless` in the stage report.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mathforge.grading import same_answer
from mathforge.quality.dedup import NearDedupConfig, near_duplicate
from mathforge.record import Record, annotate
from mathforge.synth.common import Ctx, SolveItem, make_record, solve
from mathforge.synth.contract import Checked

NAME = "rejection"
QUOTAS = ("uniform", "prop2diff")


@dataclass(frozen=True)
class RejectionConfig:
    """The rejection sampler's settings (`rejection.*` in a synthesis recipe)."""

    quota: str = "prop2diff"  # uniform or prop2diff (see the module docstring)
    min_correct: int = 2  # uniform: per seed; prop2diff: what a seed that always fails needs
    max_trials: int = 16  # solutions asked per seed at most
    # Solutions one round asks at most: 1 is strictly breadth first (the fairest under a binding
    # budget); more means fewer, larger rounds (less waiting on a slow teacher per seed).
    round_trials: int = 1
    # A correct solution whose word-shingle Jaccard with a kept one reaches this is a near-duplicate
    # (cleaning's near-dedup threshold, `NearDedupConfig.threshold`).
    distinct_at: float = 0.8

    def __post_init__(self) -> None:
        if self.quota not in QUOTAS:
            raise ValueError(f"rejection.quota must be one of {', '.join(QUOTAS)}, got '{self.quota}'")
        if min(self.min_correct, self.max_trials, self.round_trials) < 1:
            raise ValueError("rejection.min_correct, max_trials and round_trials must be >= 1")


@dataclass(slots=True)
class Problem:
    """One seed's state (with its id in `Sampler.problems`, ~240 bytes) plus the kept solutions'
    text while it is open."""

    trials: int = 0
    correct: int = 0
    kept: int = 0
    rounds: int = 0  # rounds reflected in the counters (a round waits for the one before)
    solutions: list[str] = field(default_factory=list)  # kept so far, for the near-duplicate check
    turn: asyncio.Condition | None = None


def needed(cfg: RejectionConfig, trials: int, correct: int) -> int:
    """How many distinct correct solutions a seed needs after `trials` with `correct` right."""
    if cfg.quota == "uniform":
        return cfg.min_correct
    fail = (trials - correct + 1) / (trials + 2)
    return max(1, math.ceil(cfg.min_correct * fail))


def is_open(cfg: RejectionConfig, p: Problem) -> bool:
    return p.trials < cfg.max_trials and p.kept < needed(cfg, p.trials, p.correct)


class Sampler:
    """The live per-problem state of one stage, resumed from the ledger and the committed rows.

    It holds a `Problem` per seed touched so far (the algorithm needs every seed's counters to
    schedule its next round: ~240 bytes a seed, 24 MB per 100k seeds, plus the kept solutions of
    open seeds only).
    """

    def __init__(self, cfg: RejectionConfig, done: dict[str, Counter], rows: Iterable[Record]):
        self.cfg = cfg
        self.problems: dict[str, Problem] = {
            pid: Problem(c["trials"], c["correct"], c["kept"], c["rounds"]) for pid, c in done.items()}
        for row in rows:  # the committed rows of this method: the open seeds' kept solutions
            p = self.problems.get(row.lineage.parent_id or "")
            if p is not None and is_open(cfg, p):
                p.solutions.append(row.solution or "")

    def problem(self, pid: str) -> Problem:
        return self.problems.setdefault(pid, Problem())

    async def round(self, ctx: Ctx, seed: Record, r: int) -> list[Record]:
        """Round `r` of `seed`: after round r - 1 of it, solve what it still needs; the kept rows."""
        p = self.problem(seed.id)
        if p.turn is None:
            p.turn = asyncio.Condition()
        async with p.turn:
            await p.turn.wait_for(lambda: p.rounds >= r)
        before = Counter(trials=p.trials, correct=p.correct, kept=p.kept)
        rows = await self._sample(ctx, seed, p) if is_open(self.cfg, p) else []
        p.rounds += 1
        if not is_open(self.cfg, p):
            p.solutions = []  # closed: its texts are no longer needed
        async with p.turn:
            p.turn.notify_all()
        delta = Counter(trials=p.trials, correct=p.correct, kept=p.kept, rounds=p.rounds)
        delta.subtract(before + Counter(rounds=r))
        ctx.meter.problems[seed.id] = delta
        return rows

    async def _sample(self, ctx: Ctx, seed: Record, p: Problem) -> list[Record]:
        batch = min(needed(self.cfg, p.trials, p.correct) - p.kept, self.cfg.max_trials - p.trials,
                    self.cfg.round_trials)
        items = [SolveItem(f"{ctx.stage}/{NAME}/{seed.id}/{p.trials + i}", "metamath_answer",
                           {"problem": seed.problem, "fewshot": ctx.examples(seed.id, f"{seed.id}/{p.trials + i}")},
                           seed.level) for i in range(batch)]
        kept = []
        for i, (checked, version) in enumerate(await solve(ctx, items, NAME)):
            reason = self._judge(seed, checked, p)
            if reason:
                ctx.meter.dropped[reason] += 1
                continue
            if checked.repair:
                ctx.meter.repaired[checked.repair] += 1
            p.solutions.append(checked.solution or "")
            kept.append(make_record(ctx, seed, seed.problem, NAME, checked, version, step=1, expected=seed.answer,
                                    agrees=True, trial=p.trials + i))
        p.trials += batch
        p.kept += len(kept)
        ctx.meter.kept += len(kept)
        difficulty = {"pass_rate": round(p.correct / p.trials, 4), "trials": p.trials, "correct": p.correct}
        return [annotate(r, "difficulty", difficulty) for r in kept]

    def _judge(self, seed: Record, checked: Checked, p: Problem) -> str | None:
        """Why a solution is not kept (and count it as correct when it is right)."""
        if not checked.ok:
            return checked.reason
        if not same_answer(checked.answer, seed.answer):
            return "wrong_answer"
        p.correct += 1
        candidate, kept = replace(seed, solution=checked.solution), [replace(seed, solution=s) for s in p.solutions]
        if near_duplicate(candidate, kept, NearDedupConfig(threshold=self.cfg.distinct_at), ("solution",)):
            return "near_duplicate"
        return None


def report(cfg: RejectionConfig, counters: dict[str, Counter], seeds: Sequence[Record]) -> dict[str, Any]:
    """The stage report's part: problems sampled, closed, hopeless (0 correct after max_trials,
    listed), and the estimated pass rate per level."""
    level = {s.id: s.level for s in seeds}
    hopeless = sorted(pid for pid, c in counters.items() if c["trials"] >= cfg.max_trials and not c["correct"])
    by_level: dict[str, list[float]] = {}
    for pid, c in counters.items():
        if c["trials"]:
            by_level.setdefault(str(level.get(pid)), []).append(c["correct"] / c["trials"])
    return {"quota": cfg.quota, "problems": len(counters), "trials": sum(c["trials"] for c in counters.values()),
            "over_max_trials": sum(c["trials"] > cfg.max_trials for c in counters.values()),
            "hopeless_count": len(hopeless), "hopeless": hopeless,
            "pass_rate_by_level": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_level.items())}}
