"""Decontamination matchers side by side, behind one filter-shaped `Decontaminator`.

Matchers (the `MATCHERS` table; `--matchers` on the CLI, `matchers:` in recipes):

    ngram         word n-grams as the paper's 30-gram filter (`decontam.words`)
    math-ngram    n-grams over math-aware tokens: runs of letters and digits, and each run of
                  one operator (+ - = < > & |), so LaTeX-heavy spans keep their length
                  ("$x + 1 \\neq 0,$" is 5 tokens, 4 words). Brackets, commas and Asymptote
                  code as tokens made unrelated rows match (the audit)  <- default
    masked-ngram  letter runs, digit runs read as one placeholder, operators; a row's problem
                  against test problems: number-swapped rewrites  <- default
    embedding     cosine similarity of MiniLM (or any sentence-transformers) embeddings of the
                  row's problem to the test problems it `restates` (same digits, formulas and
                  negations, few words changed), removed at `threshold` (0.85) and above; only
                  rows with such a test problem are embedded (`word_change=None`: similarity
                  alone, to every test problem)
    llm           a judge (any engine backend) asked about the embedding candidates only
                  (similarity in [candidate_threshold, threshold)), so its cost stays small

Every n-gram matcher also matches a test text shorter than n tokens whole: a test problem of at
least `min_whole` tokens where its tokens appear contiguously in a row's field and make up at least
`cover` (half) of it, a shorter one and a short test solution only when a row's field has exactly
its tokens (a 5-token "Compute $\\dbinom{8}{4}$." would otherwise match any text quoting it).
Without this, 2,660 of the 5,000 MATH test problems have no 30-gram at all.

Speed: the n-gram matchers, the leakage check (`overlap_stats`), the audit's yardstick (the
paper's 30-word filter, `whole=False`) and the Ray engine share one Numba kernel (`_kernel`): tokens
hashed from raw UTF-8 bytes with LaTeX spacing commands blanked (`decontam._blank_commands`),
window hashes from prefix hashes, a blocked Bloom filter and a bucket directory over sorted 64-bit
hashes. A row's n-grams are looked up only around every (n // 4)-th window of n - n // 4 + 1
tokens that a second Bloom filter (of all such windows of the test texts) passes: any n-gram
holds one of them. The first `min_whole` tokens of each short test problem are anchors, looked
up at every token behind a one-bit map, in fields short enough for one to cover. Hash hits are
verified token for token in Python on the bytes of the matched tokens only, so every removal is
exact and names its evidence. Hand-written because we
know of no maintained library that does exact n-gram overlap with matched spans and evaluation
item ids at this speed. `bench/decontam.py` measures it against the pinned pure-Python
`bench/oracles.py:ReferenceIndex`.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Any, ClassVar

import numpy as np
from numba import njit

from mathforge.filters import batches
from mathforge.quality.decontam import _DROP, _M1, _M2, _X, FIELDS, _blank_commands, normalize
from mathforge.record import Record, annotate

# masked-ngram joined the default on the audit's numbers (docs/decontamination.md): on all of MATH
# train it removes 277 rows beyond math-ngram, 270 of them number-swapped siblings of a test problem
DEFAULT_MATCHERS = ("math-ngram", "masked-ngram")
DEFAULT_N = 30
MASKED_N = 50
MIN_WHOLE = 8  # shorter test texts must fill a row's field exactly (see the module docstring)
# A short test problem found inside a row's field must make up at least this share of its tokens:
# a 21-token "What is the greatest integer less than or equal to ...?" quoted inside a 36-token
# problem that asks something else is weak evidence, a test problem with a preamble is not.
WHOLE_COVER = 0.5
OPERATORS = "+-=<>&|"
_LETTERS = r"a-z\x80-\U0010ffff"
_TOKEN = {
    "words": re.compile(rf"[{_LETTERS}0-9]+"),
    "math": re.compile(rf"[{_LETTERS}0-9]+|" + "|".join(f"{re.escape(c)}+" for c in OPERATORS)),
    "masked": re.compile(rf"[{_LETTERS}]+|[0-9]+|" + "|".join(f"{re.escape(c)}+" for c in OPERATORS)),
}
MASK = "#"
# Asymptote figure code, ignored by `masked-ngram`: with its numbers masked, the grid and axis
# boilerplate of unrelated figures ("draw((i,-5)--(i,5),gray(0.7))") matched for 30 tokens and more.
_FIGURES = re.compile(r"\[asy\].*?\[/asy\]", re.S)
# Byte classes of the kernel: 0 separator, 1 letter run (and digit run but in `masked`), 2 digit run
# read as the placeholder, 3 + k a run of operator k. The same rules as `_TOKEN` on the decoded,
# normalised text: a token ends where the class changes, so a run of one operator is one token.
_LOWER = np.zeros(256, dtype=np.uint64)
for _c in range(256):
    _LOWER[_c] = _c + 32 if 65 <= _c <= 90 else _c
_WHOLE_SALT = np.uint64(0x5851F42D4C957F2D)
# A copied solution has hundreds of hash hits; one verified is all the evidence a removal needs,
# and 64-bit hashes of different token runs agree by chance too rarely to need more than a few.
_HITS_PER_DOC = 4
# An anchor's key is its m-gram hash times one odd constant, not `_mix`ed: a lookup per token
# with the full mix and Bloom filter made the whole scan 1.6x slower; one multiply and one bit of
# `anchor_map` (about 64 bits per anchor, so ~1.5% of tokens go on to the directory) cost nothing.
_ANCHOR_MUL = np.uint64(0xD6E8FEB86659FD93)
# n-grams are looked up around every (n // SAMPLE_EVERY)-th window only (`_kernel`): a Bloom read
# per token was a fifth of the scan
SAMPLE_EVERY = 4
_ONE = np.uint64(1)


def _classes(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per byte, its class (above) and the value it folds into its token's hash: its lower-cased
    byte, and 0 for a separator and a placeholder digit (a digit run of any length hashes as 0)."""
    kind = np.zeros(256, dtype=np.uint8)
    letters = [*range(ord("a"), ord("z") + 1), *range(ord("A"), ord("Z") + 1), *range(0x80, 0x100)]
    digits = list(range(ord("0"), ord("9") + 1))
    kind[letters] = 1
    kind[digits] = 2 if mode == "masked" else 1
    if mode != "words":
        kind[[ord(c) for c in OPERATORS]] = np.arange(3, 3 + len(OPERATORS))
    value = np.where((kind != 0) & (kind != 2), _LOWER, 0).astype(np.uint64)
    return kind, value


