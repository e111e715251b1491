"""The Skywork-MathQA synthesis pipeline (paper §3, Figure 2a): two stages, three method families.

    seeds ─ stage1_initial: mix of MetaMath / Evol / Xwin on the initial seeds
          ─ stage1_coreset: embed those problems, k-center greedy -> "seed synthetic problems"
          ─ stage1_normal:  the mix again, on the seed synthetic problems -> normal data
          ─ stage2_hard_seeds: MATH level >= 4 by metadata (+ stage2_judge: problems an LLM judge
                            rates hard, a separate selectable step)
          ─ stage2_hard:    the mix on the hard seeds -> hard data

Every step is a keyed run-directory step (`RunDir.run_step`; `step_specs` gives each one's key, so a
changed target, mix or teacher reruns exactly the stages that read it and the ones after them, and
a stage whose key changed starts a fresh output and fresh quota counters, never the old key's). The three synthesis stages stream: every
(seed, replica) unit of every method runs its own request chain in the engine's one in-flight
window (see synth/stream.py), stage2_hard runs beside the whole of stage 1, kept rows go to sharded
datasets (`stage1/initial/`, `stage1/normal/`, `stage2/hard/`, each `part-NNNNN.jsonl`) with the
quota ledger (`ledger.sqlite`) committed per shard, and every teacher call goes through the
engine's SQLite cache, so a killed run resumes from its last shard without paying twice.
`budget` caps dollars, tokens and requests over the run directory's cache. `yield.md`/`yield.json`
tabulate requests, tokens, kept and dropped-by-reason per method and stage.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mathforge import markdown
from mathforge.engine.limits import Budget
from mathforge.engine.types import Sampling
from mathforge.io import dataset_files, read_records, write_json, write_records, write_text
from mathforge.ledger import Ledger
from mathforge.paths import repo_path
from mathforge.quality import coreset
from mathforge.record import Record, annotate, hash_fraction
from mathforge.rundir import Planned, RunDir, StepSpec, step_spec
from mathforge.synth import evol, metamath, rejection, stream, xwin
from mathforge.synth.common import Ctx
from mathforge.synth.rejection import RejectionConfig

METHODS = tuple(f"metamath/{s}" for s in metamath.SUBMETHODS) + ("evol", "xwin", rejection.NAME)
# Evol gets the largest share, as in the paper (it costs the fewest tokens per sample); the four
# MetaMath sub-methods are balanced.
DEFAULT_MIX = {"metamath/answer_aug": 0.1, "metamath/rephrase": 0.1, "metamath/fobar": 0.1,
               "metamath/self_verify": 0.1, "evol": 0.4, "xwin": 0.2}


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
    coreset: Literal["kcenter", "random"] = "kcenter"  # random: the same budget by a seeded hash (Table 3's baseline)
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
    rejection: RejectionConfig = field(default_factory=RejectionConfig)  # the `rejection` method
    fewshot: int = 2
    fewshot_pool: int = 256  # the shortest solved seeds form the few-shot pool
    elicit_answers: bool = True
    completion: bool = False  # raw-completion prompts instead of chat (small local teachers)
    # Attempts per method and stage are bounded as passes of 1, 2, 4, ... times the quota would be:
    # at most (2**max_passes - 1) units per quota sample (a weak teacher needs many).
    max_passes: int = 3
    shard_rows: int = 2000  # rows per output shard (a partial shard is also written every 10 s)
    budget: Budget = field(default_factory=Budget)  # hard caps over the run directory's request cache
    seed: int = 0
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)


def run_synth(cfg: SynthConfig, out: str | Path, teacher: Any = None) -> dict[str, Any]:
    """Run (or resume) the recipe into run directory `out`; returns the yield table (stage ->
    method -> counts) and `datasets`: `seeds`, `normal`, `hard` -> paths `io.read_records` reads.
    `teacher` replaces the engine built from `cfg.engine` (tests pass a scripted one). Raises
    `BudgetExceeded` when a cap stops the run (everything paid for is kept)."""
    _validate(cfg)
    rd = RunDir(out)
    rd.save_config(cfg)
    if teacher is not None:
        return {**_stages(cfg, rd, teacher, "scripted"), "datasets": datasets(rd.root)}
    from mathforge.engine import Engine, EngineConfig

    ecfg = EngineConfig(**cfg.engine)
    with Engine(ecfg, cache_path=rd.path("cache.sqlite"), budget=cfg.budget) as engine:
        try:
            # named by the endpoint's kind (a batch's answers are the online answers), not the transport
            table = _stages(cfg, rd, engine, f"{engine.backend.name}:{ecfg.model}")
        finally:
            write_json(rd.path("stats", f"engine-{_stamp()}.json"), engine.stats())
    return {**table, "datasets": datasets(rd.root)}


def datasets(root: Path) -> dict[str, str]:
    """Where a run directory's datasets are: a record file or a folder of shards each."""
    return {"seeds": str(root / "seeds.jsonl"), "normal": str(root / "stage1" / "normal"),
            "hard": str(root / "stage2" / "hard")}


