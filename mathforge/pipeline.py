"""The whole system in one run (`mathforge run RECIPE --out DIR`), read top to bottom:

    synth      seeds -> stage 1 (initial synthesis, core-set, normal data) -> stage 2 (hard data)
    clean      per stage: 30-gram decontamination -> exact + near dedup -> answer-line and length
               checks -> answer agreement with known answers -> selection under a budget
    export     a datasets-loadable dataset with its card
    train      two-stage SFT: stage 1 on normal data, stage 2 on hard data from stage 1's weights
    eval       strict + symbolic grading on GSM8K and MATH, per level and subject
    report     report.md rendered from the stats files of the run

Each step is a `RunDir` stage: a finished one is skipped on rerun, a killed one resumes (synthesis
and evaluation through the engine's request cache, training from its last checkpoint).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathforge.engine import EngineConfig
from mathforge.eval.run import EvalConfig
from mathforge.filters import FilterStats, apply_filter
from mathforge.io import AtomicWriter, read_records, write_text
from mathforge.quality.dedup import NearDedupConfig
from mathforge.quality.select import SelectConfig
from mathforge.rundir import RunDir
from mathforge.synth.pipeline import SynthConfig
from mathforge.train.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CleanConfig:
    """The data-quality steps applied to each synthesis stage's output before training."""

    decontam_n: int = 30  # the paper's filter; 10 is measurably too strict (its Table 9)
    against: tuple[str, ...] = ("gsm8k", "math")  # benchmarks whose problems and solutions must not leak
    near_dedup: bool = True
    near: NearDedupConfig = field(default_factory=NearDedupConfig)
    max_tokens: int = 2048  # prompt + response, in the length tokenizer
    length_tokenizer: str = "smollm2"
    answer_check: str | None = "symbolic"  # grade answers against known ones (seed answers, FOBAR's X); None: off
    select: SelectConfig = field(default_factory=lambda: SelectConfig(strategy="random", budget=1_000_000))


@dataclass(frozen=True)
class EvalStage:
    benchmarks: tuple[str, ...] = ("gsm8k", "math")
    limit: int | None = 20  # a fixed random subset (None: the whole benchmark)
    seed: int = 0
    settings: EvalConfig = field(default_factory=EvalConfig)
    engine: dict[str, Any] = field(default_factory=lambda: {"backend": "hf", "batch_size": 8})


