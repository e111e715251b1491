"""The keyed step model at every depth: a mutation test over every field of the run recipe.

For each field (nested ones included) the recipe is changed in that field alone and `--dry-run`'s
plan is compared with an oracle written here, apart from the code: which steps read the field,
closed over what runs downstream of them. A field outside every key must rerun nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathforge.config import ConfigError, build, config_to_dict, load_config
from mathforge.pipeline import RunConfig, plan, step_specs, validate
from mathforge.rundir import RunDir, keyed_fields, to_run

REPO = Path(__file__).resolve().parents[1]
SYNTH = ("synth/seeds", "synth/stage2_hard_seeds", "synth/stage1_initial", "synth/stage1_coreset",
         "synth/stage1_normal", "synth/stage2_hard")
TRAIN = ("train/student-init", "train/sft-stage1-normal", "train/sft-stage2-hard")
# What each step's output feeds (the run's data flow, written from the paper's Figure 2).
FEEDS = {
    "synth/seeds": ("synth/stage2_hard_seeds", "synth/stage1_initial", "clean_normal", "clean_hard"),
    "synth/stage2_hard_seeds": ("synth/stage2_hard",),
    "synth/stage1_initial": ("synth/stage1_coreset",),
    "synth/stage1_coreset": ("synth/stage1_normal",),
    "synth/stage1_normal": ("clean_normal",),
    "synth/stage2_hard": ("clean_hard",),
    "clean_normal": ("export", "train/student-init", "train/sft-stage1-normal"),
    "clean_hard": ("export", "train/student-init", "train/sft-stage2-hard"),
    "train/student-init": ("train/sft-stage1-normal",),
    "train/sft-stage1-normal": ("train/sft-stage2-hard",),
    "train/sft-stage2-hard": ("eval",),
    "synth/stage2_judge": ("synth/stage2_hard",),
}
STRUCTURAL = ("synth.stage2.enabled", "train.stages[0].name", "train.stages[1].name", "rehearse.enabled")  # add steps
GENERATING = ("synth/stage1_initial", "synth/stage2_hard")
NOTHING: tuple[str, ...] = ()


def readers(field: str) -> tuple[str, ...]:
    """The steps that read `field` directly (the oracle; prefixes checked in order)."""
    unkeyed = ("base_url", "api_key_env", "concurrency", "rpm", "tpm", "timeout_s", "max_retries", "backoff_base_s",
               "backoff_max_s", "http", "progress", "prices", "n_threads", "workers", "executor", "num_proc",
               "data_cache", "logging_steps", "report_to", "save_steps", "save_total_limit", "batch_max_requests",
               "batch_max_bytes", "batch_settle_s", "batch_poll_s", "batch_poll_max_s", "batch_window",
               "batch_discount", "batch_export_dir", "median_s", "start_timeout_s")
    if field.split(".")[-1].split("[")[0] in unkeyed or field.startswith("synth.budget."):
        return NOTHING
    if field == "synth.stage2.judge":  # switched on: the judge runs, and stage 2 synthesises from its picks too
        return ("synth/stage2_judge",)
    if field == "teacher_sim.world":  # a simulated teacher replaces the recipe's: every generating stage
        return (*GENERATING, "synth/stage1_normal")
    if field.startswith(("teacher_sim.", "rehearse.")):  # no simulated teacher, no rehearsal in this recipe
        return NOTHING
    table = (
        ("data_dir", ("clean_normal", "clean_hard", "eval")),
        ("synth.seeds", ("synth/seeds",)),
        ("synth.stage2.min_level", ("synth/stage2_hard_seeds",)),
        ("synth.stage2.judge", NOTHING),  # the judge is off in this recipe: its settings read by nothing
        ("synth.stage2.target", ("synth/stage2_hard",)),
        ("synth.stage1.initial_target", ("synth/stage1_initial",)),
        ("synth.stage1.coreset_budget", ("synth/stage1_coreset",)),
        ("synth.stage1.coreset", ("synth/stage1_coreset",)),
        ("synth.stage1.embed_model", ("synth/stage1_coreset",)),
        ("synth.stage1.embed_batch_size", NOTHING),
        ("synth.stage1.target", ("synth/stage1_normal",)),
        ("synth.seed", (*GENERATING, "synth/stage1_normal", "synth/stage1_coreset")),
        ("synth.", (*GENERATING, "synth/stage1_normal")),
        ("clean.length_tokenizer", ("clean_normal", "clean_hard", "export")),
        ("clean.", ("clean_normal", "clean_hard")),
        ("train.stages[0].max_samples", ("train/student-init", "train/sft-stage1-normal")),
        ("train.stages[1].max_samples", ("train/student-init", "train/sft-stage2-hard")),
        ("train.stages[0].", ("train/sft-stage1-normal",)),
        ("train.stages[1].", ("train/sft-stage2-hard",)),
        ("train.student.", ("train/student-init",)),
        ("train.max_length", ("train/student-init", "train/sft-stage1-normal")),
        ("train.seed", ("train/student-init", "train/sft-stage1-normal")),
        ("train.prompt_style", ("clean_normal", "clean_hard", "train/student-init", "train/sft-stage1-normal")),
        ("train.tokenizer_corpus", ("train/student-init", "train/sft-stage1-normal")),
        ("train.", ("train/sft-stage1-normal",)),
        ("eval.", ("eval",)),
    )
    for prefix, steps in table:
        if field == prefix or field.startswith(prefix):
            return steps
    raise AssertionError(f"the oracle has no rule for {field}")


def downstream(steps: tuple[str, ...]) -> set[str]:
    out, todo = set(), list(steps)
    while todo:
        step = todo.pop()
        if step not in out:
            out.add(step)
            todo += FEEDS.get(step, ())
    return out


def leaves(value, name=""):
    """(dotted name, value) of every leaf of a plain config (list items of mappings indexed)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{name}.{k}" if name else k)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from leaves(v, f"{name}[{i}]")
    else:
        yield name, value


