"""N-gram decontamination against evaluation sets (the paper's 30-gram filter, §4.3.7).

A training row is dropped when one of its text fields (problem, solution) shares a run of `n`
consecutive words with the problem or solution of any evaluation item. Words come from
`normalize` + `words`: lower case, LaTeX spacing commands (`\\,`, `\\quad`, `\\left`, ...) and
`\\dfrac`/`\\tfrac` spellings removed, then maximal runs of ASCII letters/digits or non-ASCII
characters (so "x=5" and "x = 5", or "$\\frac{1}{2}$" and "\\frac 1 2", read the same).

Speed: the evaluation sets become a sorted array of 64-bit n-gram hashes plus a bit table
(memory bounded by the test sets, never by the data). A batch of training rows is hashed with
NumPy only: the batch's text is one byte array, word boundaries come from a byte lookup table, a
word's hash from two unaligned 8-byte loads, n-gram hashes from a polynomial rolling hash over
the word hashes (one cumulative sum), and membership from the bit table then `searchsorted`. Hash
hits are checked word for word in Python (they are rare), so the result is exact and equals the
pure-Python `ReferenceIndex` row for row. Batches can be spread over worker processes; the output
keeps the input order. Hand-written because we know of no maintained library that does exact
n-gram overlap with matched spans and evaluation item ids at this speed.
"""

from __future__ import annotations

import multiprocessing as mp
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mathforge.filters import FilterStats
from mathforge.record import Record, annotate

DEFAULT_N = 30
FIELDS = ("problem", "solution")
_W = r"a-z0-9\x80-\U0010ffff"
_WORD = re.compile(f"[{_W}]+")
# LaTeX commands that only change presentation; only whole words count ("\\leftarrow" stays).
_DROP = ("quad", "qquad", "left", "right", "displaystyle", "textstyle")
_SPACING = re.compile(rf"\\(?:{'|'.join(_DROP)})(?![{_W}])")
_FRAC = re.compile(rf"\\[dt]frac(?![{_W}])")
# A byte is part of a word when it is an ASCII letter/digit or any byte of a multi-byte UTF-8
# character: the same rule as `_WORD` on the decoded text.
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[*range(ord("a"), ord("z") + 1), *range(ord("A"), ord("Z") + 1), *range(ord("0"), ord("9") + 1),
            *range(0x80, 0x100)]] = True
_HEAD_MASK = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_BACKSLASH = ord("\\")
_P = 0x9E3779B97F4A7C15  # odd multipliers, so they are invertible modulo 2**64
_Q = 0xD6E8FEB86659FD93
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def normalize(text: str) -> str:
    """Lower-case ASCII and drop LaTeX spacing commands, so presentation does not hide overlap.

    Only ASCII is lower-cased: the NumPy path works on UTF-8 bytes and must read words the same way.
    """
    text = text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
    return _SPACING.sub(" ", _FRAC.sub(r"\\frac", text))


def words(text: str) -> list[str]:
    """The words n-grams are made of (see the module docstring)."""
    return _WORD.findall(normalize(text))


def record_texts(record: Record, fields: Sequence[str] = FIELDS) -> tuple[str, ...]:
    return tuple(getattr(record, f) or "" for f in fields)


# ---------------------------------------------------------------- vectorised hashing


