"""The Skywork-MathQA synthesis pipeline (paper §3, Figure 2a): two stages, three method families.

    seeds ─ stage1_initial: mix of MetaMath / Evol / Xwin on the initial seeds
          ─ stage1_coreset: embed those problems, k-center greedy -> "seed synthetic problems"
          ─ stage1_normal:  the mix again, on the seed synthetic problems -> normal data
          ─ stage2_hard_seeds: MATH level >= 4 by metadata (+ stage2_judge: problems an LLM judge
                            rates hard, a separate selectable step)
          ─ stage2_hard:    the mix on the hard seeds -> hard data

Every step is a run-directory stage (skipped once done), every teacher call goes through the
engine's SQLite cache (a killed run resumes without repeating requests), each stage's output is its
own dataset, and `yield.md`/`yield.json` tabulate requests, tokens, kept and dropped-by-reason per
method and stage.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mathforge.engine.types import Sampling
from mathforge.io import read_records, write_json, write_records, write_text
from mathforge.record import Record, annotate
from mathforge.rundir import RunDir
from mathforge.synth import evol, metamath, xwin
from mathforge.synth.common import Ctx, Yield

METHODS = tuple(f"metamath/{s}" for s in metamath.SUBMETHODS) + ("evol", "xwin")
# Evol gets the largest share, as in the paper (it costs the fewest tokens per sample); the four
# MetaMath sub-methods are balanced.
DEFAULT_MIX = {"metamath/answer_aug": 0.1, "metamath/rephrase": 0.1, "metamath/fobar": 0.1,
               "metamath/self_verify": 0.1, "evol": 0.4, "xwin": 0.2}
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.7
    top_p: float = 1.0
    solve_max_tokens: int = 1024
    question_max_tokens: int = 384


@dataclass(frozen=True)
class Stage1Config:
    initial_target: int = 200_000  # samples synthesised from the initial seeds
    coreset_budget: int = 50_000  # "seed synthetic problems" kept by k-center greedy
    target: int = 2_100_000  # normal data, synthesised from the seed synthetic problems
    embed_model: str | None = None  # sentence-transformers name or dir; None = embedded MiniLM
    embed_batch_size: int = 64


@dataclass(frozen=True)
class Stage2Config:
    enabled: bool = True
    min_level: int = 4  # MATH level 4-5 are the hard seeds
    judge: bool = False  # also rate seeds without such a level with the LLM difficulty judge
    judge_limit: int = 0  # at most this many seeds judged (0 = all candidates)
    judge_hard_at: int = 4
    judge_max_tokens: int = 512
    target: int = 400_000


@dataclass(frozen=True)
class SynthConfig:
    """The synthesis recipe; `recipes/synth_*.yaml` set these fields.

    `mix` maps methods (see METHODS) to relative shares. Overrides merge into the recipe's mapping,
    so `mix.evol=0` switches Evol off while `mix={evol: 1}` leaves the other methods' shares as set.
    """

    seeds: tuple[str, ...] = ("math:../shared/data/math/math_train.jsonl",)
    engine: dict[str, Any] = field(default_factory=dict)  # EngineConfig fields
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    evol_max_steps: int = 5
    evol_strategies: tuple[str, ...] = evol.STRATEGIES
    xwin_max_rounds: int = 2
    fewshot: int = 2
    fewshot_pool: int = 256  # the shortest solved seeds form the few-shot pool
    elicit_answers: bool = True
    completion: bool = False  # raw-completion prompts instead of chat (small local teachers)
    max_passes: int = 3  # passes per method and stage: the first, then top-ups while short of the quota
    seed: int = 0
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)


def run_synth(cfg: SynthConfig, out: str | Path, teacher: Any = None) -> dict[str, Any]:
    """Run the recipe into run directory `out`; returns the yield table. `teacher` replaces the
    engine built from `cfg.engine` (tests pass a scripted one)."""
    _validate(cfg)
    rd = RunDir(out)
    rd.save_config(cfg)
    if teacher is not None:
        return _stages(cfg, rd, teacher, "scripted")
    from mathforge.engine import Engine, EngineConfig

    ecfg = EngineConfig(**cfg.engine)
    with Engine(ecfg, cache_path=rd.path("cache.sqlite")) as engine:
        table = _stages(cfg, rd, engine, f"{ecfg.backend}:{ecfg.model}")
        write_json(rd.path("stats", f"engine-{_stamp()}.json"), engine.stats())
    return table


def _stages(cfg: SynthConfig, rd: RunDir, teacher: Any, name: str) -> dict[str, Any]:
    rd.run_stage("seeds", lambda: _load_seeds(cfg, rd))
    seeds = list(read_records(rd.path("seeds.jsonl")))
    base = Ctx(teacher=teacher, stage="stage1", teacher_name=name, fewshot_pool=_fewshot_pool(seeds, cfg.fewshot_pool),
               fewshot=cfg.fewshot, solve_sampling=_sampling(cfg, cfg.sampling.solve_max_tokens),
               question_sampling=_sampling(cfg, cfg.sampling.question_max_tokens), elicit=cfg.elicit_answers,
               completion=cfg.completion, seed=cfg.seed)
    s1 = cfg.stage1
    rd.run_stage("stage1_initial", lambda: _synth_stage(cfg, base, seeds, s1.initial_target, rd.path("stage1", "initial.jsonl")))
    rd.run_stage("stage1_coreset", lambda: _coreset_stage(cfg, rd))
    core = list(read_records(rd.path("stage1", "seed_synthetic.jsonl")))
    rd.run_stage("stage1_normal", lambda: _synth_stage(cfg, base, core, s1.target, rd.path("stage1", "normal.jsonl")))
    if cfg.stage2.enabled:
        hard_ctx = replace(base, stage="stage2")
        rd.run_stage("stage2_hard_seeds", lambda: _hard_seed_stage(cfg, rd, seeds))
        if cfg.stage2.judge:
            rd.run_stage("stage2_judge", lambda: _judge_stage(cfg, rd, teacher, seeds))
        hard = _hard_seeds(rd, cfg)
        rd.run_stage("stage2_hard", lambda: _synth_stage(cfg, hard_ctx, hard, cfg.stage2.target, rd.path("stage2", "hard.jsonl")))
    return _write_yield_table(rd)


# ---------------------------------------------------------------- the mix


def quotas(target: int, mix: dict[str, float]) -> dict[str, int]:
    """Split `target` samples over methods by share (largest remainder: the quotas sum to target)."""
    total = sum(mix.values())
    raw = {m: target * s / total for m, s in mix.items() if s > 0}
    out = {m: int(v) for m, v in raw.items()}
    for m in sorted(raw, key=lambda m: out[m] - raw[m])[: target - sum(out.values())]:
        out[m] += 1
    return out


def synthesize(cfg: SynthConfig, base: Ctx, seeds: Sequence[Record], target: int) -> tuple[list[Record], dict[str, Yield]]:
    """Synthesise `target` samples from `seeds` with the configured mix; records and per-method yields."""
    if not seeds:
        raise ValueError("no seed problems to synthesise from")
    records: list[Record] = []
    yields: dict[str, Yield] = {}
    for method, quota in quotas(target, cfg.mix).items():
        ctx = replace(base, meter=Yield())
        records += _fill_quota(cfg, ctx, method, seeds, quota)
        yields[method] = ctx.meter
    return records, yields


def _fill_quota(cfg: SynthConfig, ctx: Ctx, method: str, seeds: Sequence[Record], quota: int) -> list[Record]:
    """Run `method` on fresh (seed, replica) units, pass after pass, until `quota` rows are kept.

    Units cycle through the seeds in a per-method seeded order (replica r = r-th visit of a seed);
    each pass sizes itself by the yield measured so far, so a weak teacher gets more attempts, but
    at most 2**pass times what is still needed: a method whose first attempts all failed grows its
    passes 1, 2, 4, ... rather than jumping to the cap and overshooting its quota.
    """
    if quota <= 0:
        return []
    order = _usable_seeds(ctx, method, seeds)
    random.Random(f"{cfg.seed}/{method}").shuffle(order)
    if not order:
        return []
    run = _runner(cfg, method)
    kept: list[Record] = []
    used = 0
    for p in range(max(1, cfg.max_passes)):
        need = quota - len(kept)
        if need <= 0:
            break
        rate = len(kept) / used if used else (cfg.evol_max_steps / 2 if method == "evol" else 1.0)
        n = min(math.ceil(need / max(rate, 0.25)), need * min(2**p, 4))
        units = [(order[u % len(order)], u // len(order)) for u in range(used, used + n)]
        used += n
        kept += run(ctx, units)
    if len(kept) > quota:
        ctx.meter.dropped["over_quota"] += len(kept) - quota
    ctx.meter.kept = min(len(kept), quota)
    return kept[:quota]


def _usable_seeds(ctx: Ctx, method: str, seeds: Sequence[Record]) -> list[Record]:
    """The seeds `method` can use at all; the others are counted once each as `seed_<reason>`, so
    that no top-up attempt is spent on a seed that can never yield (FOBAR without a maskable number)."""
    if not method.startswith("metamath/"):
        return list(seeds)
    sub = method.split("/", 1)[1]
    usable = []
    for seed in seeds:
        reason = metamath.unusable(sub, seed)
        if reason:
            ctx.meter.dropped[f"seed_{reason}"] += 1
        else:
            usable.append(seed)
    return usable


def _runner(cfg: SynthConfig, method: str) -> Callable[[Ctx, list[tuple[Record, int]]], list[Record]]:
    if method.startswith("metamath/"):
        sub = method.split("/", 1)[1]
        return lambda ctx, units: metamath.run(ctx, sub, units)
    if method == "evol":
        return lambda ctx, units: evol.run(ctx, units, cfg.evol_max_steps, cfg.evol_strategies)
    return lambda ctx, units: xwin.run(ctx, units, cfg.xwin_max_rounds)


# ---------------------------------------------------------------- stages


def _synth_stage(cfg: SynthConfig, base: Ctx, seeds: Sequence[Record], target: int, out: Path) -> dict[str, Any]:
    records, yields = synthesize(cfg, base, seeds, target)
    write_records(out, records)
    return {"output": out.name, "seeds": len(seeds), "records": len(records), "target": target,
            "yield": {m: y.as_dict() for m, y in yields.items()}}


def _load_seeds(cfg: SynthConfig, rd: RunDir) -> dict[str, Any]:
    from mathforge.sources import load

    records = [r for spec in cfg.seeds for r in load(resolve_spec(spec))]
    if not records:
        raise ValueError(f"the seed sources {list(cfg.seeds)} gave no records")
    write_records(rd.path("seeds.jsonl"), records)
    return {"records": len(records), "sources": list(cfg.seeds)}


def resolve_spec(spec: str) -> str:
    """A seed spec whose relative path is read from the working directory when it exists there,
    else from the repository root (recipes name `../shared/data/...` relative to the repo)."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind in ("rg", "hf") or rest.startswith("/"):
        return spec
    path, q, query = rest.partition("?")
    if Path(path).exists() or not (REPO_ROOT / path).exists():
        return spec
    return f"{kind}:{(REPO_ROOT / path).resolve()}{q}{query}"


