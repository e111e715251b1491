"""Sampled evaluation: pass@k against the closed form, maj@k tie-breaks, intervals over items, and
`mathforge grade --group-field` on 8 samples per problem against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.eval.sampled import default_ks, maj_at_k, majority, pass_at_k, score
from mathforge.stats import interval

runner = CliRunner()

# (n, c, k): small, edge (c = 0, c = n, n - c < k) and large enough that the factorials overflow floats
PASS_CASES = [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (5, 2, 4), (8, 3, 4), (10, 0, 10), (10, 10, 1),
              (16, 1, 8), (100, 7, 10), (200, 3, 100), (2000, 37, 64), (4000, 1, 1000)]


def closed_form(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(("n", "c", "k"), PASS_CASES)
def test_pass_at_k_matches_the_closed_form(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(closed_form(n, c, k), rel=1e-9, abs=1e-12)


def test_pass_at_1_is_the_share_correct_and_pass_at_n_is_any_correct() -> None:
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    assert pass_at_k(8, 1, 8) == 1.0 and pass_at_k(8, 0, 8) == 0.0


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, 2, 5), (4, 2, 0), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


# (extracted answers, index of the majority's first sample)
MAJORITY = [
    (["3", "5", "3", "5"], 0),  # tie: the answer seen first wins
    (["5", "3", "3", "5"], 0),
    (["1", "2", "2"], 1),
    ([None, "", "7"], 2),  # samples without an answer do not vote
    ([None, None], None),
    (["\\frac{1}{4}", "\\frac14", "0.25", "0.25"], 0),  # normalised before counting: \frac14 == \frac{1}{4}
    (["0.25", "\\frac{1}{4}", "\\dfrac14"], 1),
]


@pytest.mark.parametrize(("answers", "expected"), MAJORITY)
def test_majority_with_deterministic_ties(answers: list, expected: int | None) -> None:
    assert majority(answers) == expected


def sample(extracted: str | None, correct: bool, level: int | None = None) -> dict:
    return {"level": level, "verdicts": {"g": {"extracted": extracted, "correct": correct}}}


def test_maj_at_k_uses_the_first_k_samples() -> None:
    item = [sample("1", False), sample("2", True), sample("2", True), sample("1", False), sample("1", False)]
    assert maj_at_k(item, "g", 1) == 0.0
    assert maj_at_k(item, "g", 3) == 1.0  # "2" twice among the first three
    assert maj_at_k(item, "g", 5) == 0.0  # "1" three times among five


def test_metric_intervals_are_a_bootstrap_over_items() -> None:
    items = [[sample("1", True), sample("1", True)], [sample("2", False), sample("1", True)],
             [sample("2", False), sample("2", False)]]
    out = score(items, ["g"], [1, 2])
    assert out["pass@1"]["g"]["estimate"] == pytest.approx(0.5)
    assert out["pass@2"]["g"]["estimate"] == pytest.approx(2 / 3)
    assert out["avg@2"]["g"] == out["pass@1"]["g"]
    assert out["pass@2"]["g"] == interval([1.0, 1.0, 0.0]).to_dict()  # per-item values, resampled over items
    lo, hi = out["pass@2"]["g"]["lo"], out["pass@2"]["g"]["hi"]
    assert lo < 2 / 3 < hi and lo >= 0 and hi <= 1
    constant = score([[sample("1", True)]] * 4, ["g"], [1])["pass@1"]["g"]
    assert constant["lo"] == constant["hi"] == 1.0


def test_items_must_share_their_sample_count_and_k_fit_it() -> None:
    with pytest.raises(ValueError, match="same number of samples"):
        score([[sample("1", True)], [sample("1", True)] * 2], ["g"], [1])
    with pytest.raises(ValueError, match="k must be in 1..2"):
        score([[sample("1", True)] * 2], ["g"], [4])


def test_default_ks() -> None:
    assert default_ks(1) == [1] and default_ks(8) == [1, 2, 4, 8] and default_ks(6) == [1, 2, 4, 6]


# ---------------------------------------------------------------- the grade command

# problem -> (gold, level, the 8 sampled answers)
PROBLEMS = {
    "p1": ("5", 1, ["3", "5", "3", "7", "5", "5", "3", "1"]),  # 3 right; 3 and 5 tie, 3 came first
    "p2": ("2", 1, ["1"] * 8),  # never right
    "p3": ("\\frac{1}{4}", 2, ["\\frac{1}{4}", "\\frac{1}{4}", "0.25", "0.25", "0.25", "4", "4", "4"]),
}


def write_samples(path: Path) -> None:
    lines = [{"problem_id": pid, "id": f"{pid}-{i}", "answer": gold, "level": level,
              "response": f"Some work.\nThe answer is {a}"}
             for pid, (gold, level, answers) in PROBLEMS.items() for i, a in enumerate(answers)]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_grade_group_field_reproduces_hand_computed_pass_and_maj(tmp_path: Path) -> None:
    src, out = tmp_path / "samples.jsonl", tmp_path / "verdicts.jsonl"
    write_samples(src)
    res = runner.invoke(app, ["grade", str(src), "--out", str(out), "--group-field", "problem_id", "--k", "1,4,8",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    assert summary["samples_per_item"] == 8 and summary["items_sampled"] == 3
    est = {m: {g: summary[m][g]["estimate"] for g in ("strict", "symbolic")} for m in ("pass@1", "pass@8", "maj@8")}
    # strict: p1 3/8 right, p2 none, p3 2/8 (it rejects 0.25 for 1/4); its p3 majority is 0.25 (tie with 4, first)
    assert est["pass@1"]["strict"] == pytest.approx((3 / 8 + 0 + 2 / 8) / 3)
    assert est["pass@8"]["strict"] == pytest.approx(2 / 3)
    assert est["maj@8"]["strict"] == pytest.approx(0.0)
    # symbolic: p3 5/8 right and its majority 0.25 is right
    assert est["pass@1"]["symbolic"] == pytest.approx((3 / 8 + 0 + 5 / 8) / 3)
    assert est["pass@8"]["symbolic"] == pytest.approx(2 / 3)
    assert est["maj@8"]["symbolic"] == pytest.approx(1 / 3)
    assert summary["pass@4"]["strict"]["estimate"] == pytest.approx((1 - 5 / 70 + 0 + 1 - 15 / 70) / 3)
    for g in ("strict", "symbolic"):
        assert summary["avg@8"][g]["estimate"] == pytest.approx(summary["pass@1"][g]["estimate"])
    assert set(summary["sampled_by_level"]) == {"1", "2"} and summary["sampled_by_level"]["1"]["n"] == 2
    assert summary["sampled_by_level"]["2"]["maj@8"]["symbolic"]["estimate"] == 1.0
    assert "maj@8" in res.output and "pass@4" in res.output


def test_grade_group_field_errors_name_the_file(tmp_path: Path) -> None:
    src = tmp_path / "samples.jsonl"
    write_samples(src)
    res = runner.invoke(app, ["grade", str(src), "--out", str(tmp_path / "v.jsonl"), "--group-field", "problem_id",
                              "--k", "16", "--no-progress"])
    assert res.exit_code == 1 and "samples.jsonl" in res.output and "k must be in 1..8" in res.output
    res = runner.invoke(app, ["grade", str(src), "--out", str(tmp_path / "v.jsonl"), "--group-field", "nope",
                              "--no-progress"])
    assert res.exit_code == 1 and "samples.jsonl:1" in res.output and "'nope'" in res.output
    res = runner.invoke(app, ["grade", str(src), "--out", str(tmp_path / "v.jsonl"), "--group-field", "problem_id",
                              "--k", "1,four"])
    assert res.exit_code == 1 and "--k must be comma-separated" in res.output


# ---------------------------------------------------------------- the eval command, sampled

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_eval_samples_k_solutions_per_item_with_smollm2(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    out = tmp_path / "sampled"
    args = ["eval", "--backend", "llama", "--model", "smollm2", "-b", "gsm8k", "--data-dir", str(DATA),
            "--limit", "3", "--max-tokens", "12", "--samples", "4", "--temperature", "0.9", "--out", str(out),
            "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["sample"] for r in rows] == [0, 1, 2, 3] * 3 and len({r["id"] for r in rows}) == 3
    assert len({r["response"] for r in rows[:4]}) > 1  # seeded samples differ
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["samples_per_item"] == 4 and summary["ks"] == [1, 2, 3, 4]
    for metric in ("pass@1", "pass@2", "pass@3", "pass@4", "maj@3", "maj@4", "avg@4"):
        assert set(summary[metric]) == {"strict", "symbolic"}
    for g in ("strict", "symbolic"):
        right = sum(r["verdicts"][g]["correct"] for r in rows)
        assert summary["avg@4"][g]["estimate"] == pytest.approx(right / 12)
    assert summary["engine"]["calls"] == 12
    assert "Sampled: 4 samples per item" in (out / "summary.md").read_text()
    again = runner.invoke(app, args)  # the same samples come back from the cache
    assert again.exit_code == 0
    assert json.loads((out / "summary.json").read_text())["engine"]["cached"] == 12
    assert [json.loads(x)["response"] for x in (out / "samples.jsonl").read_text().splitlines()] == \
        [r["response"] for r in rows]


def test_eval_samples_without_temperature_is_an_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval", "-b", "gsm8k", "--data-dir", str(DATA), "--samples", "4", "--out",
                              str(tmp_path / "x")])
    assert res.exit_code == 1 and "temperature > 0" in res.output
