"""The whole system in one run (`mathforge run RECIPE --out DIR`), read top to bottom in `STEPS`:

    synth      seeds -> stage 1 (initial synthesis, core-set, normal data) -> stage 2 (hard data)
    clean      per dataset: decontamination -> exact + near dedup -> answer-line and length
               checks -> answer check -> selection under a budget (`quality/clean.py`, the one chain)
    export     a datasets-loadable dataset with its card
    train      two-stage SFT, each stage on the dataset it names (`normal_clean`, `hard_clean`, a path)
    eval       strict + symbolic grading on GSM8K and MATH, per level and subject
    report     report.md rendered from the stats files of the run
    rehearse   (recipes that ask for it) student vs seeds-only baseline vs oracle: mathforge.rehearse,
               above the pipeline, since it runs pipelines of its own through mathforge.ablate

Each step is a keyed `RunDir` step (`step_specs`: the config it reads and the keys of the steps it
reads from), and so are the steps nested in synthesis and training: a rerun runs exactly the changed
steps and the ones after them, at every depth (change `synth.stage2.target` and stage 2's synthesis,
its cleaning, training and evaluation rerun, never stage 1; change `train.stages[1].lr` and only the
second SFT stage and evaluation do; change `eval.limit` and only evaluation does). `plan` lists every
step, nested ones included, for `--dry-run`. Datasets are named in the run's manifest. A killed step
resumes (synthesis and evaluation through the engine's request cache, cleaning at the shard,
training from its last checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathforge.config import ConfigError, build
from mathforge.engine import EngineConfig
from mathforge.eval.benchmarks import benchmark_files, slug
from mathforge.eval.run import EvalStage, evaluate_model
from mathforge.io import dataset_files, read_records, write_text
from mathforge.markdown import table
from mathforge.paths import data_dir
from mathforge.quality.clean import CleanConfig
from mathforge.rehearsal import (
    RehearseStage,
    TeacherSimStage,
    dataset_parts,
    part_name,
    report_lines,
    resolved,
    teacher,
    union,
)
from mathforge.rundir import Planned, RunDir, StepSpec, combined_key, plan_lines, step_spec
from mathforge.synth import pipeline as synth_pipeline
from mathforge.synth.pipeline import SynthConfig
from mathforge.train import sft
from mathforge.train.config import TrainConfig

SYNTH_DATASETS = ("seeds", "normal", "hard")  # the names `run_synth` gives its outputs


@dataclass(frozen=True)
class RunConfig:
    """The end-to-end recipe: every part is the config of the module that runs it."""

    data_dir: str | None = None  # benchmarks for decontamination and evaluation (None: mathforge.paths.data_dir)
    synth: SynthConfig = field(default_factory=SynthConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalStage = field(default_factory=EvalStage)
    teacher_sim: TeacherSimStage = field(default_factory=TeacherSimStage)  # a simulated teacher the run starts
    rehearse: RehearseStage = field(default_factory=RehearseStage)  # student vs baseline vs oracle


@dataclass(frozen=True)
class Step:
    """One step of a run: its name and the function that runs it (its key: `step_specs`)."""

    name: str
    run: Callable[[RunConfig, RunDir, dict[str, StepSpec]], dict[str, Any]]
    reset: Callable[[RunDir], None] | None = None  # its outputs, when its key changed
    when: Callable[[RunConfig], bool] = lambda c: True  # a step the recipe leaves off never starts


VERSION = 1  # of the top-level steps' outputs; bump when one changes


def run(cfg: RunConfig, out: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """Run (or resume) the whole pipeline in `out`; returns the stats of every step. `dry_run`
    runs nothing: it returns `{"plan": lines}`, every step (nested ones too) as run or reuse."""
    validate(cfg)
    cfg = resolved(cfg)  # with a simulated teacher, synthesis's engine is it, under its settings' name
    specs = step_specs(cfg)
    if dry_run:
        return {"plan": plan_lines(plan(cfg, Path(out), specs))}
    rd = RunDir(out)
    rd.save_config(cfg)
    stats: dict[str, Any] = {}
    for step in (s for s in STEPS if s.when(cfg)):
        reset = (lambda s=step: s.reset(rd)) if step.reset else None
        # Synthesis alone talks to the teacher: a simulated one runs while synthesis does (keys see its
        # model name, never its port), not beside training, whose workers need the memory.
        live = teacher(cfg, rd.root) if step.name == "synth" and not rd.is_done("synth", specs["synth"].key) \
            else contextlib.nullcontext(cfg)
        with live as step_cfg:
            stats[step.name] = rd.run_step(step.name, specs[step.name],
                                           lambda s=step, c=step_cfg: s.run(c, rd, specs), reset=reset)
    write_text(rd.root / "report.md", render_report(rd, cfg))
    return stats


def step_specs(cfg: RunConfig) -> dict[str, StepSpec]:
    """Every step's key, nested ones included (`synth/<stage>`, `train/<stage>`), from the recipe alone:
    what each step reads is written here, once."""
    cfg = resolved(cfg)  # a simulated teacher's settings are the synthesis engine's model name
    specs = {f"synth/{n}": s for n, s in synth_pipeline.step_specs(cfg.synth).items()}
    specs["synth"] = StepSpec(VERSION, after={n: s.key for n, s in specs.items()})
    data = _data_dir(cfg)
    cleaning = {"clean": cfg.clean, "data_dir": cfg.data_dir, "prompt_style": cfg.train.prompt_style}
    for name, upstream in (("normal", "synth/stage1_normal"), ("hard", "synth/stage2_hard")):
        after = {u: specs[u].key for u in (upstream, "synth/seeds") if u in specs}
        specs[f"clean_{name}"] = step_spec(VERSION, cleaning, after=after,
                                           files=benchmark_files(cfg.clean.against, data))
    cleaned = {n: specs[n].key for n in ("clean_normal", "clean_hard")}
    specs["export"] = step_spec(VERSION, {"length_tokenizer": cfg.clean.length_tokenizer}, after=cleaned)
    nested = sft.step_specs(cfg.train, _data_keys(specs, cfg))
    specs.update({f"train/{n}": s for n, s in nested.items()})
    specs["train"] = StepSpec(VERSION, after={f"train/{n}": s.key for n, s in nested.items()})
    specs["eval"] = step_spec(VERSION, {"eval": cfg.eval, "data_dir": cfg.data_dir}, after={"train": specs["train"].key},
                              files=benchmark_files(cfg.eval.benchmarks, data))
    reads = {"rehearse": cfg.rehearse, "train": cfg.train, "eval": cfg.eval, "data_dir": cfg.data_dir,
             "teacher_sim": cfg.teacher_sim}
    specs["rehearse"] = step_spec(VERSION, reads, after={n: specs[n].key for n in ("synth", "clean_normal", "clean_hard")})
    return specs


def _data_keys(specs: dict[str, StepSpec], cfg: RunConfig) -> dict[str, str]:
    """The run's dataset names -> the keys of the steps that write them (train stages name datasets;
    `a+b`, the union of two, is keyed by both; `a+b*0.25` by both and the share, `a+b*0` as `a`)."""
    made_by = {"seeds": "synth/seeds", "normal": "synth/stage1_normal", "hard": "synth/stage2_hard",
               "normal_clean": "clean_normal", "hard_clean": "clean_hard"}
    keys = {name: specs[step].key for name, step in made_by.items() if step in specs}
    unions = {}
    for stage in cfg.train.stages:
        if _is_union(stage.dataset):
            parts = dataset_parts(stage.dataset, f"the recipe: train stage {stage.name}")
            whole = len(parts) == 1 and parts[0][1] == 1
            unions[stage.dataset] = keys.get(parts[0][0], parts[0][0]) if whole else combined_key(
                VERSION, {part_name(p, share): keys.get(p, p) for p, share in parts})
    return keys | unions


def _is_union(dataset: str) -> bool:
    """A stage's dataset made of the run's datasets (`a+b`, `b*0.25`), not a path that exists."""
    return ("+" in dataset or "*" in dataset) and not Path(dataset).exists()


def plan(cfg: RunConfig, root: Path, specs: dict[str, StepSpec] | None = None) -> list[Planned]:
    """Every step of a run in the order it runs, nested ones in place of the steps made of them."""
    cfg = resolved(cfg)
    specs = specs or step_specs(cfg)
    steps = []
    if synthesizes(cfg):
        steps = synth_pipeline.planned(cfg.synth, root / "synth", "synth/")
        steps += [Planned(n, root, n, specs[n]) for n in ("clean_normal", "clean_hard", "export")]
    note = "stages without data are skipped: count known after clean_hard"
    steps += [dataclasses.replace(p, note=note if p.step.startswith("sft-") else "")
              for p in sft.planned(cfg.train, root / "train", "train/", _data_keys(specs, cfg))]
    steps.append(Planned("eval", root, "eval", specs["eval"]))
    return steps + ([Planned("rehearse", root, "rehearse", specs["rehearse"])] if cfg.rehearse.enabled else [])


def validate(cfg: RunConfig) -> None:
    """Mistakes that would otherwise surface after hours of synthesis, checked before any step runs."""
    build(EngineConfig, {"model": "-", **cfg.eval.engine}, "the recipe", prefix="eval.engine.")
    if cfg.train.prompt_style != cfg.eval.settings.prompt_style:
        raise ConfigError(f"the recipe: train.prompt_style '{cfg.train.prompt_style}' and eval.settings.prompt_style "
                          f"'{cfg.eval.settings.prompt_style}' differ: a student is evaluated in the prompt it learned")
    names = set(RUN_DATASETS)
    for stage in cfg.train.stages:
        parts = dataset_parts(stage.dataset, f"the recipe: train stage {stage.name}") if _is_union(stage.dataset) \
            else [(stage.dataset, 1.0)]
        if not {p for p, _ in parts} <= names and not Path(stage.dataset).exists() and not _source(stage.dataset):
            raise ConfigError(f"the recipe: train stage {stage.name}: dataset '{stage.dataset}' is neither a "
                              f"dataset of the run ({', '.join(sorted(names))}), a source spec (mini:..., "
                              f"math:...) nor an existing path")


RUN_DATASETS = (*SYNTH_DATASETS, "normal_clean", "hard_clean")


def _parts(dataset: str) -> list[str]:
    """The run datasets a stage's dataset names: `a+b*0.25` -> [a, b] (a share follows `*`)."""
    return [part.split("*")[0].strip() for part in dataset.split("+")]


