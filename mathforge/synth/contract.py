"""The response format contract: every synthetic solution ends with the line "The answer is X".

`check_response` parses a teacher response into (solution, answer) or a drop reason. A response
that breaks the contract is repaired only when the answer is unambiguous (a final `\\boxed{}`, a
closing "Final answer: X" line, a GSM8K-style "#### X"); anything else is dropped with its reason so
the yield table can show what the teacher got wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mathforge.answers import ANSWER_PREFIX, answer_line, boxed_answer, boxed_spans, with_answer_line

MAX_ANSWER_CHARS = 200
# A final box followed by at most this much text still reads as the conclusion of the solution.
BOX_TAIL_CHARS = 120
_FINAL_LINE = re.compile(r"^\s*(?:\**\s*)?(?:final answer|answer|####)\s*(?:is)?\s*[:=]?\s*\**\s*(.+?)\s*$", re.I)


@dataclass(frozen=True)
class Checked:
    """A parsed response: `solution` ends with the answer line; `reason` is set when dropped;
    `requests`: the engine's cache keys of the requests it came from (the solve, any follow-up)."""

    solution: str | None = None
    answer: str | None = None
    repair: str | None = None
    reason: str | None = None
    requests: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_response(text: str, finish_reason: str = "stop") -> Checked:
    """Parse `text` under the answer-line contract, repairing it when that is unambiguous."""
    if finish_reason == "length":
        return _complete_before_cut(text or "")
    body = (text or "").strip()
    if not body:
        return Checked(reason="empty")
    if answer_line(body) is not None:
        return _from_answer_line(body)
    for repair in (_from_box, _from_final_line):
        found = repair(body)
        if found is not None:
            return found
    return Checked(reason="no_answer_line")


def _complete_before_cut(text: str) -> Checked:
    """A response cut off by the token budget still holds a whole solution when a paragraph ending
    in a complete answer line comes before the cut (a raw completion that went on to a new item);
    anything else was truncated mid-solution."""
    for brk in re.finditer(r"\n[ \t]*\n", text):
        head = text[: brk.start()].rstrip()
        last = head.rpartition("\n")[2]
        if last.lstrip().startswith(ANSWER_PREFIX) and answer_line(last) is not None:
            found = _from_answer_line(head)
            return replace(found, repair="cut_after_answer") if found.ok else found
    return Checked(reason="truncated")


def with_answer(body: str, answer: str, repair: str | None = None) -> Checked:
    """A contract-conforming solution from a body and an answer (validated)."""
    answer = _unwrap(answer)
    if not answer:
        return Checked(reason="empty_answer")
    if len(answer) > MAX_ANSWER_CHARS or "\n" in answer:
        return Checked(reason="answer_too_long")
    solution = with_answer_line(body, answer)
    return Checked(solution=solution, answer=answer, repair=repair)


def _from_answer_line(body: str) -> Checked:
    idx = body.rfind(ANSWER_PREFIX)
    end = body.find("\n", idx)
    trailing = body[end:].strip() if end >= 0 else ""
    answer = answer_line(body) or ""
    return with_answer(body[:idx], answer, "cut_trailing_text" if trailing else None)


def _from_box(body: str) -> Checked | None:
    spans = boxed_spans(body)
    if not spans or len(body) - spans[-1][1] > BOX_TAIL_CHARS:
        return None
    return with_answer(body, boxed_answer(body) or "", "boxed")


def _from_final_line(body: str) -> Checked | None:
    head, _, last = body.rpartition("\n")
    m = _FINAL_LINE.match(last)
    if not m:
        return None
    return with_answer(head, m.group(1).rstrip("."), "final_line")


def _unwrap(answer: str) -> str:
    answer = answer.strip().rstrip(".").strip()
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
        answer = answer.strip("$").strip()
    boxed = boxed_spans(answer)
    if len(boxed) == 1 and boxed[0][0] == 0 and boxed[0][1] == len(answer):
        answer = boxed[0][2]
    return answer.strip()


_NUM = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?$")


def normalize_answer(answer: str | None) -> str:
    """A light canonical text form, to find an answer inside a statement (MetaMath's declarative
    rewrite must mention it). Whether two answers agree is `mathforge.grading.same_answer`."""
    if answer is None:
        return ""
    a = _unwrap(answer)
    a = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", a)
    a = re.sub(r"\\left|\\right|\\!|\\,|\s+|\^\{?\\circ\}?|°", "", a)
    a = a.replace("dfrac", "frac").replace("tfrac", "frac").strip("$")
    if _NUM.match(a):
        value = float(a.replace(",", ""))
        return str(int(value)) if value.is_integer() else repr(value)
    return a
