"""The fast answer comparison for hot loops: one canonical key per answer; equal keys agree.

Synthesis compares every sampled answer with a known one (rejection sampling's pass rate, which
`select hard` ranks by; MetaMath's expected answers) and verification votes over samples.
math-verify costs ~3 ms a pair and its timeouts need the main thread, so these loops use this
string code instead (microseconds a pair, never raises): the strict grader's Hendrycks
normalisation (`strict.normalize`: `\\frac12`, `1/2`, `x = 3`, `\\dfrac`, units after `\\text{ `)
after unwrapping `$...$`, a whole `\\boxed{}` and `\\text{}`, then numbers compared as values with
the strict grader's number reader (`0.5` = `\\frac{1}{2}`, `10,000` = `10000`, `72.0` = `72`).
Anything subtler (`24%` vs `0.24`, reordered roots) is the symbolic grader's job.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from mathforge.answers import boxed_spans
from mathforge.grading.strict import exact_number, normalize

_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;!]|\{,\}|°")
_FRAC = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}")


@lru_cache(maxsize=1 << 16)  # the known side repeats: every trial of a seed compares with its answer
def answer_key(answer: str) -> str:
    """The canonical form of an answer: two answers agree when their keys are equal."""
    text = _WRAPPERS.sub(r"\1", _normalized(_unwrap(answer))).replace(" ", "")
    value = _number(text)
    return text if value is None else str(value)


def same_answer(found: str | None, expected: str | None) -> bool | None:
    """Whether two answers agree under `answer_key`; None when either is missing or empty."""
    if not found or not str(found).strip() or not expected or not str(expected).strip():
        return None
    return answer_key(str(found)) == answer_key(str(expected))


def _unwrap(answer: str) -> str:
    text = answer.strip().rstrip(".").strip()
    if len(text) > 1 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    boxed = boxed_spans(text)
    if len(boxed) == 1 and boxed[0][:2] == (0, len(text)):
        text = boxed[0][2].strip()
    return _SPACING.sub("", text)


def _normalized(text: str) -> str:
    try:
        return normalize(text)
    except (AssertionError, IndexError, ValueError):  # as `strict.is_equiv`: the raw text then
        return text


def _number(text: str) -> Fraction | None:
    m = _FRAC.fullmatch(text)
    if m:
        sign, num, den = m.groups()
        return None if int(den) == 0 else Fraction(int(num), int(den)) * (-1 if sign else 1)
    return exact_number(text)
