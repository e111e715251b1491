import pytest

from mathforge.arms import Arm, ArmsConfig, compare, html_blocks, markdown
from mathforge.config import load_config
from mathforge.train.config import StageConfig

ITEMS = 200


def _row(seed, fixes_level):
    """Arm rows: items of levels 1-4; the base answers even items right, fixes turn some levels' odd ones right."""
    level = [1 + (i // 2) % 4 for i in range(ITEMS)]  # each level: half even, half odd items
    correct = [int(i % 2 == 0 or level[i] in fixes_level) for i in range(ITEMS)]
    return {"seed": seed, "items": {"mini": {"ids": [f"q{i:03d}" for i in range(ITEMS)], "level": level,
                                             "subject": [None] * ITEMS, "correct": {"strict": correct}}}}


def test_compare_reports_per_level_intervals_and_paired_differences():
    rows = {"two_stage": [_row(1, {4}), _row(2, {4})], "one_stage": [_row(1, set()), _row(2, set())]}
    result = compare(rows, "strict", n_boot=500)
    entry = result["benchmarks"]["mini"]
    diff = entry["difference"]
    assert diff["level 4"]["two_stage - one_stage"]["estimate"] == pytest.approx(0.5)
    assert diff["level 4"]["two_stage - one_stage"]["lo"] > 0.3
    assert diff["level 1"]["two_stage - one_stage"] == {"estimate": 0.0, "lo": 0.0, "hi": 0.0, "level": 0.95}
    assert diff["all"]["two_stage - one_stage"]["estimate"] == pytest.approx(0.125)
    assert entry["accuracy"]["level 4"]["two_stage"]["estimate"] == 1.0
    per_seed = entry["per_seed"]["level 4"]["two_stage vs one_stage"]  # B = two_stage, as `mathforge compare` says it
    assert [m["b_only"] for m in per_seed] == [25, 25] and all(m["p_value"] < 1e-6 for m in per_seed)
    assert {m["verdict"] for m in per_seed} == {"B better"}
    text = markdown(result)
    assert "| level 4 | 100.0 [100.0, 100.0] | 50.0" in text
    assert any("<svg" in b for b in html_blocks(result))


def test_recipe_arms_train_on_the_same_examples():
    from mathforge.arms import _examples_digest

    cfg = load_config(ArmsConfig, "recipes/two_stage_mini.yaml")
    digests = [_examples_digest(a) for a in cfg.arms]
    assert digests[0]["digest"] == digests[1]["digest"] and digests[0]["examples"] == 2_000
    assert len(cfg.eval.benchmarks) == 1 and "per_level=200" in cfg.eval.benchmarks[0]


def test_arms_need_two_distinct_names():
    arm = Arm("a", (StageConfig("s", "x.jsonl"),))
    with pytest.raises(ValueError, match="two or more"):
        ArmsConfig(arms=(arm, arm))


def test_mathforge_arms_end_to_end(tmp_path):
    """Real (tiny) training of both arms and evaluation on the same items; a rerun trains nothing."""
    import json
    import subprocess
    import sys

    recipe = tmp_path / "arms.yaml"
    recipe.write_text("""
arms:
  - name: two_stage
    stages:
      - {name: easy, dataset: "mini:train?levels=1-3&size=30&seed=0", epochs: 1, lr: 3.0e-3}
      - {name: hard, dataset: "mini:train?levels=4-5&size=20&seed=0", epochs: 1, lr: 3.0e-3}
  - name: one_stage
    stages:
      - {name: union, dataset: "mini:train?levels=1-5&size=50&seed=0", epochs: 1, lr: 3.0e-3}
metric: strict
n_boot: 100
train:
  student: {model: tiny, vocab_size: 300, hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 2, num_kv_heads: 1}
  prompt_style: plain
  max_length: 128
  packing: false
  global_batch: 8
  micro_batch: 8
  max_steps: 2
eval:
  benchmarks: ["mini:test?levels=1-5&per_level=4"]
  limit: null
  settings: {max_tokens: 16, prompt_style: plain, graders: [strict]}
  engine: {backend: hf, batch_size: 32}
""")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mathforge.cli", "arms", str(recipe), "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads((out / "comparison.json").read_text())
    entry = result["benchmarks"]["mini:test?levels=1-5&per_level=4"]
    assert list(entry["accuracy"]) == ["all", *[f"level {i}" for i in range(1, 6)]]
    assert result["examples"]["two_stage"]["digest"] == result["examples"]["one_stage"]["digest"]
    assert "<svg" in (out / "report.html").read_text()
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=600).returncode == 0
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and [r["ran"] for r in rows[2:]] == [[], []]  # the rerun trains nothing
