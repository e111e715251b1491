"""Reference implementations the package's fast paths are checked against: plain, obviously right,
slow. The tests compare results row for row and `bench/` compares speed; nothing in `mathforge`
uses them, so they live here rather than ship."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from mathforge.filters import FilterStats, apply_filter
from mathforge.quality.decontam import DEFAULT_N, FIELDS, record_texts, words
from mathforge.quality.dedup import FIELDS as DEDUP_FIELDS
from mathforge.quality.dedup import ExactDedup, NearDedup, NearDedupConfig
from mathforge.quality.verify import CHECKS, verdict
from mathforge.record import Record


class ReferenceIndex:
    """The paper's n-gram decontamination as a set of word tuples per evaluation set: the yardstick
    of `matchers.TokenIndex`. It answers only whether a row is contaminated and by which first item."""

    def __init__(self, sets: dict[str, Iterable[Record]], n: int = DEFAULT_N, fields: Sequence[str] = FIELDS):
        self.n, self.fields = n, tuple(fields)
        self.grams: dict[tuple[str, ...], tuple[str, str]] = {}
        for name, records in sets.items():
            for record in records:
                for text in record_texts(record, fields):
                    for gram in self._grams(words(text)):
                        self.grams.setdefault(gram, (name, record.id))

    def _grams(self, ws: list[str]) -> Iterator[tuple[str, ...]]:
        for i in range(len(ws) - self.n + 1):
            yield tuple(ws[i : i + self.n])

    def first_hit(self, texts: Sequence[str]) -> tuple[str, str] | None:
        for text in texts:
            for gram in self._grams(words(text)):
                if gram in self.grams:
                    return self.grams[gram]
        return None


def k_center_greedy_numpy(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """`coreset.k_center_greedy` as a plain NumPy loop (one full distance pass per pick, float32)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    picks = [int(np.random.default_rng(seed).integers(x.shape[0]))]
    min_d = np.maximum(sq + sq[picks[0]] - 2 * (x @ x[picks[0]]), 0)
    while len(picks) < k:
        nxt = int(np.argmax(min_d))
        picks.append(nxt)
        np.minimum(min_d, np.maximum(sq + sq[nxt] - 2 * (x @ x[nxt]), 0), out=min_d)
    return np.asarray(picks, dtype=np.int64)


def dedup(
    records: Iterable[Record], *, near: bool = True, config: NearDedupConfig | None = None,
    fields: Sequence[str] = DEDUP_FIELDS, rejects: Any = None, stats: list[FilterStats] | None = None,
) -> Iterator[Record]:
    """Exact then (optionally) near-duplicate removal in memory, one filter after the other."""
    steps: list[Any] = [ExactDedup(fields)] + ([NearDedup(config, fields)] if near else [])
    stream = records
    for step in steps:
        step_stats = FilterStats(step.name)
        if stats is not None:
            stats.append(step_stats)
        stream = apply_filter(stream, step, step_stats, rejects)
    yield from stream


class VerifiedFilter:
    """Drops records a verification check rejected; undecided records are kept unless `require_decided`."""

    name = "verified"

    def __init__(self, checks: Sequence[str] = CHECKS, require_decided: bool = False):
        unknown = set(checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown verification check(s) {sorted(unknown)} (known: {', '.join(CHECKS)})")
        self.checks, self.require_decided = tuple(checks), require_decided

    def decide(self, record: Record) -> str | None:
        for check in self.checks:
            if verdict(record, (check,)) is False:
                return f"{check}_failed"
        if self.require_decided and verdict(record, self.checks) is None:
            return "unverified"
        return None
