"""`mathforge run` with its rehearsal: the pipeline (mathforge.pipeline), then the `rehearse` step.

The rehearsal trains a student on the run's cleaned synthetic data, a baseline on the seeds' own
worked solutions and an oracle on true solutions, side by side, and compares them on the same items
(`mathforge arms`, a train-only `mathforge ablate`), then writes report.json with the truth audit.
It sits above the pipeline, not in it: an ablation runs pipelines, so a step of the pipeline that ran
one would make the pipeline import itself. Keyed like any step (`pipeline.step_specs`' "rehearse").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mathforge import pipeline
from mathforge.io import write_json, write_text
from mathforge.rehearsal import dataset_parts, resolved, shared_records, truth_audit
from mathforge.rundir import RunDir


def run(cfg: Any, out: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """`mathforge run`: the pipeline, then (when the recipe asks) the rehearsal and report.md again."""
    stats = pipeline.run(cfg, out, dry_run=dry_run)
    if dry_run or not cfg.rehearse.enabled:
        return stats
    cfg = resolved(cfg)
    rd = RunDir(out)
    stats["rehearse"] = rd.run_step("rehearse", pipeline.step_specs(cfg)["rehearse"], lambda: rehearse(cfg, rd))
    write_text(rd.root / "report.md", pipeline.render_report(rd, cfg))
    return stats


def rehearse(cfg: Any, rd: Any) -> dict[str, Any]:
    """Train and evaluate the three arms (`mathforge.arms`), then write report.json."""
    from mathforge.arms import Arm, ArmsConfig, run_arms

    rh = cfg.rehearse
    out = rd.root / "rehearse"
    student = _arm_stages(cfg, rd, out)
    arms = (Arm("student", student), Arm("baseline", _baseline(cfg, rd, student, out)),
            Arm("oracle", _oracle(cfg, student, out, rh.oracle_seed)))
    train = dataclasses.replace(cfg.train, student=_shared_tokenizer(cfg, out))
    acfg = ArmsConfig(arms=arms, train_seeds=rh.train_seeds, metric=rh.metric, n_boot=rh.n_boot, data_dir=cfg.data_dir,
                      workers=rh.workers, threads=rh.threads, train=train, eval=cfg.eval)
    result = run_arms(acfg, out / "arms")
    report = {"n": _items(cfg), "samples": _rows(student[-1].dataset), **_headline(result, rh.metric),
              **truth_audit(rd)}
    write_json(rd.root / "report.json", report)
    return {"arms": {a.name: [s.dataset for s in a.stages] for a in arms}, "report": str(rd.root / "report.json")}


def _items(cfg: Any) -> int:
    from mathforge.eval import load_benchmark
    from mathforge.paths import data_dir

    return len(list(load_benchmark(cfg.eval.benchmarks[0], root=data_dir(cfg.data_dir))[1]))


def _arm_stages(cfg: Any, rd: Any, out: Path) -> tuple[Any, ...]:
    """The recipe's stages on single record files of the run's cleaned data (unions and shares written out)."""
    from mathforge.io import write_records

    manifest, stages = rd.manifest(), []
    for stage in cfg.train.stages:
        path = out / "data" / f"student-{stage.name}.jsonl"
        if not path.exists():
            write_records(path, (r for name, share in dataset_parts(stage.dataset, f"train stage {stage.name}")
                                 if name in manifest for r in shared_records(manifest[name], share)))
        stages.append(dataclasses.replace(stage, dataset=str(path)))
    return tuple(stages)


def _rows(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _baseline(cfg: Any, rd: Any, student: tuple[Any, ...], out: Path) -> tuple[Any, ...]:
    """The seeds' own worked solutions, for as many optimizer steps as each student stage takes."""
    from mathforge.io import read_records, write_records

    path = out / "data" / "baseline-seeds.jsonl"
    if not path.exists():
        write_records(path, (r for r in read_records(rd.manifest()["seeds"]) if r.solution))
    n = _rows(str(path))
    return tuple(dataclasses.replace(s, dataset=str(path), epochs=s.epochs * _rows(s.dataset) / n) for s in student)


def _oracle(cfg: Any, student: tuple[Any, ...], out: Path, seed: int) -> tuple[Any, ...]:
    """Generator problems with true solutions, as many per stage as the student's: the first stage
    over levels 1-5, the rows a later stage adds (hard data) from levels 4-5."""
    from mathforge.io import write_records
    from mathforge.sources import load

    stages, prev = [], 0
    for i, s in enumerate(student):
        path = out / "data" / f"oracle-{s.name}.jsonl"
        n = _rows(s.dataset)
        if not path.exists():
            first = list(load(f"mini:train?levels=1-5&size={min(n, prev) if i else n}&seed={seed}"))
            extra = list(load(f"mini:train?levels=4-5&size={n - prev}&seed={seed + 1}")) if i and n > prev else []
            write_records(path, first + extra)
        stages.append(dataclasses.replace(s, dataset=str(path)))
        prev = n
    return tuple(stages)


def _shared_tokenizer(cfg: Any, out: Path) -> Any:
    """The student config every arm and seed trains: a tiny student on one tokenizer, trained once
    on a fixed corpus (its weights drawn per training seed, in each run); any other student as is."""
    from mathforge.models import atomic_dir
    from mathforge.train.config import StageConfig
    from mathforge.train.sft import tokenizer_texts
    from mathforge.train.students import train_tokenizer

    student = cfg.train.student
    if student.model != "tiny" or student.tokenizer:
        return student
    path = out / "tokenizer"
    if not (path / "tokenizer_config.json").exists():
        corpus = dataclasses.replace(cfg.train, stages=(StageConfig("corpus", cfg.rehearse.tokenizer_corpus),))
        atomic_dir(path, lambda tmp: train_tokenizer(tokenizer_texts(corpus), student.vocab_size).save_pretrained(tmp))
    return dataclasses.replace(student, tokenizer=str(path))


def _headline(result: dict[str, Any], metric: str) -> dict[str, Any]:
    """report.json's figures: each arm's accuracy and the paired student - baseline difference."""
    bench, entry = next(iter(result["benchmarks"].items()))
    acc = entry["accuracy"]["all"]

    def fig(iv: dict[str, float]) -> dict[str, float]:
        return {"accuracy": iv["estimate"], "lo": iv["lo"], "hi": iv["hi"]}

    diff = entry["difference"]["all"]["student - baseline"]
    per_level = {label: {a: fig(iv) for a, iv in arms.items()} for label, arms in entry["accuracy"].items()}
    return {"benchmark": bench, "metric": metric, "student": fig(acc["student"]), "baseline": fig(acc["baseline"]),
            "oracle": fig(acc["oracle"]), "paired": {"difference": diff["estimate"], "lo": diff["lo"], "hi": diff["hi"]},
            "per_level": per_level}

