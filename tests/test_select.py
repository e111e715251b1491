"""Selection strategies on real MATH train rows: budgets, determinism, and before/after distributions."""

from pathlib import Path

import pytest

from mathforge.quality.select import SelectConfig, is_hard, select
from mathforge.record import annotate
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def rows():
    return list(load(f"math:{DATA}/math/math_train.jsonl"))[::10]  # 750 rows, every subject and level


@pytest.mark.parametrize("strategy", ["random", "hard", "verifier"])
def test_budget_determinism_and_input_order(rows, strategy):
    marked = [annotate(r, "answer_check", {"correct": i % 3 != 0}) for i, r in enumerate(rows)]
    a = select(marked, SelectConfig(strategy=strategy, budget=100, seed=1))
    b = select(marked, SelectConfig(strategy=strategy, budget=100, seed=1))
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert len(a.records) == 100 and a.report["selected"] == 100 and a.report["seen"] == len(rows)
    positions = {r.id: i for i, r in enumerate(rows)}
    assert [positions[r.id] for r in a.records] == sorted(positions[r.id] for r in a.records)
    assert a.report["before"]["total"] == len(rows) and a.report["after"]["total"] == 100


def test_hard_selection_raises_difficulty_and_prefers_judged_hard(rows):
    judged = [annotate(r, "difficulty", {"score": 5, "hard": True}) if r.level == 1 and i % 2 else r
              for i, r in enumerate(rows)]
    sel = select(judged, SelectConfig(strategy="hard", budget=200, seed=0))
    assert sel.report["after"]["mean_level"] > sel.report["before"]["mean_level"]
    assert all(is_hard(r) for r in sel.records)
    judged_hard = [r for r in judged if (r.meta.get("difficulty") or {}).get("hard")]
    assert sel.report["hard_available"] == sum(is_hard(r) for r in judged) >= len(judged_hard)
    by_level = select(judged, SelectConfig(strategy="hard", budget=50, hard_by="level"))
    assert all(r.level >= 4 for r in by_level.records)


def test_verifier_selection_takes_only_verified_and_shows_lower_difficulty(rows):
    # a verifier that passes easy problems more often: the paper's finding in miniature
    marked = [annotate(r, "verifier", {"correct": (r.level or 5) <= 2 or i % 4 == 0}) for i, r in enumerate(rows)]
    sel = select(marked, SelectConfig(strategy="verifier", budget=10_000))
    assert all(r.meta["verifier"]["correct"] for r in sel.records)
    assert sel.report["verified"]["passed"] == len(sel.records)
    assert sel.report["after"]["mean_level"] < sel.report["before"]["mean_level"]


def test_random_budget_larger_than_data_and_bad_config(rows):
    assert len(select(rows[:10], SelectConfig(budget=50)).records) == 10
    with pytest.raises(ValueError, match="unknown selection strategy"):
        select(rows, SelectConfig(strategy="best"))
    with pytest.raises(ValueError, match="hard_by"):
        select(rows, SelectConfig(strategy="hard", hard_by="vibes"))


def test_coreset_selection_on_real_embeddings(rows):
    pool = rows[:120]
    sel = select(pool, SelectConfig(strategy="coreset", budget=20, seed=0))
    assert len(sel.records) == 20 and len({r.id for r in sel.records}) == 20
    coverage = sel.report["coverage"]  # k-center greedy covers the pool better than its first centre
    assert coverage["after"]["max_dist"] < coverage["before"]["max_dist"]
