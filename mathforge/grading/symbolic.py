"""The symbolic grader: a lenient, value-level check on top of math-verify.

It reads the answer where a person would look for it (the last "... answer is X", else the last
`\\boxed{}`, else "the value of x is X", else the last number), then asks math-verify whether gold and
prediction are the same mathematical object (gold first, as math-verify expects). That accepts the
paper's Appendix B cases the strict grader rejects: 24% vs 0.24, reordered roots, an equivalent
expression, `x = \\frac{2401}{100} = 24.01`, "The correct answer is 19, but ...".

math-verify's own timeouts use `signal.alarm`, which fails outside the main thread and cannot stop
C-level work (a sympy power tower); `grade_unbounded` therefore runs with them disabled, and
`mathforge.grading.pool` bounds its wall time by running it in worker processes it can kill.
"""

from __future__ import annotations

import logging
import re

from mathforge.answers import last_boxed
from mathforge.grading.verdict import Verdict

# "The answer is", "The correct answer is", "Final answer:", "the answer would be" ...
_ANSWER_PHRASE = re.compile(
    r"answer\s*(?:is|would\s+be|should\s+be|will\s+be|=|:)\s*:?", re.IGNORECASE
)
_VALUE_PHRASE = re.compile(r"\bvalue\s+of\s+[^\n]{1,40}?\s+is\s*:?", re.IGNORECASE)
_LAST_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")
# Words after which a stated answer has ended: "19, but this assumes ...", "7 because ...".
_AFTERTHOUGHT = re.compile(
    r"[,;]?\s+(?:but|which|because|since|assuming|where|given|if|so|as|although|though)\b", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"(?<![\d\\])\.(?:\s|$)")
# A number followed only by words is a quantity with its unit: "70000 dollars", "12 cm per hour".
# One-letter words are kept, since "2 x" may be an expression.
# Words must be separated by spaces, so the pattern cannot backtrack exponentially.
_NUMBER_WITH_UNIT = re.compile(r"(\$?[-+]?\d[\d,]*(?:\.\d+)?)\s+(?:[A-Za-z]{2,}(?:\s+|$))+")
_MAX_CANDIDATE = 1000  # longer "answers" are prose; parsing them only costs time


def extract(response: str) -> str | None:
    """The answer text the symbolic grader reads from `response`, or None."""
    for find in (_after_phrase, _boxed, _after_value_phrase, _last_number):
        candidate = find(response)
        if candidate:
            return candidate[:_MAX_CANDIDATE]
    return None


def _after_phrase(response: str, phrase: re.Pattern = _ANSWER_PHRASE) -> str | None:
    last = None
    for last in phrase.finditer(response):  # noqa: B007 - we want the last match
        pass
    if last is None:
        return None
    line = response[last.end() :].split("\n", 1)[0]
    boxed = last_boxed(line)
    return boxed if boxed else _clean(line)


def _after_value_phrase(response: str) -> str | None:
    return _after_phrase(response, _VALUE_PHRASE)


def _boxed(response: str) -> str | None:
    return last_boxed(response)


def _last_number(response: str) -> str | None:
    numbers = _LAST_NUMBER.findall(response)
    return numbers[-1].rstrip(",") if numbers else None


def _clean(text: str) -> str | None:
    """Trim a stated answer to the answer itself: no afterthoughts, final period or `$` wrapping."""
    text = _AFTERTHOUGHT.split(text, 1)[0]
    text = _SENTENCE_END.split(text, 1)[0]
    text = text.strip().rstrip(".").strip()
    if len(text) >= 2 and text[0] == "$" and text[-1] == "$":
        text = text.strip("$").strip()
    unit = _NUMBER_WITH_UNIT.fullmatch(text)
    return (unit.group(1) if unit else text) or None


# ---------------------------------------------------------------- comparison

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox|textit)\{([^{}]*)\}")
_QUOTES = re.compile(r"\\?[\"'“”‘’`]")


def _plain(text: str) -> str:
    """A word-level form for answers that are words ("\\text{odd}" vs "\\"odd\\"")."""
    text = _TEXT_WRAPPERS.sub(r"\1", text)
    text = _QUOTES.sub("", text).replace("$", "").replace("\\ ", " ")
    return re.sub(r"\s+", "", text).rstrip(".").lower()


def _parse(text: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    inner = text.strip()
    if len(inner) >= 2 and inner[0] == "$" and inner[-1] == "$":
        inner = inner.strip("$")
    found = parse(f"${inner}$", extraction_config=configs, parsing_timeout=None)
    return found or parse(inner, extraction_config=configs, parsing_timeout=None)


def grade_unbounded(gold: str, response: str) -> Verdict:
    """Symbolic verdict with no time bound: call it only where it can be killed (see pool.py)."""
    from math_verify import verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" warning
    try:
        extracted = extract(response)
        if extracted is None:
            return Verdict(False, None, "no_answer")
        if _plain(extracted) == _plain(gold):
            return Verdict(True, extracted, "ok")
        gold_parsed = _parse(gold)
        if not gold_parsed:
            return Verdict(False, extracted, "bad_gold")
        pred_parsed = _parse(extracted)
        if not pred_parsed:
            return Verdict(False, extracted, "unparsed")
        ok = verify(gold_parsed, pred_parsed, timeout_seconds=None)
        return Verdict(bool(ok), extracted, "ok" if ok else "mismatch")
    except Exception as e:  # noqa: BLE001 - a grading failure is recorded, never raised
        return Verdict(False, None, "error", f"{type(e).__name__}: {e}"[:200])
