"""Tokenised SFT samples: prompt + response + EOS, with the loss on the response only.

The prompt is `mathforge.prompt.format_prompt` (the one evaluation uses) and the target is the
record's solution ending in "The answer is X". Prompt and response are tokenised separately and
concatenated, so the model learns to continue exactly the token sequence it will be given at
evaluation time; EOS is appended and learned so generation stops after the answer line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mathforge.answers import answer_line
from mathforge.io import read_records
from mathforge.prompt import PromptStyle, format_prompt, format_response
from mathforge.record import Record

IGNORE = -100  # the label id cross-entropy skips


class NoTrainableLabels(ValueError):
    """A batch in which every label is masked: training on it would silently learn nothing."""


@dataclass(frozen=True)
class Sample:
    """One tokenised training example; `labels` is -100 on the prompt tokens.

    Token arrays are int32 numpy arrays: millions of samples as Python int lists would not fit in memory.
    """

    id: str
    input_ids: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizeStats:
    """What tokenisation kept and what it dropped (and why), reported in the stage stats."""

    kept: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, record_id: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(record_id)


def load_records(spec: str, max_samples: int | None = None) -> Iterator[Record]:
    """Records from a record file, or from a seed source spec ("math:/path/train.jsonl")."""
    from mathforge.sources import SOURCES, load

    kind, sep, _ = spec.partition(":")
    records = load(spec) if sep and kind in SOURCES else read_records(spec)
    for i, record in enumerate(records):
        if max_samples is not None and i >= max_samples:
            return
        yield record


def response_text(record: Record) -> str | None:
    """The training target: the solution, ending in the answer line (added when missing)."""
    if not record.solution or not record.solution.strip():
        return None
    if answer_line(record.solution) is not None:
        return format_response(record.solution, answer_line(record.solution))
    if record.answer is None or not str(record.answer).strip():
        return None
    return format_response(record.solution, str(record.answer))


def encode(record: Record, tokenizer: Any, style: PromptStyle = "alpaca") -> Sample | None:
    """Tokenise one record; None when it has no usable target."""
    target = response_text(record)
    if target is None:
        return None
    prompt = format_prompt(record.problem, style=style, tokenizer=tokenizer)
    # A chat template already carries its special tokens; adding BOS again would double it.
    prompt_ids = tokenizer(prompt, add_special_tokens=style != "chat")["input_ids"]
    response_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [eos_id(tokenizer)]
    labels = [IGNORE] * len(prompt_ids) + response_ids
    return Sample(record.id, np.asarray(prompt_ids + response_ids, np.int32), np.asarray(labels, np.int32))


def eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the student's tokenizer has no EOS token: the model could never learn to stop")
    return int(tokenizer.eos_token_id)


def tokenize(records: Iterable[Record], tokenizer: Any, style: PromptStyle, max_length: int) -> tuple[list[Sample], TokenizeStats]:
    """Tokenise records, dropping (and counting) those without a target or longer than max_length.

    Over-long samples are dropped, not truncated: a truncated target loses its answer line and
    EOS and would teach the model to ramble (the paper filters at 2048 tokens for the same reason).
    """
    stats = TokenizeStats()
    samples: list[Sample] = []
    for record in records:
        sample = encode(record, tokenizer, style)
        if sample is None:
            stats.drop("no_target", record.id)
        elif len(sample) > max_length:
            stats.drop("too_long", record.id)
        elif not (sample.labels != IGNORE).any():
            stats.drop("empty_response", record.id)
        else:
            samples.append(sample)
            stats.kept += 1
            stats.tokens += len(sample)
            stats.trained_tokens += int((sample.labels != IGNORE).sum())
    return samples, stats


def pad_collate(batch: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of samples; padding gets label -100 and attention 0."""
    width = max(len(row["input_ids"]) for row in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.as_tensor(row["input_ids"])
        labels[i, :n] = torch.as_tensor(row["labels"])
        attention[i, :n] = 1
    check_trainable(labels)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention,
            "num_tokens": attention.sum()}


def check_trainable(labels: torch.Tensor) -> None:
    """Fail loudly on a batch with no trainable label (a masking bug or an empty response)."""
    if not bool((labels != IGNORE).any()):
        raise NoTrainableLabels(
            f"a batch of shape {tuple(labels.shape)} has no trainable labels: every token is masked "
            "(check the prompt/response split and max_length)"
        )