def mutated(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.125
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1]] if value else ["x"]
    if value is None:
        return 7
    if isinstance(value, dict):
        return {**value, "extra": 1}
    raise AssertionError(value)


def set_field(plain: dict, name: str, value) -> dict:
    import copy
    import re

    out = copy.deepcopy(plain)
    node, parts = out, re.findall(r"[^.\[\]]+|\[\d+\]", name)
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    node[int(last[1:-1]) if last.startswith("[") else last] = value
    return out


def finished(cfg: RunConfig, root: Path) -> None:
    """Markers as a finished run of `cfg` leaves them (the plan's keys), without running it."""
    for p in plan(cfg, root):
        rd = RunDir(p.rundir)
        rd.run_step(p.step, p.spec, lambda: {})


def test_every_recipe_field_reruns_exactly_its_readers_and_downstream(tmp_path):
    base = load_config(RunConfig, REPO / "recipes" / "offline.yaml")
    plain = config_to_dict(base)
    # every engine field too, not only those the recipe sets
    from mathforge.engine import EngineConfig

    engine_fields = config_to_dict(EngineConfig())
    for key, value in engine_fields.items():
        plain["synth"]["engine"].setdefault(key, value)
        plain["eval"]["engine"].setdefault(key, value)
    base = build(RunConfig, plain, "offline.yaml+engine defaults")
    finished(base, tmp_path)
    assert to_run(plan(base, tmp_path)) == []  # a finished run: nothing to do
    checked, refused = 0, []
    for name, value in leaves(plain):
        if name in STRUCTURAL:
            continue
        try:
            cfg = build(RunConfig, set_field(plain, name, mutated(value)), "mutation")
            validate(cfg)
        except (ConfigError, ValueError, TypeError, FileNotFoundError) as e:
            refused.append((name, str(e)))
            continue
        expected = downstream(readers(name))
        assert set(to_run(plan(cfg, tmp_path))) == expected, name
        checked += 1
    assert checked >= 150, (checked, refused)
    # a refused mutation is one the recipe's own checks reject, and the message names the field
    named = [(name.rsplit(".", 1)[-1].split("[")[0], why) for name, why in refused]
    assert all(n in why or n.replace("_", " ") in why for n, why in named), refused


