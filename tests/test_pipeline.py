"""The main job end to end: `mathforge run` on the embedded SmolLM2 teacher and a tiny student."""

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.io import read_records
from mathforge.rundir import RunDir

pytest.importorskip("llama_cpp")
REPO = Path(__file__).resolve().parents[1]
LOGS = {"": "logs/run.log", "synth/": "synth/logs/run.log", "train/": "train/logs/run.log"}


def cache_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (n,) = db.execute("select count(*) from sqlite_master where type='table'").fetchone()
        table = db.execute("select name from sqlite_master where type='table'").fetchone()[0]
        return db.execute(f"select count(*) from {table}").fetchone()[0] if n else 0


def log_sizes(out: Path) -> dict[str, int]:
    return {prefix: (out / log).stat().st_size if (out / log).exists() else 0 for prefix, log in LOGS.items()}


def started_since(out: Path, sizes: dict[str, int]) -> set[str]:
    """The steps started since `sizes`, at every depth (`synth/<stage>`, `train/<stage>`, top level)."""
    steps = set()
    for prefix, log in LOGS.items():
        text = (out / log).read_bytes()[sizes[prefix]:].decode() if (out / log).exists() else ""
        steps |= {prefix + line.split(" step ")[1].split(":")[0] for line in text.splitlines() if line.endswith(": started")}
    return steps - {"synth", "train"}  # the steps made of nested ones start whenever one of these does


def weights(out: Path) -> dict[str, str]:
    """SHA-1 of each stage's and the final model's weights."""
    found = sorted((out / "train" / "sft").glob("*/model/model.safetensors"))
    return {p.parent.parent.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in found}


