"""Every command that reads a user's file, fed a bad one: a clear one-line error naming the file,
never a traceback. A table: (command, case) -> the command line and the file it gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathforge.cli import app

ROW = {"problem": "What is 2 + 3?", "solution": "2 + 3 = 5.\nThe answer is 5", "answer": "5"}
GRADE_ROW = {"id": "q1", "response": "The answer is 5", "answer": "5"}
VERDICTS_ROW = {"id": "q1", "verdicts": {"strict": {"correct": True}}}
# What a half-written or mistyped file holds, per family of input.
WRONG_TYPE = {"records": {**ROW, "problem": 5}, "grade": {**GRADE_ROW, "response": 5},
              "verdicts": {**VERDICTS_ROW, "verdicts": 5}, "train": "micro_batch: abc\n",
              "run": "eval:\n  limit: abc\n", "scale": "workers: abc\n", "synth": "evol_max_steps: abc\n"}
GOOD = {"records": ROW, "grade": GRADE_ROW, "verdicts": VERDICTS_ROW}
CASES = ("missing", "folder", "empty", "corrupt", "wrong_type")
# Cases with a correct result: a template renders a number as text (a dry run sends nothing).
SUCCEEDS = {("generate", "wrong_type")}


def _records_args(command: str, *extra: str):
    return lambda f, t: [command, str(f), "--out", str(t / "o.jsonl"), *extra]


# command -> (input family, argv builder(file, tmp dir))
COMMANDS = {
    "seeds": ("records", _records_args("seeds")),
    "seeds jsonl:": ("records", lambda f, t: ["seeds", f"jsonl:{f}", "--out", str(t / "o.jsonl")]),
    "clean": ("records", lambda f, t: ["clean", str(f), "--out", str(t / "c"), "max_tokens=0",
                                       "answer_check.grader=strict"]),
    "decontam": ("records", lambda f, t: ["decontam", str(f), "--out", str(t / "o.jsonl"),
                                          "--against", f"jsonl:{t / 'eval.jsonl'}"]),
    "dedup": ("records", _records_args("dedup", "--exact-only")),
    "check": ("records", _records_args("check", "--max-tokens", "0")),
    "select": ("records", _records_args("select", "--budget", "1")),
    "export": ("records", lambda f, t: ["export", str(f), "--out", str(t / "e"), "--tokenizer", ""]),
    "generate": ("records", lambda f, t: ["generate", "-i", str(f), "-t", "solve", "-o", str(t / "g.jsonl"), "--dry-run",
                                          "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]),
    "grade": ("grade", _records_args("grade", "--graders", "strict", "--no-progress")),
    "compare": ("verdicts", lambda f, t: ["compare", str(t / "good.jsonl"), str(f)]),
    "train": ("train", lambda f, t: ["train", str(f), "--out", str(t / "r"), "--prepare-only"]),
    "run": ("run", lambda f, t: ["run", str(f), "--out", str(t / "r")]),
    "scale": ("scale", lambda f, t: ["scale", str(f), "--out", str(t / "r"), "--report-only"]),
    "plan": ("synth", lambda f, t: ["plan", str(f), "--out", str(t / "r")]),
    "synth": ("synth", lambda f, t: ["synth", str(f), "--out", str(t / "r")]),
}


def bad_file(tmp: Path, family: str, case: str) -> Path:
    """The bad input of `case` for a command reading `family`, in a folder with a long name."""
    recipe = family not in GOOD
    path = tmp / ("a-rather-long-folder-name-" * 4) / ("input.yaml" if recipe else "input.jsonl")
    path.parent.mkdir(parents=True)
    good = "seed: 1\n" if recipe else json.dumps(GOOD[family]) + "\n"
    wrong = WRONG_TYPE[family]
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_text("")
    elif case == "corrupt":  # a writer killed mid-line
        path.write_text(good + ("stages: [{name: a" if recipe else '{"problem": "What is 2'))
    elif case == "wrong_type":
        path.write_text(wrong if recipe else json.dumps(wrong) + "\n")
    return path


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_is_a_one_line_error_naming_the_file(tmp_path: Path, command: str, case: str) -> None:
    family, argv = COMMANDS[command]
    (tmp_path / "eval.jsonl").write_text(json.dumps({**ROW, "problem": "An unrelated test problem."}) + "\n")
    (tmp_path / "good.jsonl").write_text(json.dumps(VERDICTS_ROW) + "\n")
    path = bad_file(tmp_path, family, case)
    result = CliRunner().invoke(app, argv(path, tmp_path))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if (command, case) in SUCCEEDS:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code != 0, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0], result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "locked.jsonl"
    path.write_text(json.dumps(ROW) + "\n")
    path.chmod(0)
    result = CliRunner().invoke(app, ["dedup", str(path), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code != 0 and f"error: {path}: not readable" in result.output


def test_error_stays_one_line_on_a_narrow_terminal(tmp_path: Path) -> None:
    missing = tmp_path / ("a-rather-long-folder-name-" * 6) / "missing.jsonl"
    env = {**os.environ, "COLUMNS": "40"}
    out = subprocess.run([sys.executable, "-m", "mathforge.cli", "seeds", f"jsonl:{missing}", "--out",
                          str(tmp_path / "o.jsonl")], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [f"error: {missing}: no such file"]


def test_plain_rows_are_cleaned_with_the_ids_seeds_gives_them(tmp_path: Path) -> None:
    from mathforge.io import read_records

    data, tests = tmp_path / "plain.jsonl", tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"problem": f"Ana has {i} shells and finds {i * 7 + 3} more. How many now?",
                                        "solution": f"{i} + {i * 7 + 3} = {i * 8 + 3}.\nThe answer is {i * 8 + 3}",
                                        "answer": str(i * 8 + 3)}) + "\n" for i in range(3)))
    tests.write_text(json.dumps({"problem": "How many sides has a cube?", "solution": "6", "answer": "6"}) + "\n")
    runner = CliRunner()
    seeded = runner.invoke(app, ["seeds", str(data), "--out", str(tmp_path / "s.jsonl")])
    assert seeded.exit_code == 0, seeded.output
    cleaned = runner.invoke(app, ["clean", str(data), "--out", str(tmp_path / "c"), "max_tokens=0",
                                  "answer_check.grader=strict", f"against=[{tests}]"])
    assert cleaned.exit_code == 0, cleaned.output
    ids = ["plain/0", "plain/1", "plain/2"]
    assert [r.id for r in read_records(tmp_path / "s.jsonl")] == ids
    assert sorted(r.id for r in read_records(tmp_path / "c" / "data")) == ids
