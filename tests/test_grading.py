"""Graders: tables of (gold, prediction, expected) on real MATH and GSM8K answers, every case of the
paper's Appendix B, MetaMath's exact behaviours, and adversarial inputs that must come back in time."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mathforge.grading import GradingPool, extract, grade, grade_batch, same_answer
from mathforge.grading.strict import METAMATH, normalize
from mathforge.io import read_rows
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def math_gold() -> dict[str, str]:
    return {r.id: r.answer for r in load(f"math:{DATA / 'math' / 'math_test.jsonl'}?allow_test=1")}


@pytest.fixture(scope="module")
def gsm_gold() -> dict[str, str]:
    return {r.id: r.answer for r in load(f"gsm8k:{DATA / 'gsm8k' / 'test.jsonl'}?allow_test=1")}


# ---------------------------------------------------------------- the paper's Appendix B

# (gold, response): answers a person accepts; the strict grader rejects every one (that is the
# paper's point), the symbolic grader accepts every one.
APPENDIX_B = [
    ("0.24", "So the probability is 24 percent.\nThe answer is 24%"),
    ("\\sqrt{2},\\sqrt{3}", "The roots are found.\nThe answer is \\sqrt{3},\\sqrt{2}"),
    ("\\frac{2+\\sqrt{2}}{4}", "Adding up.\nThe answer is \\frac{1}{2}+\\frac{\\sqrt{2}}{4}"),
    ("\\text{odd}", 'f(-x) = -f(x).\nThe answer is \\"odd\\".'),
    ("1, 2", "Both work.\nThe correct answer is 1, 2"),
    ("19", "Counting them.\nThe correct answer is 19, but this is based on an assumption that the order matters."),
    ("2", "Solving the equation gives x = 2.\nThe value of x is 2"),
    ("24.01", "Squaring both sides.\nThe answer is x=\\frac{2401}{100}=24.01"),
]


@pytest.mark.parametrize(("gold", "response"), APPENDIX_B)
def test_appendix_b_strict_rejects_symbolic_accepts(gold: str, response: str) -> None:
    assert grade(gold, response, "strict").correct is False
    v = grade(gold, response, "symbolic")
    assert v.correct is True, v
    assert v.reason == "ok"


# ---------------------------------------------------------------- real MATH answers

# (MATH test id, response with {gold} filled in or a literal, strict, symbolic)
MATH_CASES = [
    ("test/algebra/1.json", "There are two.\nThe answer is {gold}", True, True),
    ("test/algebra/1.json", "There are two.\nThe answer is: {gold}.", True, True),
    ("test/algebra/1.json", "There are two.\nThe answer is $2$", False, True),  # strict keeps the $
    ("test/algebra/1.json", "So the answer is \\boxed{2}.", False, True),  # no answer line: strict finds none
    ("test/algebra/1.json", "There are two.\nThe answer is 3", False, False),
    ("test/algebra/1.json", "The answer is 2\nThe answer is 3", False, False),  # the last answer counts
    ("test/algebra/1031.json", "The answer is \\dfrac{11}{2}", True, True),  # dfrac -> frac
    ("test/algebra/1031.json", "The answer is \\frac{11}2", False, True),  # Hendrycks braces \frac1{2}, not \frac{1}2
    ("test/algebra/1031.json", "The answer is 11/2", True, True),  # a/b -> \frac{a}{b}
    ("test/algebra/1031.json", "The answer is 5.5", False, True),  # no arithmetic in strict
    ("test/algebra/1001.json", "The answer is \\frac{9}{7}", True, True),  # gold is \dfrac{9}{7}
    ("test/counting_and_probability/575.json", "The answer is 15600", False, True),  # gold "15,600"
    ("test/algebra/155.json", "The answer is \\$15,\\!000", True, True),  # gold "\$15,\!000"
    ("test/algebra/155.json", "The answer is 15000", False, True),
    ("test/algebra/1878.json", "The answer is -2, 1", True, True),  # gold "-2, 1"
    ("test/algebra/1878.json", "The answer is 1, -2", False, True),  # reordered roots
    ("test/algebra/1878.json", "The answer is -2", False, False),  # half the roots
    ("test/intermediate_algebra/1070.json", "The answer is \\text{odd}", True, True),
    ("test/intermediate_algebra/1070.json", "The answer is odd", False, True),
    ("test/intermediate_algebra/1070.json", "The answer is \\text{even}", False, False),
    ("test/geometry/102.json", "The answer is 39", True, True),  # gold 39^\circ: degrees dropped
    ("test/algebra/1818.json", "The answer is 9\\pi", True, True),
    ("test/algebra/1818.json", "The answer is 28.27", False, False),  # a decimal of 9pi is not 9pi
    ("test/algebra/1354.json", "The answer is (-\\infty, 0)", True, True),
    ("test/algebra/1354.json", "The answer is (-\\infty, 0]", False, False),  # open vs closed
    ("test/precalculus/1004.json", "The answer is \\begin{pmatrix} 6 \\\\ 3 \\\\ 0 \\end{pmatrix}", True, True),
    ("test/precalculus/1004.json", "The answer is \\begin{pmatrix} 6 \\\\ 0 \\\\ 3 \\end{pmatrix}", False, False),
    # a gold that ends in a period: the answer line loses its period, so strict can never match it
    ("test/intermediate_algebra/1289.json", "The answer is {gold}", False, True),
]


@pytest.mark.parametrize(("uid", "template", "strict", "symbolic"), MATH_CASES)
def test_real_math_answers(math_gold: dict[str, str], uid: str, template: str, strict: bool, symbolic: bool) -> None:
    gold = math_gold[uid]
    response = template.replace("{gold}", gold)
    assert grade(gold, response, "strict").correct is strict
    assert grade(gold, response, "symbolic").correct is symbolic


def test_every_math_test_answer_matches_itself(math_gold: dict[str, str]) -> None:
    pairs = [(g, f"Reasoning.\nThe answer is {g}") for g in math_gold.values() if g]
    assert len(pairs) == 5000
    strict = grade_batch(pairs, "strict")
    misses = [p[0] for p, v in zip(pairs, strict, strict=True) if not v.correct]
    assert misses == ["\\frac{7}{5} + \\frac{1}{5} i."]  # the one gold with a final period (above)
    assert all(v.correct for v in grade_batch(pairs, "symbolic"))


# ---------------------------------------------------------------- real GSM8K answers

# (GSM8K test id, response, strict, metamath, symbolic)
GSM_CASES = [
    ("gsm8k/test/0", "She makes 9 * 2 = 18 dollars.\nThe answer is 18", True, False, True),  # MetaMath needs ": "
    ("gsm8k/test/0", "She makes 18 dollars.\nThe answer is: 18", True, True, True),
    ("gsm8k/test/0", "The answer is: $18.00.", True, True, True),
    ("gsm8k/test/0", "The answer is: 18.4", False, True, False),  # MetaMath rounds to an integer
    ("gsm8k/test/0", "The answer is: 17", False, False, False),
    ("gsm8k/test/0", "The answer is: 36/2", True, True, True),
    ("gsm8k/test/0", "She makes 18 dollars a day.", False, False, True),  # last number, no answer line
    ("gsm8k/test/2", "The answer is: 70,000", True, True, True),
    ("gsm8k/test/2", "The answer is: 70000 dollars.", True, True, True),
    ("gsm8k/test/611", "The answer is: 1,450,000", True, False, True),  # MetaMath reads "1,450"
    ("gsm8k/test/611", "The answer is: 1450", False, False, False),
    ("gsm8k/test/489", "The answer is: -10", True, True, True),
    ("gsm8k/test/489", "The answer is: 10", False, False, False),
]


@pytest.mark.parametrize(("uid", "response", "strict", "metamath", "symbolic"), GSM_CASES)
def test_real_gsm8k_answers(gsm_gold, uid: str, response: str, strict: bool, metamath: bool, symbolic: bool) -> None:
    gold = gsm_gold[uid]
    assert grade(gold, response, "strict", "gsm8k").correct is strict
    assert grade(gold, response, "metamath", "gsm8k").correct is metamath
    assert grade(gold, response, "symbolic", "gsm8k").correct is symbolic


def test_gsm8k_gold_is_read_like_metamath(gsm_gold: dict[str, str]) -> None:
    """Our loader's gold equals MetaMath's `int(answer.split('#### ')[1].replace(',', ''))`, all 1,319."""
    rows = [row for _, row in read_rows(DATA / "gsm8k" / "test.jsonl")]
    theirs = [int(row["answer"].split("#### ")[1].replace(",", "")) for row in rows]
    ours = [gsm_gold[f"gsm8k/test/{i}"] for i in range(len(rows))]
    assert [int(g) for g in ours] == theirs
    verdicts = grade_batch([(g, f"The answer is: {t}") for g, t in zip(ours, theirs, strict=True)], "metamath", "gsm8k")
    assert all(v.correct for v in verdicts)


# ---------------------------------------------------------------- strict details

# (prediction, gold, equal after the Hendrycks normalisation)
NORMALISATION = [
    ("\\frac12", "\\frac{1}{2}", True),
    ("0.5", "\\frac{1}{2}", True),  # the one decimal the normalisation knows
    ("0.25", "\\frac{1}{4}", False),
    ("k = 5", "5", True),  # a short left-hand side is dropped
    ("xyz = 5", "5", False),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("5 \\text{ cm}", "5", True),  # units after "\text{ " are dropped
    ("50\\%", "50", True),
    ("50%", "50", False),  # only the escaped percent sign is dropped
    ("\\sqrt3", "\\sqrt{3}", True),
    (".5", "0.5", True),
    ("10,000", "10000", False),
]


@pytest.mark.parametrize(("pred", "gold", "equal"), NORMALISATION)
def test_hendrycks_normalisation(pred: str, gold: str, equal: bool) -> None:
    assert (normalize(pred) == normalize(gold)) is equal
    assert grade(gold, f"The answer is {pred}", "strict").correct is equal


# (gold, prediction, expected) for the fast comparison synthesis and verification use in hot loops
SAME_ANSWER = [
    ("0.5", "1/2", True),
    ("0.5", "\\frac12", True),
    ("\\frac14", "0.25", True),  # numbers as values, which the strict grader's strings are not
    ("10000", "10,000", True),
    ("10000", "10\\,000", True),
    ("3", "x = 3", True),
    ("72", "72.0", True),
    ("1000", "1,000", True),
    ("\\frac{1}{2}", "$\\dfrac{1}{2}$", True),
    ("-0.5", "-\\frac{1}{2}", True),
    ("5", "\\text{5}", True),
    ("5", "5 \\text{ cm}", True),
    ("3", "\\boxed{3}", True),
    ("90", "90^\\circ", True),
    ("(1,2)", "(1, 2)", True),
    ("\\sqrt3", "\\sqrt{3}", True),
    ("72", "71", False),
    ("0.24", "24%", False),  # the symbolic grader's job
    ("(1,2)", "(2,1)", False),
    ("1,2", "12", False),  # a list, not a thousands separator
    ("5", None, None),  # nothing to compare
    (None, "5", None),
    ("5", " ", None),
]


@pytest.mark.parametrize(("gold", "pred", "expected"), SAME_ANSWER)
def test_same_answer(gold: str | None, pred: str | None, expected: bool | None) -> None:
    assert same_answer(pred, gold) is expected


def test_same_answer_is_fast() -> None:
    pairs = [(g, p) for g, p, _ in SAME_ANSWER if g and p] * 200
    start = time.perf_counter()
    for gold, pred in pairs:
        same_answer(pred, gold)
    assert (time.perf_counter() - start) / len(pairs) < 1e-3  # math-verify: ~3 ms a pair


def test_normalisation_failure_falls_back_to_raw_equality() -> None:
    # two "\text{ " units make the normalisation raise; MetaMath then compares the raw strings
    odd = "5 \\text{ m} \\text{ s}"
    assert grade(odd, f"The answer is {odd}", "strict").correct
    assert not grade("5", f"The answer is {odd}", "strict").correct


def test_metamath_mode_keeps_lines_after_the_answer() -> None:
    response = "The answer is: 5\nI hope this helps"
    assert grade("5", response, "strict").correct  # ours stops at the end of the line
    assert not grade("5", response, "metamath").correct  # MetaMath keeps text up to ".\n"
    assert grade("5", "The answer is: 5.\nI hope this helps", "metamath").correct
    assert METAMATH.require_colon and METAMATH.gsm8k_metamath_numbers


# (response, grader, expected extraction)
EXTRACTIONS = [
    ("The answer is 5", "strict", "5"),
    ("The answer is: 5.", "strict", "5"),
    ("The answer is: \\frac{1}{2}.\nDone", "strict", "\\frac{1}{2}"),
    ("the answer is 5", "strict", None),  # the marker is case-sensitive, as in MetaMath
    ("The answer is 5", "metamath", None),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "symbolic", "\\frac{3}{4}"),
    ("We get $\\boxed{\\frac{3}{4}}$ in the end.", "symbolic", "\\frac{3}{4}"),
    ("The answer is $\\boxed{7}$.", "symbolic", "7"),
    ("She has 3 apples and buys 4, so 7 in total.", "symbolic", "7"),
    ("No numbers here.", "symbolic", None),
]


@pytest.mark.parametrize(("response", "grader", "expected"), EXTRACTIONS)
def test_extract(response: str, grader: str, expected: str | None) -> None:
    assert extract(response, grader) == expected


def test_unknown_grader_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown grader 'loose'"):
        grade("1", "The answer is 1", "loose")


# ---------------------------------------------------------------- bounded time, whatever the input

TIMEOUT_S = 1.0
SLACK_S = 6.0  # a replacement worker's start on a busy machine; far below an unbounded sympy call

ADVERSARIAL = [
    "The answer is 9^{9^{9^{9}}}",
    "The answer is 9^9^9^9",
    "The answer is " + "{" * 3000 + "1" + "}" * 3000,
    "The answer is " + "\\sqrt{" * 400 + "2" + "}" * 400,
    "The answer is " + "\\frac{1}{" * 300 + "2" + "}" * 300,
    "The answer is " + "9" * 10_000,
    "The answer is " + "x" * 10_000,
    "x" * 10_000,
    "(" * 10_000,
    "The answer is " + "1+" * 5_000 + "1",
    "The answer is \\boxed{" * 2_000,
    "The answer is 10^{10^{10}}!",
    "The answer is 5 " + "a" * 40 + "1",  # backtracking bait for the unit pattern
    "The answer is " + "1," * 5_000,
    "The answer is " + "value of x is " * 2_000,
]


@pytest.fixture(scope="module")
def pool():
    with GradingPool(workers=2, timeout_s=TIMEOUT_S) as p:
        p.wait_ready()
        yield p


@pytest.mark.parametrize("response", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_inputs_are_fast_for_the_string_graders(response: str) -> None:
    start = time.monotonic()
    extract(response, "symbolic")  # the parent extracts on timeouts: it must be fast too
    for benchmark in ("math", "gsm8k"):
        for grader in ("strict", "metamath"):
            assert grade("4", response, grader, benchmark).correct is False
    assert time.monotonic() - start < 0.5


def test_adversarial_inputs_get_symbolic_verdicts_within_the_bound(pool: GradingPool) -> None:
    pool.wait_ready()
    start = time.monotonic()
    verdicts = pool.grade([("4", r) for r in ADVERSARIAL])
    elapsed = time.monotonic() - start
    assert not any(v.correct for v in verdicts)
    assert {v.reason for v in verdicts} <= {"mismatch", "timeout", "unparsed", "no_answer", "error"}
    timeouts = sum(v.reason == "timeout" for v in verdicts)
    assert timeouts >= 2  # the power towers, at least
    # each timeout costs its bound plus, at worst, a replacement worker's start
    assert elapsed < len(ADVERSARIAL) * 0.5 + timeouts * (TIMEOUT_S + SLACK_S)


def test_huge_power_tower_is_a_timeout_verdict_and_the_pool_recovers(pool: GradingPool) -> None:
    pool.wait_ready()
    start = time.monotonic()
    [tower] = pool.grade([("5", "The answer is 9^{9^{9^{9}}}")])
    assert time.monotonic() - start < TIMEOUT_S + 1.0
    assert tower.reason == "timeout" and tower.extracted == "9^{9^{9^{9}}}"
    verdicts = pool.grade([("0.24", "The answer is 24%"), ("2", "The answer is 2")])
    assert [v.correct for v in verdicts] == [True, True]


@pytest.mark.parametrize("when", ["idle", "starting"])
def test_a_dead_worker_is_replaced_and_no_item_is_lost(pool: GradingPool, when: str) -> None:
    if when == "starting":
        pool._replace(pool._workers[0])  # a fresh worker, killed before it says ready
    os.kill(pool.pids[0], 9)
    time.sleep(0.2)
    pairs = [(str(i), f"The answer is {i}") for i in range(6)]
    assert all(v.correct for v in pool.grade(pairs))


def test_grade_batch_keeps_order_and_accepts_an_empty_batch() -> None:
    pairs = [(str(i), f"The answer is {i if i % 3 else i + 1}") for i in range(30)]
    verdicts = grade_batch(pairs, "symbolic", workers=2)
    assert [v.correct for v in verdicts] == [bool(i % 3) for i in range(30)]
    assert grade_batch([], "symbolic") == []
