"""The main job end to end: `mathforge run` on the embedded SmolLM2 teacher and a tiny student."""

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.io import read_records

pytest.importorskip("llama_cpp")
REPO = Path(__file__).resolve().parents[1]
# Every augmentation method is exercised by the synthesis tests; here the two the SmolLM2 teacher
# passes most often keep the run short, since this test is about the stages around synthesis.
SMALL = [
    "synth.mix={metamath/answer_aug: 1, metamath/rephrase: 0, metamath/fobar: 1, metamath/self_verify: 0, evol: 0, xwin: 0}", "synth.max_passes=2",
    "synth.stage1.initial_target=4", "synth.stage1.coreset_budget=2", "synth.stage1.target=3",
    "synth.stage2.target=3", "synth.sampling.solve_max_tokens=128", "synth.sampling.question_max_tokens=64",
    "train.max_steps=3", "eval.limit=2", "eval.settings.max_tokens=24",
]


def cache_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (n,) = db.execute("select count(*) from sqlite_master where type='table'").fetchone()
        table = db.execute("select name from sqlite_master where type='table'").fetchone()[0]
        return db.execute(f"select count(*) from {table}").fetchone()[0] if n else 0


def log_since(out: Path, start: int) -> str:
    return (out / "logs" / "run.log").read_text()[start:]


def started(log: str) -> set[str]:
    return {line.split("stage ")[1].split(":")[0] for line in log.splitlines() if line.endswith(": started")}


def test_run_offline_recipe_end_to_end_and_config_keyed_reruns(tmp_path):
    out = tmp_path / "run"
    args = ["run", str(REPO / "recipes" / "offline.yaml"), "--out", str(out), *SMALL]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    steps = {"synth", "clean_normal", "clean_hard", "export", "train", "eval"}
    assert all((out / "stages" / f"{s}.done").exists() for s in steps)
    report = (out / "report.md").read_text()
    assert "## Synthesis yield" in report and "## Evaluation: math" in report and "Answer check (annotate" in report
    # SmolLM2 fails many checks, so a stage may keep nothing; the hard stage, seeded from real MATH
    # problems with known answers, reliably keeps some. Every kept row carries its lineage.
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"seeds", "normal", "hard", "normal_clean", "hard_clean"} <= set(manifest)
    rows = {s: list(read_records(manifest[f"{s}_clean"])) for s in ("normal", "hard")}
    assert rows["normal"] or rows["hard"]
    for name, stage in (("normal", "stage1"), ("hard", "stage2")):
        assert all(r.lineage.seed_id and r.lineage.method and r.lineage.stage == stage for r in rows[name])
    assert (out / "dataset" / "README.md").exists()
    assert (out / "train" / "model" / "config.json").exists()
    summary = json.loads((out / "eval" / "math" / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"strict", "symbolic"} and summary["by_level"]
    requests = cache_rows(out / "synth" / "cache.sqlite")

    def rerun(*extra: str) -> set[str]:
        start = len((out / "logs" / "run.log").read_text())
        again = CliRunner().invoke(app, [*args, *extra])
        assert again.exit_code == 0, again.output
        assert cache_rows(out / "synth" / "cache.sqlite") == requests  # no request is paid twice
        return started(log_since(out, start))

    assert rerun() == set()  # an unchanged recipe reruns nothing
    assert rerun("eval.limit=1") == {"eval"}  # a changed eval field reruns only evaluation
    assert json.loads((out / "eval" / "math" / "summary.json").read_text())["n"] == 1
    # a changed cleaning field reruns cleaning and everything after it, never synthesis
    assert rerun("eval.limit=1", "clean.decontam_n=29") == steps - {"synth"}
    assert json.loads((out / "stats" / "clean_hard.json").read_text())["decontam"]["n"] == 29


def test_recipe_mistakes_fail_before_any_step(tmp_path):
    out = tmp_path / "run"
    for override, message in (("eval.engine.batchsize=8", "batchsize"),
                              ("train.stages=[{name: a, dataset: nowhere}]", "nowhere"),
                              ("eval.settings.prompt_style=plain", "prompt_style"),
                              ("clean.answer_check.mode=maybe", "annotate, drop or off")):
        result = CliRunner().invoke(app, ["run", str(REPO / "recipes" / "offline.yaml"), "--out", str(out), override])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), (override, result.output)
        assert not (out / "stages").exists() or not any((out / "stages").iterdir())
