import json
import math

import pytest

from mathforge.io import read_rows, write_records
from mathforge.record import Record
from mathforge.scale import advice, completed, fit_log_linear, nested_subsets, report, sweep


def test_nested_subsets_are_nested_and_sized(tmp_path):
    data = tmp_path / "data.jsonl"
    write_records(data, (Record(id=str(i), source="s", problem=f"p{i}") for i in range(100)))
    paths = nested_subsets(data, [10, 40, 100, 500], tmp_path / "subsets", seed=1)
    ids = {s: [row["id"] for _, row in read_rows(p)] for s, p in paths.items()}
    assert sorted(ids) == [10, 40, 100]  # 500 is capped at the data size
    assert [len(v) for v in ids.values()] == [10, 40, 100]
    assert set(ids[10]) <= set(ids[40]) <= set(ids[100])
    again = nested_subsets(data, [10], tmp_path / "again", seed=1)
    assert [row["id"] for _, row in read_rows(again[10])] == ids[10]


def test_log_linear_fit_recovers_line():
    sizes = [7_500, 60_000, 360_000, 1_000_000]
    accs = [0.1 + 0.05 * math.log10(s) for s in sizes]
    fit = fit_log_linear(sizes, accs)
    assert fit.b == pytest.approx(0.05) and fit.r2 == pytest.approx(1.0)
    assert fit.size_for(fit.predict(2_000_000)) == pytest.approx(2_000_000)
    tip = advice(fit, 1_000_000, cost_per_sample=0.01)
    assert tip["gain_per_doubling"] == pytest.approx(0.05 * math.log10(2))
    with pytest.raises(ValueError):
        fit_log_linear([10, 10], [0.1, 0.2])


def test_sweep_resumes_and_report_renders(tmp_path):
    results = tmp_path / "scaling.jsonl"
    calls = []

    def run(size, subset):
        calls.append(size)
        if size == 40 and len(calls) == 2:
            raise KeyboardInterrupt  # killed mid-sweep
        acc = 0.1 * math.log10(size)
        return {"accuracy": {"gsm8k": {"strict": acc, "symbolic": acc}},
                "by_level": {"1": {"symbolic": acc}}, "by_subject": {"Algebra": {"symbolic": acc}}}

    subsets = {10: tmp_path / "a", 40: tmp_path / "b", 100: tmp_path / "c"}
    with pytest.raises(KeyboardInterrupt):
        sweep([10, 40, 100], subsets, results, run)
    assert list(completed(results)) == [10]
    rows = sweep([10, 40, 100], subsets, results, run)
    assert calls == [10, 40, 40, 100] and [r["size"] for r in rows] == [10, 40, 100]
    text = report(rows, tmp_path)
    assert "| 100 | 20.0 |" in text and "doubling the data adds" in text
    assert (tmp_path / "report.md").exists()
    assert [json.loads(line)["size"] for line in results.read_text().splitlines()] == [10, 40, 100]
