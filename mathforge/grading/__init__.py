"""Graders for math answers: pure `extract(response)` and `grade(gold, response)` functions.

Three graders, side by side and never mixed:
- `strict`: the paper's criterion (MetaMath's check, our documented fixes; see strict.py);
- `metamath`: the same check with every MetaMath behaviour reproduced exactly (colon required,
  GSM8K numbers rounded, "1,234,567" read as 1234) for numbers comparable to published tables;
- `symbolic`: value-level equivalence with math-verify (symbolic.py), bounded in worker processes.

    >>> grade("0.24", "... The answer is 24%", grader="strict").correct
    False
    >>> grade("0.24", "... The answer is 24%", grader="symbolic").correct
    True

Synthesis and verification compare two answers in hot loops (rejection sampling's pass rate,
MetaMath's expected answers, self-consistency votes) with `same_answer`/`answer_key` (fast.py): the
strict normalisation with numbers compared as values, string code with no math-verify, safe in any
thread. Evaluation keeps to its graders (maj@k votes on the strict normal form it reports).

A grading failure is a `Verdict` with a reason ("no_answer", "timeout", "error", ...), never an
exception, and every verdict comes back within its time bound whatever the input.
"""

from __future__ import annotations

import atexit
from collections.abc import Sequence

from mathforge.grading import strict, symbolic
from mathforge.grading.fast import answer_key, same_answer
from mathforge.grading.pool import DEFAULT_TIMEOUT_S, GradingPool
from mathforge.grading.verdict import REASONS, Verdict

GRADERS = ("strict", "symbolic", "metamath")
BENCHMARK_KINDS = ("math", "gsm8k")
_STRICT_CONFIGS = {"strict": strict.DEFAULT, "metamath": strict.METAMATH}

__all__ = ["DEFAULT_TIMEOUT_S", "GRADERS", "REASONS", "GradingPool", "Verdict", "answer_key", "extract", "grade",
           "grade_batch", "same_answer"]


def extract(response: str, grader: str = "strict", benchmark: str = "math") -> str | None:
    """The answer text `grader` reads from `response`, or None when it finds none."""
    _check(grader, benchmark)
    if grader == "symbolic":
        return symbolic.extract(response)
    return strict.extract(response, _STRICT_CONFIGS[grader], benchmark)


def grade(gold: str, response: str, grader: str = "strict", benchmark: str = "math") -> Verdict:
    """One verdict: is `response`'s final answer equal to `gold` under `grader`?"""
    return grade_batch([(gold, response)], grader=grader, benchmark=benchmark)[0]


def grade_batch(
    pairs: Sequence[tuple[str, str]],
    grader: str = "strict",
    benchmark: str = "math",
    workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = False,
) -> list[Verdict]:
    """Verdicts for (gold, response) pairs, in order.

    The strict graders are linear-time string code and run inline. The symbolic grader runs in
    worker processes (`workers`, default: all usable cores, reusing one shared pool), each item
    killed after `timeout_s` seconds and recorded as a "timeout" verdict. `progress` shows a bar.
    """
    _check(grader, benchmark)
    if grader != "symbolic":
        cfg = _STRICT_CONFIGS[grader]
        return [strict.grade(str(g), str(r), cfg, benchmark) for g, r in pairs]
    if not pairs:
        return []
    if workers is None:
        return _shared_pool(timeout_s).grade(pairs, progress)
    with GradingPool(workers, timeout_s) as pool:
        return pool.grade(pairs, progress)


def _check(grader: str, benchmark: str) -> None:
    if grader not in GRADERS:
        raise ValueError(f"unknown grader '{grader}' (known: {', '.join(GRADERS)})")
    if benchmark not in BENCHMARK_KINDS:
        raise ValueError(f"unknown benchmark kind '{benchmark}' (known: {', '.join(BENCHMARK_KINDS)})")


# One pool per timeout, started on first use and closed at exit: single `grade()` calls would
# otherwise pay for starting worker processes every time.
_POOLS: dict[float, GradingPool] = {}


def _shared_pool(timeout_s: float) -> GradingPool:
    if timeout_s not in _POOLS:
        _POOLS[timeout_s] = GradingPool(None, timeout_s)
    return _POOLS[timeout_s]


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()