def _coreset_stage(cfg: SynthConfig, rd: RunDir) -> dict[str, Any]:
    from mathforge.embed import embed_texts
    from mathforge.synth.coreset import k_center_greedy

    records = list({r.problem: r for r in read_records(rd.path("stage1", "initial.jsonl"))}.values())
    if not records:
        raise ValueError("stage1_initial kept no records: nothing to select seed synthetic problems from")
    budget = min(cfg.stage1.coreset_budget, len(records))
    vectors = embed_texts([r.problem for r in records], cfg.stage1.embed_model, cfg.stage1.embed_batch_size)
    result = k_center_greedy(vectors, budget, seed=cfg.seed)
    chosen = [annotate(records[i], "coreset", {"rank": rank}) for rank, i in enumerate(result.indices.tolist())]
    write_records(rd.path("stage1", "seed_synthetic.jsonl"), chosen)
    return {"candidates": len(records), "selected": len(chosen), "coverage": result.report}


def _hard_seed_stage(cfg: SynthConfig, rd: RunDir, seeds: Sequence[Record]) -> dict[str, Any]:
    hard = [r for r in seeds if r.level is not None and r.level >= cfg.stage2.min_level]
    write_records(rd.path("stage2", "hard_seeds.jsonl"), hard)
    return {"seeds": len(seeds), "hard_by_level": len(hard), "min_level": cfg.stage2.min_level}


