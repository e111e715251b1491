import contextlib
from collections import Counter

from mathforge.filters import FilterStats, apply_filter
from mathforge.record import Record
from mathforge.rundir import RunDir, step_spec
from tests.test_config import Recipe

SPEC = step_spec(1, {"n": 1})


def test_stages_skip_when_done_and_config_saved(tmp_path):
    calls = Counter()

    def stage():
        calls["n"] += 1
        return {"rows": 3}

    run = RunDir(tmp_path / "run")
    run.save_config(Recipe(name="a"))
    assert run.run_step("seeds", SPEC, stage)["rows"] == 3
    again = RunDir(tmp_path / "run")
    assert again.run_step("seeds", SPEC, stage)["rows"] == 3
    assert calls["n"] == 1
    assert "name: a" in (tmp_path / "run" / "config.yaml").read_text()
    assert (tmp_path / "run" / "stats" / "seeds.json").exists()
    assert "already done" in (tmp_path / "run" / "logs" / "run.log").read_text()
    again.save_config(Recipe(name="b"))  # a changed config is kept aside, not overwritten silently
    assert len(list((tmp_path / "run").glob("config.*.yaml"))) == 1


def test_killed_stage_runs_again(tmp_path):
    run = RunDir(tmp_path)

    def dies():
        raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        run.run_step("synth", SPEC, dies)
    assert not run.is_done("synth")


class ShortProblems:
    name = "length"

    def decide(self, record):
        return None if len(record.problem) < 10 else f"too_long: {len(record.problem)} chars"


def test_filter_counts_reasons_and_distributions():
    records = [Record(id=str(i), source="s", problem="x" * (5 + 5 * i), level=1 + i, subject="Algebra")
               for i in range(4)]
    rejects = []

    class Sink:
        def write(self, r):
            rejects.append(r)

    stats = FilterStats("length")
    kept = list(apply_filter(records, ShortProblems(), stats, Sink()))
    assert [r.id for r in kept] == ["0"]
    report = stats.to_dict()
    assert report["dropped_by_reason"] == {"too_long": 3}
    assert report["before"]["levels"] == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert report["after"]["levels"] == {"1": 1}
    assert rejects[0].meta["rejected"] == {"filter": "length", "reason": "too_long: 10 chars"}


def test_a_changed_key_reruns_the_stage(tmp_path):
    calls = Counter()

    def stage():
        calls["n"] += 1
        return {"n": calls["n"]}

    resets = Counter()
    run = RunDir(tmp_path)
    a, b = step_spec(1, {"clean": {"n": 30, "workers": 1}}), step_spec(1, {"clean": {"n": 13, "workers": 1}})
    assert run.run_step("clean", a, stage)["n"] == 1
    assert run.run_step("clean", step_spec(1, {"clean": {"n": 30, "workers": 8}}), stage)["n"] == 1  # unkeyed
    assert run.run_step("clean", b, stage, reset=lambda: resets.update(["n"]))["n"] == 2  # changed: runs again
    assert resets["n"] == 1 and run.stats("clean")["n"] == 2
    assert "changed (clean.n: 30 -> 13), running again" in (tmp_path / "logs" / "run.log").read_text()
    run.register({"normal": str(tmp_path / "x.jsonl")})
    run.register({"normal_clean": "/elsewhere/c/data"})
    assert run.manifest() == {"normal": str(tmp_path / "x.jsonl"), "normal_clean": "/elsewhere/c/data"}
    assert '"normal": "x.jsonl"' in (tmp_path / "manifest.json").read_text()  # relative: a moved run resumes
