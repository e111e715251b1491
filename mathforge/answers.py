"""Final answers as each source writes them, and the response contract "The answer is X".

Written by hand because no library parses these conventions with brace matching: regexes cannot
balance `\\boxed{\\frac{1}{2}}`, and the MATH/GSM8K harnesses each carry their own copy.
"""

from __future__ import annotations

import re

ANSWER_PREFIX = "The answer is"
_BOX_COMMANDS = ("\\boxed", "\\fbox")
# Text between two boxes that still reads as one multi-part answer ("$\boxed{3}$ and $\boxed{5}$").
_JOINER = re.compile(r"^[\s$,;.]*(?:and|,|;|\\quad|\\text\{\s*and\s*\}|\\qquad)?[\s$,;]*$")
_GSM_MARK = re.compile(r"####\s*(.+?)\s*$", re.S)


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """All `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` occurrences as (start, end, content)."""
    spans = []
    i = 0
    while True:
        starts = [(text.find(cmd, i), cmd) for cmd in _BOX_COMMANDS]
        starts = [(s, c) for s, c in starts if s >= 0]
        if not starts:
            return spans
        start, cmd = min(starts)
        span = _box_at(text, start, len(cmd))
        if span:
            spans.append(span)
            i = span[1]
        else:
            i = start + len(cmd)


def _box_at(text: str, start: int, cmd_len: int) -> tuple[int, int, str] | None:
    j = start + cmd_len
    if j < len(text) and text[j] == "{":
        depth = 0
        for k in range(j, len(text)):
            if text[k] == "{" and text[k - 1] != "\\":
                depth += 1
            elif text[k] == "}" and text[k - 1] != "\\":
                depth -= 1
                if depth == 0:
                    return start, k + 1, text[j + 1 : k].strip()
        return None  # unbalanced: no answer rather than a wrong one
    m = re.match(r" +([^\s$]+)", text[j:])  # "\boxed 5" (2 MATH solutions use it)
    if m:
        return start, j + m.end(), m.group(1).rstrip(".")
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last box, or None."""
    spans = boxed_spans(text)
    return spans[-1][2] if spans else None


def boxed_answer(solution: str) -> str | None:
    """The final answer of a MATH-style solution.

    The last box is the answer, except that boxes written together at the end ("$\\boxed{3}$ and
    $\\boxed{5}$") form one multi-part answer, joined with ", ". Repeated identical boxes (the
    "- OR -" alternative solutions in MATH) count once.
    """
    spans = boxed_spans(solution)
    if not spans:
        return None
    parts = [spans[-1]]
    for prev in reversed(spans[:-1]):
        between = solution[prev[1] : parts[0][0]]
        if not _JOINER.match(between):
            break
        parts.insert(0, prev)
    contents = list(dict.fromkeys(p[2] for p in parts if p[2]))
    return ", ".join(contents) or None  # "\\boxed{}" (2 real MATH train rows) is no answer


def gsm8k_answer(answer_text: str) -> str | None:
    """The number after the last `####`, thousands separators removed ("1,234" -> "1234")."""
    idx = answer_text.rfind("####")
    if idx < 0:
        return None
    m = _GSM_MARK.search(answer_text[idx:])
    if not m:
        return None
    value = m.group(1).strip().replace(",", "").replace("$", "").rstrip(".")
    return value or None


def choice_letter(label: str | list[str] | None) -> str | None:
    """A multiple-choice answer from "D", "(D)", "D." or "d"; multi-select labels ("A B D",
    ["A", "B"]) become "A, B, D". None when there is none."""
    if not label:
        return None
    if isinstance(label, list):
        items = label
    elif re.fullmatch(r"[A-Ea-e]{2,5}", label.strip()):  # "AD": multi-select written without spaces
        items = list(label.strip())
    else:
        items = re.split(r"[\s,;]+", label.strip())
    letters = []
    for item in items:
        m = re.fullmatch(r"\(?([A-Ea-e])\)?[.:]?", item.strip())
        if not m:
            return None
        letters.append(m.group(1).upper())
    return ", ".join(letters) or None


def option_text(options: list[str] | None, letter: str | None) -> str | None:
    """The text of option `letter` in AGIEval's ["(A)2", "(B)4", ...] form."""
    if not options or not letter:
        return None
    for opt in options:
        m = re.match(r"\s*\(?([A-Ea-e])\)\s*(.*)", opt, re.S)
        if m and m.group(1).upper() == letter:
            return m.group(2).strip()
    return None


def with_answer_line(solution: str, answer: str) -> str:
    """A solution ending in the contract's answer line "The answer is X" (added unless it is
    already its last line): the text synthesis keeps and the SFT target the student learns."""
    body = solution.rstrip()
    line = f"{ANSWER_PREFIX} {answer}".rstrip()
    return body if body.endswith(line) else f"{body}\n{line}".lstrip()


def sft_target(solution: str | None, answer: str | None) -> str | None:
    """The SFT target text, the one that training tokenises, the length filter measures and the
    export writes: the space after the prompt, then the solution ending in its answer line (its own
    last "The answer is X" when it has one, else `answer`'s, added). None without a solution or
    without any answer."""
    if not solution or not solution.strip():
        return None
    found = answer_line(solution)
    if found is None and (answer is None or not str(answer).strip()):
        return None
    return f" {with_answer_line(solution, found if found is not None else str(answer))}"


def answer_line(response: str) -> str | None:
    """X in the last "The answer is X" of a response (the synthesis contract), or None.

    Lenient on a colon and trailing period/`$`; the strict MetaMath grader lives in
    `mathforge.grading` and may be stricter on purpose.
    """
    idx = response.rfind(ANSWER_PREFIX)
    if idx < 0:
        return None
    tail = response[idx + len(ANSWER_PREFIX) :].lstrip(" :")
    tail = tail.split("\n", 1)[0].strip()
    tail = tail.rstrip(".").strip()
    if tail.startswith("$") and tail.endswith("$") and len(tail) > 1:
        tail = tail[1:-1].strip()
    return tail or None
