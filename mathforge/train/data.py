"""SFT samples: prompt + response + EOS, with the loss on the response only.

The prompt is `mathforge.prompt.format_prompt` (the one evaluation uses) and the target is the
record's solution ending in "The answer is X" (`mathforge.answers.sft_target`); EOS is appended and learned so
generation stops after the answer line. Tokenisation itself lives in `prepare` (batched, on disk);
this module reads the records and batches tokenised rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mathforge.answers import sft_target
from mathforge.io import read_records
from mathforge.prompt import PromptStyle, format_prompt
from mathforge.record import Record

if TYPE_CHECKING:  # torch is imported where batches are built: exports and `prepare` never need it
    import torch

IGNORE = -100  # the label id cross-entropy skips


class NoTrainableLabels(ValueError):
    """A batch in which every label is masked: training on it would silently learn nothing."""


def load_records(spec: str, max_samples: int | None = None) -> Iterator[Record]:
    """Records from a record file, or from a seed source spec ("math:/path/train.jsonl")."""
    from mathforge.sources import SOURCES, load

    kind, sep, _ = spec.partition(":")
    records = load(spec) if sep and kind in SOURCES else read_records(spec)
    for i, record in enumerate(records):
        if max_samples is not None and i >= max_samples:
            return
        yield record


def sft_texts(record: Record, style: PromptStyle = "alpaca", tokenizer: Any = None) -> tuple[str, str] | None:
    """(prompt, completion): exactly the texts a stage trains on, or None when the record has no target."""
    target = sft_target(record.solution, record.answer)
    return None if target is None else (format_prompt(record.problem, style=style, tokenizer=tokenizer), target)


def eos_id(tokenizer: Any) -> int:
    """The id every target ends with; a tokenizer without one cannot teach the model to stop."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the student's tokenizer has no EOS token: the model could never learn to stop")
    return int(tokenizer.eos_token_id)


def pad_collate(batch: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of samples; padding gets label -100 and attention 0."""
    import torch

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
