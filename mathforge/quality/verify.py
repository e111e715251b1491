"""Verification of synthetic solutions, three ways (§4.3.3), each a stage that annotates records:

(a) `check_answers`: the final answer agrees with a known one (the synthesis stage's
    `meta["synth"]["expected"]`, e.g. FOBAR's X, or the seed's answer for methods that keep the
    question's answer) under the strict or the symbolic grader -> `meta["answer_check"]`;
(b) `self_consistency`: samples of the same problem vote; a sample agrees when its answer is the
    majority's -> `meta["consistency"]`;
(c) a verifier model judging the whole solution: `mathforge.quality.judge.SolutionVerifier`
    -> `meta["verifier"]`.

`verdict` then decides from whichever of these a record carries (the selection's verifier strategy).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from mathforge.answers import answer_line
from mathforge.quality.dedup import normalized_text
from mathforge.record import Record, annotate

# Methods whose question keeps the seed's answer, so the seed answer is a known answer for them.
SAME_ANSWER_METHODS = ("metamath/answer_aug", "metamath/rephrase")
CHECKS = ("answer_check", "consistency", "verifier")


def known_answer(record: Record, seed_answers: Mapping[str, str] | None = None) -> str | None:
    """The answer a record's solution should reach, when the pipeline knows one."""
    expected = (record.meta.get("synth") or {}).get("expected")
    if expected:
        return str(expected)
    if record.lineage.method is None and record.answer:  # a seed row: its own gold answer
        return record.answer
    if seed_answers and record.lineage.method in SAME_ANSWER_METHODS:
        return seed_answers.get(record.lineage.seed_id or "")
    return None


def check_answers(records: Sequence[Record], grader: str = "strict",
                  seed_answers: Mapping[str, str] | None = None, workers: int | None = None) -> list[Record]:
    """Annotate each record with whether its final answer matches its known answer (None: none known)."""
    from mathforge.grading import grade_batch

    golds = [known_answer(r, seed_answers) for r in records]
    todo = [i for i, g in enumerate(golds) if g and records[i].solution]
    verdicts = grade_batch([(golds[i], records[i].solution) for i in todo], grader=grader, workers=workers)
    by_index = dict(zip(todo, verdicts, strict=True))
    out = []
    for i, record in enumerate(records):
        v = by_index.get(i)
        info = {"grader": grader, "gold": golds[i], "correct": v.correct if v else None,
                "extracted": v.extracted if v else None, "reason": v.reason if v else "no_known_answer"}
        out.append(annotate(record, "answer_check", info))
    return out


ANSWER_CHECK_MODES = ("annotate", "drop", "off")


class AnswerCheck:
    """The answer check as a filter step: annotates every record with `meta["answer_check"]`; in
    `drop` mode a record whose answer disagrees with its known answer is dropped ("wrong_answer").
    The default is `annotate`: filtering for correctness lowers difficulty and hurts (§4.3.3, Table 4)."""

    name = "answer_check"

    def __init__(self, mode: str = "annotate", grader: str = "symbolic",
                 seed_answers: Mapping[str, str] | None = None):
        if mode not in ANSWER_CHECK_MODES:
            raise ValueError(f"answer_check.mode must be one of {', '.join(ANSWER_CHECK_MODES)}, got '{mode}'")
        self.mode, self.grader, self.seed_answers = mode, grader, seed_answers
        self.verdicts: Counter = Counter()  # agree / disagree / unknown, reported whatever the mode

    def decide_batch(self, records: list[Record]) -> list[tuple[Record, str | None]]:
        checked = check_answers(records, grader=self.grader, seed_answers=self.seed_answers)
        self.verdicts.update({True: "agree", False: "disagree", None: "unknown"}[r.meta["answer_check"]["correct"]]
                             for r in checked)
        wrong = self.mode == "drop"
        return [(r, "wrong_answer" if wrong and r.meta["answer_check"]["correct"] is False else None) for r in checked]


def _answer_key(record: Record) -> str | None:
    from mathforge.grading import answer_key

    found = answer_line(record.solution or "") or record.answer
    return answer_key(found) if found else None


def self_consistency(records: Sequence[Record], min_votes: int = 2) -> list[Record]:
    """Majority vote over the samples of each problem (same normalised problem text).

    The majority is the most common answer when it has at least `min_votes` votes and beats the
    runner-up; a group without one leaves `agrees` None (undecided), as does a sample with no answer.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[normalized_text(record, ("problem",))].append(i)
    keys = [_answer_key(r) for r in records]
    out = list(records)
    for members in groups.values():
        votes = Counter(keys[i] for i in members if keys[i] is not None)
        top = votes.most_common(2)
        majority = top[0][0] if top and top[0][1] >= min_votes and (len(top) == 1 or top[0][1] > top[1][1]) else None
        for i in members:
            agrees = None if majority is None or keys[i] is None else keys[i] == majority
            info = {"samples": len(members), "votes": dict(votes), "majority": majority, "agrees": agrees}
            out[i] = annotate(records[i], "consistency", info)
    return out


def verdict(record: Record, checks: Sequence[str] = CHECKS) -> bool | None:
    """True when every check the record carries passed, False when one failed, None when none decided."""
    results = [_check_result(record, c) for c in checks]
    decided = [r for r in results if r is not None]
    return None if not decided else all(decided)


def _check_result(record: Record, check: str) -> bool | None:
    info = record.meta.get(check) or {}
    return info.get("agrees") if check == "consistency" else info.get("correct")


def verify_summary(records: Sequence[Record]) -> dict[str, Any]:
    """How many records each check passed, failed or left undecided."""
    return {c: dict(Counter(str(_check_result(r, c)) for r in records)) for c in CHECKS}
