"""Controlled training comparisons (`mathforge arms`): several training arms, everything else equal,
evaluated on the same items, compared per level with intervals and a paired difference.

The paper's hard-stage claim (§3.2: a second SFT stage on hard problems helps) in miniature is
`recipes/two_stage_mini.yaml`: arm `two_stage` trains on levels 1-3, then on levels 4-5 from those
weights; arm `one_stage` trains once on the union, the same examples for the same epochs.

An arms recipe is a train-only ablation (`mathforge.ablate`): the first arm is the base, each other
arm sets `train.stages`, the training seeds are the replicates. The runs, their keys and reuse, the
statistics and the reports are the ablation's; this module only translates the recipe, and adds a
digest of the examples each arm trains on. Differences read first arm minus each other arm.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathforge import ablate
from mathforge.ablate import AblateConfig, AblationArm, html_blocks, markdown, run_ablation
from mathforge.ablate import dry_run as ablation_dry_run
from mathforge.config import config_to_dict
from mathforge.eval.run import EvalStage
from mathforge.io import write_json, write_text
from mathforge.train.config import StageConfig, TrainConfig

__all__ = ["Arm", "ArmsConfig", "compare", "dry_run", "html_blocks", "markdown", "run_arms", "to_ablation"]


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
    workers: int = 1  # runs trained at once, each in a process of its own
    threads: int | None = None  # torch threads per run; None: torch's default (every core)
    train: TrainConfig = field(default_factory=TrainConfig)  # shared settings; its stages are the arm's
    eval: EvalStage = field(default_factory=EvalStage)

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"arms: need two or more arms with distinct names, got {names}")


def to_ablation(cfg: ArmsConfig) -> AblateConfig:
    """The arms as a train-only ablation: the first arm is the base, no null arm, no data seeds."""
    first, *others = cfg.arms
    train = config_to_dict(cfg.train)
    run = {"data_dir": cfg.data_dir, "eval": config_to_dict(cfg.eval),
           "train": {**train, "stages": [config_to_dict(s) for s in first.stages]}}
    arms = tuple(AblationArm(a.name, {"train.stages": [config_to_dict(s) for s in a.stages]}) for a in others)
    return AblateConfig(claim="Training arms compared", run=run, base_name=first.name, arms=arms, train_seeds=cfg.train_seeds, data_seeds=(0,),
                        data_seed_fields=(), null_arm=False, metric=cfg.metric, n_boot=cfg.n_boot, workers=cfg.workers,
                        threads=cfg.threads, difference="base - arm")


def run_arms(cfg: ArmsConfig, out: str | Path) -> dict[str, Any]:
    """Train and evaluate every arm and seed not yet done; write comparison.json and the reports."""
    from mathforge import htmlreport as H

    result = run_ablation(to_ablation(cfg), out)
    result["examples"] = {a.name: _examples_digest(a) for a in cfg.arms}
    write_json(Path(out) / "comparison.json", result)
    write_text(Path(out) / "report.md", markdown(result))
    H.write_page(Path(out) / "report.html", "Training arms compared", html_blocks(result))
    return result


def compare(rows: dict[str, list[dict[str, Any]]], metric: str, n_boot: int) -> dict[str, Any]:
    """The ablation's comparison read as arms read it: the first arm minus each other arm."""
    return ablate.compare(rows, metric, n_boot, difference="base - arm")


def dry_run(cfg: ArmsConfig, out: str | Path) -> list[str]:
    """`--dry-run`: every arm x seed x step as run or reuse, with an estimated time."""
    return ablation_dry_run(to_ablation(cfg), out)


def _examples_digest(arm: Arm) -> dict[str, Any]:
    """How many examples an arm trains on and a digest of their problems as a set: equal digests
    mean the arms saw exactly the same examples (in whatever order and staging)."""
    from mathforge.sources import load

    problems = sorted(r.problem for s in arm.stages for r in load(s.dataset))
    return {"examples": len(problems), "digest": hashlib.sha256("\n".join(problems).encode()).hexdigest()[:16],
            "epochs": [s.epochs for s in arm.stages]}


