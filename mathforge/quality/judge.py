"""LLM judges on the generation engine: a difficulty judge and a whole-solution verifier.

Both render a versioned Jinja2 prompt (`prompts/*.j2` beside this file), send one request per
record through `mathforge.engine` (so answers are cached and a killed run resumes for free), and
parse a fixed last line ("Difficulty: N", "Verdict: correct|incorrect"). The paper picks hard
problems with GPT-4 and a CoT prompt, and verifies solutions with a few-shot Mistral-7B (§4.3.3);
any engine backend can play either part here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathforge import prompt
from mathforge.engine.types import Request, Result, Sampling
from mathforge.prompt import Template
from mathforge.record import Record, annotate, stable_id

PROMPTS = Path(__file__).with_name("prompts")
_SCORE = re.compile(r"difficulty\s*[:=]\s*\**\s*([1-5])\b", re.I)
_VERDICT = re.compile(r"verdict\s*[:=]\s*\**\s*(correct|incorrect)\b", re.I)


@dataclass(frozen=True)
class Judgement:
    """One judge's output for one record: a parsed value, the raw text, and any failure."""

    value: Any  # difficulty: int 1-5; verifier: bool; None when unparsed or failed
    text: str
    error: str | None = None


def load_template(name: str) -> tuple[Template, str]:
    """A judge's prompt template (a file in `prompts/`) and its version for cache keys."""
    template = prompt.load_template(name, PROMPTS)
    return template, template.version


class _Judge:
    """Shared plumbing: render, run on the engine, parse the last decisive line."""

    template_name: str
    meta_key: str

    def __init__(self, engine: Any, sampling: Sampling | None = None, template: str | None = None):
        self.engine = engine
        self.sampling = sampling or Sampling(temperature=0.0, max_tokens=512)
        self.template, self.version = load_template(template or self.template_name)

    def requests(self, records: Sequence[Record]) -> list[Request]:
        return [Request(key=self._key(r), messages=[{"role": "user", "content": self.render(r)}],
                        sampling=self.sampling) for r in records]

    def _key(self, record: Record) -> str:
        return f"{self.meta_key}/{self.version}/{stable_id(record.id, record.problem, record.solution or '')}"

    def judge(self, records: Sequence[Record]) -> list[Judgement]:
        """Judge every record; a failed or unparseable reply gives value None with the reason."""
        results = self.engine.run(self.requests(records), desc=self.meta_key)
        return [self._judgement(res) for res in results]

    def _judgement(self, result: Result) -> Judgement:
        if result.error:
            return Judgement(None, "", f"engine: {result.error}")
        text = result.texts[0] if result.texts else ""
        value = self.parse(text)
        return Judgement(value, text, None if value is not None else "unparsed")

    def annotate(self, records: Sequence[Record]) -> list[Record]:
        """The records with this judge's result stored under its own meta key."""
        out = []
        for record, j in zip(records, self.judge(records), strict=True):
            out.append(annotate(record, self.meta_key, self.meta_value(j)))
        return out

    def render(self, record: Record) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def meta_value(self, j: Judgement) -> dict[str, Any]:
        raise NotImplementedError


class DifficultyJudge(_Judge):
    """Rates a problem 1-5 with a chain-of-thought prompt; `hard` when the rating >= `hard_at`.

    The scale mirrors MATH's levels so that "hard" means what the paper's stage 2 uses (level 4-5).
    """

    template_name = "difficulty_v1.j2"
    meta_key = "difficulty"

    def __init__(self, engine: Any, sampling: Sampling | None = None, template: str | None = None, hard_at: int = 4):
        super().__init__(engine, sampling, template)
        self.hard_at = hard_at

    def render(self, record: Record) -> str:
        return self.template.render(problem=record.problem)

    def parse(self, text: str) -> int | None:
        found = _SCORE.findall(text)
        return int(found[-1]) if found else None

    def meta_value(self, j: Judgement) -> dict[str, Any]:
        hard = None if j.value is None else j.value >= self.hard_at
        return {"score": j.value, "hard": hard, "prompt_version": self.version, "error": j.error}


class SolutionVerifier(_Judge):
    """Judges a whole solution (reasoning and final answer) correct or incorrect, few-shot."""

    template_name = "verifier_v1.j2"
    meta_key = "verifier"

    def render(self, record: Record) -> str:
        if not record.solution:
            raise ValueError(f"record {record.id}: the verifier needs a solution to judge")
        return self.template.render(problem=record.problem, solution=record.solution)

    def parse(self, text: str) -> bool | None:
        found = _VERDICT.findall(text)
        return found[-1].lower() == "correct" if found else None

    def meta_value(self, j: Judgement) -> dict[str, Any]:
        return {"correct": j.value, "prompt_version": self.version, "error": j.error}
