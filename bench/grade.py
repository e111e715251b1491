"""Grading throughput: strict and symbolic graders vs math-verify called serially on one core.

Builds N (gold, response) pairs from real MATH test answers with the perturbations models really
produce (dollar signs, a box instead of an answer line, \\dfrac, decimals for fractions, reordered
lists, "x = ...", trailing prose, plain wrong answers), grades them three ways on the same input,
and prints pairs/s and the ratio against the baseline side by side, plus how often our symbolic
verdict differs from the baseline's.

    python bench/grade.py [--n 5000] [--workers N] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import time
from pathlib import Path

from mathforge.grading import GradingPool, grade_batch
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def perturb(gold: str, other: str, rng: random.Random) -> str:
    """One realistic response for `gold` (`other` is another item's answer, for wrong responses)."""
    frac = re.fullmatch(r"\\d?frac\{(\d+)\}\{(\d+)\}", gold)
    kinds = {
        "exact": lambda: f"The answer is {gold}",
        "dollars": lambda: f"The answer is ${gold}$.",
        "boxed": lambda: f"So we get $\\boxed{{{gold}}}$.",
        "dfrac": lambda: "The answer is " + gold.replace("\\frac", "\\dfrac"),
        "decimal": lambda: f"The answer is {int(frac.group(1)) / int(frac.group(2)):.6g}" if frac else f"The answer is {gold}",
        "reorder": lambda: "The answer is " + ", ".join(reversed(gold.split(", "))),
        "equation": lambda: f"The answer is x = {gold}",
        "prose": lambda: f"The correct answer is {gold}, since the other case fails.",
        "wrong": lambda: f"The answer is {other}",
        "off_by_one": lambda: f"The answer is {int(gold) + 1}" if gold.lstrip("-").isdigit() else f"The answer is {other}",
    }
    return "Reasoning step by step.\n" + kinds[rng.choice(sorted(kinds))]()


def build_pairs(n: int, data: Path, seed: int = 0) -> list[tuple[str, str]]:
    golds = [r.answer for r in load(f"math:{data / 'math' / 'math_test.jsonl'}?allow_test=1") if r.answer]
    rng = random.Random(seed)
    return [(g, perturb(g, rng.choice(golds), rng)) for g in (rng.choice(golds) for _ in range(n))]


def math_verify_serial(pairs: list[tuple[str, str]]) -> list[bool]:
    """The baseline: math-verify's own parse and verify, one pair after another, in this process."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return [bool(verify(parse(f"${g}$"), parse(r))) for g, r in pairs]


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=None, help="symbolic grading processes (default: all cores)")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    pairs = build_pairs(args.n, args.data)
    math_verify_serial(pairs[:20])  # imports and sympy caches warm before timing
    with GradingPool(args.workers) as pool:
        pool.wait_ready()
        pool.grade(pairs[:20])
        baseline, t_base = timed(math_verify_serial, pairs)
        strict, t_strict = timed(grade_batch, pairs, "strict")
        symbolic, t_sym = timed(pool.grade, pairs)
        workers = len(pool.pids)
    rows = [("math-verify serial, 1 core (baseline)", t_base, sum(baseline)),
            ("strict (MetaMath criterion), inline", t_strict, sum(v.correct for v in strict)),
            (f"symbolic (math-verify + extraction), {workers} workers", t_sym, sum(v.correct for v in symbolic))]
    print(f"{len(pairs)} MATH-style pairs from real MATH test answers\n")
    print(f"{'grader':<52} {'seconds':>8} {'pairs/s':>10} {'vs baseline':>12} {'accepted':>9}")
    for name, seconds, accepted in rows:
        print(f"{name:<52} {seconds:8.2f} {len(pairs) / seconds:10.0f} {t_base / seconds:11.2f}x {accepted:9d}")
    timeouts = sum(v.reason == "timeout" for v in symbolic)
    ours = sum(v.correct and not b for v, b in zip(symbolic, baseline, strict=True))
    theirs = sum(b and not v.correct for v, b in zip(symbolic, baseline, strict=True))
    print(f"\naccepted by symbolic only: {ours}; by the baseline only: {theirs}; symbolic timeouts: {timeouts}")


if __name__ == "__main__":
    main()
