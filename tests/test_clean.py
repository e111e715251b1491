"""The cleaning chain (`mathforge clean`): the same verdicts as today's filters, shard markers keyed
by config, resume after SIGKILL, the answer check as a step, and the Ray executor."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.filters import FilterStats, apply_filter
from mathforge.io import read_records, write_records
from mathforge.quality.clean import AnswerCheckConfig, CleanConfig, clean
from mathforge.quality.dedup import ExactDedup, NearDedup
from mathforge.record import Lineage, Record
from mathforge.simdata import simulated_records

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST = ["max_tokens=0", "answer_check.grader=strict"]  # no tokenizer load: these tests are about the chain


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    """600 simulated rows: planted exact and near duplicates, some MATH-test overlap."""
    path = tmp_path_factory.mktemp("sim") / "sim.jsonl"
    write_records(path, simulated_records(600, data_dir=DATA))
    return path


def cfg(**kw) -> CleanConfig:
    return CleanConfig(**{"max_tokens": 0, "answer_check": AnswerCheckConfig(grader="strict"), "shard_rows": 150,
                          "workers": 1, **kw})


def output_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "data").iterdir())}


def test_verdicts_equal_todays_filters_row_for_row(sim, tmp_path):
    report = clean(sim, tmp_path / "out", cfg(), data_dir=DATA)
    dropped = {r.id: r.meta["rejected"] for r in read_records(tmp_path / "out" / "rejects" / "filter")}
    sink = []
    stream = read_records(tmp_path / "out" / "work" / "scan")  # the rows decontamination kept
    for flt in (ExactDedup(), NearDedup()):
        stream = apply_filter(stream, flt, FilterStats(flt.name), type("S", (), {"write": lambda s, r: sink.append(r)})())
    list(stream)
    expected = {r.id: r.meta["rejected"] for r in sink}
    assert {i: d["filter"] for i, d in dropped.items()} == {i: d["filter"] for i, d in expected.items()}
    assert {i: d["reason"].split(" (")[0] for i, d in dropped.items()} == \
           {i: d["reason"].split(" (")[0] for i, d in expected.items()}  # the same kept row is named
    planted = {r.id: r.meta["sim"]["kind"] for r in read_records(sim)}
    assert any(planted[i] == "near" for i, d in dropped.items() if d["filter"] == "dedup_near")
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["decontam"]["seen"] == report["rows_in"] == 600
    assert report["rows_out"] == len(list(read_records(report["output"]))) == steps["select"]["kept"]
    assert all(s["seen"] - s["kept"] == sum(s["dropped"].values()) for s in report["steps"])


def test_rerun_is_keyed_by_config(sim, tmp_path):
    out = tmp_path / "out"
    first = clean(sim, out, cfg(), data_dir=DATA)
    markers = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*.done.json")}
    assert clean(sim, out, cfg(), data_dir=DATA) == first  # unchanged: nothing runs
    assert {p: p.stat().st_mtime_ns for p in markers} == markers
    (out / "report.json").unlink()
    (out / "work" / "select" / "part-00002.done.json").unlink()
    (out / "data" / "part-00002.jsonl").unlink()
    again = clean(sim, out, cfg(), data_dir=DATA)  # one finished shard lost: only it runs again
    assert again["rows_out"] == first["rows_out"]
    redone = out / "work" / "select" / "part-00002.done.json"
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items() if p != redone)
    smaller = clean(sim, out, cfg(select=dataclasses.replace(cfg().select, budget=100)), data_dir=DATA)
    assert smaller["rows_out"] == 100 and len(list(read_records(out / "data"))) == 100


def test_answer_check_annotates_by_default_and_drops_on_request(tmp_path):
    seed = Record(id="s1", source="math", problem="What is 2+3?", solution="2+3=5\nThe answer is 5", answer="5")
    rows = [Record(id=f"r{i}", source="math", problem=f"Tom has {i} apples and buys 2+3 more; how many now? {i}",
                   solution=f"He buys 5 more, so {i} + 5.\nThe answer is {i + 5 if i % 2 else 99}",
                   lineage=Lineage(seed_id="s1", method="metamath/fobar"), meta={"synth": {"expected": str(i + 5)}})
            for i in range(10)]
    write_records(tmp_path / "seeds.jsonl", [seed])
    write_records(tmp_path / "rows.jsonl", rows)
    kept = clean(tmp_path / "rows.jsonl", tmp_path / "a", cfg(near_dedup=False), data_dir=DATA,
                 seeds=tmp_path / "seeds.jsonl")
    assert kept["rows_out"] == 10 and kept["answer_check"]["disagree"] == 5 and kept["answer_check"]["agree"] == 5
    assert all("answer_check" in r.meta for r in read_records(kept["output"]))
    dropping = dataclasses.replace(cfg(near_dedup=False), answer_check=AnswerCheckConfig(mode="drop", grader="strict"))
    dropped = clean(tmp_path / "rows.jsonl", tmp_path / "d", dropping, data_dir=DATA)
    assert dropped["rows_out"] == 5 and dropped["answer_check"]["disagree"] == 5
    assert {s["name"]: s["dropped"] for s in dropped["steps"]}["answer_check"] == {"wrong_answer": 5}


def test_cli_json_and_errors(sim, tmp_path):
    result = CliRunner().invoke(app, ["clean", str(sim), "--out", str(tmp_path / "o"), "--json", *FAST,
                                      "shard_rows=200", "workers=1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"rows_in", "rows_out", "output", "steps"} and summary["rows_in"] == 600
    assert [s["name"] for s in summary["steps"]][-1] == "select"
    import datasets

    assert len(datasets.load_dataset("json", data_dir=summary["output"], split="train")) == summary["rows_out"]
    (tmp_path / "empty.jsonl").write_text("")
    for args, message in ((["clean", str(tmp_path / "empty.jsonl")], "no records"),
                          (["clean", str(sim), "matchers=[bigram]"], "clean.matchers: unknown matcher(s) bigram"),
                          (["clean", str(sim), "answer_check.mode=maybe"], "annotate, drop or off")):
        bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), *FAST])
        assert bad.exit_code != 0 and message in " ".join(bad.output.split()), bad.output


def test_resume_after_sigkill_is_byte_identical(sim, tmp_path):
    """A real `mathforge clean` process killed with SIGKILL once a shard finished, then rerun."""
    args = [sys.executable, "-m", "mathforge.cli", "clean", str(sim), *FAST, "shard_rows=50", "workers=1"]
    whole = tmp_path / "whole"
    subprocess.run([*args, "--out", str(whole)], check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(killed)], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    while proc.poll() is None and not (killed / "work" / "scan" / "part-00003.jsonl").exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in (killed / "work").rglob("*.done.json")}
    assert 3 <= len(done) < 12  # killed inside the scan phase (12 shards): each finished shard was marked at once
    subprocess.run([*args, "--out", str(killed)], check=True, capture_output=True)
    assert output_bytes(killed) == output_bytes(whole)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished shards were not redone


def test_ray_executor_is_byte_identical(sim, tmp_path):
    pytest.importorskip("ray")
    import ray

    local = clean(sim, tmp_path / "local", cfg(), data_dir=DATA)
    try:
        on_ray = clean(sim, tmp_path / "ray", cfg(executor="ray", workers=2), data_dir=DATA)
    finally:
        ray.shutdown()
    assert output_bytes(tmp_path / "ray") == output_bytes(tmp_path / "local")
    assert on_ray["steps"] == local["steps"]


def test_single_step_commands_are_the_chain_with_one_phase_on(sim, tmp_path):
    """`mathforge check` and `select --strategy random` run clean()'s phases: a rerun of the chain's
    own phase in one file, the rejects beside it, the work folder gone, the report the card reads."""
    from mathforge.quality.select import SelectConfig
    from mathforge.quality.steps import run_check, run_select

    rows = list(read_records(sim))
    data = tmp_path / "data.jsonl"
    write_records(data, [*rows, *(dataclasses.replace(r, id=f"bare/{r.id}", solution="No final line.") for r in rows[:3])])
    report = run_check(data, tmp_path / "ck.jsonl", max_tokens=0, shard_rows=150, workers=1)
    (answer_line,) = report["filters"]
    kept, removed = read_records(tmp_path / "ck.jsonl"), read_records(tmp_path / "ck.removed.jsonl")
    assert answer_line["filter"] == "format" and answer_line["kept"] == len(list(kept)) > 0
    assert [r.meta["rejected"]["filter"] for r in removed] == ["format"] * answer_line["dropped"]
    assert answer_line["dropped"] >= 3 and answer_line["seen"] == len(rows) + 3
    assert json.loads((tmp_path / "ck.report.json").read_text())["filters"] == report["filters"]
    chosen = run_select(sim, tmp_path / "sel.jsonl", SelectConfig(budget=100, seed=3), shard_rows=150, workers=1)
    ids = [r.id for r in read_records(tmp_path / "sel.jsonl")]
    order = {r.id: i for i, r in enumerate(read_records(sim))}
    assert chosen["selection"]["selected"] == len(ids) == 100 and ids == sorted(ids, key=order.get)
    assert not (tmp_path / "ck.jsonl.work").exists() and not (tmp_path / "sel.jsonl.work").exists()


def test_hard_selection_in_the_chain_takes_hard_rows_first_then_the_hardest_and_is_the_same_over_any_sharding(
        sim, tmp_path):
    from mathforge.quality.select import SelectConfig, difficulty, is_hard

    def chosen(shard_rows: int, budget: int) -> tuple[list[Record], list[Record]]:
        out = tmp_path / f"hard-{shard_rows}-{budget}"
        clean(sim, out, cfg(shard_rows=shard_rows, select=SelectConfig(strategy="hard", budget=budget, seed=5)),
              data_dir=DATA)
        return list(read_records(out / "data")), list(read_records(out / "work" / "filter"))

    for budget in (40, 260):
        picked, offered = chosen(150, budget)
        assert len(picked) == budget
        ids = {r.id for r in picked}
        hard = [r for r in offered if is_hard(r)]
        assert 40 < len(hard) < 260  # one budget below the hard rows, one above
        if budget < len(hard):
            assert all(is_hard(r) for r in picked)
        else:  # every hard row, then the hardest of the rest
            assert {r.id for r in hard} <= ids
            rest_in = [difficulty(r) for r in picked if not is_hard(r)]
            rest_out = [difficulty(r) for r in offered if r.id not in ids]
            assert min(rest_in) >= max(rest_out)
        assert {r.id for r in chosen(1000, budget)[0]} == ids  # one shard or four: the same rows
    with pytest.raises(ValueError, match="clean.select.strategy 'coreset': the cleaning chain selects random or hard"):
        cfg(select=SelectConfig(strategy="coreset"))