class _Powers:
    """x**i and x**-i modulo 2**64 for i < len, grown on demand (uint64 arithmetic wraps)."""

    def __init__(self, x: int):
        self.x, self.inv = np.uint64(x), np.uint64(pow(x, -1, 1 << 64))
        self.fwd = self.bwd = np.ones(1, dtype=np.uint64)

    def get(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size > len(self.fwd):
            size = max(size, 2 * len(self.fwd))
            self.fwd = np.cumprod(np.full(size, self.x, dtype=np.uint64)) * self.inv
            self.bwd = np.cumprod(np.full(size, self.inv, dtype=np.uint64)) * self.x
        return self.fwd, self.bwd


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads polynomial hashes so nearby values do not cluster."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _span_hash(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, powers: _Powers) -> np.ndarray:
    """Polynomial hash of values[s:e] for every (s, e), all at once via one cumulative sum."""
    fwd, bwd = powers.get(len(values) + 1)
    acc = np.zeros(len(values) + 1, dtype=np.uint64)
    np.cumsum(values * fwd[: len(values)], out=acc[1:])
    return _mix((acc[ends] - acc[starts]) * bwd[starts])


def _word_hash(lowered: bytes, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A 64-bit hash per word from its first 8 bytes, its last 8 bytes and its length.

    Each word costs two unaligned 8-byte loads instead of arithmetic on every byte, which is what
    makes the scan fast. Long words that differ only in their middle collide; that costs nothing
    but a candidate, because every n-gram hit is checked word for word afterwards.
    """
    padded = lowered + bytes(8)
    u64 = np.ndarray(shape=(len(lowered),), dtype="<u8", buffer=padded, strides=(1,))  # a word at every byte
    length = end - start
    head = u64[start] & _HEAD_MASK[np.minimum(length, 8)]
    tail = u64[np.maximum(end - 8, 0)] * (length > 8)
    return _mix(head * np.uint64(_P) ^ tail * np.uint64(_Q) ^ length.astype(np.uint64))


@dataclass
class _Grams:
    """The n-grams of a list of documents: hash, document number and word position in it."""

    hashes: np.ndarray
    doc: np.ndarray
    pos: np.ndarray


class _Hasher:
    """N-gram hashes of raw texts, normalised on the fly in bytes exactly like `words`."""

    def __init__(self, n: int):
        self.n = n
        self.word_pow = _Powers(_Q)
        self.drop = self._words(" ".join(_DROP).encode(), latex=False)[0]
        self.dfrac = self._words(b"dfrac tfrac", latex=False)[0]
        self.frac = self._words(b"frac", latex=False)[0][0]

    def _words(self, blob_bytes: bytes, latex: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Hashes and start offsets of the words of a byte string, LaTeX spacing dropped."""
        blob = np.frombuffer(blob_bytes, dtype=np.uint8)
        is_word = np.concatenate(([False], _WORD_BYTE[blob], [False]))
        edges = np.flatnonzero(is_word[1:] != is_word[:-1])
        start, end = edges[0::2], edges[1::2]
        hashes = _word_hash(blob_bytes.lower(), start, end)
        if not latex:
            return hashes, start
        command = np.flatnonzero((blob[np.maximum(start - 1, 0)] == _BACKSLASH) & (start > 0))
        names = hashes[command]  # only words right after a backslash can be LaTeX commands
        hashes[command[np.isin(names, self.dfrac)]] = self.frac
        keep = np.ones(len(hashes), dtype=bool)
        keep[command[np.isin(names, self.drop)]] = False
        return hashes[keep], start[keep]

    def grams(self, docs: Sequence[str]) -> _Grams:
        """N-gram hashes of raw documents, never spanning two documents."""
        encoded = [d.encode("utf-8", "surrogatepass") for d in docs]
        doc_start = np.cumsum([0] + [len(e) + 1 for e in encoded[:-1]]) if encoded else np.zeros(0, np.int64)
        word_hash, w_start = self._words(b" ".join(encoded))
        # few documents, many words: search the documents' starts among the words, not the reverse
        doc_first_word = np.searchsorted(w_start, doc_start)
        word_doc = np.repeat(np.arange(len(docs)), np.diff(np.append(doc_first_word, len(w_start))))
        first = np.arange(max(len(word_hash) - self.n + 1, 0))
        first = first[word_doc[first] == word_doc[first + self.n - 1]]
        hashes = _span_hash(word_hash, first, first + self.n, self.word_pow)
        doc = word_doc[first]
        return _Grams(hashes, doc, first - doc_first_word[doc])


# ---------------------------------------------------------------- the evaluation-set index


@dataclass
class TestItem:
    """One evaluation item, kept as words per field for exact checks and span reports."""

    set: str
    id: str
    words: dict[str, list[str]]


@dataclass
class Hit:
    """A verified shared n-gram: which field of the row, which evaluation item and field, the span."""

    field: str
    set: str
    test_id: str
    test_field: str
    span: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "set": self.set, "test_id": self.test_id,
                "test_field": self.test_field, "span": self.span}


class NgramIndex:
    """The n-grams of evaluation sets as sorted 64-bit hashes, with owners for exact checks."""

    def __init__(self, sets: dict[str, Iterable[Record]], n: int = DEFAULT_N, fields: Sequence[str] = FIELDS):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.fields = n, tuple(fields)
        self.items: list[TestItem] = []
        docs, owners = [], []
        for name, records in sets.items():
            for record in records:
                texts = dict(zip(self.fields, map(normalize, record_texts(record, self.fields)), strict=True))
                self.items.append(TestItem(name, record.id, {f: _WORD.findall(t) for f, t in texts.items()}))
                for k, f in enumerate(self.fields):
                    docs.append(texts[f])
                    owners.append((len(self.items) - 1, k))
        grams = _Hasher(n).grams(docs)
        order = np.argsort(grams.hashes, kind="stable")
        owner = np.asarray(owners, dtype=np.int64).reshape(-1, 2)
        self.hashes = grams.hashes[order]
        self.item = owner[grams.doc[order], 0] if len(order) else np.zeros(0, np.int64)
        self.item_field = owner[grams.doc[order], 1] if len(order) else np.zeros(0, np.int64)
        self.pos = grams.pos[order]
        self.set_sizes = Counter(item.set for item in self.items)
        # A bit table on the top hash bits rejects almost every clean n-gram with one lookup, far
        # cheaper than a binary search; about 16 bits per n-gram, packed so it stays in cache.
        self.bits = max(16, int(np.ceil(np.log2(max(len(self.hashes), 1) * 16))))
        slots = self.hashes >> np.uint64(64 - self.bits)
        table = np.zeros(1 << self.bits, dtype=bool)
        table[slots] = True
        self.table = np.packbits(table, bitorder="little")

    def maybe(self, hashes: np.ndarray) -> np.ndarray:
        """False for hashes certainly absent from the index; True needs a `searchsorted` check."""
        slots = hashes >> np.uint64(64 - self.bits)
        return (self.table[slots >> np.uint64(3)] >> (slots & np.uint64(7)).astype(np.uint8)) & 1 == 1

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.hashes, self.item, self.item_field, self.pos, self.table))

    def describe(self) -> dict[str, Any]:
        return {"n": self.n, "sets": dict(self.set_sizes), "ngrams": int(len(self.hashes)),
                "index_bytes": self.nbytes}


