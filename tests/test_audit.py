"""The decontamination audit on real data: leaks planted into MATH train, GSM8K + MATH test as the evaluation sets."""

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.quality.audit import BASELINE, _kept_at, audit, audit_rows
from mathforge.quality.leaks import LEAKS, plant_leaks
from mathforge.quality.matchers import EmbeddingMatcher
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def sets():
    return {"gsm8k_test": list(load(f"gsm8k:{DATA}/gsm8k/test.jsonl?allow_test=1")),
            "math_test": list(load(f"math:{DATA}/math/math_test.jsonl?allow_test=1"))}


@pytest.fixture(scope="module")
def train():
    return list(load(f"math:{DATA}/math/math_train.jsonl"))[:2500]


def test_audit_rows_are_unplanted_rows_and_leaks_on_distinct_hosts(sets, train):
    unplanted, planted = audit_rows(train, sets, clean=300, per_kind=40, seed=1)
    assert len(unplanted) == 300 and len(planted) == 40 * len(LEAKS)
    assert not any("leak" in r.meta for r in unplanted)
    hosts = [r.id for r in planted]
    assert len(set(hosts)) == len(hosts) and not set(hosts) & {r.id for r in unplanted}


def test_trade_off_table_shows_what_each_matcher_set_adds(sets, train):
    result = audit(train, sets, [("ngram",), ("math-ngram", "masked-ngram")], clean=300, per_kind=40, seed=2)
    today, words, ours = result["table"]
    assert today["matchers"] == BASELINE and words["matchers"] == "ngram"
    assert today["recall_short"] < 50 <= words["recall_short"] == 100
    assert ours["recall_span"] >= 97.5 and ours["recall_swapped"] == 100 and today["recall_swapped"] < 50
    assert ours["removed_siblings"] > today["removed_siblings"]
    assert ours["removed_not_siblings"] <= today["removed_not_siblings"] + 2


def test_a_threshold_sweep_from_the_lowest_threshold_equals_a_run_at_each(sets, train):
    small = {"gsm8k_test": sets["gsm8k_test"][:40], "math_test": sets["math_test"][:60]}
    rows = [*plant_leaks(random.Random(3), train[:200], small, "paraphrase", 20), *train[200:205]]
    matcher = EmbeddingMatcher(small, threshold=0.8)
    lowest = matcher.match(rows)
    assert sum(m is not None for m in lowest) >= 10
    for t in (0.9, 0.95):
        matcher.threshold = t
        assert [m if _kept_at(m, t) else None for m in lowest] == matcher.match(rows)


def test_decontam_audit_command_prints_and_writes_the_table(tmp_path, sets):
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(app, [
        "decontam-audit", "--train", f"math:{DATA}/math/math_train.jsonl", "--against",
        f"gsm8k:{DATA}/gsm8k/test.jsonl?name=gsm8k_test", "--against", f"math:{DATA}/math/math_test.jsonl?name=math_test",
        "--matchers", "math-ngram", "--clean", "200", "--leaks", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "decontamination audit" in result.output  # the table; its rows are read from the JSON
    table = json.loads(out.read_text())["table"]
    assert [row["matchers"] for row in table] == [BASELINE, "math-ngram"]
    bad = CliRunner().invoke(app, ["decontam-audit", "--train", f"math:{DATA}/math/math_train.jsonl",
                                   "--matchers", "trigram", "--against", f"math:{DATA}/math/math_test.jsonl"])
    assert bad.exit_code == 1 and "unknown matcher" in bad.output


def test_teacher_paraphrases_through_the_engine_and_its_cache(tmp_path):
    from mathforge.engine import Engine, EngineConfig
    from mathforge.quality.audit import teacher_rewrite

    problem = "Tom has 3 apples and buys 4 more. How many apples does he have now?"
    with Engine(EngineConfig(backend="llama", progress=False), cache_path=tmp_path / "cache.sqlite") as engine:
        rewrite = teacher_rewrite(engine)
        first = rewrite(problem)
        assert first.strip() and first == rewrite(problem)
        stats = engine.stats()
    assert stats["requests"] == 2 and stats["cached"] == 1
