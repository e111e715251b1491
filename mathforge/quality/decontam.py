"""N-gram decontamination against evaluation sets (the paper's 30-gram filter, §4.3.7).

A training row is dropped when one of its text fields (problem, solution) shares a run of `n`
consecutive words with the problem or solution of any evaluation item. Words come from
`normalize` + `words`: lower case, LaTeX spacing commands (`\\,`, `\\quad`, `\\left`, ...) and
`\\dfrac`/`\\tfrac` spellings removed, then maximal runs of ASCII letters/digits or non-ASCII
characters (so "x=5" and "x = 5", or "$\\frac{1}{2}$" and "\\frac 1 2", read the same).

Speed: the evaluation sets become a sorted array of 64-bit n-gram hashes, a Bloom filter and a
bucket directory (memory bounded by the test sets, never by the data). A batch of training rows
is one byte array scanned by a Numba-compiled kernel: presentation-only LaTeX commands are blanked
at each backslash, words are found and hashed with a branch-free loop over the bytes, n-gram hashes come
from a polynomial rolling hash over the word hashes, and each n-gram is rejected by one Bloom-filter
lookup or found in its directory bucket, with no Python object per word or per n-gram. (NumPy
array passes over the same steps were 2-3x slower: a dozen temporaries per word.) Hash hits are
checked word for word in Python on the document prefix they need (they are rare), so the result
is exact and equals the pure-Python `ReferenceIndex` row for row. The kernel releases the GIL, so
batches are spread over threads, one per core; the output keeps the input order.
Hand-written because we know of no maintained library that does exact n-gram overlap with
matched spans and evaluation item ids at this speed.
"""

from __future__ import annotations

import os
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

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
_BACKSLASH = np.uint8(ord("\\"))
# Word bytes (ASCII letters/digits, any byte of a multi-byte UTF-8 character) to their lower-case
# value, other bytes to 0: the same rule as `_WORD` on the decoded text.
_LOWER = np.zeros(256, dtype=np.uint8)
for _c in [*range(ord("0"), ord("9") + 1), *range(ord("a"), ord("z") + 1), *range(0x80, 0x100)]:
    _LOWER[_c] = _c
_LOWER[ord("A") : ord("Z") + 1] = _LOWER[ord("a") : ord("z") + 1]
_X = np.uint64(0x9E3779B97F4A7C15)  # the rolling hash's base (odd)
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


# ---------------------------------------------------------------- compiled hashing


