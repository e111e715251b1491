"""The strict grader: MetaMath's answer check, which the paper's numbers use (§4.1.1, §4.1.3).

The answer is the text after the *last* "The answer is"; MATH answers are compared as strings after
the Hendrycks normalisation (no algebra: "0.25" != "\\frac14", "10,000" != "10000", "24%" != "0.24");
GSM8K answers are compared as numbers. Near-100% precision, lower recall: the paper's Appendix B
lists correct answers this rejects, and the symbolic grader is there to show them.

Deliberate behaviours, each a field of `StrictConfig`:
- `require_colon`: MetaMath splits on "The answer is: " (colon and space). Skywork's responses end
  with "\\nThe answer is X" (no colon), so by default the colon is optional.
- `first_line`: MetaMath keeps the MATH answer up to the first ".\\n", which glues any following
  lines onto the answer; by default we stop at the end of the answer's line.
- `gsm8k_metamath_numbers`: MetaMath reads the first number with the regex
  `[-+]?\\d*[.,/]?\\d+` and rounds it to an integer, so "1,234,567" reads as 1234 and "2.5" counts
  for a gold of 2. By default we read the whole number (thousands separators, decimals, a/b) and
  compare exactly. `METAMATH` turns on all three MetaMath behaviours for byte-for-byte comparability.

Kept from MetaMath on purpose: the *last* marker counts; the marker is case-sensitive ("the answer
is" and "The final answer is" are not answer lines); one final period is dropped; no `$` is
stripped ("$2$" != "2"); when the normalisation itself fails (two "\\text{ " units, a dangling
"\\frac"), the raw strings are compared. MetaMath's MATH gold is the last `\\boxed{}` of the
solution (`mathforge.eval.gold_for(record, "metamath")`).

The normalisation is re-implemented here (in our own code, behaviour kept) because MetaMath and
Hendrycks ship it only as a script file, not a library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from mathforge.answers import ANSWER_PREFIX as PREFIX
from mathforge.grading.verdict import Verdict


@dataclass(frozen=True)
class StrictConfig:
    """Switches between MetaMath's exact behaviour and our documented fixes (module docstring)."""

    require_colon: bool = False
    first_line: bool = True
    gsm8k_metamath_numbers: bool = False


DEFAULT = StrictConfig()
METAMATH = StrictConfig(require_colon=True, first_line=False, gsm8k_metamath_numbers=True)


def _tail(response: str, cfg: StrictConfig) -> str | None:
    """Everything after the last answer marker, or None when there is no marker."""
    marker = PREFIX + ": " if cfg.require_colon else PREFIX
    idx = response.rfind(marker)
    if idx < 0:
        return None
    tail = response[idx + len(marker) :]
    if not cfg.require_colon:
        tail = tail.lstrip(" \t")
        tail = tail[1:] if tail.startswith(":") else tail
    return tail


def extract(response: str, cfg: StrictConfig = DEFAULT, benchmark: str = "math") -> str | None:
    """The answer text a strict grader reads from `response`, or None."""
    tail = _tail(response, cfg)
    if tail is None:
        return None
    if benchmark == "gsm8k" and cfg.gsm8k_metamath_numbers:
        return tail.strip() or None  # MetaMath searches the number in the whole rest of the text
    tail = tail.split("\n", 1)[0] if cfg.first_line else tail.split(".\n", 1)[0]
    tail = tail.strip()
    if tail.endswith("."):
        tail = tail[:-1].strip()
    return tail or None


def grade(gold: str, response: str, cfg: StrictConfig = DEFAULT, benchmark: str = "math") -> Verdict:
    """Strict verdict on one response; never raises (a failure is a verdict with reason "error")."""
    try:
        extracted = extract(response, cfg, benchmark)
        if extracted is None:
            return Verdict(False, None, "no_answer")
        if benchmark == "gsm8k":
            return _grade_number(gold, extracted, cfg)
        ok = is_equiv(extracted, gold)
        return Verdict(ok, extracted, "ok" if ok else "mismatch")
    except Exception as e:  # noqa: BLE001 - a grading failure is recorded, never raised
        return Verdict(False, None, "error", f"{type(e).__name__}: {e}"[:200])


