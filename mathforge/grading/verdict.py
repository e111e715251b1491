"""The result of grading one response: a value, never an exception."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Reasons a verdict can carry. "ok" is the only one with correct=True.
REASONS = ("ok", "mismatch", "no_answer", "unparsed", "bad_gold", "timeout", "error")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One grader's decision on one response.

    `extracted` is the answer text the grader read from the response (None when it found none);
    `reason` is one of REASONS, so failures are counted rather than raised.
    """

    correct: bool
    extracted: str | None
    reason: str
    detail: str = ""  # e.g. the exception type behind an "error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Verdict:
        return cls(bool(row["correct"]), row.get("extracted"), str(row["reason"]), str(row.get("detail", "")))
