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
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha1
from typing import Any

import numpy as np

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


def shingles(text: str, k: int) -> set[bytes]:
    """The word k-shingles of a normalised text (`normalized_text`): the set near-dedup compares."""
    ws = text.split()
    return {" ".join(ws[i : i + k]).encode() for i in range(max(len(ws) - k + 1, 1))}


def near_duplicate(record: Record, kept: Sequence[Record], config: NearDedupConfig | None = None,
                   fields: Sequence[str] = FIELDS) -> bool:
    """`record` is a near-copy of one of `kept`: the Jaccard similarity of their shingle sets reaches
    the threshold. The definition `NearDedup` applies at scale (where MinHash estimates the Jaccard),
    computed exactly for the few rows a synthesis step compares, where an index would cost more."""
    cfg = config or NearDedupConfig()
    mine = shingles(normalized_text(record, fields), cfg.shingle)
    for other in kept:
        theirs = shingles(normalized_text(other, fields), cfg.shingle)
        if len(mine & theirs) >= cfg.threshold * len(mine | theirs):
            return True
    return False


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

        mh = MinHash(num_perm=self.config.num_perm, seed=self.config.seed)
        mh.update_batch(list(shingles(normalized_text(record, self.fields), self.config.shingle)))
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


class Signer:
    """Exact keys, MinHash signatures and LSH band hashes for a batch of records, vectorised.

    The signatures equal `NearDedup.signature` (datasketch's affine32 scheme, same seed) value for
    value, so the sharded dedup of `quality/clean.py` reaches today's verdicts; datasketch builds one
    MinHash per row, while here one batch of rows is one NumPy expression (several times faster).
    """

    def __init__(self, config: NearDedupConfig | None = None, fields: Sequence[str] = FIELDS):
        from datasketch import MinHash
        from datasketch.lsh import _optimal_param

        self.config = config or NearDedupConfig()
        self.fields = tuple(fields)
        mh = MinHash(num_perm=self.config.num_perm, seed=self.config.seed)
        if mh.scheme != "affine32":
            raise RuntimeError(f"datasketch's MinHash scheme is {mh.scheme}; Signer reproduces affine32 only")
        self.a, self.b = (np.asarray(p, dtype=np.uint32) for p in mh.permutations)
        # the band layout MinHashLSH picks for this threshold, so candidates match today's NearDedup
        self.bands, self.rows = _optimal_param(self.config.threshold, self.config.num_perm, 0.5, 0.5)

    def sign(self, records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(exact keys uint64[n], signatures uint32[n, num_perm], band hashes uint64[n, bands])."""
        texts = [normalized_text(r, self.fields) for r in records]
        keys = np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
                         for t in texts], dtype=np.uint64)
        if not texts:
            return keys, np.empty((0, self.config.num_perm), np.uint32), np.empty((0, self.bands), np.uint64)
        sigs = np.empty((len(texts), self.config.num_perm), np.uint32)
        for lo in range(0, len(texts), 64):  # 64 rows of shingles x permutations stay in cache
            sigs[lo : lo + 64] = self._signatures(texts[lo : lo + 64])
        return keys, sigs, self.band_hashes(sigs)

    def _signatures(self, texts: Sequence[str]) -> np.ndarray:
        from datasketch.minhash import _fmix

        hashes: list[int] = []
        starts = []
        for t in texts:
            starts.append(len(hashes))
            # datasketch's sha1_hash32, inlined: a function call per shingle costs as much as the hash
            hashes.extend(int.from_bytes(sha1(s).digest()[:4], "little") for s in shingles(t, self.config.shingle))
        phv = _fmix(np.array(hashes, dtype=np.uint32).reshape(-1, 1), 32) * self.a
        phv += self.b
        return np.minimum.reduceat(phv, np.array(starts), axis=0)

    def band_hashes(self, sigs: np.ndarray) -> np.ndarray:
        """One 64-bit hash per LSH band (a collision only adds a candidate, which the Jaccard check refutes)."""
        out = np.empty((len(sigs), self.bands), np.uint64)
        for band in range(self.bands):
            h = np.full(len(sigs), 0xCBF29CE484222325, np.uint64)
            for col in sigs[:, band * self.rows : (band + 1) * self.rows].T:
                h = (h ^ col.astype(np.uint64)) * np.uint64(0x100000001B3)
            out[:, band] = h ^ (h >> np.uint64(29))
        return out