VERSION = 1  # of every synthesis step's output format; bump when one changes


def step_specs(cfg: SynthConfig) -> dict[str, StepSpec]:
    """Every synthesis step's key, from the recipe alone (so a dry run knows them before any data)."""
    gen = {**{k: getattr(cfg, k) for k in _GENERATION}, "prompts": _prompt_versions()}
    specs = {"seeds": step_spec(VERSION, {"seeds": cfg.seeds}, files=_seed_files(cfg.seeds))}
    after = {"seeds": specs["seeds"].key}
    if cfg.stage2.enabled:
        specs["stage2_hard_seeds"] = step_spec(VERSION, {"min_level": cfg.stage2.min_level}, "stage2", after)
        hard_after = {"stage2_hard_seeds": specs["stage2_hard_seeds"].key}
        if cfg.stage2.judge:
            judge = {k: getattr(cfg.stage2, k) for k in ("min_level", "judge_limit", "judge_hard_at", "judge_max_tokens")}
            specs["stage2_judge"] = step_spec(VERSION, {"stage2": judge, "engine": cfg.engine,
                                                        "completion": cfg.completion}, after=after)
            hard_after["stage2_judge"] = specs["stage2_judge"].key
        specs["stage2_hard"] = step_spec(VERSION, {**gen, "stage2.target": cfg.stage2.target}, after={**after, **hard_after})
    specs["stage1_initial"] = step_spec(VERSION, {**gen, "stage1.initial_target": cfg.stage1.initial_target}, after=after)
    core = {k: getattr(cfg.stage1, k) for k in ("coreset_budget", "coreset", "embed_model")}
    specs["stage1_coreset"] = step_spec(VERSION, {"stage1": core, "seed": cfg.seed},
                                        after={"stage1_initial": specs["stage1_initial"].key})
    specs["stage1_normal"] = step_spec(VERSION, {**gen, "stage1.target": cfg.stage1.target},
                                       after={**after, "stage1_coreset": specs["stage1_coreset"].key})
    return specs


# What a generating stage reads besides its target (engine fields in `rundir.UNKEYED` drop out).
_GENERATION = ("engine", "sampling", "mix", "evol_max_steps", "evol_strategies", "xwin_max_rounds", "rejection",
               "fewshot", "fewshot_pool", "elicit_answers", "completion", "max_passes", "shard_rows", "seed")
OUTPUTS = {"stage1_initial": ("stage1", "initial"), "stage1_normal": ("stage1", "normal"),
           "stage2_hard": ("stage2", "hard")}


def planned(cfg: SynthConfig, root: Path, prefix: str = "") -> list[Planned]:
    """The synthesis steps of a dry run, in the order they run."""
    order = ("seeds", "stage2_hard_seeds", "stage2_judge", "stage1_initial", "stage1_coreset", "stage1_normal",
             "stage2_hard")
    specs = step_specs(cfg)
    return [Planned(f"{prefix}{name}", root, name, specs[name]) for name in order if name in specs]


def _prompt_versions() -> list[str]:
    from mathforge.prompt import load_template

    folder = Path(__file__).parent / "prompts"
    return [load_template(p).version for p in sorted(folder.glob("*.j2"))]


def _seed_files(specs: Sequence[str]) -> list[Path]:
    from mathforge.sources import SourceSpec

    files = []
    for spec in specs:
        kind, sep, _ = resolve_spec(spec).partition(":")
        if sep and kind not in ("rg", "hf", "mini"):
            location = Path(SourceSpec.parse(resolve_spec(spec)).location)
            files += dataset_files(location) if location.exists() else []
    return files


def _reset_generation(rd: RunDir, ledger: Ledger, stage: str) -> Callable[[], None]:
    """A generating stage whose key changed: its shards and quota counters start afresh (the
    request cache keeps every paid response, so the rerun pays only for what changed)."""
    def reset() -> None:
        import shutil

        shutil.rmtree(rd.root.joinpath(*OUTPUTS[stage]), ignore_errors=True)
        ledger.reset(stage)
    return reset