def tokens(text: str, mode: str = "math") -> list[str]:
    """The tokens a matcher reads (`mode`: words, math or masked); the kernel reads the same."""
    text = normalize(text.replace("\xa0", " "))
    found = _TOKEN[mode].findall(_FIGURES.sub(" ", text) if mode == "masked" else text)
    if mode == "masked":
        return [MASK if t[0].isdigit() else t for t in found]
    return found


# ---------------------------------------------------------------- the compiled kernel


@njit(cache=True, nogil=True, inline="always")
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _doc_tokens(blob: np.ndarray, lo: int, hi: int, kind: np.ndarray, value: np.ndarray, out: np.ndarray,
                ends: np.ndarray) -> int:
    """Hashes of the tokens of blob[lo:hi] into `out` and the byte where each ends into `ends`;
    returns their count. A token's hash folds its bytes' values with an 8-bit rotation.
    Branch-free: a branch per token boundary mispredicts; so both are stored at every byte and
    the count moves on at the end of a token. The chain per byte is one and, one rotation and
    one xor, the mask computed off the chain. Flags stay small integers and only the hash is
    uint64: Numba reads uint64 mixed with int64 as float64, which made this loop 20x slower;
    with signed indices, 1.4x.
    With the class and the value in one 16-bit table, a second test for runs of one operator
    and a test for separators, the loop took 1.55x as long (one class per operator and a
    separator's value of 0 make both unnecessary)."""
    count = np.uint64(0)  # indices unsigned: Numba wraps a signed index below 0, a test per access
    cur = np.uint8(0)
    h = np.uint64(0)
    one = np.uint64(1)
    for i in range(np.uint64(lo), np.uint64(hi)):
        b = blob[i]
        c = kind[b]
        edge = c != cur
        out[count], ends[count] = h, i
        count += np.uint64(edge & (cur != 0))
        keep = np.uint64(edge) - one  # a new token, or none, starts from zero
        h = (((h & keep) << np.uint64(8)) | ((h & keep) >> np.uint64(56))) ^ value[b]
        cur = c
    out[count], ends[count] = h, hi
    return np.int64(count) + np.int64(cur != 0)