def _source(dataset: str) -> bool:
    """`dataset` is a source spec the loaders read (`mini:train?...`, `math:path`), not a path."""
    from mathforge.sources import SOURCES

    kind, sep, _ = dataset.partition(":")
    return bool(sep) and kind in SOURCES


def synthesizes(cfg: RunConfig) -> bool:
    """The run makes its own data: a train stage names a dataset of the run (or there is no stage).
    Otherwise it is a train-only run (every stage names a source or a path, e.g. `mathforge arms`'s
    arms through `mathforge ablate`): synthesis, cleaning and export never start."""
    return not cfg.train.stages or any(set(_parts(s.dataset)) & set(RUN_DATASETS) for s in cfg.train.stages)


def _data_dir(cfg: RunConfig) -> Path:
    return data_dir(cfg.data_dir)


# ---------------------------------------------------------------- the steps


def _synth(cfg: RunConfig, rd: RunDir, specs: dict[str, StepSpec]) -> dict[str, Any]:
    from mathforge.synth.pipeline import run_synth

    result = run_synth(cfg.synth, rd.root / "synth")
    datasets = {name: path for name, path in result["datasets"].items() if Path(path).exists()}
    rd.register(datasets)
    return {"yield": {k: v for k, v in result.items() if k != "datasets"}, "datasets": datasets}