@dataclass(frozen=True)
class RunConfig:
    """The end-to-end recipe: every part is the config of the module that runs it."""

    data_dir: str = "../shared/data"  # benchmarks for decontamination and evaluation (relative: to the repo)
    synth: SynthConfig = field(default_factory=SynthConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalStage = field(default_factory=EvalStage)


def run(cfg: RunConfig, out: str | Path) -> dict[str, Any]:
    """Run (or resume) the whole pipeline in `out`; returns the stats of every stage."""
    rd = RunDir(out)
    rd.save_config(cfg)
    data = _data_dir(cfg)
    stats: dict[str, Any] = {}
    stats["synth"] = rd.run_stage("synth", lambda: _synth(cfg, rd))
    for name, produced in (("stage1", "stage1/normal.jsonl"), ("stage2", "stage2/hard.jsonl")):
        source = rd.root / "synth" / produced
        if source.exists():
            stats[f"clean_{name}"] = rd.run_stage(f"clean_{name}", lambda s=source, n=name: _clean(cfg, rd, data, s, n))
    stats["export"] = rd.run_stage("export", lambda: _export(cfg, rd))
    stats["train"] = rd.run_stage("train", lambda: _train(cfg, rd))
    for bench in cfg.eval.benchmarks:
        stats[f"eval_{bench}"] = rd.run_stage(f"eval_{bench}", lambda b=bench: _eval(cfg, rd, data, b))
    write_text(rd.root / "report.md", render_report(rd, cfg))
    return stats


def resolve_data_dir(data_dir: str) -> Path:
    """A benchmark data dir; a relative one is read from the working directory when it exists
    there, else from the repository root (recipes name `../shared/data` relative to the repo)."""
    path = Path(data_dir)
    if path.is_absolute() or path.exists():
        return path
    return (REPO_ROOT / path).resolve()


def _data_dir(cfg: RunConfig) -> Path:
    return resolve_data_dir(cfg.data_dir)


# ---------------------------------------------------------------- the steps


def _synth(cfg: RunConfig, rd: RunDir) -> dict[str, Any]:
    from mathforge.synth.pipeline import run_synth

    return {"yield": run_synth(cfg.synth, rd.root / "synth")}


def _clean(cfg: RunConfig, rd: RunDir, data: Path, source: Path, name: str) -> dict[str, Any]:
    """Filters in order, then selection; rejects of every filter go to one side file with reasons."""
    from mathforge.eval.benchmarks import load_benchmark
    from mathforge.quality.decontam import DecontamReport, NgramIndex, decontaminate
    from mathforge.quality.dedup import ExactDedup, NearDedup
    from mathforge.quality.formatcheck import AnswerLineFilter, LengthFilter
    from mathforge.quality.select import select

    c = cfg.clean
    index = NgramIndex({b: load_benchmark(b, root=data)[1] for b in c.against}, n=c.decontam_n)
    report, steps = DecontamReport(index.n, dict(index.set_sizes)), [FilterStats("decontam")]
    with AtomicWriter(rd.path("data", f"{name}_rejects.jsonl")) as rejects:
        stream = decontaminate(read_records(source), index, stats=steps[0], rejects=rejects, report=report)
        filters = [ExactDedup(), *([NearDedup(c.near)] if c.near_dedup else []), AnswerLineFilter(),
                   LengthFilter(c.length_tokenizer, c.max_tokens, cfg.train.prompt_style)]
        for flt in filters:
            steps.append(FilterStats(flt.name))
            stream = apply_filter(stream, flt, steps[-1], rejects)
        kept = list(stream)
    if c.answer_check:
        from mathforge.quality.verify import check_answers

        seeds = {r.id: r.answer for r in read_records(rd.root / "synth" / "seeds.jsonl") if r.answer}
        kept = check_answers(kept, grader=c.answer_check, seed_answers=seeds)
    chosen = select(kept, c.select)
    written = _write(rd.path("data", f"{name}.jsonl"), chosen.records)
    return {"input": str(source), "output": written, "decontam": report.to_dict(),
            "filters": [s.to_dict() for s in steps], "selection": chosen.report}


def _write(path: Path, records: list) -> str:
    with AtomicWriter(path) as w:
        w.write_all(records)
    return str(path)


def _export(cfg: RunConfig, rd: RunDir) -> dict[str, Any]:
    from mathforge.quality.export import export

    files = [p for p in (rd.root / "data" / "stage1.jsonl", rd.root / "data" / "stage2.jsonl") if p.exists()]
    reports = [rd.stats(f"clean_{p.stem}") for p in files]
    records = (r for p in files for r in read_records(p))
    summary = export(records, rd.root / "dataset", name=f"mathforge-{rd.root.name}", reports=reports)
    return {"rows": summary["rows"], "card": str(rd.root / "dataset" / "README.md")}


def _train(cfg: RunConfig, rd: RunDir) -> dict[str, Any]:
    """The recipe's stages, in order, each on the cleaned data of the synthesis stage at its position."""
    from mathforge.train.sft import train

    data = [rd.root / "data" / f"stage{i + 1}.jsonl" for i in range(len(cfg.train.stages))]
    stages, skipped = [], []
    for stage, path in zip(cfg.train.stages, data, strict=True):
        if path.exists() and path.stat().st_size > 0:
            stages.append(dataclasses.replace(stage, dataset=str(path)))
        else:  # a weak teacher can leave a stage with no sample; train the others, say so
            skipped.append(stage.name)
            rd.log.warning("train: stage %s skipped, no cleaned data at %s", stage.name, path)
    if not stages:
        raise ValueError("nothing to train on: no cleaned data for any stage of the train config")
    return {"stages": train(dataclasses.replace(cfg.train, stages=tuple(stages)), rd.root / "train"),
            "skipped": skipped}


def _eval(cfg: RunConfig, rd: RunDir, data: Path, bench_name: str) -> dict[str, Any]:
    summary = evaluate_model(cfg.eval, rd.root / "train" / "model", bench_name, data, rd.root / "eval" / bench_name)
    return {k: summary[k] for k in ("n", "accuracy", "by_level", "by_subject", "truncation_rate") if k in summary}


def evaluate_model(ev: EvalStage, model: Path, bench_name: str, data: Path, out: Path) -> dict[str, Any]:
    """Evaluate a trained checkpoint on one benchmark (a fixed subset when `ev.limit` is set)."""
    from mathforge.engine import Engine
    from mathforge.eval import evaluate, load_benchmark, subset

    bench, records = load_benchmark(bench_name, root=data)
    records = subset(records, ev.limit, ev.seed)
    engine_cfg = EngineConfig(**{"model": str(model), **ev.engine})
    with Engine(engine_cfg, cache_path=out / "cache.sqlite") as engine:
        return evaluate(records, bench, engine, ev.settings, out, {"model": str(model), "limit": ev.limit, "seed": ev.seed})


# ---------------------------------------------------------------- the report


def render_report(rd: RunDir, cfg: RunConfig) -> str:
    """report.md from the run's stats files (never parsed back)."""
    lines = [f"# mathforge run `{rd.root.name}`", "", f"Config: `{rd.root / 'config.yaml'}`", ""]
    synth = rd.stats("synth").get("yield") or {}
    if synth:
        lines += ["## Synthesis yield", "", _yield_table(synth), ""]
    for name in ("stage1", "stage2"):
        clean = rd.stats(f"clean_{name}")
        if clean:
            lines += [f"## Cleaning: {name}", "", _filters_table(clean), ""]
    train = rd.stats("train").get("stages") or {}
    if train:
        lines += ["## Training", "", "| stage | samples | trained tokens | steps | loss |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {n} | {s.get('samples')} | {s.get('trained_tokens')} | {s.get('steps')} | "
                  f"{_num(s.get('train_loss'))} |" for n, s in train.items()]
        lines.append("")
    for bench in cfg.eval.benchmarks:
        ev = rd.stats(f"eval_{bench}")
        if ev:
            lines += [f"## Evaluation: {bench} ({ev.get('n')} items)", "", _accuracy_line(ev), "",
                      f"Details: `eval/{bench}/summary.md`", ""]
    return "\n".join(lines) + "\n"


def _yield_table(synth: dict[str, Any]) -> str:
    lines = ["| stage | method | requests | tokens (prompt + completion) | kept | dropped |", "|---|---|---:|---:|---:|---:|"]
    for stage, methods in synth.items():
        for method, y in methods.items():
            tokens = y.get("prompt_tokens", 0) + y.get("completion_tokens", 0)
            lines.append(f"| {stage} | {method} | {y.get('requests')} | {tokens} | {y.get('kept')} | "
                         f"{sum(y.get('dropped', {}).values())} |")
    return "\n".join(lines) + "\n\nDrop reasons per method: `synth/yield.md`."


def _filters_table(clean: dict[str, Any]) -> str:
    lines = ["| step | seen | kept | dropped by reason |", "|---|---:|---:|---|"]
    for f in clean.get("filters", []):
        reasons = ", ".join(f"{k} {v}" for k, v in f.get("dropped_by_reason", {}).items()) or "-"
        lines.append(f"| {f['filter']} | {f['seen']} | {f['kept']} | {reasons} |")
    sel = clean.get("selection", {})
    if sel:
        lines.append(f"| select ({sel.get('strategy')}) | {sel.get('seen')} | {sel.get('selected')} | budget {sel.get('budget')} |")
    return "\n".join(lines)


def _accuracy_line(ev: dict[str, Any]) -> str:
    parts = []
    for grader, acc in (ev.get("accuracy") or {}).items():
        value = acc.get("accuracy") if isinstance(acc, dict) else acc
        parts.append(f"{grader}: {_num(value, pct=True)}")
    return "Accuracy — " + ", ".join(parts) if parts else "Accuracy: -"


def _num(value: Any, pct: bool = False) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.4f}"