def _stages(cfg: SynthConfig, rd: RunDir, teacher: Any, name: str) -> dict[str, Any]:
    specs = step_specs(cfg)
    rd.run_step("seeds", specs["seeds"], lambda: _load_seeds(cfg, rd))
    seeds = list(read_records(rd.path("seeds.jsonl")))
    base = Ctx(teacher=teacher, stage="stage1", teacher_name=name, fewshot_pool=_fewshot_pool(seeds, cfg.fewshot_pool),
               fewshot=cfg.fewshot, solve_sampling=_sampling(cfg, cfg.sampling.solve_max_tokens),
               question_sampling=_sampling(cfg, cfg.sampling.question_max_tokens), elicit=cfg.elicit_answers,
               completion=cfg.completion, seed=cfg.seed)
    if cfg.stage2.enabled:
        rd.run_step("stage2_hard_seeds", specs["stage2_hard_seeds"], lambda: _hard_seed_stage(cfg, rd, seeds))
        if cfg.stage2.judge:
            rd.run_step("stage2_judge", specs["stage2_judge"], lambda: _judge_stage(cfg, rd, teacher, seeds))
    ledger = Ledger(rd.path("ledger.sqlite"))
    window = stream.units_window(getattr(getattr(teacher, "cfg", None), "concurrency", 16))
    try:
        _drive(teacher, _synth_stages(cfg, rd, base, seeds, ledger, window, specs))
    finally:
        ledger.close()
    return _write_yield_table(rd)


def _drive(teacher: Any, coro: Awaitable[None]) -> None:
    """Run the stages on the engine's own loop (its HTTP connections live there); the first error
    of a stage is raised as itself, not inside the task group's ExceptionGroup."""
    try:
        teacher.drive(coro) if hasattr(teacher, "drive") else asyncio.run(coro)
    except BaseExceptionGroup as group:
        first = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def _synth_stages(cfg: SynthConfig, rd: RunDir, base: Ctx, seeds: list[Record], ledger: Ledger,
                        window: int, specs: dict[str, StepSpec]) -> None:
    """Stage 1 (initial -> core-set -> normal) and stage 2 (hard) at once: they share no data, so the
    in-flight window stays full across stage 1's core-set step and each stage's tail. Stage 2's
    requests wait behind stage 1's: stage1_initial ends (and its core-set step starts) as early as
    it can, and stage 2's work fills the window while that step runs."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_stage1(cfg, rd, base, seeds, ledger, window, specs))
        if cfg.stage2.enabled:
            hard, hard_ctx = _hard_seeds(rd, cfg), replace(base, stage="stage2", priority=1)
            tg.create_task(rd.arun_step("stage2_hard", specs["stage2_hard"], lambda: synthesize(
                cfg, hard_ctx, hard, cfg.stage2.target, rd.path("stage2", "hard"), ledger, "stage2_hard", window),
                reset=_reset_generation(rd, ledger, "stage2_hard")))


async def _stage1(cfg: SynthConfig, rd: RunDir, base: Ctx, seeds: list[Record], ledger: Ledger, window: int,
                  specs: dict[str, StepSpec]) -> None:
    s1 = cfg.stage1
    embedder = coreset.ShardEmbedder(s1.embed_model, s1.embed_batch_size)  # so the core-set step finds vectors ready
    try:
        await rd.arun_step("stage1_initial", specs["stage1_initial"], lambda: synthesize(
            cfg, base, seeds, s1.initial_target, rd.path("stage1", "initial"), ledger, "stage1_initial", window,
            on_shard=embedder if s1.coreset == "kcenter" else None), reset=_reset_generation(rd, ledger, "stage1_initial"))
        for error in await asyncio.to_thread(embedder.finish):
            rd.log.warning("embedding a stage1_initial shard ahead failed (the core-set step redoes it): %s", error)
    finally:
        embedder.close()
    await rd.arun_step("stage1_coreset", specs["stage1_coreset"], lambda: asyncio.to_thread(_coreset_stage, cfg, rd))
    core = list(read_records(rd.path("stage1", "seed_synthetic.jsonl")))
    await rd.arun_step("stage1_normal", specs["stage1_normal"], lambda: synthesize(
        cfg, base, core, s1.target, rd.path("stage1", "normal"), ledger, "stage1_normal", window),
        reset=_reset_generation(rd, ledger, "stage1_normal"))


# ---------------------------------------------------------------- the mix


def quotas(target: int, mix: dict[str, float]) -> dict[str, int]:
    """Split `target` samples over methods by share (largest remainder: the quotas sum to target)."""
    total = sum(mix.values())
    raw = {m: target * s / total for m, s in mix.items() if s > 0}
    out = {m: int(v) for m, v in raw.items()}
    for m in sorted(raw, key=lambda m: out[m] - raw[m])[: target - sum(out.values())]:
        out[m] += 1
    return out


def _reporter(cfg: SynthConfig) -> Callable[[str], None] | None:
    """Progress lines on stderr (every shard, at least every 10 s) unless the engine's progress is off."""
    if not cfg.engine.get("progress", True):
        return None
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # progress lines stay whole at any terminal width
    return lambda line: console.print(line, highlight=False)


