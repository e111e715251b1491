"""`mathforge compare`: paired difference, exact McNemar verdict and detectable difference on known
cases, from eval folders and from per-row verdict files; mismatched runs are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.eval.compare import compare, paired
from mathforge.stats import min_detectable_difference

runner = CliRunner()


def eval_folder(path: Path, correct: list[int], levels: list[int], ids: list[str] | None = None) -> Path:
    """An eval folder as `mathforge eval` writes it (the per-item columns of summary.json)."""
    path.mkdir(parents=True)
    ids = ids or [f"q{i}" for i in range(len(correct))]
    items = {"ids": ids, "level": levels, "subject": ["algebra"] * len(ids),
             "correct": {"strict": correct, "symbolic": correct}}
    (path / "summary.json").write_text(json.dumps({"items": items}))
    return path


def runs(n: int = 200, gained: int = 20, lost: int = 2) -> tuple[list[int], list[int], list[int]]:
    a = [1] * (n // 2) + [0] * (n - n // 2)
    b = list(a)
    for i in range(lost):
        b[i] = 0
    for i in range(gained):
        b[n // 2 + i] = 1
    levels = [1 + i % 5 for i in range(n)]
    return a, b, levels


def test_paired_counts_the_discordant_items_and_tests_them_exactly() -> None:
    a, b, _ = runs()
    r = paired(a, b)
    assert (r["b_only"], r["a_only"]) == (20, 2)
    assert r["p_value"] == pytest.approx(binomtest(2, 22, 0.5).pvalue)
    assert r["difference"]["estimate"] == pytest.approx(18 / 200)
    assert 0 < r["difference"]["lo"] < 18 / 200 < r["difference"]["hi"]
    assert r["verdict"] == "B better" and paired(b, a)["verdict"] == "A better"
    assert r["discordant_rate"] == pytest.approx(22 / 200)
    assert r["min_detectable"] == pytest.approx(min_detectable_difference(22 / 200, 200))


def test_equal_runs_show_no_difference() -> None:
    a, _, _ = runs()
    r = paired(a, a)
    assert r["p_value"] == 1.0 and r["verdict"] == "no difference shown" and r["difference"]["estimate"] == 0


def test_min_detectable_difference_known_value() -> None:
    # (z_.975 + z_.8) * sqrt(0.08 / 1319) = 2.8016 * 0.0077879
    assert min_detectable_difference(0.08, 1319) == pytest.approx(0.021818, abs=2e-6)
    assert min_detectable_difference(0.08, 4 * 1319) == pytest.approx(0.021818 / 2, abs=2e-6)


def test_compare_command_on_eval_folders_in_any_item_order(tmp_path: Path) -> None:
    a, b, levels = runs()
    fa = eval_folder(tmp_path / "a", a, levels)
    order = np.random.default_rng(0).permutation(len(b))  # B lists the same items in another order
    fb = eval_folder(tmp_path / "b", [b[i] for i in order], [levels[i] for i in order], [f"q{i}" for i in order])
    out = tmp_path / "cmp.json"
    res = runner.invoke(app, ["compare", str(fa), str(fb), "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["graders"] == ["strict", "symbolic"]
    assert result["strict"]["all"]["b_only"] == 20 and result["strict"]["all"]["verdict"] == "B better"
    assert set(result["strict"]["by_level"]) == {"1", "2", "3", "4", "5"}
    assert sum(r["n"] for r in result["strict"]["by_level"].values()) == 200
    assert result["strict"]["by_level"]["1"]["b_only"] == sum(1 for i in range(100, 120) if i % 5 == 0)
    assert "B better" in res.output and "level 3" in res.output and out.with_suffix(".md").exists()


def test_compare_reads_per_row_verdict_files(tmp_path: Path) -> None:
    a, b, levels = runs()
    for name, col in (("a", a), ("b", b)):  # samples.jsonl rows; a sampled run's other samples are skipped
        rows = [{"id": f"q{i}", "sample": s, "level": levels[i], "verdicts": {"strict": {"correct": bool(c) ^ bool(s)}}}
                for i, c in enumerate(col) for s in (0, 1)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = compare(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert result["strict"]["all"]["b_only"] == 20 and result["strict"]["all"]["a_only"] == 2


def test_runs_on_different_items_are_a_clear_error(tmp_path: Path) -> None:
    a, b, levels = runs()
    fa = eval_folder(tmp_path / "a", a, levels)
    fb = eval_folder(tmp_path / "b", b[:150], levels[:150], [f"q{i}" for i in range(150)])
    res = runner.invoke(app, ["compare", str(fa), str(fb)])
    assert res.exit_code == 1 and "not on the same items" in res.output and "50 only in" in res.output
    res = runner.invoke(app, ["compare", str(fa), str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no such run" in res.output
    (tmp_path / "broken.json").write_text("{not json")
    res = runner.invoke(app, ["compare", str(fa), str(tmp_path / "broken.json")])
    assert res.exit_code == 1 and "broken.json: not" in res.output