# ---------------------------------------------------------------- GSM8K numbers

# A whole number as people write it: 1,234,567.89, -3, .5, 7/2
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")
_METAMATH_NUMBER = re.compile(r"[\-+]?\d*[\.,/]?\d+")


def _grade_number(gold: str, extracted: str, cfg: StrictConfig) -> Verdict:
    gold_value = exact_number(gold)
    if gold_value is None:
        return Verdict(False, extracted, "bad_gold")
    read = _metamath_number if cfg.gsm8k_metamath_numbers else _first_number
    value = read(extracted)
    if value is None:
        return Verdict(False, extracted, "unparsed")
    ok = value == gold_value
    return Verdict(ok, str(value), "ok" if ok else "mismatch")


def exact_number(text: str) -> Fraction | None:
    """The value of `text` when it is one whole number as people write it (1,234.5, -3, 7/2), else None."""
    m = _NUMBER.fullmatch(text.strip().replace("$", "").rstrip("."))
    return _to_fraction(m.group()) if m else None


def _first_number(text: str) -> Fraction | None:
    m = _NUMBER.search(text)
    return _to_fraction(m.group()) if m else None


def _to_fraction(token: str) -> Fraction | None:
    num, _, den = token.replace(",", "").partition("/")
    if den and int(den) == 0:
        return None
    return Fraction(num) / (Fraction(den) if den else 1)


def _metamath_number(text: str) -> Fraction | None:
    """MetaMath's reading: first regex match, a/b evaluated, rounded to an integer."""
    m = _METAMATH_NUMBER.search(text)
    if not m:
        return None
    token = m.group().replace(",", "")
    if "/" in token:
        num, den = token.split("/")
        if not (_floatable(num) and _floatable(den)):
            return None
        value = float(num) if float(den) == 0 else float(Fraction(num) / Fraction(den))
    else:
        value = float(token)
    if value in (float("inf"), float("-inf")):
        return None
    return Fraction(round(value))


def _floatable(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- MATH strings (Hendrycks)


def is_equiv(prediction: str, gold: str) -> bool:
    """Hendrycks/MetaMath equivalence: equal after `normalize`; if normalising fails, raw equality."""
    try:
        return normalize(prediction) == normalize(gold)
    except (AssertionError, IndexError, ValueError):
        return prediction == gold


def normalize(text: str) -> str:
    """The Hendrycks MATH string normalisation, step for step (it may raise; see `is_equiv`)."""
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = _drop_units(text)
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> "5"
        text = sides[1]
    text = _brace_sqrt(text).replace(" ", "")
    text = _brace_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _slash_to_frac(text)


_REPLACEMENTS = (
    ("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
    ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""),
)


def _drop_units(text: str) -> str:
    if "\\text{ " not in text:
        return text
    parts = text.split("\\text{ ")
    if len(parts) != 2:
        raise AssertionError("more than one unit")
    return parts[0]


def _brace_sqrt(text: str) -> str:
    """\\sqrt3 -> \\sqrt{3}."""
    parts = text.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        out += "\\sqrt" + (part if part[0] == "{" else "{" + part[0] + "}" + part[1:])
    return out


def _brace_fracs(text: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}."""
    parts = text.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part[0] == "{":
            out += part
            continue
        if len(part) < 2:
            return text
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + ("{" + b + "}" if b != "{" else b) + rest
    return out


def _slash_to_frac(text: str) -> str:
    """"3/4" -> "\\frac{3}{4}" for plain integer fractions only."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    return f"\\frac{{{a}}}{{{b}}}" if text == f"{a}/{b}" else text
