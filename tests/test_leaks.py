"""Leak generators for the decontamination audit: what they plant, and that they stand apart from the matchers."""

import ast
import random
from pathlib import Path

import pytest

from mathforge.quality import leaks
from mathforge.quality.leaks import (
    LEAKS,
    SPAN_TOKENS,
    paraphrase,
    plant,
    plant_leaks,
    sibling_key,
    swap_numbers,
)
from mathforge.record import Record

HOST = Record(id="h1", source="math", problem="Let $y = 3$. Find $y^2$.", solution="We get $y^2 = \\boxed{9}$.")
LONG = Record(id="t1", source="math", problem="What is the smallest positive integer $n$ such that $3n + 4$ is a "
              "multiple of 7? Suppose that $n$ is greater than 10, and find the total of its digits.",
              solution=" ".join(f"step{i} $x_{i} + {i}$," for i in range(30)))


@pytest.mark.parametrize("a, b, siblings", [
    ("What is $f(12)-f(2)?$", "What is $f(3) - f(7)$?", True),
    ("Compute $\\dbinom{8}{4}$.", "compute $\\dbinom{10}{2}$", True),
    ("Compute $\\dbinom{8}{4}$.", "Compute $\\dbinom{8}{4}$ twice.", False),
])
def test_sibling_key_ignores_numbers_spacing_and_markup(a, b, siblings):
    assert (sibling_key(a) == sibling_key(b)) is siblings


def test_swap_numbers_changes_every_number_and_keeps_the_rest():
    text = "A shop sells 12 pens for $3 and 0.5 kg of tea for $1,250."
    swapped = swap_numbers(random.Random(1), text)
    assert sibling_key(swapped) == sibling_key(text)
    olds, news = [w for w in text.split() if any(c.isdigit() for c in w)], \
        [w for w in swapped.split() if any(c.isdigit() for c in w)]
    assert len(olds) == len(news) and all(o != n for o, n in zip(olds, news, strict=True))


def test_paraphrase_edits_prose_but_never_the_mathematics():
    rng = random.Random(3)
    text = LONG.problem
    out = paraphrase(rng, text)
    assert out != text and "determine" in out.lower() and "whole number" in out.lower()
    assert out.lower().startswith("assume")  # the question's facts came first: now the question does
    assert sorted(out.split("$")[1::2]) == sorted(text.split("$")[1::2])


def test_each_kind_plants_what_it_says(tmp_path):
    rng = random.Random(0)
    short = Record(id="t2", source="math", problem="Compute $\\dbinom{8}{4}$.", solution="$70$")
    row = plant(rng, "short", HOST, short, "math_test")
    assert row.problem == short.problem and row.solution == HOST.solution
    assert row.meta["leak"] == {"kind": "short", "set": "math_test", "test_id": "t2", "text": short.problem}
    assert plant(rng, "short", HOST, LONG, "math_test") is None  # not short
    span = plant(rng, "span", HOST, LONG, "math_test")
    text = span.meta["leak"]["text"]
    assert len(text.split()) == SPAN_TOKENS and text in LONG.problem + " " + LONG.solution
    assert text in span.problem or text in span.solution
    assert plant(rng, "span", HOST, short, "math_test") is None  # too short for a span
    swapped = plant(rng, "swapped", HOST, LONG, "gsm8k_test")
    assert swapped.problem != LONG.problem and sibling_key(swapped.problem) == sibling_key(LONG.problem)
    rewritten = plant(rng, "paraphrase", HOST, LONG, "math_test", rewrite=str.upper)
    assert rewritten.problem == LONG.problem.upper()


def test_plant_leaks_uses_each_host_once_and_says_when_it_cannot():
    hosts = [Record(id=f"h{i}", source="math", problem=f"Problem {i}.", solution="s") for i in range(30)]
    rows = plant_leaks(random.Random(0), hosts, {"math_test": [LONG]}, "swapped", 20)
    assert len({r.id for r in rows}) == 20 and all(r.meta["leak"]["kind"] == "swapped" for r in rows)
    with pytest.raises(ValueError, match="could plant only 0 'short' leaks of 5"):
        plant_leaks(random.Random(0), hosts, {"math_test": [LONG]}, "short", 5)
    assert set(LEAKS) == {"short", "span", "swapped", "paraphrase"}


def test_generators_share_no_code_with_the_matchers():
    tree = ast.parse(Path(leaks.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and ("decontam" in m or "matchers" in m or "dedup" in m)}
