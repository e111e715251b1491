"""Format and length filters: the response contract holds, and the sample fits the training length.

`AnswerLineFilter` drops a sample whose solution lacks the final "The answer is X" line or whose X
the strict grader cannot read (such samples teach the student an answer format no grader
accepts). `LengthFilter` drops a sample whose prompt + response is longer than the training
maximum (2048 tokens in the paper; 512 measurably hurts, its Table 10) in the student's own tokenizer: a truncated sample
teaches a solution with no ending.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from mathforge.answers import answer_line, sft_target
from mathforge.prompt import format_prompt
from mathforge.record import Record, annotate

DEFAULT_TOKENIZER = "smollm2"


class AnswerLineFilter:
    """Keeps samples whose solution ends its reasoning with a readable "The answer is X"."""

    name = "format"

    def decide(self, record: Record) -> str | None:
        from mathforge.grading import extract

        if not record.solution:
            return "no_solution"
        line = answer_line(record.solution)
        if line is None:
            return "no_answer_line"
        if extract(record.solution, grader="strict") is None:
            return f"unparseable_answer: {line[:60]}"
        return None


@lru_cache(maxsize=4)
def load_tokenizer(name: str = DEFAULT_TOKENIZER) -> Any:
    """A transformers tokenizer: a hub name or local directory, or "smollm2" for the tokenizer
    of the embedded SmolLM2 GGUF (offline, the default student; converted once, see models.py)."""
    from transformers import AutoTokenizer

    if name == DEFAULT_TOKENIZER:
        from mathforge.models import smollm2_tokenizer_dir

        return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
    return AutoTokenizer.from_pretrained(name)


class LengthFilter:
    """Keeps samples whose SFT text (prompt + response) has at most `max_tokens` tokens.

    The batch form also stores what it counted, `meta["length"] = {"tokens", "tokenizer", "style"}`
    (when the tokenizer was given by name), so the export's card reads the count instead of
    tokenising every row a second time."""

    name = "length"

    def __init__(self, tokenizer: Any = DEFAULT_TOKENIZER, max_tokens: int = 2048, style: str = "alpaca"):
        self.tokenizer_name = tokenizer if isinstance(tokenizer, str) else None
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.max_tokens, self.style = max_tokens, style

    def text(self, record: Record) -> str:
        """The text training tokenises (prompt + `sft_target`); the prompt alone without a target."""
        target = sft_target(record.solution, record.answer)
        return format_prompt(record.problem, self.style, self.tokenizer) + (target or "")

    def count(self, record: Record) -> int:
        return len(self.tokenizer(self.text(record), add_special_tokens=False)["input_ids"])

    def _reason(self, n: int) -> str | None:
        return f"too_long: {n} > {self.max_tokens} tokens" if n > self.max_tokens else None

    def decide(self, record: Record) -> str | None:
        return self._reason(self.count(record))

    def decide_batch(self, records: list[Record]) -> list[tuple[Record, str | None]]:
        """One tokenizer call per batch: a fast tokenizer encodes a batch in parallel, in Rust."""
        ids = self.tokenizer([self.text(r) for r in records], add_special_tokens=False)["input_ids"]
        return [(self._counted(r, len(t)), self._reason(len(t))) for r, t in zip(records, ids, strict=True)]

    def _counted(self, record: Record, n: int) -> Record:
        if self.tokenizer_name is None:
            return record
        return annotate(record, "length", {"tokens": n, "tokenizer": self.tokenizer_name, "style": self.style})