def _clean(name: str) -> Callable[[RunConfig, RunDir, dict[str, StepSpec]], dict[str, Any]]:
    """The cleaning step of synthesis dataset `name`: it writes dataset `<name>_clean`."""

    def step(cfg: RunConfig, rd: RunDir, specs: dict[str, StepSpec]) -> dict[str, Any]:
        from mathforge.quality.clean import clean

        manifest = rd.manifest()
        if name not in manifest:  # a weak teacher can leave a stage with no sample file
            rd.log.warning("clean: no %s dataset from synthesis, nothing to clean", name)
            return {}
        out = rd.root / "datasets" / f"{name}_clean"
        report = clean(manifest[name], out, cfg.clean, data_dir=_data_dir(cfg), seeds=manifest.get("seeds"),
                       style=cfg.train.prompt_style, key=specs[f"clean_{name}"].key)
        rd.register({f"{name}_clean": report["output"]})
        return report

    return step


def _export(cfg: RunConfig, rd: RunDir, specs: dict[str, StepSpec]) -> dict[str, Any]:
    from mathforge.quality.export import export
    from mathforge.quality.formatcheck import load_tokenizer

    names = [n for n in ("normal_clean", "hard_clean") if n in rd.manifest()]
    reports = [rd.stats(f"clean_{n.removesuffix('_clean')}") for n in names]
    records = (r for n in names for r in read_records(rd.manifest()[n]))
    summary = export(records, rd.root / "dataset", name=f"mathforge-{rd.root.name}", reports=reports,
                     tokenizer=load_tokenizer(cfg.clean.length_tokenizer), tokenizer_name=cfg.clean.length_tokenizer)
    return {"rows": summary["rows"], "card": "dataset/README.md"}