def _judge_stage(cfg: SynthConfig, rd: RunDir, teacher: Any, seeds: Sequence[Record]) -> dict[str, Any]:
    """Rate the seeds not already hard by level with the CoT difficulty judge (mathforge.quality)."""
    from mathforge.quality.judge import DifficultyJudge

    candidates = [r for r in seeds if r.level is None or r.level < cfg.stage2.min_level]
    if cfg.stage2.judge_limit:
        candidates = candidates[: cfg.stage2.judge_limit]
    judge = DifficultyJudge(teacher, Sampling(temperature=0.0, max_tokens=cfg.stage2.judge_max_tokens),
                            hard_at=cfg.stage2.judge_hard_at)
    judged = judge.annotate(candidates)
    hard = [r for r in judged if r.meta["difficulty"]["hard"]]
    write_records(rd.path("stage2", "judged.jsonl"), judged)
    write_records(rd.path("stage2", "judged_hard.jsonl"), hard)
    unparsed = sum(r.meta["difficulty"]["score"] is None for r in judged)
    return {"judged": len(judged), "hard": len(hard), "unparsed": unparsed}


def _hard_seeds(rd: RunDir, cfg: SynthConfig) -> list[Record]:
    hard = list(read_records(rd.path("stage2", "hard_seeds.jsonl")))
    if cfg.stage2.judge:
        hard += read_records(rd.path("stage2", "judged_hard.jsonl"))
    if not hard:
        raise ValueError(f"no hard seeds: no seed has level >= {cfg.stage2.min_level}"
                         + ("" if cfg.stage2.judge else " (enable stage2.judge to rate seeds without levels)"))
    return hard


