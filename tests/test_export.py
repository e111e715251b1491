"""Export: a `datasets`-loadable folder (Parquet shards + JSONL) with a generated card."""

import dataclasses
import json
from pathlib import Path

import pytest

from mathforge.filters import FilterStats, apply_filter
from mathforge.quality.export import export
from mathforge.quality.formatcheck import AnswerLineFilter, load_tokenizer
from mathforge.quality.matchers import Decontaminator
from mathforge.quality.select import SelectConfig, select
from mathforge.record import derive
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def pipeline():
    """A small real run: MATH train seeds and derived samples -> format -> decontam -> select."""
    seeds = list(load(f"math:{DATA}/math/math_train.jsonl"))[::19][:400]  # every subject and level
    samples = [derive(s, problem=s.problem, method="metamath/answer_aug", stage="stage1",
                      solution=s.solution + (f"\nThe answer is {s.answer}" if i % 5 else ""), answer=s.answer,
                      teacher="smollm2") for i, s in enumerate(seeds)]
    fmt = FilterStats("format")
    formatted = list(apply_filter(samples, AnswerLineFilter(), fmt))
    dc = Decontaminator({"math_test": list(load(f"math:{DATA}/math/math_test.jsonl?allow_test=1"))})  # the default matchers
    dstats = FilterStats(dc.name)
    clean = list(apply_filter(formatted, dc, dstats))
    chosen = select(clean + seeds[:50], SelectConfig(strategy="random", budget=250, seed=0))
    reports = [{"filters": [fmt.to_dict()]},
               {"filters": [dstats.to_dict()], "decontam": dc.removals.to_dict()},
               {"selection": chosen.report}]
    return chosen.records, reports


