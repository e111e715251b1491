import random
import re
from collections import Counter

import pytest

from mathforge import mini
from mathforge.answers import answer_line
from mathforge.io import DataError
from mathforge.sources import RefusedTestSplit, load

STEP = re.compile(r"(\d+) ([-+×]) (\d+) = (\d+)\.")


def _check_worked(problem: str, solution: str, answer: str) -> int:
    """Every step's arithmetic is right, steps chain from the quantity stated first, the last result
    is the answer; returns #steps."""
    steps = STEP.findall(solution)
    prev = int(re.search(r"\d+", problem).group())
    for x, op, b, y in steps:
        x, b, y = int(x), int(b), int(y)
        assert y == {"+": x + b, "-": x - b, "×": x * b}[op] and y >= 0
        assert x == prev
        prev = y
    assert str(prev) == answer
    return len(steps)


def test_every_level_yields_exact_worked_solutions():
    records = list(load("mini:train?levels=1-5&size=500&seed=3"))
    assert [r.level for r in records[:5]] == [1, 2, 3, 4, 5]  # round-robin: any prefix is balanced
    for r in records:
        assert _check_worked(r.problem, r.solution, r.answer) == mini.LEVELS[r.level].steps
        assert answer_line(r.solution) == r.answer
    assert len({r.problem for r in records}) == 500
    assert {r.level for r in records if "×" in r.solution} == {5}
    assert all(r.solution == f"The answer is {r.answer}" for r in records if r.level == 1)


def test_train_and_test_are_disjoint_by_exact_text():
    test = {r.problem for r in load("mini:test?levels=1-5&per_level=1000&allow_test=1")}
    train = [r.problem for r in load("mini:train?levels=1-5&size=5000&seed=0")]
    assert len(test) == 5 * mini.TEST_POOL
    assert not test & set(train)


def test_test_sets_are_fixed_prefixes_and_refused_as_seeds():
    small = [r.problem for r in load("mini:test?levels=2&per_level=50&allow_test=1")]
    big = [r.problem for r in load("mini:test?levels=2&per_level=200&allow_test=1")]
    assert small == big[:50]
    with pytest.raises(RefusedTestSplit):
        list(load("mini:test?levels=2"))


def test_staged_subsets_are_the_union():
    # The two-stage recipe relies on this: levels 1-3 plus levels 4-5 are exactly levels 1-5.
    easy = {r.problem for r in load("mini:train?levels=1-3&size=300&seed=0")}
    hard = {r.problem for r in load("mini:train?levels=4-5&size=200&seed=0")}
    union = {r.problem for r in load("mini:train?levels=1-5&size=500&seed=0")}
    assert easy | hard == union and not easy & hard


def test_space_size_counts_every_problem(monkeypatch):
    # A small world where sampling can reach every problem: the count must match exactly.
    monkeypatch.setattr(mini, "NAMES", ("Ana", "Ben"))
    monkeypatch.setattr(mini, "ITEMS", ("coins",))
    monkeypatch.setitem(mini.LEVELS, 9, mini.Knobs(steps=2, digits_max=3, ops="+-*"))
    mini.space_size.cache_clear()
    mini.answer_odds.cache_clear()
    rng = random.Random(0)
    seen = {mini.make_problem(9, rng)[0] for _ in range(60_000)}
    assert len(seen) == mini.space_size(9)  # flattening the answers loses no problem
    mini.space_size.cache_clear()
    mini.answer_odds.cache_clear()


def test_answers_are_flattened_so_guessing_scores_little():
    # The plain draw gives level 2's answer 0 a 9% share and level 1's 10 an 11% share; flattened,
    # no answer is much more common than 1 / (the level's distinct answers).
    rng = random.Random(5)
    for level in mini.LEVELS:
        odds = mini.answer_odds(level)
        assert abs(sum(odds.values()) - 1) < 1e-9
        answers = Counter(mini.make_problem(level, rng)[2] for _ in range(6000))
        assert answers.most_common(1)[0][1] / 6000 < 1.5 / len(odds) + 0.01, level
        if mini.LEVELS[level].steps:  # so the plain draw would have failed the line above
            assert max(odds.values()) > 1.4 / len(odds)


def test_too_much_training_data_for_a_level_is_refused():
    limit = mini.space_size(1) // mini.SPACE_RATIO
    with pytest.raises(DataError, match="level 1"):
        list(load(f"mini:train?levels=1&size={limit + 1}"))
    with pytest.raises(DataError, match="unknown level"):
        list(load("mini:train?levels=0-2"))
    with pytest.raises(DataError, match="unknown split"):
        list(load("mini:dev"))