# ---------------------------------------------------------------- reporting


def _write_yield_table(rd: RunDir) -> dict[str, Any]:
    table = {s: rd.stats(s)["yield"] for s in ("stage1_initial", "stage1_normal", "stage2_hard") if rd.is_done(s)}
    write_json(rd.path("yield.json"), table)
    lines = ["| stage | method | requests | cached | prompt tok | completion tok | kept | dropped (by reason) | repaired |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for stage, methods in table.items():
        for method, y in methods.items():
            lines.append(f"| {stage} | {method} | {y['requests']} | {y['cached']} | {y['prompt_tokens']} | "
                         f"{y['completion_tokens']} | {y['kept']} | {_counts(y['dropped'])} | {_counts(y['repaired'])} |")
    lines += ["", "Drops count attempts, except `seed_<reason>`: seeds a method can never use, once per seed and "
              "stage (no attempt is spent on them); `over_quota`: rows beyond the quota from the last pass, "
              "discarded. Repairs count responses brought under the answer contract (see synth/contract.py)."]
    write_text(rd.path("yield.md"), "\n".join(lines) + "\n")
    return table


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])) or "-"


def _validate(cfg: SynthConfig) -> None:
    unknown = set(cfg.mix) - set(METHODS)
    if unknown:
        raise ValueError(f"mix: unknown method(s) {sorted(unknown)} (known: {', '.join(METHODS)})")
    if not any(v > 0 for v in cfg.mix.values()) or any(v < 0 for v in cfg.mix.values()):
        raise ValueError("mix: shares must be >= 0 with at least one > 0")
    bad = set(cfg.evol_strategies) - set(evol.STRATEGIES)
    if bad:
        raise ValueError(f"evol_strategies: unknown {sorted(bad)} (known: {', '.join(evol.STRATEGIES)})")


def _sampling(cfg: SynthConfig, max_tokens: int) -> Sampling:
    return Sampling(temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p, max_tokens=max_tokens)


def _fewshot_pool(seeds: Sequence[Record], size: int) -> tuple[Record, ...]:
    solved = [r for r in seeds if r.solution and r.answer]
    return tuple(sorted(solved, key=lambda r: (len(r.problem) + len(r.solution or ""), r.id))[:size])


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")
