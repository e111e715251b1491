import json
import math
import re

import numpy as np
import pytest

from mathforge.fits import Fit, fit_log_linear, fit_power_law
from mathforge.io import read_rows, write_records
from mathforge.record import Record
from mathforge.scale import (
    ScaleConfig,
    analyse,
    completed,
    config_hash,
    leave_largest_out,
    nested_subsets,
    run_jobs,
    stages_for,
    study,
    sweep,
)
from mathforge.scale_report import write_reports
from mathforge.stats import replicate_means

SIZES = [100, 200, 400, 800, 1_600, 3_200]


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
    accs = [0.1 + 0.05 * math.log10(s) for s in SIZES]
    fit = fit_log_linear(SIZES, accs)
    assert (fit.a, fit.b, fit.r2) == pytest.approx((0.1, 0.05, 1.0))
    assert fit.size_for(fit.predict(2_000_000)) == pytest.approx(2_000_000)
    assert Fit(a=0.0, b=1e-6, r2=1.0).size_for(0.9) == math.inf  # 10**900000 overflows: never
    with pytest.raises(ValueError):
        fit_log_linear([10, 10], [0.1, 0.2])


def test_power_law_fit_recovers_parameters():
    accs = [0.9 - 3.0 * s ** -0.4 for s in SIZES]
    fit = fit_power_law(SIZES, accs)
    assert (fit.ceiling, fit.k, fit.alpha) == pytest.approx((0.9, 3.0, 0.4), rel=1e-3)
    assert fit.size_for(fit.predict(5_000)) == pytest.approx(5_000, rel=1e-3)
    assert fit.size_for(0.95) == math.inf  # above the ceiling: never


def _matrices(truth, items=400, seeds=3, seed=0):
    """Simulated 0/1 results: item i is right when its difficulty is below the size's accuracy."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(items)
    noise = rng.normal(0, 0.02, size=(len(SIZES), seeds, 1))  # seed-to-seed variation
    return {s: (difficulty[None, :] < truth(s) + noise[i]).astype(float) for i, s in enumerate(SIZES)}


def test_analyse_intervals_cover_a_known_curve():
    def truth(n):
        return 0.85 - 4.0 * n ** -0.45

    out = analyse(_matrices(truth), dict.fromkeys(SIZES, [1, 2, 3]), n_boot=300, target=0.6)
    pts = out["points"]
    assert pts[-1]["lo"] > pts[0]["hi"]  # the curve rises beyond its noise
    assert sum(p["lo"] <= truth(p["size"]) <= p["hi"] for p in pts) >= 5
    power = out["fits"]["power_law"]
    assert power["params"]["ceiling"]["lo"] <= 0.85 <= power["params"]["ceiling"]["hi"] + 0.05
    line = out["fits"]["log_linear"]
    assert line["params"]["b"]["lo"] > 0  # the slope's interval excludes 0
    size = power["size_for_target"]
    assert size["lo"] < (4.0 / 0.25) ** (1 / 0.45) < size["hi"] * 1.5


def test_leave_largest_out_catches_a_bent_curve():
    matrices = _matrices(lambda n: 0.85 - 4.0 * n ** -0.45)
    sizes = sorted(matrices)
    means = np.array([matrices[s].mean() for s in sizes])
    reps = np.stack([replicate_means(matrices[s], 300, seed=0) for s in sizes])
    line = leave_largest_out("log_linear", sizes, means, reps)
    power = leave_largest_out("power_law", sizes, means, reps)
    # The saturating law predicts the held-out size better than the straight line, which overshoots.
    assert abs(power["error"]["estimate"]) < abs(line["error"]["estimate"])
    assert line["error"]["estimate"] > 0
    assert power["covered"] is True and power["measured"] == pytest.approx(means[-1])


def _row(size, seed, acc, items=60):
    correct = [int(i < acc * items) for i in range(items)]
    return {"accuracy": {}, "items": {"mini": {"ids": [f"q{i:03d}" for i in range(items)],
                                               "level": [1 + i % 3 for i in range(items)],
                                               "subject": ["arithmetic"] * items,
                                               "correct": {"symbolic": correct, "strict": correct}}}}


def test_sweep_resumes_keyed_by_size_seed_and_config(tmp_path):
    results = tmp_path / "scaling.jsonl"
    calls = []

    def run(size, seed, subset):
        calls.append((size, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed mid-sweep
        return _row(size, seed, 0.1 * math.log10(size))

    subsets = {10: tmp_path / "a", 100: tmp_path / "b"}
    with pytest.raises(KeyboardInterrupt):
        sweep(subsets, [1, 2], "cfgA", results, run, log=lambda _: None)
    assert list(completed(results)) == ["n100-s1-cfgA", "n10-s1-cfgA"]  # seed-major, largest first
    rows = sweep(subsets, [1, 2], "cfgA", results, run, log=lambda _: None)
    assert calls == [(100, 1), (10, 1), (100, 2), (100, 2), (10, 2)]
    assert [(r["size"], r["seed"]) for r in rows] == [(10, 1), (10, 2), (100, 1), (100, 2)]
    sweep(subsets, [1, 2], "cfgB", results, run, log=lambda _: None)  # another config: all rerun
    assert len(calls) == 9
    assert len(results.read_text().splitlines()) == 8


def test_run_jobs_pins_threads_in_worker_processes_and_raises_failures():
    import operator

    import torch

    assert list(run_jobs(torch.get_num_threads, [(), ()])) == [((), torch.get_num_threads())] * 2  # inline
    # Two workers take the first two jobs; the failing third starts only when one of them is done.
    threads = []
    with pytest.raises(ValueError, match="invalid literal"):
        for _, result in run_jobs(operator.call, [(torch.get_num_threads,)] * 2 + [(int, "x")], workers=2, threads=3):
            threads.append(result)
    assert threads and set(threads) == {3}


def test_a_killed_study_leaves_no_worker_running():
    """SIGKILL of the driver takes its workers with it: none goes on training on its own, racing the
    rerun that resumes the study."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    code = ("import operator, os, time\nfrom mathforge.scale import run_jobs\n"
            "for _, r in run_jobs(operator.call, [(os.getpid,), (time.sleep, 120)], workers=1, threads=1):\n"
            "    print(r, flush=True)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = psutil.Process(int(driver.stdout.readline()))  # the worker now sleeps in its second job
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if worker.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    else:
        worker.kill()
        pytest.fail("the worker outlived its killed driver")