# ---------------------------------------------------------------- scanning rows


class Scanner:
    """Finds the verified n-gram hits of rows (tuples of field texts) against an index."""

    def __init__(self, index: NgramIndex, fields: Sequence[str] = FIELDS):
        self.index, self.fields = index, tuple(fields)
        self.hasher = _Hasher(index.n)

    def scan(self, rows: Sequence[Sequence[str]], max_hits: int | None = None) -> list[list[Hit]]:
        """For each row, its verified hits in field and word order (empty list: clean), at most
        `max_hits` per row (None: all, e.g. to list every evaluation item a row touches)."""
        docs = [t for row in rows for t in row]
        grams = self.hasher.grams(docs)
        idx = self.index
        candidates = np.flatnonzero(idx.maybe(grams.hashes))
        lo = np.searchsorted(idx.hashes, grams.hashes[candidates], side="left")
        hi = np.searchsorted(idx.hashes, grams.hashes[candidates], side="right")
        found = hi > lo
        candidates, lo, hi = candidates[found], lo[found], hi[found]
        out: list[list[Hit]] = [[] for _ in rows]
        cache: dict[int, list[str]] = {}
        for g, start, end in zip(candidates.tolist(), lo.tolist(), hi.tolist(), strict=True):
            doc = int(grams.doc[g])
            row, k = divmod(doc, len(self.fields))
            if max_hits is not None and len(out[row]) >= max_hits:
                continue
            if doc not in cache:
                cache[doc] = words(docs[doc])
            gram = cache[doc][grams.pos[g] : grams.pos[g] + idx.n]
            for j in range(start, end):
                item = idx.items[idx.item[j]]
                test_field = idx.fields[idx.item_field[j]]
                if item.words[test_field][idx.pos[j] : idx.pos[j] + idx.n] == gram:
                    out[row].append(Hit(self.fields[k], item.set, item.id, test_field, " ".join(gram)))
        return out


class ReferenceIndex:
    """The straightforward pure-Python implementation: a set of word tuples per evaluation set.

    Kept as the yardstick for the fast path (tests and `bench/decontam.py` compare them row for
    row); it answers only whether a row is contaminated and by which first item.
    """

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


# ---------------------------------------------------------------- the streaming filter step


_WORKER: Scanner | None = None


def _init_worker(scanner: Scanner) -> None:
    global _WORKER  # one scanner per worker process, built once instead of pickled per batch
    _WORKER = scanner