def unusable_seeds(method: str, seeds: Sequence[Record]) -> tuple[list[Record], Counter]:
    """The seeds `method` can use at all, and the others counted as `seed_<reason>` (once per seed
    and stage), so that no attempt is spent on a seed that can never yield (FOBAR without a
    maskable number, rejection sampling without a known answer)."""
    if method == rejection.NAME:
        def reason_of(seed: Record) -> str | None:
            return None if seed.answer else "no_answer"
    elif method.startswith("metamath/"):
        def reason_of(seed: Record) -> str | None:
            return metamath.unusable(method.split("/", 1)[1], seed)
    else:
        return list(seeds), Counter()
    usable, drops = [], Counter()
    for seed in seeds:
        reason = reason_of(seed)
        if reason:
            drops[f"seed_{reason}"] += 1
        else:
            usable.append(seed)
    return usable, drops


def unit_runner(cfg: SynthConfig, method: str) -> stream.UnitFn:
    """The request chain of one (seed, replica) unit of `method`."""
    if method.startswith("metamath/"):
        sub = method.split("/", 1)[1]
        return lambda ctx, seed, r: metamath.run(ctx, sub, [(seed, r)])
    if method == "evol":
        return lambda ctx, seed, r: evol.run(ctx, [(seed, r)], cfg.evol_max_steps, cfg.evol_strategies)
    return lambda ctx, seed, r: xwin.run(ctx, [(seed, r)], cfg.xwin_max_rounds)


# ---------------------------------------------------------------- stages


async def synthesize(cfg: SynthConfig, base: Ctx, seeds: Sequence[Record], target: int, out: Path,
                     ledger: Ledger, scope: str, window: int,
                     on_shard: Callable[[Path, bool], None] | None = None) -> dict[str, Any]:
    """Synthesise `target` samples from `seeds` with the configured mix into shards in `out`,
    resuming from `ledger`'s counters under `scope`; returns the stage's stats and yield table.
    `on_shard` is told of each shard written (see `stream.ShardWriter`)."""
    if not seeds:
        raise ValueError(f"{scope}: no seed problems to synthesise from")
    done = ledger.read(scope)
    methods, seed_drops = [], {}
    for name, quota in quotas(target, cfg.mix).items():
        usable, seed_drops[name] = unusable_seeds(name, seeds)
        if name == rejection.NAME:
            methods.append(_rejection_method(cfg, quota, usable, out, ledger, scope, done))
            continue
        prior = float(cfg.evol_max_steps) if name == "evol" else 1.0  # the most rows one unit yields
        methods.append(stream.make_method(name, quota, usable, unit_runner(cfg, name), seed=cfg.seed, prior=prior,
                                          max_units=stream.max_units(quota, cfg.max_passes),
                                          done=done.get(name, Counter())))
    writer = stream.ShardWriter(out, ledger, scope, cfg.shard_rows, target, _reporter(cfg), on_shard)
    await stream.run_stage(methods, base, writer, window)
    counters = ledger.read(scope)
    extra = {}
    if rejection.NAME in seed_drops:
        extra[rejection.NAME] = rejection.report(
            cfg.rejection, ledger.read(stream.problem_scope(scope, rejection.NAME)), seeds)
    return {**extra, "output": str(out.relative_to(out.parents[1])), "seeds": len(seeds), "target": target,
            "records": counters.get(stream.SHARDS, Counter())["rows"], "shards": writer.shards,
            "yield": {m: stream.yield_of(counters.get(m, Counter()), seed_drops[m]) for m in seed_drops},
            # units this process started, committed or not (more than `units` = requests beyond the quotas)
            "launched": {m.name: m.launched - done.get(m.name, Counter())["units"] for m in methods}}