@njit(cache=True, nogil=True)
def _spelled(blob: np.ndarray, lo: np.ndarray, hi: np.ndarray, kind: np.ndarray, value: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of each span blob[lo[k]:hi[k]] as `tokens` spells them, joined by single spaces
    (a placeholder digit run as the mask), one after the other; and where each span's text
    starts. The hash hits' verification reads these: a regular expression per hit, in Python,
    was a tenth of a scan."""
    out = np.empty(np.sum(hi - lo) * 2 + 1, dtype=np.uint8)
    at = np.empty(len(lo) + 1, dtype=np.int64)
    k = 0
    for s in range(len(lo)):
        at[s] = k
        cur = np.uint8(0)
        for i in range(lo[s], hi[s]):
            b = blob[i]
            c = kind[b]
            if c != 0 and c != cur:  # a token starts
                if k > at[s]:
                    out[k] = 32
                    k += 1
                if c == 2:
                    out[k] = 35
                    k += 1
            if c != 0 and c != 2:
                out[k] = value[b]
                k += 1
            cur = c
    at[len(lo)] = k
    return out[:k], at


_FIGURE = (np.frombuffer(b"[asy]", dtype=np.uint8).astype(np.uint64),
           np.frombuffer(b"[/asy]", dtype=np.uint8).astype(np.uint64))


@njit(cache=True, nogil=True)
def _at(blob: np.ndarray, i: int, word: np.ndarray) -> bool:
    if i + len(word) > len(blob):
        return False
    for k in range(len(word)):  # noqa: SIM110 (a loop, not all(...): Numba compiles no generators here)
        if _LOWER[blob[i + k]] != word[k]:
            return False
    return True


@njit(cache=True, nogil=True)
def _blank_figures(blob: np.ndarray, opening: np.ndarray, closing: np.ndarray) -> None:
    """Blank each Asymptote block "[asy] ... [/asy]" within one document, as `_FIGURES` does."""
    i, size = 0, len(blob)
    while i < size:
        if blob[i] != 91 or not _at(blob, i, opening):
            i += 1
            continue
        j = i + len(opening)
        while j < size and blob[j] != 0 and not (blob[j] == 91 and _at(blob, j, closing)):
            j += 1
        if j < size and blob[j] != 0:
            j += len(closing)
            blob[i:j] = 32
        i = j


@njit(cache=True, nogil=True, inline="always")
def _power(n: int) -> np.uint64:
    lead = np.uint64(1)
    for _ in range(n - 1):
        lead *= _X
    return lead


@njit(cache=True, nogil=True, inline="always")
def _find(g: np.uint64, index: np.ndarray, directory: np.ndarray, dir_shift: np.uint64) -> int:
    """Where hash `g` starts in the sorted `index` (its bucket in `directory`), or -1."""
    bucket = g >> dir_shift
    j, e = directory[bucket], directory[bucket + 1]
    while j < e and index[j] < g:
        j += 1
    return j if j < e and index[j] == g else -1


@njit(cache=True, nogil=True, inline="always")  # not inlined by LLVM alone: the scan ran 2.5x slower
def _known(g: np.uint64, table: np.ndarray, shift: np.uint64, index: np.ndarray, directory: np.ndarray,
           dir_shift: np.uint64) -> int:
    """`_find`, after the blocked Bloom filter `table` rejected most hashes with one read."""
    one = np.uint64(1)
    mask = (one << (g & np.uint64(63))) | (one << ((g >> np.uint64(6)) & np.uint64(63))) | (
        one << ((g >> np.uint64(12)) & np.uint64(63)))
    if table[g >> shift] & mask != mask:
        return -1
    return _find(g, index, directory, dir_shift)


@njit(cache=True, nogil=True, inline="always")
def _emit(out_hash, out_doc, out_pos, found, g, d, p):
    out_hash[found], out_doc[found], out_pos[found] = g, d, p
    return found + 1


@njit(cache=True, nogil=True, inline="always")
def _whole_follows(pre: np.ndarray, count: int, p: int, j: int, index: np.ndarray, lengths: np.ndarray,
                   wholes: np.ndarray, need: int) -> int:
    """The length (at least `need`) of a short test text whose anchor is `index[j]` (or an equal
    key after it) that follows at token `p` in full (0: none): its hash against the window's, from
    the prefix hashes `pre`. A first few words shared with a short test problem are common;
    checking them in Python was most of the time."""
    g = index[j]
    while j < len(index) and index[j] == g:
        size = lengths[j]
        if need <= size and p + size <= count and (pre[p + size] - pre[p] * _power(size + 1)) | _ONE == wholes[j]:
            return size
        j += 1
    return 0


@njit(cache=True, nogil=True)
def _sampled(pre: np.ndarray, last: int, short: int, stride: int, power_s: np.uint64, table: np.ndarray,
             shift: np.uint64, cand: np.ndarray) -> int:
    """The start of each window of `short` tokens at a multiple of `stride` (up to `last`) that
    the Bloom filter `table` passes, into `cand`. Window hashes come from the prefix hashes
    `pre`: no loop-carried state, so the loop pipelines."""
    seen = 0
    one = np.uint64(1)
    for r in range(0, last, stride):
        g = _mix(pre[r + short] - pre[r] * power_s)
        mask = (one << (g & np.uint64(63))) | (one << ((g >> np.uint64(6)) & np.uint64(63))) | (
            one << ((g >> np.uint64(12)) & np.uint64(63)))
        cand[seen] = r
        seen += np.int64(table[g >> shift] & mask == mask)
    return seen


@njit(cache=True, nogil=True)
def _anchored(pre: np.ndarray, count: int, m: int, power_m: np.uint64, anchor_map: np.ndarray,
              anchor_shift: np.uint64, cand: np.ndarray) -> int:
    """The start of each m-token window whose key has its bit set in `anchor_map`, into `cand`."""
    seen = 0
    for p in range(count - m + 1):
        bit = ((pre[p + m] - pre[p] * power_m) * _ANCHOR_MUL) >> anchor_shift
        cand[seen] = p
        seen += np.int64((anchor_map[bit >> np.uint64(6)] >> (bit & np.uint64(63))) & np.uint64(1))
    return seen


@njit(cache=True, nogil=True)
def _kernel(blob: np.ndarray, doc_start: np.ndarray, kind: np.ndarray, value: np.ndarray, n: int, m: int, cmd_names: np.ndarray,
            cmd_lens: np.ndarray, cmd_frac: np.ndarray, cmd_slots: np.ndarray, table: np.ndarray, bits: int, index: np.ndarray,
            directory: np.ndarray, dir_bits: int, lengths: np.ndarray, wholes: np.ndarray, anchor_map: np.ndarray,
            anchor_bits: int, sample_table: np.ndarray, sample_bits: int, stride: int, build: bool, whole: bool,
            limit: int, cover: float, anchored: np.ndarray, figures: bool, opening: np.ndarray, closing: np.ndarray):
    """`build`: the keys of each test document: all its n-grams or, when it is shorter (and
    `whole`), the hash of its first `m` tokens salted as an anchor (where `anchored[d]` and it has
    m tokens; then with its length as position and its whole hash) or of all its tokens salted as
    whole. Otherwise the keys of each document found in `index`, at most `limit` per document (0:
    all): its n-grams and, with `whole`, the anchors of short texts that follow in full and cover
    at least `cover` of the document's tokens (`lengths`, `wholes`; `anchor_map`: see
    `_ANCHOR_MUL`) and itself whole when shorter than n.
    n-grams are looked for from a sample (`_sampled`): every `stride`-th window of
    n - stride + 1 tokens against `sample_table`, a Bloom filter of all such windows of the test
    texts (in `build`, their hashes are the last output).
    Returns (hash, document, token position, whole hash, first byte, end byte) per key; the bytes
    delimit the matched tokens in their document (from the end of the token before them), so
    they are verified without reading the rest of it."""
    # at most a key per byte, or `limit` per document: outputs sized by the batch's bytes were
    # 40 MB a call, mapped and unmapped each time (the first scan of a process ran 1.3x slower)
    size = len(blob) + 2 if build or limit <= 0 else (len(doc_start) - 1) * limit + 2
    out_hash = np.empty(size, dtype=np.uint64)
    out_doc = np.empty(size, dtype=np.int64)
    out_pos = np.empty(size, dtype=np.int64)
    out_whole = np.zeros(size if build else 0, dtype=np.uint64)
    out_span = np.empty((0 if build else size, 2), dtype=np.int64)
    out_sample = np.empty(size if build else 0, dtype=np.uint64)
    sampled = 0
    # per-document buffers sized by the longest document, not the batch: Numba's zeros() writes
    # every byte, and zeroing 8 bytes per byte of a 1 MB batch took 45% of the scan
    longest = np.max(np.diff(doc_start)) + 2 if len(doc_start) > 1 else 2
    tok = np.empty(longest, dtype=np.uint64)
    ends = np.empty(longest, dtype=np.int64)
    pre = np.empty(longest, dtype=np.uint64)
    cand = np.empty(longest, dtype=np.int64)
    pre[0] = 0
    short = n - stride + 1  # the sampled windows' length
    power_n, power_m, power_s = _power(n + 1), _power(m + 1), _power(short + 1)  # X**n, X**m, X**short
    shift, dir_shift = np.uint64(64 - (bits - 6)), np.uint64(64 - dir_bits)
    sample_shift = np.uint64(64 - (sample_bits - 6))
    anchor_shift = np.uint64(64 - anchor_bits)
    limit = limit if limit > 0 else size
    _blank_commands(blob, cmd_names, cmd_lens, cmd_frac, cmd_slots)
    if figures:
        _blank_figures(blob, opening, closing)
    found = 0
    for d in range(len(doc_start) - 1):
        lo = doc_start[d]
        count = _doc_tokens(blob, lo, doc_start[d + 1], kind, value, tok, ends)
        if count == 0:
            continue  # an empty field matches nothing
        for k in range(np.uint64(count)):
            pre[k + _ONE] = pre[k] * _X + tok[k]
        first = found
        if count < n:
            if not whole:
                continue
            g = _mix(pre[count] ^ _WHOLE_SALT)
            if build and not (count >= m and anchored[d]):
                found = _emit(out_hash, out_doc, out_pos, found, g, d, 0)
                continue
            if not build and _known(g, table, shift, index, directory, dir_shift) >= 0:
                out_span[found, 0], out_span[found, 1] = 0, ends[count - 1] - lo
                found = _emit(out_hash, out_doc, out_pos, found, g, d, 0)
        if count < m:
            continue
        if build and count < n:
            out_whole[found] = pre[count] | _ONE  # never 0, which marks a key that is not an anchor
            found = _emit(out_hash, out_doc, out_pos, found, pre[m] * _ANCHOR_MUL, d, count)
            continue
        if build:
            for p in range(count - n + 1):
                found = _emit(out_hash, out_doc, out_pos, found, _mix(pre[p + n] - pre[p] * power_n), d, p)
            for p in range(count - short + 1):
                out_sample[sampled] = _mix(pre[p + short] - pre[p] * power_s)
                sampled += 1
            continue
        # An n-gram shared with a test text holds a sampled window (its first start at a multiple
        # of `stride` is at most stride - 1 tokens in, and that window ends inside it): only the
        # n-grams around sampled windows the filter passes are looked up, in order of position.
        # Two tight loops per document: the sampled windows the filter passes, then the lookups.
        # With lookups and outputs in one loop body it compiled to code 2.5x slower.
        seen = _sampled(pre, count - n + stride, short, stride, power_s, sample_table, sample_shift, cand) \
            if count >= n else 0
        for k in range(seen):
            r = cand[k]
            for p in range(max(r - stride + 1, 0), min(r, count - n) + 1):
                g = _mix(pre[p + n] - pre[p] * power_n)
                if _known(g, table, shift, index, directory, dir_shift) >= 0:
                    out_span[found, 0] = ends[p - 1] - lo if p > 0 else 0
                    out_span[found, 1] = ends[p + n - 1] - lo
                    found = _emit(out_hash, out_doc, out_pos, found, g, d, p)
                    if found - first >= limit:
                        break
            if found - first >= limit:
                break
        need = max(m, np.int64(np.ceil(cover * count)))
        if not whole or found - first >= limit or need >= n:
            continue  # no short test text (fewer than n tokens) can cover `need` of this document
        for k in range(_anchored(pre, count, m, power_m, anchor_map, anchor_shift, cand)):
            p = cand[k]
            g = (pre[p + m] - pre[p] * power_m) * _ANCHOR_MUL
            j = _find(g, index, directory, dir_shift)
            size_j = _whole_follows(pre, count, p, j, index, lengths, wholes, need) if j >= 0 else 0
            if size_j > 0:
                out_span[found, 0] = ends[p - 1] - lo if p > 0 else 0
                out_span[found, 1] = ends[p + size_j - 1] - lo
                found = _emit(out_hash, out_doc, out_pos, found, g, d, p)
                if found - first >= limit:
                    break
    return (out_hash[:found], out_doc[:found], out_pos[:found], out_whole[: found if build else 0], out_span[:found],
            out_sample[:sampled])


def _commands() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The commands `decontam._blank_commands` blanks: names (zero-padded), lengths, which are
    fractions, and the slots it looks their first four letters up in: a multiplier
    that sends the eight prefixes to eight of 16 slots (the first odd one that does)."""
    names = [*_DROP, "dfrac", "tfrac"]
    matrix = np.zeros((len(names), max(map(len, names))), dtype=np.uint8)
    for k, name in enumerate(names):
        matrix[k, : len(name)] = np.frombuffer(name.encode(), dtype=np.uint8)
    prefixes = [int.from_bytes(name[:4].encode(), "little") | 0x20202020 for name in names]
    mul = next(m for m in range(0x9E3779B1, 1 << 32, 2)
               if len({((p * m) & 0xFFFFFFFF) >> 28 for p in prefixes}) == len(prefixes))
    slots = np.zeros((17, 2), dtype=np.uint64)
    for k, p in enumerate(prefixes):
        slots[((p * mul) & 0xFFFFFFFF) >> 28] = p, k
    slots[16, 0] = mul
    return (matrix, np.array([len(x) for x in names], dtype=np.int64), np.array([x.endswith("frac") for x in names]),
            slots)