@njit(cache=True, nogil=True)
def _mix(z: np.uint64) -> np.uint64:
    """splitmix64's finaliser: spreads polynomial hashes so nearby values do not cluster."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _is_command(blob: np.ndarray, start: int, end: int, name: np.ndarray) -> bool:
    """Whether blob[start:end], lower-cased, spells `name` (zero-padded, as long as the span)."""
    for k in range(end - start):
        c = blob[start + k]
        if 65 <= c <= 90:
            c += 32
        if c != name[k]:
            return False
    return True


@njit(cache=True, nogil=True)
def _blank_commands(blob: np.ndarray, cmd_names: np.ndarray, cmd_lens: np.ndarray, cmd_frac: np.ndarray) -> None:
    """Rewrite LaTeX commands that only change presentation, in place and length-preserving (byte
    offsets stay valid): a spacing command and its backslash become spaces, and "\\dfrac" or
    "\\tfrac" becomes "\\ frac", read as the word "frac". The same rules as `normalize`, done
    once per backslash before the word loop, which then needs no command logic: with it, the
    loop ran 3x slower (bench/decontam.py's rows)."""
    size = len(blob)
    for i in np.flatnonzero(blob == _BACKSLASH):
        for k in range(len(cmd_lens)):
            start, end = i + 1, i + 1 + cmd_lens[k]
            if end > size or (end < size and _LOWER[blob[end]] != 0):
                continue  # not a whole word ("\\leftarrow" stays)
            if _is_command(blob, start, end, cmd_names[k]):
                if cmd_frac[k]:
                    blob[start] = 32
                else:
                    blob[i:end] = 32
                break


@njit(cache=True, nogil=True)
def _doc_words(blob: np.ndarray, lo: int, hi: int, out: np.ndarray, ends: np.ndarray) -> int:
    """Hashes of the words of blob[lo:hi] into `out` (as `words` reads them, once
    `_blank_commands` has run) and where each ends into `ends`; returns their count.

    A word is a maximal run of ASCII letters/digits or bytes >= 0x80 (the UTF-8 bytes of non-ASCII
    characters); its hash folds its lower-cased bytes with an 8-bit rotation, so a word of up to 8
    bytes is its own bytes (no collisions) and longer words may collide (a collision only costs a
    verification). The loop is branch-free: branches on word boundaries mispredict about once per
    word and made it 3x slower.
    """
    count = 0
    h = inword = np.uint64(0)
    for i in range(lo, hi):
        c = np.uint64(_LOWER[blob[i]])
        w = np.uint64(c != 0)
        out[count], ends[count] = h, i
        count += inword & (w ^ np.uint64(1))
        # masking, not multiplying, by w: this is the loop's longest dependency chain
        h = (((h << np.uint64(8)) | (h >> np.uint64(56))) ^ c) & (np.uint64(0) - w)
        inword = w
    return count


@njit(cache=True, nogil=True)
def _bloom_mask(g: np.uint64) -> np.uint64:
    """Three bits of one 64-bit word of the Bloom filter, chosen by the low bits of a hash (the
    word is chosen by its top bits; `NgramIndex` sets the same bits with NumPy). A blocked
    filter: one memory read per lookup, and at 16 bits per n-gram 0.75% false positives on
    bench/decontam.py's rows, against 6% with one bit. Every positive costs a cache-missing
    directory read, which dominated the scan at 6%."""
    one = np.uint64(1)
    return (one << (g & np.uint64(63))) | (one << ((g >> np.uint64(6)) & np.uint64(63))) | (
        one << ((g >> np.uint64(12)) & np.uint64(63)))


@njit(cache=True, nogil=True)
def _ngrams(blob: np.ndarray, doc_start: np.ndarray, n: int, cmd_names: np.ndarray, cmd_lens: np.ndarray,
            cmd_frac: np.ndarray, table: np.ndarray, bits: int, index: np.ndarray, directory: np.ndarray,
            dir_bits: int, everything: bool):
    """The n-grams of each document blob[doc_start[d]:doc_start[d + 1]], never spanning two.

    `everything`: every n-gram's (hash, document, word position). Otherwise only the n-grams whose
    hash is in the sorted `index` (the Bloom filter `table` rejects almost all others with one
    read, see `_bloom_mask`; `directory[b]` is where hashes with top `dir_bits` bits b start in
    `index`, so a lookup reads one short bucket instead of binary-searching), with the range
    [lo, hi) of equal hashes in `index` and the byte offsets in its document where its text starts
    (the end of the word before it) and ends. N-gram
    hashes are a polynomial rolling hash over the word hashes: constant work per word.
    """
    size = len(blob) // 2 + 1  # at most one word per two bytes (a word and a separator)
    out_hash = np.empty(size if everything else 0, dtype=np.uint64)
    out_doc = np.empty(size, dtype=np.int64)
    out_pos = np.empty(size, dtype=np.int64)
    out_lo = np.empty(0 if everything else size, dtype=np.int64)
    out_hi = np.empty(0 if everything else size, dtype=np.int64)
    out_end = np.empty(0 if everything else size, dtype=np.int64)
    out_start = np.empty(0 if everything else size, dtype=np.int64)
    word = np.empty(size, dtype=np.uint64)
    word_end = np.empty(size, dtype=np.int64)
    lead = np.uint64(1)  # _X ** (n - 1): the weight of the word leaving the window
    for _ in range(n - 1):
        lead *= _X
    shift, dir_shift = np.uint64(64 - (bits - 6)), np.uint64(64 - dir_bits)
    _blank_commands(blob, cmd_names, cmd_lens, cmd_frac)
    found = 0
    for d in range(len(doc_start) - 1):
        count = _doc_words(blob, doc_start[d], doc_start[d + 1], word, word_end)
        if count < n:
            continue
        h = np.uint64(0)
        for k in range(n):
            h = h * _X + word[k]
        for p in range(count - n + 1):
            if p > 0:
                h = (h - word[p - 1] * lead) * _X + word[p + n - 1]
            g = _mix(h)
            if everything:
                out_hash[found], out_doc[found], out_pos[found] = g, d, p
                found += 1
                continue
            mask = _bloom_mask(g)
            if table[g >> shift] & mask != mask:
                continue
            bucket = g >> dir_shift
            j, e = directory[bucket], directory[bucket + 1]
            while j < e and index[j] < g:
                j += 1
            if j == e or index[j] != g:
                continue
            last = j + 1
            while last < e and index[last] == g:
                last += 1
            out_doc[found], out_pos[found], out_lo[found], out_hi[found] = d, p, j, last
            out_end[found] = word_end[p + n - 1] - doc_start[d]
            out_start[found] = word_end[p - 1] - doc_start[d] if p > 0 else 0
            found += 1
    if everything:
        return out_hash[:found], out_doc[:found], out_pos[:found], out_lo, out_hi, out_start, out_end
    return (out_hash, out_doc[:found], out_pos[:found], out_lo[:found], out_hi[:found], out_start[:found],
            out_end[:found])


@dataclass
class _Grams:
    """N-grams of a list of documents: hash, document number and word position in it, and for
    lookups the range [lo, hi) of entries of the index with the same hash, the byte offsets where
    the n-gram's text starts and ends in its document, and the encoded documents (`data`, each
    starting at `doc_start`)."""

    hashes: np.ndarray
    doc: np.ndarray
    pos: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    start: np.ndarray
    end: np.ndarray
    data: bytes
    doc_start: np.ndarray


class _Hasher:
    """N-gram hashes of raw texts, normalised on the fly in bytes exactly like `words`."""

    def __init__(self, n: int):
        self.n = n
        names = [*_DROP, "dfrac", "tfrac"]
        matrix = np.zeros((len(names), max(map(len, names))), dtype=np.uint8)
        for k, name in enumerate(names):
            matrix[k, : len(name)] = np.frombuffer(name.encode(), dtype=np.uint8)
        lens = np.array([len(name) for name in names], dtype=np.int64)
        frac = np.array([name.endswith("frac") for name in names])
        self.commands = (matrix, lens, frac)

    def grams(self, docs: Sequence[str], index: NgramIndex | None = None) -> _Grams:
        """All n-grams of raw documents, or only those whose hash is in `index`."""
        # documents are encoded one by one: encoding the joined batch was 2.5x slower as soon as
        # one document was not ASCII (the whole batch becomes a wide string). NUL is not a word
        # byte, so no word runs from one document into the next.
        encoded = [d.encode("utf-8", "surrogatepass") for d in docs]
        data = b"\0".join(encoded) + b"\0"
        sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        blob = np.frombuffer(bytearray(data), dtype=np.uint8)  # a writable copy: commands get blanked
        doc_start = np.concatenate(([0], np.cumsum(sizes + 1))).astype(np.int64)
        if index is None:
            none = np.zeros(1, dtype=np.int64)
            lookup = (none.astype(np.uint64), 64, none.astype(np.uint64), none, 64)
        else:
            lookup = (index.table, index.bits, index.hashes, index.directory, index.dir_bits)
        return _Grams(*_ngrams(blob, doc_start, self.n, *self.commands, *lookup, index is None), data, doc_start)


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
        # A Bloom filter rejects almost every clean n-gram with one read, far cheaper than a
        # binary search; about 16 bits per n-gram, so it stays in cache (1 MiB for GSM8K + MATH).
        self.bits = max(16, int(np.ceil(np.log2(max(len(self.hashes), 1) * 16))))
        self.table = np.zeros(1 << (self.bits - 6), dtype=np.uint64)
        h, one, low6 = self.hashes, np.uint64(1), np.uint64(63)
        masks = (one << (h & low6)) | (one << ((h >> np.uint64(6)) & low6)) | (one << ((h >> np.uint64(12)) & low6))
        np.bitwise_or.at(self.table, self.hashes >> np.uint64(64 - (self.bits - 6)), masks)
        # about one hash per bucket: a bucket is found with one read, not a binary search
        self.dir_bits = max(1, int(np.ceil(np.log2(max(len(self.hashes), 1)))))
        starts = np.arange(1 << self.dir_bits, dtype=np.uint64) << np.uint64(64 - self.dir_bits)
        self.directory = np.append(np.searchsorted(self.hashes, starts), len(self.hashes)).astype(np.int64)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.hashes, self.item, self.item_field, self.pos, self.table, self.directory))

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
        idx = self.index
        grams = self.hasher.grams(docs, idx)
        out: list[list[Hit]] = [[] for _ in rows]
        if not len(grams.doc):
            return out
        # hash hits are rare and sorted by document, so rows are verified one by one in Python and
        # a row stops as soon as it has `max_hits` verified hits (a copied solution has hundreds)
        row_of = grams.doc // len(self.fields)
        bounds = np.flatnonzero(np.diff(row_of)) + 1
        for first, last in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(row_of)].tolist(), strict=True):
            self._verify(docs, grams, range(first, last), out[int(row_of[first])], max_hits)
        return out

    def _verify(self, docs: list[str], grams: _Grams, found: range, hits: list[Hit], max_hits: int | None) -> None:
        idx = self.index
        for g in found:
            if max_hits is not None and len(hits) >= max_hits:
                return
            doc, pos = int(grams.doc[g]), int(grams.pos[g])
            # the n-gram's own bytes, cut at word ends, read as words: exactly its n words
            at = int(grams.doc_start[doc])
            text = grams.data[at + int(grams.start[g]) : at + int(grams.end[g])].decode("utf-8", "surrogatepass")
            gram = words(text)
            if len(gram) != idx.n:  # cannot happen if the kernel reads words as `words` does
                gram = words(docs[doc])[pos : pos + idx.n]
            for j in range(int(grams.lo[g]), int(grams.hi[g])):
                item = idx.items[idx.item[j]]
                test_field = idx.fields[idx.item_field[j]]
                if item.words[test_field][idx.pos[j] : idx.pos[j] + idx.n] == gram:
                    if max_hits is not None and len(hits) >= max_hits:
                        return
                    hits.append(Hit(self.fields[doc % len(self.fields)], item.set, item.id, test_field, " ".join(gram)))


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
    batch_size: int = 1024, workers: int | None = None, max_hits: int | None = None,
) -> Iterator[tuple[Record, list[Hit]]]:
    """Stream (record, verified hits) in input order; batches are scanned on `workers` threads
    (None: one per core).

    Threads, not processes: the compiled kernel, where the time goes, releases the GIL, so threads
    scale with cores while sharing the index and the rows without pickling either (processes lost
    their gain to pickling batches on 2 cores). At most 2 batches per worker are in flight, so
    memory stays bounded however long the input is.
    """
    scanner = Scanner(index, fields)
    batches = _batches(records, batch_size)
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        for batch in batches:
            yield from zip(batch, scanner.scan([record_texts(r, fields) for r in batch], max_hits), strict=True)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="decontam") as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.submit(scanner.scan, [record_texts(r, fields) for r in batch], max_hits)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield from zip(done, future.result(), strict=True)
        while pending:
            done, future = pending.popleft()
            yield from zip(done, future.result(), strict=True)


def decontaminate(
    records: Iterable[Record], index: NgramIndex, *, stats: FilterStats | None = None, rejects: Any = None,
    report: DecontamReport | None = None, fields: Sequence[str] = FIELDS, batch_size: int = 1024,
    workers: int | None = None, max_hits: int = 5,
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
                  name: str = "benchmark", workers: int | None = None) -> dict[str, Any]:
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