def test_export_is_loadable_by_datasets_and_the_card_tells_the_story(tmp_path, pipeline):
    import datasets

    records, reports = pipeline
    summary = export(records, tmp_path / "ds", name="tiny-mathqa", shard_rows=100, reports=reports,
                     tokenizer=load_tokenizer(), tokenizer_name="smollm2")
    assert summary["shards"] == ["data/train-00000.parquet", "data/train-00001.parquet", "data/train-00002.parquet"]
    ds = datasets.load_dataset(str(tmp_path / "ds"), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == len(records) == 250
    assert ds[0]["id"] == records[0].id and json.loads(ds[0]["meta"]) == records[0].meta
    assert ds[0]["text_response"].rstrip().endswith(f"The answer is {records[0].answer}")
    lines = (tmp_path / "ds" / "jsonl" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 250
    card = (tmp_path / "ds" / "README.md").read_text()
    fmt = reports[0]["filters"][0]
    reasons = ", ".join(f"{k}: {v}" for k, v in fmt["dropped_by_reason"].items())
    assert fmt["dropped_by_reason"]["no_answer_line"] >= 70  # every fifth sample lost its answer line
    assert f"| format | {fmt['seen']} | {fmt['kept']} | {fmt['dropped']} | {reasons} |" in card
    assert "## Decontamination" in card and "math_test (5000 items)" in card
    assert "`math-ngram`: 30 math-aware tokens" in card and "`masked-ngram`: the problem with every number masked: 50" in card
    assert "| metamath/answer_aug |" in card and "| seed |" in card
    assert "Strategy `random`, budget 250" in card
    assert "## Token statistics" in card and summary["tokens"]["max"] > summary["tokens"]["median"] > 0
    assert card.startswith("---\n") and "path: data/train-*.parquet" in card


def test_reexport_replaces_old_shards(tmp_path, pipeline):
    records, _ = pipeline
    export(records, tmp_path / "ds", shard_rows=50)
    export(records[:30], tmp_path / "ds", shard_rows=50)
    assert sorted(p.name for p in (tmp_path / "ds" / "data").iterdir()) == ["train-00000.parquet"]
    import datasets

    # datasets 5.x keys its cache of a local folder by the README's file pattern, not the files:
    # a re-export at the same path needs a forced reload (the card says so)
    again = datasets.load_dataset(str(tmp_path / "ds"), split="train", download_mode="force_redownload",
                                  cache_dir=str(tmp_path / "cache"))
    assert len(again) == 30


def test_cli_decontam_dedup_check_select_export(tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli import app

    run = CliRunner().invoke
    seeds = tmp_path / "seeds.jsonl"
    assert run(app, ["seeds", f"math:{DATA}/math/math_train.jsonl?limit=600", "--out", str(seeds)]).exit_code == 0
    against = ["--against", f"math:{DATA}/math/math_test.jsonl?name=math_test",
               "--against", f"gsm8k:{DATA}/gsm8k/test.jsonl?name=gsm8k_test"]
    res = run(app, ["decontam", str(seeds), *against, "--n", "30", "--out", str(tmp_path / "clean.jsonl")])
    assert res.exit_code == 0, res.output
    removed = [json.loads(x) for x in (tmp_path / "clean.removed.jsonl").read_text().splitlines()]
    assert removed and all("test/" in r["meta"]["decontam"]["test_id"] and r["meta"]["decontam"]["matcher"]
                           for r in removed)
    res = run(app, ["dedup", str(tmp_path / "clean.jsonl"), "--out", str(tmp_path / "dd.jsonl"), "--threshold", "0.9"])
    assert res.exit_code == 0, res.output
    res = run(app, ["select", str(tmp_path / "dd.jsonl"), "--strategy", "hard", "--budget", "50",
                    "--out", str(tmp_path / "sel.jsonl")])
    assert res.exit_code == 0, res.output
    reports = [str(tmp_path / f"{s}.report.json") for s in ("clean", "dd", "sel")]
    res = run(app, ["export", str(tmp_path / "sel.jsonl"), "--out", str(tmp_path / "ds"), "--tokenizer", "",
                    *[x for r in reports for x in ("--report", r)]])
    assert res.exit_code == 0, res.output
    card = (tmp_path / "ds" / "README.md").read_text()
    assert f"| decontam | 600 | {600 - len(removed)} | {len(removed)} |" in card
    assert "| dedup_near |" in card and "Strategy `hard`, budget 50" in card
    res = run(app, ["check", str(seeds), "--max-tokens", "0", "--out", str(tmp_path / "checked.jsonl")])
    report = json.loads((tmp_path / "checked.report.json").read_text())
    assert res.exit_code == 0 and report["filters"][0]["seen"] == 600
    assert report["filters"][0]["dropped_by_reason"]["no_answer_line"] >= 590  # MATH writes \boxed{}, not the line
    bad = run(app, ["decontam", str(seeds), "--against", "math:/nonexistent.jsonl", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 1 and "nonexistent" in bad.output


def test_card_token_counts_come_from_the_length_step_when_it_counted_the_same_text(tmp_path, pipeline):
    from mathforge.quality.formatcheck import LengthFilter

    records = pipeline[0][:40]
    counted = [r for r, _ in LengthFilter("smollm2", 4096).decide_batch(records)]
    tokenizer = load_tokenizer()
    fresh = export(records, tmp_path / "a", tokenizer=tokenizer, tokenizer_name="smollm2")["tokens"]
    reused = export(counted, tmp_path / "b", tokenizer=tokenizer, tokenizer_name="smollm2")["tokens"]
    assert reused == fresh  # the length step counts exactly the card's text
    # a planted count is read, not recomputed; a count by another tokenizer or style is not trusted
    planted = [dataclasses.replace(counted[0], meta={**counted[0].meta, "length": {**counted[0].meta["length"],
                                                                                  "tokens": 10**6}})]
    assert export(planted, tmp_path / "c", tokenizer=tokenizer, tokenizer_name="smollm2")["tokens"]["max"] == 10**6
    other = [dataclasses.replace(planted[0], meta={**planted[0].meta, "length": {**planted[0].meta["length"],
                                                                                "style": "chat"}})]
    assert export(other, tmp_path / "d", tokenizer=tokenizer, tokenizer_name="smollm2")["tokens"]["max"] < 10**6


def test_the_card_of_data_cleaned_without_decontamination_says_no_such_step():
    from mathforge.quality.export import _steps_section

    report = {"decontam": None, "selection": {"strategy": "random", "budget": 10, "selected": 3, "seen": 3,
                                              "before": {"mean_level": 2.0}, "after": {"mean_level": 2.0}}}
    text = "\n".join(_steps_section([report]))
    assert "## Decontamination" not in text and "3 of 3 rows kept" in text