_COMMANDS = _commands()


def _blob(docs: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Documents (None: empty) as NUL-separated UTF-8 bytes in a writable array (the kernel
    blanks commands in place), and where each document starts. Encoded one by one
    for their byte sizes: encoding the joined batch, a wide string once one character is not
    ASCII, took 2-3x as long, and a batch of MATH rows nearly always has one."""
    try:
        encoded = list(map(str.encode, docs))  # 1.3x as fast as a comprehension
    except (TypeError, UnicodeEncodeError):  # a missing field; a lone surrogate (a JSON escape) kept as its bytes
        encoded = [d.encode("utf-8", "surrogatepass") if d else b"" for d in docs]
    encoded.append(b"")  # a NUL after the last document too
    data = bytearray(b"\0").join(encoded)
    blob = np.frombuffer(data, dtype=np.uint8)
    if b"\xa0" in data:  # a memchr; bytes.replace of the two bytes took as long as encoding the batch
        # a no-break space is a space (str.split and a reader agree), not a non-ASCII "letter":
        # its two UTF-8 bytes become two spaces, so every document keeps its size
        second = np.flatnonzero(blob[1:] == 0xA0) + 1
        second = second[blob[second - 1] == 0xC2]
        blob[second - 1] = blob[second] = 32
    sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded) - 1)
    return blob, np.concatenate(([0], np.cumsum(sizes + 1))).astype(np.int64)


# ---------------------------------------------------------------- evidence and the token index


def _bloom(hashes: np.ndarray) -> tuple[np.ndarray, int]:
    """The blocked Bloom filter `_known` reads (three bits of one word per key, ~16 bits a key)."""
    bits = max(16, int(np.ceil(np.log2(max(len(hashes), 1) * 16))))
    table = np.zeros(1 << (bits - 6), dtype=np.uint64)
    one, low6 = np.uint64(1), np.uint64(63)
    masks = (one << (hashes & low6)) | (one << ((hashes >> np.uint64(6)) & low6)) | (
        one << ((hashes >> np.uint64(12)) & low6))
    np.bitwise_or.at(table, hashes >> np.uint64(64 - (bits - 6)), masks)
    return table, bits


@dataclass(frozen=True)
class Match:
    """Why a row is contaminated: the matcher, the test item and the evidence (a span or a similarity)."""

    matcher: str
    set: str
    test_id: str
    field: str
    test_field: str
    span: str | None = None
    similarity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def reason(self) -> str:
        evidence = f"similarity {self.similarity:.3f}" if self.similarity is not None else f"span '{self.span}'"
        return (f"contaminated_{self.matcher}: {self.field} matches {self.set}/{self.test_id} "
                f"({self.test_field}), {evidence}")


class TokenIndex:
    """Test texts as sorted 64-bit keys (n-grams, anchors of short texts, whole tiny texts)."""

    def __init__(self, sets: dict[str, list[Record]], mode: str, n: int = DEFAULT_N,
                 test_fields: Sequence[str] = FIELDS, min_whole: int = MIN_WHOLE, whole: bool = True,
                 cover: float = WHOLE_COVER):
        """`whole=False`: test texts shorter than n match nothing (the paper's plain n-gram filter,
        kept for the leakage check and as the audit's yardstick)."""
        if not 1 <= min_whole <= n:
            raise ValueError(f"need 1 <= min_whole <= n, got min_whole={min_whole}, n={n}")
        self.mode, self.n, self.m, self.whole, self.cover = mode, n, min_whole, whole, cover
        self.kind, self.value = _classes(mode)
        self.owners: list[tuple[str, str, str]] = []  # (set, test id, field) per document
        self.texts: list[list[str]] = []
        docs = []
        for name, records in sets.items():
            for record in records:
                for f in test_fields:
                    text = getattr(record, f) or ""
                    self.owners.append((name, record.id, f))
                    self.texts.append(tokens(text, mode))
                    docs.append(text)
        # a short solution ("there are $\\binom 53 = \\boxed{10}$ ways") recurs inside unrelated
        # solutions: only short problems are matched wherever they appear, short solutions whole
        self.anchored = np.array([f == "problem" for _, _, f in self.owners], dtype=np.bool_)
        self.stride = max(1, n // SAMPLE_EVERY)
        self.sample_table, self.sample_bits = _bloom(np.zeros(0, dtype=np.uint64))  # what `_run` reads to build
        hashes, doc, pos, wholes, _, samples = self._run(docs, build=True)[:6]
        self.sample_table, self.sample_bits = _bloom(samples)
        order = np.argsort(hashes, kind="stable")
        # `pos`: where an n-gram starts in its text, or the length of a short text (an anchor)
        self.hashes, self.doc, self.pos, self.wholes = hashes[order], doc[order], pos[order], wholes[order]
        # a blocked Bloom filter (`_bloom`) and a bucket directory: ~16 bits and ~1 bucket per key
        is_anchor = np.zeros(len(self.hashes), dtype=bool)
        is_anchor[np.flatnonzero(self.wholes)] = True  # only anchors carry their text's whole hash
        self.table, self.bits = _bloom(self.hashes[~is_anchor])
        anchors = self.hashes[is_anchor]
        self.anchor_bits = max(12, int(np.ceil(np.log2(max(len(anchors), 1) * 64))))
        self.anchor_map = np.zeros(1 << (self.anchor_bits - 6), dtype=np.uint64)
        bit = anchors >> np.uint64(64 - self.anchor_bits)
        np.bitwise_or.at(self.anchor_map, bit >> np.uint64(6), np.uint64(1) << (bit & np.uint64(63)))
        h = self.hashes
        self.dir_bits = max(1, int(np.ceil(np.log2(max(len(h), 1)))))
        starts = np.arange(1 << self.dir_bits, dtype=np.uint64) << np.uint64(64 - self.dir_bits)
        self.directory = np.append(np.searchsorted(h, starts), len(h)).astype(np.int64)

    def _run(self, docs: Sequence[str | None], build: bool, limit: int = _HITS_PER_DOC) -> tuple[Any, ...]:
        blob, starts = _blob(docs)
        if build:
            none = np.zeros(2, dtype=np.int64)
            lookup = (none.astype(np.uint64), 64, none.astype(np.uint64), none, 1, none, none.astype(np.uint64),
                      none.astype(np.uint64), 64)
        else:
            lookup = (self.table, self.bits, self.hashes, self.directory, self.dir_bits, self.pos, self.wholes,
                      self.anchor_map, self.anchor_bits)
        lookup = (*lookup, self.sample_table, self.sample_bits, self.stride)
        anchored = self.anchored if build else np.zeros(0, dtype=np.bool_)
        out = _kernel(blob, starts, self.kind, self.value, self.n, self.m, *_COMMANDS, *lookup, build, self.whole, limit,
                      self.cover, anchored, self.mode == "masked", *_FIGURE)
        return (*out, blob, starts)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.hashes, self.doc, self.pos, self.wholes, self.table, self.anchor_map,
                                      self.directory, self.sample_table))

    def find(self, docs: Sequence[str | None], every: bool = False) -> dict[int, list[tuple[int, int, int]]]:
        """The verified matches of the documents that have any (by document number): (test
        document, token position there, length).

        The first only, unless `every` (the leakage check lists every test item a row touches): a
        copied solution has hundreds of hash hits, and one is enough evidence for a removal."""
        hashes, doc, _, _, span, _, blob, starts = self._run(docs, build=False, limit=0 if every else _HITS_PER_DOC)
        first = np.searchsorted(self.hashes, hashes).tolist()  # where each key's entries start
        # the matched tokens' own bytes as the kernel read them (LaTeX spacing, figures and
        # no-break spaces blanked), spelled out: exactly the tokens the kernel hashed
        spelled, at = _spelled(blob, starts[doc] + span[:, 0], starts[doc] + span[:, 1], self.kind, self.value)
        spelled, at = spelled.tobytes(), at.tolist()
        out: dict[int, list[tuple[int, int, int]]] = {}
        for k, (g, d, j) in enumerate(zip(hashes.tolist(), doc.tolist(), first, strict=True)):
            if d in out and not every:
                continue
            mine = spelled[at[k] : at[k + 1]].decode("utf-8", "surrogatepass")
            if found := self._lookup(mine, g, j, every):
                out.setdefault(d, []).extend(found)
        return out

    def _lookup(self, mine: str, g: int, j: int, every: bool) -> list[tuple[int, int, int]]:
        """The test texts whose key `g` (from entry j on) stands for exactly the tokens `mine`."""
        found = []
        while j < len(self.hashes) and int(self.hashes[j]) == g and (every or not found):
            test_doc, test_pos = int(self.doc[j]), int(self.pos[j])
            theirs = self.texts[test_doc]
            if len(theirs) >= self.n and mine == " ".join(theirs[test_pos : test_pos + self.n]):  # an n-gram
                found.append((test_doc, test_pos, self.n))
            elif len(theirs) < self.n and mine == " ".join(theirs):  # a short text, whole in the field or inside it
                found.append((test_doc, 0, len(theirs)))
            j += 1
        return found


# ---------------------------------------------------------------- matchers


class NgramMatcher:
    """Exact token n-grams (and short test texts whole) of a row's fields against the test texts."""

    name: ClassVar[str] = "ngram"
    mode: ClassVar[str] = "words"
    test_fields: ClassVar[tuple[str, ...]] = FIELDS

    def __init__(self, sets: dict[str, list[Record]], *, n: int = DEFAULT_N, min_whole: int = MIN_WHOLE,
                 fields: Sequence[str] = FIELDS, whole: bool = True, cover: float = WHOLE_COVER, **_: Any):
        """`whole=False`: the paper's filter as it was (no short test text matched whole)."""
        self.fields = tuple(fields)
        self._texts = attrgetter(*self.fields) if len(self.fields) > 1 else lambda r: (getattr(r, self.fields[0]),)
        self.index = TokenIndex(sets, self.mode, n, self.test_fields, min_whole, whole, cover)

    def match(self, records: Sequence[Record]) -> list[Match | None]:
        docs = list(chain.from_iterable(map(self._texts, records)))
        out: list[Match | None] = [None] * len(records)
        for d, hits in sorted(self.index.find(docs).items()):
            row = d // len(self.fields)
            if out[row] is None:
                test_doc, pos, length = hits[0]
                name, test_id, test_field = self.index.owners[test_doc]
                span = " ".join(self.index.texts[test_doc][pos : pos + length])
                out[row] = Match(self.name, name, test_id, self.fields[d % len(self.fields)], test_field, span)
        return out


class MathNgramMatcher(NgramMatcher):
    name, mode = "math-ngram", "math"


class MaskedNgramMatcher(NgramMatcher):
    """Number-swapped rewrites of test problems, in a row's problem: masked solutions share whole
    computations ("# + # = #") with unrelated rows, and a rewrite sits in the problem. Longer
    n-grams (`masked_n`) and a test problem shorter than that matched only as the whole problem:
    with numbers masked, 30-token windows and short problems quoted inside longer ones matched
    problems built on the same template that ask something else (the audit in docs/decontamination.md)."""

    name, mode, test_fields = "masked-ngram", "masked", ("problem",)

    def __init__(self, sets: dict[str, list[Record]], *, masked_n: int = MASKED_N, **opts: Any):
        super().__init__(sets, **{**opts, "n": masked_n, "min_whole": masked_n, "fields": ("problem",)})


# `restates`: what a rewording keeps. Digits one by one, because punctuation edits join and split
# digit runs ("72,361" and "72361"); formulas as commands, letters, digits and operators inside
# $...$, $$...$$, \[...\] and \(...\), less prose set in them (\text{...}: its words are words)
# and escaped dollar signs (currency, not delimiters); words as letter runs, order ignored; and
# polarity: a rewording keeps every negation ("... if the balls are not distinguishable" and
# "... if the balls are distinguishable" ask different questions a few words apart).
_DIGIT = re.compile(r"[0-9]")
_PROSE = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm)\s*\{[^{}]*\}|\\\$")
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none|cannot)\b|n't\b")
_FORMULA = re.compile(r"\$\$(.*?)\$\$|\$(.*?)\$|\\\[(.*?)\\\]|\\\((.*?)\\\)", re.S)
_FORMULA_TOKEN = re.compile(r"\\[a-z]+|[a-z0-9]|[-+*/^=<>|!]")
_WORD = re.compile(r"[^\W\d_]+")
# At most this share of either text's words may lack a counterpart in the other: on the audit,
# rewordings by synonyms change a median 7% of the words (80% of them at most 20%); problems
# MiniLM puts above 0.85 that ask something else mostly change more (docs/decontamination.md).
WORD_CHANGE = 0.2