def _rejection_method(cfg: SynthConfig, quota: int, usable: list[Record], out: Path, ledger: Ledger,
                      scope: str, done: dict[str, Counter]) -> stream.Method:
    """The rejection sampler as a stream method: one unit per (seed, round), at most max_trials
    rounds per seed, resumed from its per-problem ledger and the rows already committed."""
    shards = done.get(stream.SHARDS, Counter())["count"]
    files = dataset_files(out)[:shards] if shards else []
    committed = (r for path in files for r in read_records(path) if r.lineage.method == rejection.NAME)
    problems = ledger.read(stream.problem_scope(scope, rejection.NAME))
    units = done.get(rejection.NAME, Counter())["units"]
    if sum(c["rounds"] for c in problems.values()) != units:  # each committed unit is one round of one seed
        raise ValueError(f"{scope}: the ledger's per-problem rounds do not add up to the {units} committed "
                         f"rejection units ({ledger.path}); it was edited or written by another version")
    sampler = rejection.Sampler(cfg.rejection, problems, committed)
    return stream.make_method(rejection.NAME, quota, usable, sampler.round, seed=cfg.seed,
                              prior=float(min(cfg.rejection.min_correct, cfg.rejection.round_trials)),
                              max_units=len(usable) * cfg.rejection.max_trials, done=done.get(rejection.NAME, Counter()))


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
    if not sep or kind in ("rg", "hf"):
        return spec
    path, q, query = rest.partition("?")
    return f"{kind}:{repo_path(path)}{q}{query}"


def _coreset_stage(cfg: SynthConfig, rd: RunDir) -> dict[str, Any]:
    initial = rd.path("stage1", "initial")
    # Each distinct problem once, in the order of its first row by id, standing for its last row by
    # id (shards hold rows in completion order, and the choice must not depend on it). Only ids and
    # texts are held (with the vectors, about 2 KB a row); the chosen rows are read back after.
    last: dict[str, str] = {}
    for rid, problem in sorted((r.id, r.problem) for r in read_records(initial)):
        last[problem] = rid
    if not last:
        raise ValueError("stage1_initial kept no records: nothing to select seed synthetic problems from")
    budget = min(cfg.stage1.coreset_budget, len(last))
    ids = list(last.values())
    if cfg.stage1.coreset == "random":  # no embedding: the ids' seeded hashes alone decide
        picks = sorted(range(len(ids)), key=lambda i: hash_fraction(ids[i], str(cfg.seed)))[:budget]
        report = {"method": "random", "n": len(ids), "k": budget, "seed": cfg.seed}
    else:
        vectors = coreset.problem_vectors(initial, list(last), cfg.stage1.embed_model, cfg.stage1.embed_batch_size)
        result = coreset.k_center_greedy(vectors, budget, seed=cfg.seed)
        picks, report = result.indices.tolist(), {"method": "kcenter", **result.report}
    rank = {ids[i]: n for n, i in enumerate(picks)}
    chosen: list[Record | None] = [None] * len(rank)  # the output, in pick order
    for r in read_records(initial):
        if r.id in rank:
            chosen[rank[r.id]] = annotate(r, "coreset", {"rank": rank[r.id]})
    write_records(rd.path("stage1", "seed_synthetic.jsonl"), chosen)
    return {"candidates": len(last), "selected": len(chosen), "coverage": report}


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
    lines = markdown.table(
        ("stage", "method", "requests", "cached", "prompt tok", "completion tok", "kept", "dropped (by reason)", "repaired"),
        [(stage, method, y["requests"], y["cached"], y["prompt_tokens"], y["completion_tokens"], y["kept"],
          _counts(y["dropped"]), _counts(y["repaired"])) for stage, methods in table.items() for method, y in methods.items()],
        "llrrrrr")
    lines += ["", "Drops count attempts, except `seed_<reason>`: seeds a method can never use, once per seed and "
              "stage (no attempt is spent on them); `over_quota`: rows of the unit that filled the quota beyond it, "
              "discarded. Repairs count responses brought under the answer contract (see synth/contract.py)."]
    lines += _rejection_lines(rd)
    write_text(rd.path("yield.md"), "\n".join(lines) + "\n")
    return table


def _rejection_lines(rd: RunDir) -> list[str]:
    """Rejection sampling's per-stage difficulty summary: measured pass rate per level, hopeless seeds."""
    lines = []
    for stage in ("stage1_initial", "stage1_normal", "stage2_hard"):
        r = rd.stats(stage).get(rejection.NAME) if rd.is_done(stage) else None
        if r:
            rates = ", ".join(f"level {k} {v:.2f}" for k, v in r["pass_rate_by_level"].items())
            lines.append(f"\n{stage}, rejection ({r['quota']}): {r['problems']} seeds, {r['trials']} trials; pass rate "
                         f"{rates}; {r['hopeless_count']} hopeless (0 correct after max_trials, listed in "
                         f"stats/{stage}.json)")
    return lines


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

    return time.strftime("%Y%m%d-%H%M%S")
