"""The whole system in one run (`mathforge run RECIPE --out DIR`), read top to bottom in `STEPS`:

    synth      seeds -> stage 1 (initial synthesis, core-set, normal data) -> stage 2 (hard data)
    clean      per dataset: decontamination -> exact + near dedup -> answer-line and length
               checks -> answer check -> selection under a budget (`quality/clean.py`, the one chain)
    export     a datasets-loadable dataset with its card
    train      two-stage SFT, each stage on the dataset it names (`normal_clean`, `hard_clean`, a path)
    eval       strict + symbolic grading on GSM8K and MATH, per level and subject
    report     report.md rendered from the stats files of the run

Each step is a `RunDir` stage whose marker is keyed by a hash of the config it reads and of the keys
of the steps it reads from: a rerun skips exactly the unchanged steps (change `clean.decontam_n` and
cleaning and everything after it rerun; change `eval.limit` and only evaluation does). Datasets are
named in the run's manifest. A killed step resumes (synthesis and evaluation through the engine's
request cache, cleaning at the shard, training from its last checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathforge.config import ConfigError, build, config_to_dict
from mathforge.engine import EngineConfig
from mathforge.eval.benchmarks import slug
from mathforge.eval.run import EvalConfig
from mathforge.io import dataset_files, read_records, write_text
from mathforge.quality.clean import CleanConfig
from mathforge.rehearsal import (
    RehearseStage,
    TeacherSimStage,
    rehearse,
    report_lines,
    resolved,
    teacher,
    union,
)
from mathforge.rundir import RunDir
from mathforge.synth.pipeline import SynthConfig
from mathforge.train.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SYNTH_DATASETS = ("seeds", "normal", "hard")  # the names `run_synth` gives its outputs


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
    teacher_sim: TeacherSimStage = field(default_factory=TeacherSimStage)  # a simulated teacher the run starts
    rehearse: RehearseStage = field(default_factory=RehearseStage)  # student vs baseline vs oracle


@dataclass(frozen=True)
class Step:
    """One step of a run: what it reads (earlier steps and config) and the function that runs it."""

    name: str
    after: tuple[str, ...]  # the steps whose outputs it reads: their keys are part of its key
    config: Callable[[RunConfig], Any]  # the config it reads: a change reruns it
    run: Callable[[RunConfig, RunDir], dict[str, Any]]
    when: Callable[[RunConfig], bool] = lambda c: True  # a step the recipe leaves off never starts


def run(cfg: RunConfig, out: str | Path) -> dict[str, Any]:
    """Run (or resume) the whole pipeline in `out`; returns the stats of every step."""
    validate(cfg)
    rd = RunDir(out)
    cfg = resolved(cfg)  # keys see the simulated teacher's model name, never its port
    rd.save_config(cfg)
    keys: dict[str, str] = {}
    stats: dict[str, Any] = {}
    with teacher(cfg, rd.root) as live:
        for step in (s for s in STEPS if s.when(cfg)):
            keys[step.name] = _key(step.config(cfg), [keys[a] for a in step.after])
            stats[step.name] = rd.run_stage(step.name, lambda s=step: s.run(live, rd), key=keys[step.name])
    write_text(rd.root / "report.md", render_report(rd, cfg))
    return stats


def _key(config: Any, inputs: list[str]) -> str:
    plain = config_to_dict(config) if dataclasses.is_dataclass(config) else config
    blob = json.dumps([plain, inputs], sort_keys=True, default=lambda o: config_to_dict(o))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def validate(cfg: RunConfig) -> None:
    """Mistakes that would otherwise surface after hours of synthesis, checked before any step runs."""
    build(EngineConfig, {"model": "-", **cfg.eval.engine}, "the recipe", prefix="eval.engine.")
    if cfg.train.prompt_style != cfg.eval.settings.prompt_style:
        raise ConfigError(f"the recipe: train.prompt_style '{cfg.train.prompt_style}' and eval.settings.prompt_style "
                          f"'{cfg.eval.settings.prompt_style}' differ: a student is evaluated in the prompt it learned")
    names = {f"{d}_clean" for d in ("normal", "hard")} | set(SYNTH_DATASETS)
    for stage in cfg.train.stages:
        if not set(stage.dataset.split("+")) <= names and not Path(stage.dataset).exists():
            raise ConfigError(f"the recipe: train stage {stage.name}: dataset '{stage.dataset}' is neither a "
                              f"dataset of the run ({', '.join(sorted(names))}) nor an existing path")


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

    result = run_synth(cfg.synth, rd.root / "synth")
    datasets = {name: path for name, path in result["datasets"].items() if Path(path).exists()}
    rd.register(datasets)
    return {"yield": {k: v for k, v in result.items() if k != "datasets"}, "datasets": datasets}


def _clean(name: str) -> Callable[[RunConfig, RunDir], dict[str, Any]]:
    """The cleaning step of synthesis dataset `name`: it writes dataset `<name>_clean`."""

    def step(cfg: RunConfig, rd: RunDir) -> dict[str, Any]:
        from mathforge.quality.clean import clean

        manifest = rd.manifest()
        if name not in manifest:  # a weak teacher can leave a stage with no sample file
            rd.log.warning("clean: no %s dataset from synthesis, nothing to clean", name)
            return {}
        out = rd.root / "datasets" / f"{name}_clean"
        report = clean(manifest[name], out, cfg.clean, data_dir=_data_dir(cfg), seeds=manifest.get("seeds"),
                       style=cfg.train.prompt_style)
        rd.register({f"{name}_clean": report["output"]})
        return report

    return step


def _export(cfg: RunConfig, rd: RunDir) -> dict[str, Any]:
    from mathforge.quality.export import export
    from mathforge.quality.formatcheck import load_tokenizer

    names = [n for n in ("normal_clean", "hard_clean") if n in rd.manifest()]
    reports = [rd.stats(f"clean_{n.removesuffix('_clean')}") for n in names]
    records = (r for n in names for r in read_records(rd.manifest()[n]))
    summary = export(records, rd.root / "dataset", name=f"mathforge-{rd.root.name}", reports=reports,
                     tokenizer=load_tokenizer(cfg.clean.length_tokenizer), tokenizer_name=cfg.clean.length_tokenizer)
    return {"rows": summary["rows"], "card": str(rd.root / "dataset" / "README.md")}


def _train(cfg: RunConfig, rd: RunDir) -> dict[str, Any]:
    """The recipe's stages, in order, each on the dataset it names."""
    from mathforge.train.sft import train

    manifest = rd.manifest()
    stages, skipped = [], []
    for stage in cfg.train.stages:
        path = manifest.get(stage.dataset) or union(manifest, stage.dataset, rd.root) or stage.dataset
        if _has_rows(path):
            stages.append(dataclasses.replace(stage, dataset=str(path)))
        else:  # a weak teacher can leave a stage with no sample; train the others, say so
            skipped.append(stage.name)
            rd.log.warning("train: stage %s skipped, no data in %s", stage.name, stage.dataset)
    if not stages:
        raise ValueError("nothing to train on: no data for any stage of the train config")
    return {"stages": train(dataclasses.replace(cfg.train, stages=tuple(stages)), rd.root / "train"),
            "skipped": skipped}