def _scan_in_worker(rows: list[tuple[str, ...]], max_hits: int | None) -> list[list[Hit]]:
    assert _WORKER is not None
    return _WORKER.scan(rows, max_hits)


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class DecontamReport:
    """What decontamination removed, per evaluation set and per evaluation item."""

    n: int
    sets: dict[str, int]
    removed_by_set: Counter = field(default_factory=Counter)
    test_items_hit: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "sets": self.sets, "removed_by_set": dict(self.removed_by_set),
                "test_items_hit": len(self.test_items_hit)}


def scan_records(
    records: Iterable[Record], index: NgramIndex, *, fields: Sequence[str] = FIELDS,
    batch_size: int = 1024, workers: int = 1, max_hits: int | None = None,
) -> Iterator[tuple[Record, list[Hit]]]:
    """Stream (record, verified hits) in input order; `workers` > 1 scans batches in processes."""
    scanner = Scanner(index, fields)
    batches = _batches(records, batch_size)
    if workers <= 1:
        for batch in batches:
            yield from zip(batch, scanner.scan([record_texts(r, fields) for r in batch], max_hits), strict=True)
        return
    # fork shares the index with the workers without pickling it; at most 2 batches per worker are
    # in flight, so memory stays bounded however long the input is, and output keeps input order
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(scanner,)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.apply_async(_scan_in_worker, ([record_texts(r, fields) for r in batch], max_hits))))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield from zip(done, result.get(), strict=True)
        while pending:
            done, result = pending.popleft()
            yield from zip(done, result.get(), strict=True)


def decontaminate(
    records: Iterable[Record], index: NgramIndex, *, stats: FilterStats | None = None, rejects: Any = None,
    report: DecontamReport | None = None, fields: Sequence[str] = FIELDS, batch_size: int = 1024,
    workers: int = 1, max_hits: int = 5,
) -> Iterator[Record]:
    """Yield the records sharing no n-gram with the index; count and keep the others.

    A removed record goes to `rejects` with `meta["rejected"]` (reason `<set>_overlap: ...`) and
    `meta["decontam"]` (n and up to `max_hits` hits: field, set, test item id, test field, span).
    """
    scan = scan_records(records, index, fields=fields, batch_size=batch_size, workers=workers, max_hits=max_hits)
    yield from apply_hits(scan, index.n, stats=stats, rejects=rejects, report=report)


def apply_hits(
    scanned: Iterable[tuple[Record, list[Hit]]], n: int, *, stats: FilterStats | None = None,
    rejects: Any = None, report: DecontamReport | None = None,
) -> Iterator[Record]:
    """The keep/drop decision on scanned rows, shared by the local and the Ray engine."""
    stats = stats if stats is not None else FilterStats(f"decontam_{n}gram")
    for record, hits in scanned:
        stats.before.add(record)
        if not hits:
            stats.kept += 1
            stats.after.add(record)
            yield record
            continue
        first = hits[0]
        stats.dropped[f"{first.set}_overlap"] += 1
        if report is not None:
            report.removed_by_set[first.set] += 1
            report.test_items_hit.update(f"{h.set}/{h.test_id}" for h in hits)
        if rejects is not None:
            reason = f"{first.set}_overlap: {first.field} shares a {n}-gram with {first.test_id} ({first.test_field})"
            info = {"n": n, "hits": [h.to_dict() for h in hits]}
            rejects.write(annotate(annotate(record, "decontam", info), "rejected",
                                   {"filter": stats.name, "reason": reason}))


def overlap_stats(train: Iterable[Record], benchmark: Iterable[Record], *, n: int = DEFAULT_N,
                  name: str = "benchmark", workers: int = 1) -> dict[str, Any]:
    """Leakage check: how many training rows and benchmark items share an n-gram.

    For evaluation reports: a benchmark item hit by any training row may be memorised, so its
    score is suspect; the ids of hit items are returned so they can be scored separately.
    """
    index = NgramIndex({name: benchmark}, n=n)
    rows = contaminated = 0
    hit_items: set[str] = set()
    for _, hits in scan_records(train, index, workers=workers):
        rows += 1
        contaminated += bool(hits)
        hit_items.update(h.test_id for h in hits)
    total = len(index.items)
    return {"n": n, "benchmark": name, "train_rows": rows, "train_rows_overlapping": contaminated,
            "benchmark_items": total, "benchmark_items_hit": len(hit_items),
            "benchmark_fraction_hit": len(hit_items) / total if total else 0.0,
            "hit_item_ids": sorted(hit_items)}

