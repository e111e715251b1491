"""recipes/paper_mini.yaml in small: the run starts its own simulated teacher, synthesises, cleans,
trains and evaluates student, baseline and oracle, audits the kept data against the teacher's log
and writes report.json; a rerun skips every step and gives the same report."""

from __future__ import annotations

import json
from pathlib import Path

import psutil

from mathforge.config import load_config
from mathforge.pipeline import RunConfig, run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "paper_mini.yaml"
SMALL = ["synth.stage1.initial_target=30", "synth.stage1.coreset_budget=10", "synth.stage1.target=60",
         "synth.stage2.target=20", 'synth.seeds=["mini:train?levels=1-5&size=40&seed=0&unlevelled=0.3"]',
         'eval.benchmarks=["mini:test?levels=1-5&per_level=4"]', "train.max_steps=3", "rehearse.train_seeds=[1]",
         "rehearse.workers=1", "rehearse.threads=1", "rehearse.tokenizer_corpus=mini:train?levels=1-5&size=100&seed=7"]


def _children() -> set[int]:
    """Child processes, less multiprocessing's resource tracker (it lives as long as this process)."""
    return {p.pid for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())}


def test_the_small_recipe_runs_end_to_end_and_reruns_to_the_same_report(tmp_path):
    cfg = load_config(RunConfig, RECIPE, SMALL)
    children = _children()
    run(cfg, tmp_path / "run")
    assert _children() <= children  # the teacher stopped with the run
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["n"] == 20 and report["samples"] > 0
    for arm in ("student", "baseline", "oracle"):
        assert 0 <= report[arm]["lo"] <= report[arm]["accuracy"] <= report[arm]["hi"] <= 1
    assert report["paired"]["lo"] <= report["paired"]["difference"] <= report["paired"]["hi"]
    truth = report["truth"]
    assert truth["coverage"] == 1.0 and 0 <= truth["kept_error_rate"] <= 1 and truth["log"]["answered"] > 100
    assert "Rehearsal: student vs baseline vs oracle" in (tmp_path / "run" / "report.md").read_text()
    run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == report
