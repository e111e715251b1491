"""Controlled training comparisons (`mathforge arms`): several training arms, everything else equal,
evaluated on the same items, compared per level with intervals and a paired difference.

The paper's hard-stage claim (§3.2: a second SFT stage on hard problems helps) in miniature is
`recipes/two_stage_mini.yaml`: arm `two_stage` trains on levels 1-3, then on levels 4-5 from those
weights; arm `one_stage` trains once on the union, the same examples for the same epochs.

    for each arm and training seed: SFT (the shared `train` settings, the arm's stages) -> evaluation
    -> per arm: accuracy overall and per level, bootstrap interval over items and seeds
    -> first arm minus each other arm: paired difference on the same items with its interval over
       items and seeds; per seed, `mathforge compare`'s own verdict (exact McNemar, smallest
       detectable difference: eval/compare.py)
    -> comparison.json, report.md, report.html (per-level bars with intervals)

Rows go to `arms.jsonl` as runs finish, keyed by arm, seed and config hash; a rerun skips them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mathforge import htmlreport as H
from mathforge.config import config_to_dict
from mathforge.eval.compare import paired
from mathforge.eval.run import EvalStage
from mathforge.io import write_json, write_text
from mathforge.markdown import table
from mathforge.scale import append_row, completed, groups_of, item_matrix, note_other_rows, run_jobs
from mathforge.stats import interval, paired_difference
from mathforge.train.config import StageConfig, TrainConfig

VERSION = 2  # of an arm's row (part of its key); bump when what a row means changes


@dataclass(frozen=True)
class Arm:
    """One training arm: a name and its SFT stages (run in order, each from the previous weights)."""

    name: str
    stages: tuple[StageConfig, ...]


@dataclass(frozen=True)
class ArmsConfig:
    """`mathforge arms`: train every arm with the shared settings, evaluate all on the same items."""

    arms: tuple[Arm, ...] = ()
    train_seeds: tuple[int, ...] = (42,)
    metric: str = "symbolic"
    n_boot: int = 2_000
    data_dir: str | None = None  # None: mathforge.paths.data_dir
    workers: int = 1  # runs trained at once, each in a process of its own (`scale.run_jobs`)
    threads: int | None = None  # torch threads per run; None: torch's default (every core)
    train: TrainConfig = field(default_factory=TrainConfig)  # shared settings; its stages are the arm's
    eval: EvalStage = field(default_factory=EvalStage)

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"arms: need two or more arms with distinct names, got {names}")


def arms_hash(cfg: ArmsConfig, arm: Arm) -> str:
    """The key of everything deciding one arm's result except the training seed (the one step
    hasher; each stage's dataset by its files' sizes and mtimes)."""
    from mathforge.rundir import step_key
    from mathforge.train.prepare import data_files

    plain = config_to_dict(cfg)
    plain = {"arm": config_to_dict(arm), "train": plain["train"], "eval": plain["eval"], "data_dir": cfg.data_dir}
    plain["train"].pop("seed", None)
    plain["train"].pop("stages", None)
    files = [f for stage in arm.stages for f in data_files(stage.dataset)]
    return step_key(VERSION, plain, files=files)[:12]


def run_arms(cfg: ArmsConfig, out: str | Path) -> dict[str, Any]:
    """Train and evaluate every arm and seed not yet done; write comparison.json and the reports."""
    from mathforge.rundir import RunDir

    rd = RunDir(out)
    rd.save_config(cfg)
    results = rd.root / "arms.jsonl"
    done = completed(results)
    # seed-major: stopped early, every arm still has the same seeds
    keys = {(arm.name, seed): f"{arm.name}-s{seed}-{arms_hash(cfg, arm)}" for seed in cfg.train_seeds for arm in cfg.arms}
    todo = [(arm, seed, rd.root / "runs" / keys[arm.name, seed]) for seed in cfg.train_seeds for arm in cfg.arms
            if keys[arm.name, seed] not in done]
    note_other_rows(rd, results, lambda row: row["key"] in keys.values())
    for (arm, seed, _), result in run_jobs(partial(_train_and_eval, cfg), todo, cfg.workers, cfg.threads):
        key = keys[arm.name, seed]
        done[key] = {"key": key, "arm": arm.name, "seed": seed, **result}
        append_row(results, done[key])
        rd.log.info("arms: %s seed %s done", arm.name, seed)
    rows = {arm.name: [done[keys[arm.name, seed]] for seed in cfg.train_seeds] for arm in cfg.arms}
    result = compare(rows, cfg.metric, cfg.n_boot)
    result["examples"] = {a.name: _examples_digest(a) for a in cfg.arms}
    write_json(rd.root / "comparison.json", result)
    write_text(rd.root / "report.md", markdown(result))
    H.write_page(rd.root / "report.html", "Training arms compared", html_blocks(result))
    return result


def dry_run(cfg: ArmsConfig, out: str | Path) -> list[str]:
    """`--dry-run`: each (arm, seed) row as run or reuse (its key: arm, seed, `arms_hash`)."""
    done = completed(Path(out) / "arms.jsonl")
    keys = [f"{arm.name}-s{seed}-{arms_hash(cfg, arm)}" for seed in cfg.train_seeds for arm in cfg.arms]
    return [f"{k}  {'reuse' if k in done else 'run'}" for k in keys]


def _train_and_eval(cfg: ArmsConfig, arm: Arm, seed: int, run_dir: Path) -> dict[str, Any]:
    from mathforge.eval.benchmarks import slug
    from mathforge.eval.run import evaluate_model
    from mathforge.paths import data_dir
    from mathforge.train.sft import train

    stats = train(dataclasses.replace(cfg.train, stages=arm.stages, seed=seed), run_dir / "train")
    items = {}
    for bench in cfg.eval.benchmarks:
        summary = evaluate_model(cfg.eval, run_dir / "train" / "model", bench, data_dir(cfg.data_dir),
                                 run_dir / "eval" / slug(bench))
        items[bench] = summary["items"]
    return {"items": items, "train": {n: {k: s.get(k) for k in ("samples", "steps", "train_loss")} for n, s in stats.items()}}


def _examples_digest(arm: Arm) -> dict[str, Any]:
    """How many examples an arm trains on and a digest of their problems as a set: equal digests
    mean the arms saw exactly the same examples (in whatever order and staging)."""
    from mathforge.sources import load

    problems = sorted(r.problem for s in arm.stages for r in load(s.dataset))
    return {"examples": len(problems), "digest": hashlib.sha256("\n".join(problems).encode()).hexdigest()[:16],
            "epochs": [s.epochs for s in arm.stages]}


def compare(rows: dict[str, list[dict[str, Any]]], metric: str, n_boot: int) -> dict[str, Any]:
    """Per arm and level: accuracy with intervals; first arm minus each other: paired differences."""
    first, *others = list(rows)
    out: dict[str, Any] = {"metric": metric, "arms": list(rows), "benchmarks": {}}
    for bench in rows[first][0]["items"]:
        groups = [("all", None)] + [(f"level {g}", ("level", g)) for g in groups_of(rows[first], bench, "level")]
        entry: dict[str, Any] = {"accuracy": {}, "difference": {}, "per_seed": {}}
        for label, group in groups:
            mats = {a: item_matrix(rs, bench, metric, group)[0] for a, rs in rows.items()}
            entry["accuracy"][label] = {a: interval(m, n_boot=n_boot).to_dict() for a, m in mats.items()}
            entry["difference"][label] = {f"{first} - {o}": paired_difference(mats[first], mats[o], n_boot=n_boot).to_dict()
                                          for o in others}
            # B = the first arm, A = the other: the same comparison `mathforge compare` makes of two runs
            entry["per_seed"][label] = {f"{first} vs {o}": [paired(a, b) for a, b in zip(mats[o], mats[first], strict=False)]
                                        for o in others}
        out["benchmarks"][bench] = entry
    return out


def _cell(iv: dict[str, float]) -> str:
    return f"{100 * iv['estimate']:.1f} [{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}]"


def _table_rows(entry: dict[str, Any], arms: list[str]) -> tuple[list[str], list[list[str]]]:
    diffs = list(next(iter(entry["difference"].values())))
    headers = ["items", *[f"{a} %" for a in arms], *[f"{d} (points)" for d in diffs], "per seed: McNemar p (min. detectable, points)"]
    body = []
    for label, accs in entry["accuracy"].items():
        ps = "; ".join(", ".join(f"{m['p_value']:.3g} ({100 * m['min_detectable']:.1f})" for m in v)
                       for v in entry["per_seed"][label].values())
        body.append([label, *[_cell(accs[a]) for a in arms], *[_cell(entry["difference"][label][d]) for d in diffs], ps])
    return headers, body


def markdown(result: dict[str, Any]) -> str:
    """report.md of a comparison."""
    lines = ["# Training arms compared", "", f"Accuracy ({result['metric']} grader), % with 95% bootstrap intervals over "
             "items and seeds; differences are paired on the same items.", ""]
    for name, ex in result.get("examples", {}).items():
        lines.append(f"- {name}: {ex['examples']} examples (set digest {ex['digest']}), epochs per stage {ex['epochs']}")
    same = len({ex["digest"] for ex in result.get("examples", {}).values()}) == 1
    lines += ["", "The arms train on exactly the same examples." if same else
              "**The arms train on different examples**: differences mix data and staging.", ""]
    for bench, entry in result["benchmarks"].items():
        headers, body = _table_rows(entry, result["arms"])
        lines += [f"## {bench}", "", *table(headers, body), ""]
    return "\n".join(lines) + "\n"


def html_blocks(result: dict[str, Any]) -> list[str]:
    """report.html blocks: the tables of report.md and per-level bars with interval whiskers."""
    blocks = [H.paragraph(f"Accuracy ({result['metric']} grader), % with 95% bootstrap intervals; differences "
                          "are paired on the same items.")]
    for bench, entry in result["benchmarks"].items():
        headers, body = _table_rows(entry, result["arms"])
        blocks += [H.heading(bench), H.table(headers, body)]
        fig = _bars(entry, result["arms"], bench)
        if fig is not None:
            blocks.append(H.figure(fig, f"{bench}: accuracy per level for each arm (95% intervals)", f"levels-{bench}"))
    return blocks


def _bars(entry: dict[str, Any], arms: list[str], bench: str) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (extra `plot`); the tables are the result
        return None
    plt.rcParams["svg.fonttype"] = "path"
    labels = list(entry["accuracy"])
    idx = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        ivs = [entry["accuracy"][g][arm] for g in labels]
        mean = np.array([100 * iv["estimate"] for iv in ivs])
        err = [mean - [100 * iv["lo"] for iv in ivs], [100 * iv["hi"] for iv in ivs] - mean]
        ax.bar(idx + (j - (len(arms) - 1) / 2) * width, mean, width, yerr=err, capsize=3, label=arm)
    ax.set_xticks(idx, labels)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(bench)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