def _has_rows(path: str) -> bool:
    return Path(path).exists() and any(f.stat().st_size > 0 for f in dataset_files(path))


def _eval(cfg: RunConfig, rd: RunDir) -> dict[str, Any]:
    data = _data_dir(cfg)
    results = {}
    for bench in cfg.eval.benchmarks:  # a name or any spec, an absolute path too: its folder is a slug
        summary = evaluate_model(cfg.eval, rd.root / "train" / "model", bench, data, rd.root / "eval" / slug(bench))
        results[bench] = {k: summary[k] for k in ("n", "accuracy", "by_level", "by_subject", "truncation_rate")
                          if k in summary}
    return results


STEPS = (  # the paper's Figure 2, as the table of contents of a run
    Step("synth", (), lambda c: c.synth, _synth),
    Step("clean_normal", ("synth",), lambda c: [c.clean, c.data_dir, c.train.prompt_style], _clean("normal")),
    Step("clean_hard", ("synth",), lambda c: [c.clean, c.data_dir, c.train.prompt_style], _clean("hard")),
    Step("export", ("clean_normal", "clean_hard"), lambda c: c.clean.length_tokenizer, _export),
    Step("train", ("clean_normal", "clean_hard"), lambda c: c.train, _train),
    Step("eval", ("train",), lambda c: [c.eval, c.data_dir], _eval),
    Step("rehearse", ("synth", "clean_normal", "clean_hard"),
         lambda c: [c.rehearse, c.train, c.eval, c.data_dir, c.teacher_sim], rehearse, lambda c: c.rehearse.enabled),
)


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
    for name in ("normal", "hard"):
        clean = rd.stats(f"clean_{name}")
        if clean:
            lines += [f"## Cleaning: {name}", "", _filters_table(clean), "", _answer_check_line(clean), ""]
    train = rd.stats("train").get("stages") or {}
    if train:
        lines += ["## Training", "", "| stage | samples | trained tokens | steps | loss |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {n} | {s.get('samples')} | {s.get('trained_tokens')} | {s.get('steps')} | "
                  f"{_num(s.get('train_loss'))} |" for n, s in train.items()]
        lines.append("")
    for bench, ev in rd.stats("eval").items():
        if isinstance(ev, dict):
            lines += [f"## Evaluation: {bench} ({ev.get('n')} items)", "", _accuracy_line(ev), "",
                      f"Details: `eval/{slug(bench)}/summary.md`", ""]
    lines += report_lines(rd)
    return "\n".join(lines + _meaning(cfg, train, rd.stats("eval"))) + "\n"


def _meaning(cfg: RunConfig, train: dict[str, Any], evals: dict[str, Any]) -> list[str]:
    """Which numbers of this report carry information, said plainly (a reader acts on them)."""
    from mathforge.stats import wilson

    samples = sum(s.get("samples") or 0 for s in train.values())
    lines = ["## What these numbers mean", "",
             f"- Synthesis yield, cleaning counts, token counts and timings are measurements of this run; "
             f"they hold for the teacher `{cfg.synth.engine.get('model', '?')}` and these seeds only."]
    for bench, ev in evals.items():
        n = (ev.get("n") or 0) if isinstance(ev, dict) else 0
        if n:
            lo, hi = wilson(0, n)
            lines.append(f"- {bench}: {n} items; even at 0% correct the 95% interval reaches {100 * hi:.0f}%, "
                         f"so a difference smaller than about {100 * (hi - lo):.0f} points here is noise.")
    if samples < 10_000:
        lines.append(f"- The student saw {samples:,} samples: its accuracy says whether the plumbing works, not "
                     "whether the data helps. Learning is measured by the scaling study "
                     "(`mathforge scale recipes/scale_offline.yaml`).")
    return [*lines, ""]


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


def _answer_check_line(clean: dict[str, Any]) -> str:
    check = clean.get("answer_check") or {}
    return (f"Answer check ({check.get('mode')}, {check.get('grader')} grader): {check.get('agree', 0)} agree, "
            f"{check.get('disagree', 0)} disagree, {check.get('unknown', 0)} without a known answer.")


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
