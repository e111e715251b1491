"""Duplicate removal: exact (after normalisation) and near-duplicate (MinHash LSH, `datasketch`).

Both are filters in the `mathforge.filters` sense: the first occurrence is kept, and a later copy
is dropped with a reason that names the kept row it matched ("near_duplicate:<kept id> ..."), so a
reviewer can put the two side by side. Text is compared after the decontamination normalisation
(`decontam.words`), so case, spacing and LaTeX spacing differences do not hide a copy.

By default a sample is its problem *and* solution: answer augmentation deliberately writes several
solutions for one problem, and those are not duplicates. Use `fields=("problem",)` to keep one
sample per problem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mathforge.filters import FilterStats, apply_filter
from mathforge.quality.decontam import record_texts, words
from mathforge.record import Record

FIELDS = ("problem", "solution")


def normalized_text(record: Record, fields: Sequence[str] = FIELDS) -> str:
    """The record's fields as normalised words, fields separated by a marker no word contains."""
    return " | ".join(" ".join(words(t)) for t in record_texts(record, fields))


class ExactDedup:
    """Drops a record whose normalised text equals an earlier one's."""

    name = "dedup_exact"

    def __init__(self, fields: Sequence[str] = FIELDS):
        self.fields = tuple(fields)
        self.seen: dict[bytes, str] = {}

    def key(self, record: Record) -> bytes:
        return hashlib.blake2b(normalized_text(record, self.fields).encode(), digest_size=16).digest()

    def admit(self, record: Record, key: bytes) -> str | None:
        """Decide with a precomputed key (lets another engine compute keys in parallel)."""
        kept = self.seen.setdefault(key, record.id)
        return None if kept == record.id else f"exact_duplicate:{kept}"

    def decide(self, record: Record) -> str | None:
        return self.admit(record, self.key(record))


@dataclass(frozen=True)
class NearDedupConfig:
    threshold: float = 0.8  # estimated Jaccard similarity of word shingles at which a row is a copy
    num_perm: int = 128
    shingle: int = 3  # words per shingle
    seed: int = 1


class NearDedup:
    """Drops a record whose word-shingle set is within `threshold` Jaccard of a kept record's.

    LSH proposes candidates; the estimated Jaccard of the full signatures decides, and the best
    matching kept row is named in the reason.
    """

    name = "dedup_near"

    def __init__(self, config: NearDedupConfig | None = None, fields: Sequence[str] = FIELDS):
        from datasketch import MinHash, MinHashLSH

        self.config = config or NearDedupConfig()
        self.fields = tuple(fields)
        self.lsh = MinHashLSH(threshold=self.config.threshold, num_perm=self.config.num_perm)
        self.kept: dict[str, Any] = {}  # LSH key -> signature
        self.ids: dict[str, str] = {}  # LSH key -> record id
        self.scheme = MinHash(num_perm=self.config.num_perm, seed=self.config.seed).scheme

    def signature(self, record: Record) -> np.ndarray:
        """The MinHash signature (num_perm uint64 values) of the record's word shingles."""
        from datasketch import MinHash

        ws = normalized_text(record, self.fields).split()
        k = self.config.shingle
        shingles = {" ".join(ws[i : i + k]).encode() for i in range(max(len(ws) - k + 1, 1))}
        mh = MinHash(num_perm=self.config.num_perm, seed=self.config.seed)
        mh.update_batch(list(shingles))
        return mh.hashvalues

    def admit(self, record: Record, signature: np.ndarray) -> str | None:
        """Decide with a precomputed signature (lets another engine compute them in parallel)."""
        from datasketch import LeanMinHash

        mh = LeanMinHash(seed=self.config.seed, hashvalues=signature, scheme=self.scheme)
        best, best_sim = None, -1.0
        for key in self.lsh.query(mh):
            sim = mh.jaccard(self.kept[key])
            if sim > best_sim:
                best, best_sim = key, sim
        if best is not None and best_sim >= self.config.threshold:
            return f"near_duplicate:{self.ids[best]} (jaccard {best_sim:.2f})"
        key = str(len(self.kept))  # record ids need not be unique; LSH keys must be
        self.lsh.insert(key, mh)
        self.kept[key], self.ids[key] = mh, record.id
        return None

    def decide(self, record: Record) -> str | None:
        return self.admit(record, self.signature(record))


def dedup(
    records: Iterable[Record], *, near: bool = True, config: NearDedupConfig | None = None,
    fields: Sequence[str] = FIELDS, rejects: Any = None, stats: list[FilterStats] | None = None,
) -> Iterator[Record]:
    """Exact then (optionally) near-duplicate removal, streaming; `stats` receives one entry per step."""
    steps: list[Any] = [ExactDedup(fields)] + ([NearDedup(config, fields)] if near else [])
    stream = records
    for step in steps:
        step_stats = FilterStats(step.name)
        if stats is not None:
            stats.append(step_stats)
        stream = apply_filter(stream, step, step_stats, rejects)
    yield from stream