def test_guess_floor_answers_each_level_with_its_most_common_training_answer(tmp_path):
    from mathforge.eval.run import EvalStage
    from mathforge.scale import guess_floor
    from mathforge.scale_report import meaning
    from mathforge.sources import load

    data = tmp_path / "train.jsonl"
    write_records(data, load("mini:train?levels=1-3&size=600&seed=0"))
    bench = "mini:test?levels=1-3&per_level=50"
    floor = guess_floor(data, ScaleConfig(eval=EvalStage(limit=None)), bench)  # every item, as evaluation sees them
    train, test = list(load("mini:train?levels=1-3&size=600&seed=0")), list(load(bench + "&allow_test=1"))
    for level in (1, 2, 3):
        answers = [r.answer for r in train if r.level == level]
        modes = [a for a in set(answers) if answers.count(a) == max(map(answers.count, answers))]  # ties: any of them
        scores = [np.mean([r.answer == m for r in test if r.level == level]) for m in modes]
        assert any(floor["by_level"][str(level)] == pytest.approx(x) for x in scores)
    assert floor["accuracy"] == pytest.approx(np.mean(list(floor["by_level"].values()))) and floor["accuracy"] > 0
    low = max(floor["accuracy"], 0.05)  # a mean under the floor (or 5%) is not informative
    points = [{"size": n, "mean": m, "lo": m - 0.01, "hi": m + 0.01} for n, m in ((10, low - 0.005), (100, 0.3))]
    text = " ".join(meaning("mini", {"points": points, "guess_floor": floor}))
    assert f"scores {100 * floor['accuracy']:.1f}%" in text and "1 of 2 sizes are informative" in text


def test_min_steps_is_one_floor_for_every_size():
    from pathlib import Path

    from mathforge.train.config import StageConfig, TrainConfig

    train = TrainConfig(stages=(StageConfig("sft", "from-sweep", epochs=8),), global_batch=8)
    floor = ScaleConfig(min_steps=300, train=train)
    epochs = {n: stages_for(floor, n, Path("subset.jsonl"))[0].epochs for n in (32, 200, 300, 3200)}
    assert epochs == {32: 75, 200: 12, 300: 8, 3200: 8}  # 300 steps of 8 samples, or 8 epochs if more
    assert {stages_for(ScaleConfig(train=train), n, Path("s"))[0].epochs for n in (32, 3200)} == {8}
    assert stages_for(floor, 32, Path("subset.jsonl"))[0].dataset == "subset.jsonl"
    assert config_hash(floor) != config_hash(ScaleConfig(train=train))


