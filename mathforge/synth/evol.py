"""Evol-Instruct augmentation (WizardLM / WizardMath): trajectories of up to `max_steps` rewrites.

Each step applies one of five strategies to the previous step's problem; an evolution that fails
an elimination rule (unchanged, copied the prompt's own words, degenerate, unanswerable) ends its
trajectory. Every surviving step is solved and kept as its own row, with the step number and the
previous step as parent in its lineage. The synthesis driver runs one trajectory per task, so each
moves to its next step the moment its own responses arrive.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from mathforge.record import Record
from mathforge.synth.common import (
    Ctx,
    SolveItem,
    eliminate,
    make_record,
    parse_question,
    render,
    solve,
    unanswerable,
)

STRATEGIES = ("rewrite", "constraints", "deepen", "concretize", "reasoning")


@dataclass
class Trajectory:
    seed: Record
    replica: int
    current: Record  # the last kept step (the seed at step 0)

    @property
    def key(self) -> str:
        return f"{self.seed.id}/{self.replica}"


def pick_strategy(traj_key: str, step: int, strategies: Sequence[str] = STRATEGIES) -> str:
    """The strategy of one step of one trajectory: seeded, so reruns ask the same questions."""
    return random.Random(f"{traj_key}/{step}").choice(list(strategies))


async def run(ctx: Ctx, units: Sequence[tuple[Record, int]], max_steps: int = 5,
        strategies: Sequence[str] = STRATEGIES) -> list[Record]:
    """Evolve each (seed, replica) for up to `max_steps` steps; every kept step is a row."""
    alive = [Trajectory(seed, replica, seed) for seed, replica in units]
    kept: list[Record] = []
    for step in range(1, max_steps + 1):
        if not alive:
            break
        alive = await _advance(ctx, alive, step, strategies, kept)
    ctx.meter.kept += len(kept)
    return kept


async def _advance(ctx: Ctx, alive: list[Trajectory], step: int, strategies: Sequence[str], kept: list[Record]) -> list[Trajectory]:
    chosen = [pick_strategy(t.key, step, strategies) for t in alive]
    keys = [f"{ctx.stage}/evol/{t.key}/{step}" for t in alive]
    prompts = [render(f"evol_{s}", problem=t.current.problem) for t, s in zip(alive, chosen, strict=True)]
    reqs = [ctx.request("question", k, p, level=t.seed.level) for t, k, p in zip(alive, keys, prompts, strict=True)]
    survivors = []
    for t, strategy, key, res, prompt in zip(alive, chosen, keys, await ctx.ask(reqs, f"evol: step {step}"), prompts, strict=True):
        problem, reason = parse_question(*ctx.generated(res))
        reason = reason or eliminate(t.current.problem, problem)
        if reason:
            ctx.meter.dropped[f"evol_{reason}"] += 1
            continue
        survivors.append((t, strategy, key, problem, prompt.version, res.cache_keys))
    items = [SolveItem(f"{key}/solve", "solve", {"problem": q, "fewshot": ctx.examples(t.seed.id, key)}, t.seed.level)
             for t, _, key, q, _, _ in survivors]
    nxt = []
    for (t, strategy, _, problem, version, written_by), (checked, _) in zip(survivors, await solve(ctx, items, f"evol: solve {step}"), strict=True):
        if not checked.ok:
            ctx.meter.dropped[checked.reason] += 1
            continue
        if unanswerable(checked.solution, checked.answer):
            ctx.meter.dropped["evol_unanswerable"] += 1
            continue
        if checked.repair:
            ctx.meter.repaired[checked.repair] += 1
        row = make_record(ctx, t.current, problem, f"evol/{strategy}", checked, version, step=step,
                          written_by=written_by, trajectory=t.key)
        kept.append(row)
        nxt.append(Trajectory(t.seed, t.replica, row))
    return nxt