def _train(cfg: RunConfig, rd: RunDir, specs: dict[str, StepSpec]) -> dict[str, Any]:
    """The recipe's stages, in order, each on the dataset it names."""
    manifest, by_name = rd.manifest(), _data_keys(specs, cfg)
    data_keys = {}  # the path each stage trains on -> the key of the step(s) that wrote it
    stages, skipped = [], []
    for stage in cfg.train.stages:
        path = manifest.get(stage.dataset) or union(manifest, stage.dataset, rd.root) or stage.dataset
        if stage.dataset in by_name:
            data_keys[str(path)] = by_name[stage.dataset]
        if _has_rows(path):
            stages.append(dataclasses.replace(stage, dataset=str(path)))
        else:  # a weak teacher can leave a stage with no sample; train the others, say so
            skipped.append(stage.name)
            rd.log.warning("train: stage %s skipped, no data in %s", stage.name, stage.dataset)
    if not stages:
        raise ValueError("nothing to train on: no data for any stage of the train config")
    return {"stages": sft.train(dataclasses.replace(cfg.train, stages=tuple(stages)), rd.root / "train", data_keys),
            "skipped": skipped}


def _has_rows(path: str) -> bool:
    if _source(path) and not Path(path).exists():  # generated or read by its loader: rows known when read
        return True
    return Path(path).exists() and any(f.stat().st_size > 0 for f in dataset_files(path))


def _eval(cfg: RunConfig, rd: RunDir, specs: dict[str, StepSpec]) -> dict[str, Any]:
    data = _data_dir(cfg)
    results = {}
    for bench in cfg.eval.benchmarks:  # a name or any spec, an absolute path too: its folder is a slug
        summary = evaluate_model(cfg.eval, rd.root / "train" / "model", bench, data, rd.root / "eval" / slug(bench))
        results[bench] = {k: summary[k] for k in ("n", "accuracy", "by_level", "by_subject", "truncation_rate")
                          if k in summary}
    return results


STEPS = (  # the paper's Figure 2, as the table of contents of a run
    Step("synth", _synth, when=synthesizes),
    Step("clean_normal", _clean("normal"), when=synthesizes),
    Step("clean_hard", _clean("hard"), when=synthesizes),
    Step("export", _export, when=synthesizes),
    Step("train", _train),
    # A retrained model has the same path: its answers must not come from the old one's cache.
    Step("eval", _eval, reset=lambda rd: shutil.rmtree(rd.root / "eval", ignore_errors=True)),
    # then, above the pipeline, the rehearsal (mathforge.rehearse; recipes/paper_mini.yaml)
)


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
        rows = [(n, s.get("samples"), s.get("trained_tokens"), s.get("steps"), _num(s.get("train_loss")))
                for n, s in train.items()]
        lines += ["## Training", "", *table(("stage", "samples", "trained tokens", "steps", "loss"), rows, "lrrrr"), ""]
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
    rows = [(stage, method, y.get("requests"), y.get("prompt_tokens", 0) + y.get("completion_tokens", 0), y.get("kept"),
             sum(y.get("dropped", {}).values())) for stage, methods in synth.items() for method, y in methods.items()]
    lines = table(("stage", "method", "requests", "tokens (prompt + completion)", "kept", "dropped"), rows, "llrrrr")
    return "\n".join(lines) + "\n\nDrop reasons per method: `synth/yield.md`."


def _filters_table(clean: dict[str, Any]) -> str:
    rows = [(f["filter"], f["seen"], f["kept"], ", ".join(f"{k} {v}" for k, v in f.get("dropped_by_reason", {}).items()) or "-")
            for f in clean.get("filters", [])]
    sel = clean.get("selection", {})
    if sel:
        rows.append((f"select ({sel.get('strategy')})", sel.get("seen"), sel.get("selected"), f"budget {sel.get('budget')}"))
    return "\n".join(table(("step", "seen", "kept", "dropped by reason"), rows, "lrr"))


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