def test_config_hash_sees_training_changes_but_not_sizes():
    base = ScaleConfig()
    assert config_hash(base) == config_hash(ScaleConfig(sizes=(1, 2), train_seeds=(7,), n_boot=10))
    from dataclasses import replace

    stage = replace(base.train.stages[0], lr=1e-3) if base.train.stages else None
    changed = replace(base, train=replace(base.train, max_length=128, stages=(stage,) if stage else ()))
    assert config_hash(changed) != config_hash(base)


def test_study_writes_json_markdown_html_and_plots(tmp_path):
    rows = [{"key": f"n{s}-s{seed}-x", "size": s, "seed": seed, "train_steps": max(s, 300), "seconds": 10.0,
             **_row(s, seed, min(0.9, 0.15 * math.log2(s / 50) + 0.02 * seed))}
            for s in SIZES for seed in (1, 2, 3)]
    rows.pop()  # a study still running: the largest size has two seeds so far
    result = study(rows, ScaleConfig(metric="symbolic", n_boot=200, target=0.7))
    entry = result["benchmarks"]["mini"]
    assert [p["size"] for p in entry["points"]] == SIZES
    assert list(entry["points"][-1]["per_seed"]) == ["1", "2"]
    assert set(entry["by_level"]) == {"1", "2", "3"} and entry["by_subject"] == {}
    write_reports(result, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "leave-largest-out" in text and "power_law" in text and "level" in text
    assert "informative" in text
    assert "100: 300 steps, 10 s a run; 200: 300 steps" in text and "3200: 3200 steps" in text
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") == 2
    assert not re.search(r"<script|<link|(src|href)=[\"']https?:", html)  # nothing loads from a network
    assert (tmp_path / "scaling.png").stat().st_size > 10_000 and (tmp_path / "levels.png").exists()
    json.dumps(result)  # rows and study are plain JSON


def test_mathforge_scale_end_to_end_with_an_absolute_benchmark_path(tmp_path):
    """A real (tiny) sweep: train, evaluate on a benchmark named by absolute file path (this used to
    crash building the eval folder), write every output; a rerun trains nothing."""
    import subprocess
    import sys

    from mathforge.sources import load

    bench = tmp_path / "bench" / "mini_test.jsonl"
    write_records(bench, load("mini:test?levels=1-2&per_level=6&allow_test=1"))
    recipe = tmp_path / "scale.yaml"
    recipe.write_text(f"""
data: "mini:train?levels=1-2&size=40&seed=0"
sizes: [10, 20, 40]
train_seeds: [1]
metric: strict
n_boot: 50
train:
  stages: [{{name: sft, dataset: from-sweep, epochs: 1, lr: 3.0e-3}}]
  student: {{model: tiny, vocab_size: 300, hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 2, num_kv_heads: 1}}
  prompt_style: plain
  max_length: 128
  packing: false
  global_batch: 8
  micro_batch: 8
  max_steps: 2
eval:
  benchmarks: ["{bench}"]
  settings: {{max_tokens: 16, prompt_style: plain, graders: [strict]}}
  engine: {{backend: hf, batch_size: 16}}
""")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mathforge.cli", "scale", str(recipe), "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    for name in ("scaling.json", "scaling.jsonl", "report.md", "report.html", "scaling.png", "levels.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "scaling.json").read_text())
    points = result["benchmarks"][str(bench)]["points"]
    assert [p["size"] for p in points] == [10, 20, 40] and all(p["n_items"] == 12 for p in points)
    assert len(result["runs"]) == 3
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    assert (out / "logs" / "run.log").read_text().count("scale: run") == 3  # all from the first run
    assert len((out / "scaling.jsonl").read_text().splitlines()) == 3


def test_report_says_when_the_power_law_has_no_ceiling_in_sight():
    from mathforge.scale_report import _fit_md

    def fit(ceiling):
        iv = {"estimate": ceiling, "lo": ceiling - 0.05, "hi": min(1.0, ceiling + 0.05), "never": 0}
        one = {"estimate": 1.0, "lo": 0.5, "hi": 2.0, "never": 0}
        return {"formula": "acc", "r2": 0.9, "largest": 100, "replicates": 10, "failed_replicates": 0,
                "params": {"ceiling": iv, "k": one, "alpha": one}, "size_for_target": one, "gain_from_doubling": one}

    assert any("no saturation" in line for line in _fit_md("power_law", fit(1.0), 0.5))
    assert not any("no saturation" in line for line in _fit_md("power_law", fit(0.85), 0.5))
