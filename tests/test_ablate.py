"""`mathforge ablate`: replicates share steps by key, an added arm runs alone (the step logs say so and
`--dry-run` predicted it), and the seed-aware verdict is calibrated on null pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mathforge.ablate import AblateConfig, AblationArm, compare, replicates, verdicts
from mathforge.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
SMALL_RUN = {
    "synth": {"stage1": {"initial_target": 24, "coreset_budget": 8, "target": 40}, "stage2": {"target": 12},
              "seeds": ["mini:train?levels=1-5&size=30&seed={data_seed}&unlevelled=0.3"]},
    "eval": {"benchmarks": ["mini:test?levels=1-5&per_level=3"]},
    "train": {"max_steps": 2},
    "rehearse": {"enabled": False},
}


def _recipe(tmp_path: Path, arms: list[dict]) -> Path:
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump({
        "claim": "test: a train-only change reuses synthesis and cleaning",
        "base": str(REPO / "recipes" / "paper_mini.yaml"), "run": SMALL_RUN, "arms": arms,
        "train_seeds": [1], "data_seeds": [0], "null_arm": False, "n_boot": 50, "workers": 1, "threads": 1}))
    return path


def _started(run_dir: Path) -> set[str]:
    """Every step a replicate's logs say started, nested ones as `train/sft-...` (the plan's names)."""
    out = set()
    for log in run_dir.rglob("logs/run.log"):
        prefix = str(log.parent.parent.relative_to(run_dir))
        for line in log.read_text().splitlines():
            if line.endswith(": started"):
                step = line.split("step ", 1)[1].split(":")[0]
                out.add(step if prefix == "." else f"{prefix}/{step}")
    return out - {"synth", "train"}  # the steps made of nested ones


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


def test_an_added_arm_runs_only_its_own_steps_as_the_dry_run_predicted(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    from mathforge.ablate import dry_run, run_ablation

    lr = {"name": "low_lr", "set": {"train.stages[0].lr": 1.0e-4}}
    out = tmp_path / "out"
    cfg = load_config(AblateConfig, _recipe(tmp_path, [lr]))
    result = run_ablation(cfg, out, log=lambda *_: None)
    first = {r["arm"]: r for r in _rows(out)}
    assert first["base"]["copied_from"] is None and "synth/stage1_normal" in first["base"]["ran"]
    # a training change: synthesis, cleaning and export come from the base's directory, never rerun
    assert first["low_lr"]["copied_from"] == "runs/base/d0-t1"
    assert not [s for s in first["low_lr"]["ran"] if s.startswith(("synth", "clean", "export"))]
    assert "train/sft-stage1-normal" in first["low_lr"]["ran"] and "eval" in first["low_lr"]["ran"]
    assert not [s for s in _started(out / "runs" / "low_lr" / "d0-t1") if s.startswith(("synth", "clean"))]
    entry = result["benchmarks"]["mini:test?levels=1-5&per_level=3"]
    assert set(entry["difference"]["all"]) == {"low_lr - base"}

    # add an arm that changes cleaning: the dry run says what runs, the rerun runs exactly that
    drop = {"name": "drop", "set": {"clean.answer_check.mode": "drop"}}
    cfg = load_config(AblateConfig, _recipe(tmp_path, [lr, drop]))
    before = {arm: _started(out / "runs" / arm / "d0-t1") for arm in ("base", "low_lr")}
    plan = dry_run(cfg, out)
    predicted = [line.split()[1] for line in plan if line.startswith("drop/") and line.split()[2] == "run"]
    assert predicted and not [s for s in predicted if s.startswith("synth")]
    assert all(line.split()[2] == "reuse" for line in plan if line.startswith(("base/", "low_lr/")))
    run_ablation(cfg, out, log=lambda *_: None)
    rows = _rows(out)[len(first):]
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["base"]["ran"] == [] and by_arm["low_lr"]["ran"] == []
    assert by_arm["drop"]["ran"] == predicted
    assert {arm: _started(out / "runs" / arm / "d0-t1") for arm in ("base", "low_lr")} == before
    assert _started(out / "runs" / "drop" / "d0-t1") == set(predicted)
    assert "drop" in (out / "report.md").read_text() and "<svg" in (out / "report.html").read_text()


def test_replicates_cross_data_and_training_seeds_and_the_null_arm_moves_both(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"base": str(REPO / "recipes" / "paper_mini.yaml"), "run": SMALL_RUN,
                                      "arms": [{"name": "a", "set": {"teacher_sim.levels": [0.5] * 5}}],
                                      "train_seeds": [1, 2], "data_seeds": [0, 1]}))
    cfg = load_config(AblateConfig, recipe)
    reps = replicates(cfg, tmp_path / "out")
    assert len(reps) == 3 * 4 and {r.arm for r in reps} == {"base", "null", "a"}
    null = [r for r in reps if r.arm == "null"]
    assert {(r.data_seed, r.train_seed) for r in null} == {(1000, 1001), (1000, 1002), (1001, 1001), (1001, 1002)}
    base = next(r for r in reps if r.arm == "base" and r.data_seed == 1)
    assert base.cfg.synth.seeds == ("mini:train?levels=1-5&size=30&seed=1&unlevelled=0.3",)
    assert base.cfg.teacher_sim.seed == 1 and base.cfg.synth.seed == 1 and base.cfg.train.seed == base.train_seed
    assert next(r for r in reps if r.arm == "a").cfg.teacher_sim.levels == (0.5,) * 5


def test_a_bad_arm_field_is_named(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"base": str(REPO / "recipes" / "paper_mini.yaml"),
                                      "arms": [{"name": "a", "set": {"train.stagez": 1}}]}))
    cfg = load_config(AblateConfig, recipe)
    with pytest.raises(ConfigError, match=r"arm a.*unknown key 'train.stagez'"):
        replicates(cfg, tmp_path)
    with pytest.raises(ConfigError, match="distinct"):
        load_config(AblateConfig, recipe, ["arms=[{name: base}]"])


def _rows_for(rng: np.random.Generator, n_rep: int, n_items: int, acc: float, item_p: np.ndarray,
              seed_sd: float, shift: float = 0.0) -> list[dict]:
    rows = []
    for r in range(n_rep):
        p = np.clip(item_p + rng.normal(0, seed_sd) + shift, 0, 1)
        correct = (rng.random(n_items) < p).astype(int).tolist()
        rows.append({"seed": r, "items": {"b": {"ids": [f"i{i}" for i in range(n_items)], "correct": {"strict": correct},
                                                "level": [1 + i % 5 for i in range(n_items)]}}})
    return rows


OWN = {"null": "own data", "a": "own data"}  # both draw their own noise, as an arm with its own synthesis


def test_the_seed_aware_verdict_holds_its_level_on_null_pairs_and_finds_a_real_effect():
    """400 simulated null ablations (item difficulty shared, seed-to-seed spread as a tiny student's):
    the share of 'configs differ' stays near 5%; a 15-point effect (above the reported smallest detectable difference, ~13) is found most of the time."""
    from scipy.stats import binomtest

    rng = np.random.default_rng(0)
    cfg = AblateConfig(arms=(AblationArm("a"),), train_seeds=(1, 2, 3), data_seeds=(0,), null_arm=True, n_boot=10)
    hits, found = 0, 0
    trials = 400
    for _ in range(trials):
        item_p = rng.beta(2, 2, 200)
        rows = {name: _rows_for(rng, 3, 200, 0.5, item_p, 0.03) for name in ("base", "null", "a")}
        hits += verdicts(rows, cfg, OWN)["benchmarks"]["b"]["all"]["a"]["p_value"] < 0.05
        rows["a"] = _rows_for(rng, 3, 200, 0.5, item_p, 0.03, shift=0.15)
        found += verdicts(rows, cfg, OWN)["benchmarks"]["b"]["all"]["a"]["p_value"] < 0.05
    assert binomtest(hits, trials, 0.05).pvalue > 0.01, hits
    assert found / trials > 0.8, found


def test_differences_read_arm_minus_base_and_per_seed_mcnemar_pairs_replicates():
    rng = np.random.default_rng(1)
    item_p = rng.beta(2, 2, 100)
    rows = {"base": _rows_for(rng, 2, 100, 0.5, item_p, 0.0), "better": _rows_for(rng, 2, 100, 0.5, item_p, 0.0, 0.3)}
    result = compare(rows, "strict", 100)
    diff = result["benchmarks"]["b"]["difference"]["all"]["better - base"]
    assert diff["estimate"] > 0.15 and diff["lo"] > 0
    per_seed = result["benchmarks"]["b"]["per_seed"]["all"]["better vs base"]
    assert len(per_seed) == 2 and all(m["b"] > m["a"] for m in per_seed)


def test_test_items_in_an_arms_training_data_are_counted_and_answered_against_the_base(tmp_path):
    """A leak (a test problem, whitespace aside, in the training data) is found per replicate, and the
    arm's answers on those items are set beside the base's answers on the very same items."""
    from mathforge.ablate import _text_key, seen_items
    from mathforge.eval.benchmarks import slug

    bench = "mini:test?levels=1-5&per_level=2"
    test = [{"id": f"t{i}", "problem": f"Ana has {i} beads. How many beads does Ana have now?"} for i in range(10)]

    def dataset(name: str, problems: list[str]) -> str:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": f"{name}{i}", "problem": p, "solution": "x", "answer": "1"}) + "\n"
                                for i, p in enumerate(problems)))
        return str(path)

    clean = dataset("clean", ["Bo has 3 cards. How many cards does Bo have now?"])
    leaky = dataset("leaky", ["Bo has 3 cards.", "  Ana has 2 beads.\nHow many beads does  Ana have now? ",
                              test[5]["problem"], test[5]["problem"]])
    stage = {"name": "s", "epochs": 1, "lr": 1.0e-3}
    recipe = tmp_path / "ablation.yaml"
    recipe.write_text(yaml.safe_dump({
        "base": str(REPO / "recipes" / "ablation_base.yaml"),
        "run": {"train": {"stages": [{**stage, "dataset": clean}]}, "eval": {"benchmarks": [bench]}},
        "arms": [{"name": "leak", "set": {"train.stages": [{**stage, "dataset": leaky}]}}],
        "train_seeds": [1, 2], "data_seeds": [0], "null_arm": False}))
    cfg = load_config(AblateConfig, recipe)
    reps = replicates(cfg, tmp_path / "out")
    rows: dict[str, list] = {"base": [], "leak": []}
    for rep in reps:  # every item answered right by the leaky arm, only t2 by the base
        samples = rep.dir / "eval" / slug(bench) / "samples.jsonl"
        samples.parent.mkdir(parents=True)
        samples.write_text("".join(json.dumps(t) + "\n" for t in test))
        right = [1] * 10 if rep.arm == "leak" else [int(t["id"] == "t2") for t in test]
        rows[rep.arm].append({"seed": rep.index, "items": {bench: {"ids": [t["id"] for t in test],
                                                                     "correct": {"strict": right}}}})
    seen = seen_items(cfg, reps, rows)[bench]
    assert seen["base"]["seen"] == 0 and seen["base"]["unseen"] == 20
    assert seen["leak"] == {"replicates": 2, "seen": 4, "correct": 4, "base_correct": 2, "unseen": 16,
                            "unseen_correct": 16}
    assert _text_key(" a \n b ") == "a b"
    from mathforge.ablate import markdown

    text = markdown({"arms": ["base", "leak"], "metric": "strict", "difference_is": "arm - base", "benchmarks": {},
                     "seen": {bench: seen}})
    assert "| leak | 2 | 4 | 100.0 (4/4) | 50.0 (2/4) | 100.0 (16/16) |" in text


def test_a_dry_runs_training_estimate_counts_the_rows_a_stage_names():
    """A source spec's `size=`, a union's shares, a run's synthesis targets: not the paper's defaults
    for a train-only arm (two_stage_mini's dry run once said 12,602 minutes)."""
    from mathforge.ablate import _stage_size

    cfg = replicates(load_config(AblateConfig, REPO / "recipes" / "ablations" / "stage2_replay.yaml"), Path("/tmp"))[0].cfg
    assert _stage_size("mini:train?levels=1-3&size=1200&seed=0", cfg) == 1200
    assert _stage_size("normal_clean", cfg) == cfg.synth.stage1.target
    assert _stage_size("hard_clean+normal_clean*0.25", cfg) == cfg.synth.stage2.target + cfg.synth.stage1.target // 4
    assert _stage_size("/data/x.jsonl", cfg) == 1000


def test_a_recorded_step_time_is_scaled_to_the_work_a_changed_config_asks(tmp_path):
    """Rerunning a finished ablation with stage 1 at twice the epochs: the dry run's estimate is the
    recorded time twice over, not the recorded time."""
    import dataclasses

    from mathforge.ablate import _estimate, _recorded
    from mathforge.config import dump_yaml

    cfg = replicates(load_config(AblateConfig, REPO / "recipes" / "ablations" / "stage2_replay.yaml"), tmp_path)[0].cfg
    run = tmp_path / "runs" / "base" / "d0-t1"
    (run / "train" / "stats").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    first = cfg.train.stages[0]
    (run / "train" / "stats" / f"sft-{first.name}.json").write_text(json.dumps({"seconds": 30.0}))
    longer = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, stages=(dataclasses.replace(first, epochs=first.epochs * 2), *cfg.train.stages[1:])))
    timings = _recorded(tmp_path)
    assert _estimate(f"train/sft-{first.name}", cfg, timings) == (30.0, "recorded")
    assert _estimate(f"train/sft-{first.name}", longer, timings) == (pytest.approx(60.0), "recorded")