def test_unkeyed_fields_and_nested_keys_hold_below_the_top(tmp_path):
    base = load_config(RunConfig, REPO / "recipes" / "offline.yaml")
    specs = step_specs(base)
    assert set(SYNTH) | set(TRAIN) <= set(specs)
    # nothing outside a key reaches one: workers, executor and the teacher's address are not fields of any step
    for spec in specs.values():
        assert not any(k.rsplit(".", 1)[-1] in ("workers", "executor", "base_url", "concurrency") for k in spec.fields)
    assert keyed_fields({"engine": {"base_url": "http://a", "model": "m"}}) == {"engine.model": "m"}


def test_dry_run_names_the_changed_field(tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli import app

    base = load_config(RunConfig, REPO / "recipes" / "offline.yaml")
    finished(base, tmp_path)
    args = ["run", str(REPO / "recipes" / "offline.yaml"), "--out", str(tmp_path), "--dry-run"]
    result = CliRunner().invoke(app, [*args, "train.stages[1].lr=1e-4"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["train/sft-stage2-hard"].split()[1] == "run" and "stages[1].lr" not in lines["eval"]
    assert "stage.lr: 0.0005 -> 0.0001" in lines["train/sft-stage2-hard"]
    assert lines["train/sft-stage1-normal"].split()[1] == "reuse" and lines["synth/seeds"].split()[1] == "reuse"
    assert lines["eval"].split()[1] == "run" and "train changed" in lines["eval"]
    assert not (tmp_path / "steps" / "nothing").exists()
    markers = sorted(p.name for p in (tmp_path / "steps").glob("*.json"))
    assert json.loads((tmp_path / "steps" / "eval.json").read_text())["state"] == "done" and markers


@pytest.mark.parametrize("field", ["clean.workers=4", "clean.executor=ray", "synth.engine.concurrency=3",
                                   "train.num_proc=1", "train.logging_steps=5", "synth.budget.max_usd=3"])
def test_fields_outside_every_key_rerun_nothing(tmp_path, field):
    base = load_config(RunConfig, REPO / "recipes" / "offline.yaml")
    finished(base, tmp_path)
    assert to_run(plan(load_config(RunConfig, REPO / "recipes" / "offline.yaml", [field]), tmp_path)) == []


@pytest.mark.parametrize("base, change, steps", [
    ((), "synth.stage1.coreset=random", ("synth/stage1_coreset",)),
    ((), "train.max_length=p90", ("train/student-init", "train/max-length")),
    ((), "train.overlong=truncate", ("train/sft-stage1-normal",)),
    ((), "train.stages[1].dataset=hard_clean+normal_clean*0.25", ("train/student-init",)),  # its tokenizer reads both
    ((), "train.stages[1].dataset=hard_clean+normal_clean*0", NOTHING),  # a share of 0 leaves the part out
    (("train.stages[1].dataset=hard_clean+normal_clean*0.25",), "train.stages[1].dataset=hard_clean+normal_clean*0.5",
     ("train/student-init",)),
    # with a fixed tokenizer corpus (recipes/ablation_base.yaml) a stage-2 data change leaves stage 1 alone
    (("train.tokenizer_corpus=mini:train?levels=1-5&size=50&seed=7",),
     "train.stages[1].dataset=hard_clean+normal_clean*0.25", ("train/sft-stage2-hard",)),
    (("teacher_sim.world=mini",), "teacher_sim.accuracy=0.5", (*GENERATING, "synth/stage1_normal")),
])
def test_the_ablation_options_rerun_exactly_their_readers(tmp_path, base, change, steps):
    recipe = REPO / "recipes" / "offline.yaml"
    finished(load_config(RunConfig, recipe, list(base)), tmp_path)
    cfg = load_config(RunConfig, recipe, [*base, change])
    validate(cfg)
    assert set(to_run(plan(cfg, tmp_path))) == downstream(steps)
