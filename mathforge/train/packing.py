"""Packing: several short samples in one sequence, none of them seeing another.

Samples are packed into rows of at most `max_length` tokens (best-fit decreasing, planned by
`prepare.pack_lengths` and joined by `prepare.SFTRows`). Each row
carries `position_ids` that restart at 0 for every sample and no `attention_mask`: transformers
(>= 4.54, `masking_utils.find_packed_sequence_indices`) then builds a block-diagonal causal mask for
sdpa/eager, and flash-attention-2 runs varlen kernels from the same position ids. The tail padding
of a row is its own segment (positions restart there too), so real tokens never attend to it, and
its labels are -100. The first label of every sample is -100 so no sample is trained to predict the
start of the next one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mathforge.train.data import IGNORE, check_trainable


def packed_collate(batch: list[dict[str, Any]], pad_id: int, flatten: bool = False) -> dict[str, torch.Tensor]:
    """Batch packed rows without an attention mask; `flatten` joins them into one row (flash-attention varlen)."""
    if flatten:
        batch = [{key: np.concatenate([row[key] for row in batch]) for key in ("input_ids", "labels", "position_ids")}]
    width = max(len(row["input_ids"]) for row in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(batch), width), dtype=torch.long)
    real = 0
    for i, row in enumerate(batch):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.as_tensor(row["input_ids"])
        labels[i, :n] = torch.as_tensor(row["labels"])
        position_ids[i, :n] = torch.as_tensor(row["position_ids"])
        # Positions of the tail padding restart at 0: the padding becomes a segment of its own.
        position_ids[i, n:] = torch.arange(width - n)
        real += n
    check_trainable(labels)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "num_tokens": torch.tensor(real)}