def _formula(text: str) -> list[str]:
    return _FORMULA_TOKEN.findall(" ".join("".join(g) for g in _FORMULA.findall(_PROSE.sub(" ", text))))


def _multiset(items: Iterable[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(Counter(items).items()))


def restate_key(text: str) -> tuple[Any, ...]:
    """What a rewording of `text` keeps exactly (`restates`): its digits and formula tokens as
    multisets and its count of negations. Hashable, so the embedding matcher looks up the test
    problems a row can restate by it instead of comparing the row with every one of them."""
    text = text.lower()
    return _multiset(_DIGIT.findall(text)), _multiset(_formula(text)), len(_NEGATION.findall(text))


def _words(text: str) -> Counter:
    return Counter(_WORD.findall(text.lower()))


def _changed(a: Counter, b: Counter) -> float:
    """The share of the words of `a` without a counterpart in `b` (multisets)."""
    return sum((a - b).values()) / max(sum(a.values()), 1)


def _reworded(a: Counter, b: Counter, word_change: float) -> bool:
    """At most `word_change` of either word multiset lacks a counterpart in the other."""
    return max(_changed(a, b), _changed(b, a)) <= word_change


def restates(row: str, test: str, word_change: float = WORD_CHANGE) -> bool:
    """Whether `row` reads as a rewording of `test`: the same `restate_key` (digits, formula
    tokens, negations) and at most `word_change` of either's words changed. The embedding
    matcher's second check: MiniLM rates a problem on the same topic with other numbers or
    another question about as close as a rewording (same-topic MATH problems sit above 0.9), and
    a rewording keeps what they change."""
    return restate_key(row) == restate_key(test) and _reworded(_words(row), _words(test), word_change)


def _check_unit(name: str, value: float | None, optional: bool = False) -> None:
    if (value is None and not optional) or (value is not None and not 0 <= value <= 1):
        raise ValueError(f"embedding matcher: {name} must be a number in [0, 1]{' or None' if optional else ''}, "
                         f"got {value!r}")


class EmbeddingMatcher:
    """A row's problem against the test problems by cosine similarity of sentence embeddings.

    With `word_change` set (the default), a row is removed when a test problem it `restates`
    has similarity `threshold` or more; the Match names the most similar such test problem. Only
    the test problems with the row's `restate_key` can pass `restates`, so they are looked up in
    a dict, checked for words, and MiniLM embeds only rows that have such a candidate (one row in
    a few hundred of MATH/GSM8K train) and, once each, the candidates: lossless, and a few
    hundred times less model work. This differs from the rule before it (the nearest test problem
    overall, then `restates` on that one only) where a restating test problem is not the global
    nearest: it now counts, the more correct rule (a rewording of one test problem is a leak
    even when a number-changed sibling of it sits closer).

    `word_change=None`: similarity alone, to the nearest test problem overall (`neighbours`, the
    full path, which the llm matcher's candidates also need): every row and every test problem
    is embedded. Texts are cut at `max_chars` (long texts cost quadratically and MiniLM reads
    256 tokens); batches of `batch_size` on `device` (a GPU when given)."""

    name: ClassVar[str] = "embedding"

    def __init__(self, sets: dict[str, list[Record]], *, threshold: float = 0.85, word_change: float | None = WORD_CHANGE,
                 model: str | None = None, device: str | None = None, max_chars: int = 512, batch_size: int = 128,
                 **_: Any):
        from mathforge.embed import embed_texts

        _check_unit("threshold", threshold)
        _check_unit("word_change", word_change, optional=True)
        self.threshold, self.word_change, self.max_chars, self.batch_size = threshold, word_change, max_chars, batch_size
        self.owners = [(name, r.id) for name, records in sets.items() for r in records]
        self.problems = [r.problem for records in sets.values() for r in records]
        self._embed = lambda texts: embed_texts([t[:max_chars] for t in texts], model,
                                                batch_size=batch_size, device=device)
        # every test problem's vector, once the full path asks (it needs all: 1.5 KB per test
        # item, 9.5 MB for GSM8K + MATH test)
        self._all: np.ndarray | None = None
        # Held for all test problems (the lookup needs them): a key and a word Counter, ~3 KB per
        # test item; vectors only of the candidates met so far (384 fp32 = 1.5 KB each).
        self._vectors: dict[int, np.ndarray] = {}
        self._by_key: dict[tuple[Any, ...], list[int]] = {}
        for j, problem in enumerate(self.problems if word_change is not None else ()):
            self._by_key.setdefault(restate_key(problem), []).append(j)
        self._test_words = {j: _words(self.problems[j]) for js in self._by_key.values() for j in js}

    @property
    def vectors(self) -> np.ndarray:
        """Every test problem's embedding (the full path; computed on first use)."""
        if self._all is None:
            self._all = self._embed(self.problems)
        return self._all

    @property
    def tests_embedded(self) -> int:
        """How many test problems the prefiltered path has embedded so far."""
        return len(self._vectors)

    def restating(self, problem: str) -> list[int]:
        """The test problems (indices into `owners`) that `problem` restates: the prefilter."""
        same = self._by_key.get(restate_key(problem), ())
        if not same:
            return []
        words = _words(problem)
        return [j for j in same if _reworded(words, self._test_words[j], self.word_change)]

    def neighbours(self, records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
        """Each row's most similar test problem (index into `owners`) and the cosine similarity."""
        sims = self._embed([r.problem for r in records]) @ self.vectors.T
        best = sims.argmax(axis=1) if len(records) else np.zeros(0, dtype=np.int64)
        return best, sims[np.arange(len(records)), best]

    def match(self, records: Sequence[Record], near: tuple[np.ndarray, np.ndarray] | None = None
              ) -> list[Match | None]:
        """Per row its Match or None. `near`: the rows' `neighbours` when already computed (the
        similarity-alone path reads them; the prefiltered path embeds only its candidates)."""
        if self.word_change is not None:
            return self._match_restating(records)
        best, sims = near if near is not None else self.neighbours(records)
        return [self._match(b, s) for b, s in zip(best.tolist(), sims.tolist(), strict=True)]

    def _match(self, test: int, similarity: float) -> Match | None:
        # decided on the similarity as reported, so a sweep over thresholds from Matches is exact
        similarity = round(float(similarity), 4)
        if similarity < self.threshold:
            return None
        return Match(self.name, *self.owners[test], "problem", "problem", similarity=similarity)

    def _match_restating(self, records: Sequence[Record]) -> list[Match | None]:
        candidates = [self.restating(r.problem) for r in records]
        asked = [i for i, c in enumerate(candidates) if c]
        out: list[Match | None] = [None] * len(records)
        if not asked:
            return out
        rows = self._embed([records[i].problem for i in asked])
        self._embed_tests(sorted({j for i in asked for j in candidates[i]}))
        for vector, i in zip(rows, asked, strict=True):
            sims = np.stack([self._vectors[j] for j in candidates[i]]) @ vector
            k = int(sims.argmax())
            out[i] = self._match(candidates[i][k], sims[k])
        return out

    def _embed_tests(self, tests: Sequence[int]) -> None:
        """Vectors of the test problems `tests` not met before (from the full path's when it ran)."""
        missing = [j for j in tests if j not in self._vectors]
        if not missing:
            return
        vectors = self._all[missing] if self._all is not None else self._embed([self.problems[j] for j in missing])
        self._vectors.update(zip(missing, vectors, strict=True))


class LlmMatcher:
    """An LLM judge on the embedding candidates: rows the embedding matcher left whose nearest test
    problem has similarity `candidate_threshold` or more are asked about ("same problem?"); the
    rest are never sent."""

    name: ClassVar[str] = "llm"

    def __init__(self, sets: dict[str, list[Record]], *, engine: Any = None, candidate_threshold: float = 0.75,
                 **_: Any):
        from mathforge.quality.judge import load_template

        if engine is None:
            raise ValueError("the llm matcher needs an engine (the judge's backend)")
        self.engine, self.candidate_threshold = engine, candidate_threshold
        self.problems = [r.problem for records in sets.values() for r in records]
        self.template, self.version = load_template("decontam_v1.j2")

    def match(self, records: Sequence[Record], near: tuple[np.ndarray, np.ndarray],
              owners: Sequence[tuple[str, str]]) -> list[Match | None]:
        from mathforge.engine.types import Request, Sampling
        from mathforge.record import stable_id

        best, sims = near
        asked = [i for i, s in enumerate(sims.tolist()) if s >= self.candidate_threshold]
        requests = []
        for i in asked:
            prompt = self.template.render(row=records[i].problem, test=self.problems[best[i]])
            requests.append(Request(key=stable_id(self.version, prompt), messages=[{"role": "user", "content": prompt}],
                                    sampling=Sampling(temperature=0.0, max_tokens=16)))
        out: list[Match | None] = [None] * len(records)
        for i, result in zip(asked, self.engine.run(requests, desc="decontam judge"), strict=True):
            if result.ok and _VERDICT.search(result.texts[0] or ""):
                out[i] = Match(self.name, *owners[best[i]], "problem", "problem", similarity=round(float(sims[i]), 4))
        return out


_VERDICT = re.compile(r"^\W*(yes|same)\b", re.I)

MATCHERS: dict[str, type] = {m.name: m for m in (NgramMatcher, MathNgramMatcher, MaskedNgramMatcher,
                                                  EmbeddingMatcher, LlmMatcher)}


def parse_matchers(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Matcher names from "a,b" or a list, checked against `MATCHERS`."""
    names = tuple(x.strip() for x in (spec.split(",") if isinstance(spec, str) else spec) if x.strip())
    unknown = [x for x in names if x not in MATCHERS]
    if unknown or not names:
        raise ValueError(f"unknown matcher(s) {', '.join(unknown) or '(none given)'} "
                         f"(choose from {', '.join(MATCHERS)})")
    return names


# ---------------------------------------------------------------- the filter-shaped whole


@dataclass
class Removals:
    """What decontamination removed: per matcher, per evaluation set, and test items touched."""

    matchers: tuple[str, ...]
    sets: dict[str, int]
    settings: dict[str, Any]
    by_matcher: Counter = field(default_factory=Counter)
    by_set: Counter = field(default_factory=Counter)
    test_items_hit: set[str] = field(default_factory=set)

    def add(self, match: Match) -> None:
        self.by_matcher[match.matcher] += 1
        self.by_set[match.set] += 1
        self.test_items_hit.add(f"{match.set}/{match.test_id}")

    def to_dict(self) -> dict[str, Any]:
        return {"matchers": list(self.matchers), "sets": self.sets, **self.settings,
                "removed_by_matcher": {m: self.by_matcher[m] for m in self.matchers},
                "removed_by_set": dict(self.by_set), "test_items_hit": len(self.test_items_hit)}


class Decontaminator:
    """All chosen matchers as one batch filter (`filters.apply_filter` counts and keeps the rejects):
    `decide_batch(records)` gives per record None (keep) or a reason "contaminated_<matcher>: ...",
    the removed record annotated with the evidence under `meta["decontam"]`. Matchers run cheapest
    first and a row caught by one is not shown to the next (so the embedding model and the judge
    see only what the n-grams let through); a removal is counted for the matcher that caught it."""

    name = "decontam"

    def __init__(self, sets: dict[str, list[Record]], matchers: Sequence[str] = DEFAULT_MATCHERS, *,
                 n: int = DEFAULT_N, min_whole: int = MIN_WHOLE, cover: float = WHOLE_COVER, masked_n: int = MASKED_N,
                 threshold: float = 0.85,
                 word_change: float | None = WORD_CHANGE, candidate_threshold: float = 0.75, model: str | None = None,
                 device: str | None = None, engine: Any = None, fields: Sequence[str] = FIELDS):
        self.names = parse_matchers(matchers)
        opts = dict(n=n, min_whole=min_whole, cover=cover, masked_n=masked_n, threshold=threshold, word_change=word_change,
                    candidate_threshold=candidate_threshold, model=model, device=device, engine=engine, fields=fields)
        self.ngrams = [MATCHERS[x](sets, **opts) for x in self.names if x.endswith("ngram")]
        wants_llm = "llm" in self.names
        self.embedding = EmbeddingMatcher(sets, **opts) if "embedding" in self.names or wants_llm else None
        self.judge = LlmMatcher(sets, **opts) if wants_llm else None
        self.removals = Removals(self.names, {k: len(v) for k, v in sets.items()},
                                 {"n": n, "min_whole": min_whole, "cover": cover, "masked_n": masked_n,
                                  "threshold": threshold if self.embedding else None,
                                  "word_change": word_change if self.embedding else None})

    def matches(self, records: Sequence[Record]) -> list[Match | None]:
        """The first match per record (None: clean), in the order described above."""
        out: list[Match | None] = [None] * len(records)
        for matcher in self.ngrams:
            self._fill(out, records, matcher.match)
        if self.embedding is not None:
            left = [i for i, m in enumerate(out) if m is None]
            # every row's nearest test problem only where something reads it: the judge, or the
            # embedding matcher on similarity alone; with `restates` it embeds its candidates only
            near = self.embedding.neighbours([records[i] for i in left]) \
                if self.judge is not None or self.embedding.word_change is None else None
            if "embedding" in self.names:
                for i, m in zip(left, self.embedding.match([records[i] for i in left], near), strict=True):
                    out[i] = m
            if self.judge is not None:
                best, sims = near
                still = [k for k, i in enumerate(left) if out[i] is None]
                judged = self.judge.match([records[left[k]] for k in still], (best[still], sims[still]),
                                          self.embedding.owners)
                for k, m in zip(still, judged, strict=True):
                    out[left[k]] = m
        return out

    @staticmethod
    def _fill(out: list[Match | None], records: Sequence[Record], match: Any) -> None:
        if not any(out):  # the first matcher sees every row
            out[:] = match(records)
            return
        left = [i for i, m in enumerate(out) if m is None]
        for i, m in zip(left, match([records[i] for i in left]), strict=True):
            out[i] = m

    def decide_batch(self, records: Sequence[Record], found: Sequence[Match | None] | None = None
                     ) -> list[tuple[Record, str | None]]:
        """Keep or drop each record; `found`: its matches when they were found elsewhere (Ray workers)."""
        decisions: list[tuple[Record, str | None]] = []
        found = found if found is not None else self.matches(records) if records else []
        for record, match in zip(records, found, strict=True):
            if match is None:
                decisions.append((record, None))
                continue
            self.removals.add(match)
            decisions.append((annotate(record, "decontam", match.to_dict()), match.reason()))
        return decisions

    def new_tally(self) -> Removals:
        """Start counting removals afresh (one tally per shard when shards are scanned apart)."""
        self.removals = dataclasses.replace(self.removals, by_matcher=Counter(), by_set=Counter(), test_items_hit=set())
        return self.removals


def overlap_stats(train: Iterable[Record], benchmark: Iterable[Record], *, n: int = DEFAULT_N,
                  name: str = "benchmark", batch_size: int = 1024) -> dict[str, Any]:
    """Leakage check: how many training rows and benchmark items share a word n-gram (the paper's
    filter as it was, `whole=False`), for evaluation reports: a benchmark item hit by any
    training row may be memorised, so its score is suspect; the ids of hit items are returned so
    they can be scored separately. Streams the rows a batch at a time."""
    matcher = NgramMatcher({name: list(benchmark)}, n=n, whole=False)
    index, rows, contaminated = matcher.index, 0, 0
    hit_items: set[str] = set()
    for batch in batches(train, batch_size):
        docs = list(chain.from_iterable(map(matcher._texts, batch)))
        found = index.find(docs, every=True)
        rows += len(batch)
        contaminated += len({d // len(matcher.fields) for d in found})
        hit_items.update(index.owners[test_doc][1] for hits in found.values() for test_doc, _, _ in hits)
    total = len(index.owners) // len(matcher.test_fields)
    return {"n": n, "benchmark": name, "train_rows": rows, "train_rows_overlapping": contaminated,
            "benchmark_items": total, "benchmark_items_hit": len(hit_items),
            "benchmark_fraction_hit": len(hit_items) / total if total else 0.0,
            "hit_item_ids": sorted(hit_items)}