def test_run_offline_recipe_end_to_end(mini_run):
    out, _ = mini_run
    steps = {"synth", "clean_normal", "clean_hard", "export", "train", "eval"}
    assert all(RunDir(out).is_done(s) for s in steps)
    report = (out / "report.md").read_text()
    assert "## Synthesis yield" in report and "## Evaluation: math" in report and "Answer check (annotate" in report
    # SmolLM2 fails many checks, so a stage may keep nothing; the hard stage, seeded from real MATH
    # problems with known answers, reliably keeps some. Every kept row carries its lineage.
    manifest = RunDir(out).manifest()
    assert {"seeds", "normal", "hard", "normal_clean", "hard_clean"} <= set(manifest)
    assert not any(Path(p).is_absolute() for p in json.loads((out / "manifest.json").read_text()).values())
    rows = {s: list(read_records(manifest[f"{s}_clean"])) for s in ("normal", "hard")}
    assert rows["normal"] or rows["hard"]
    for name, stage in (("normal", "stage1"), ("hard", "stage2")):
        assert all(r.lineage.seed_id and r.lineage.method and r.lineage.stage == stage for r in rows[name])
    assert (out / "dataset" / "README.md").exists()
    assert (out / "train" / "model" / "config.json").exists()
    summary = json.loads((out / "eval" / "math" / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"strict", "symbolic"} and summary["by_level"]


def test_reruns_redo_exactly_what_changed_at_every_depth_as_the_dry_run_says(mini_run, tmp_path):
    from tests.conftest import copy_run

    out = copy_run(mini_run[0], tmp_path / "moved")  # a run directory moved elsewhere resumes
    args = [*mini_run[1], "--out", str(out)]
    requests = cache_rows(out / "synth" / "cache.sqlite")

    def rerun(*extra: str) -> set[str]:
        dry = CliRunner().invoke(app, [*args, *extra, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        predicted = {line.split()[0] for line in dry.output.splitlines() if line.split()[1:2] == ["run"]}
        sizes = log_sizes(out)
        again = CliRunner().invoke(app, [*args, *extra])
        assert again.exit_code == 0, again.output
        ran = started_since(out, sizes)
        assert ran == predicted, (extra, dry.output)
        return ran

    assert rerun() == set()  # moved, unchanged: nothing runs
    before = weights(out)
    # (d) an evaluation field: evaluation only, the weights untouched
    assert rerun("eval.limit=1") == {"eval"}
    assert json.loads((out / "eval" / "math" / "summary.json").read_text())["n"] == 1 and weights(out) == before
    # (c) stage 2's learning rate: stage 2 and evaluation; stage 1's weights untouched
    assert rerun("eval.limit=1", "train.stages[1].lr=1e-4") == {"train/sft-stage2-hard", "eval"}
    after = weights(out)
    assert after["stage2-hard"] != before["stage2-hard"] and after["stage1-normal"] == before["stage1-normal"]
    # (b) a cleaning field: cleaning and everything after it, never synthesis
    lr = "train.stages[1].lr=1e-4"
    train = {"train/student-init", "train/sft-stage1-normal", "train/sft-stage2-hard"}
    assert rerun("eval.limit=1", lr, "clean.decontam_n=29") == {"clean_normal", "clean_hard", "export", "eval"} | train
    assert json.loads((out / "stats" / "clean_hard.json").read_text())["decontam"]["n"] == 29
    assert cache_rows(out / "synth" / "cache.sqlite") == requests  # no request paid twice
    # (e) the student's size: training from a new initial checkpoint, and evaluation
    before = weights(out)
    size = "train.student.hidden_size=32"
    assert rerun("eval.limit=1", lr, "clean.decontam_n=29", size) == train | {"eval"}
    assert all(before[s] != h for s, h in weights(out).items())
    # (a) a synthesis stage's target: that stage, its cleaning and everything after; stage 1 untouched
    changed = rerun("eval.limit=1", lr, "clean.decontam_n=29", size, "synth.stage2.target=4")
    assert changed == {"synth/stage2_hard", "clean_hard", "export", "eval"} | train
    assert rerun("eval.limit=1", lr, "clean.decontam_n=29", size, "synth.stage2.target=4") == set()


def test_recipe_mistakes_fail_before_any_step(tmp_path):
    out = tmp_path / "run"
    for override, message in (("eval.engine.batchsize=8", "batchsize"),
                              ("train.stages=[{name: a, dataset: nowhere}]", "nowhere"),
                              ("eval.settings.prompt_style=plain", "prompt_style"),
                              ("clean.answer_check.mode=maybe", "annotate, drop or off")):
        result = CliRunner().invoke(app, ["run", str(REPO / "recipes" / "offline.yaml"), "--out", str(out), override])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), (override, result.output)
        assert not (out / "steps").exists() or not any((out / "steps").glob("*.json"))


def test_a_share_replays_a_fixed_nested_subset_and_keys_the_union_by_it(tmp_path):
    from mathforge.config import ConfigError, load_config
    from mathforge.io import write_records
    from mathforge.pipeline import RunConfig, _data_keys, step_specs, validate
    from mathforge.record import Record
    from mathforge.rehearsal import union

    manifest = {}
    for name, n in (("hard_clean", 40), ("normal_clean", 400)):
        manifest[name] = str(tmp_path / "data" / f"{name}.jsonl")
        write_records(manifest[name], [Record(id=f"{name}/{i}", source="t", problem=f"p{i}", solution="s",
                                              answer="1") for i in range(n)])

    def ids(spec: str) -> set[str]:
        return {r.id for r in read_records(union(manifest, spec, tmp_path))}

    hard = ids("hard_clean*1")
    quarter, half = ids("hard_clean+normal_clean*0.25") - hard, ids("hard_clean+normal_clean*0.5") - hard
    assert len(hard) == 40 and hard <= ids("hard_clean+normal_clean*0.25")
    assert 70 <= len(quarter) <= 130 and 160 <= len(half) <= 240 and quarter < half  # 3 sd of Binomial(400, p)
    subset = tmp_path / "datasets" / "normal_clean@0.25" / "part-00000.jsonl"
    stamp = subset.stat().st_mtime_ns
    assert ids("hard_clean+normal_clean*0.25") - hard == quarter and subset.stat().st_mtime_ns == stamp  # not rewritten
    assert union(manifest, "hard_clean+normal_clean*0", tmp_path) == manifest["hard_clean"]
    assert ids("normal_clean*0.25") == quarter  # a share alone is its subset

    def key(dataset: str) -> str:
        cfg = load_config(RunConfig, REPO / "recipes" / "offline.yaml", [f"train.stages[1].dataset={dataset}"])
        validate(cfg)
        return _data_keys(step_specs(cfg), cfg)[dataset]

    keys = {d: key(d) for d in ("hard_clean", "hard_clean+normal_clean*0", "hard_clean+normal_clean*0.25",
                                "hard_clean+normal_clean*0.5", "hard_clean+normal_clean")}
    assert keys["hard_clean"] == keys["hard_clean+normal_clean*0"] and len(set(keys.values())) == 4
    for bad in ("hard_clean+normal_clean*1.5", "hard_clean+normal_clean*x", "normal_clean*0"):
        with pytest.raises(ConfigError, match="train stage stage2-hard: dataset"):
            key(bad)
