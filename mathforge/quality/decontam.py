"""What decontamination reads: the normalised words of a text (the paper's 30-gram filter, §4.3.7).

Words come from `normalize` + `words`: lower case, LaTeX spacing commands (`\\,`, `\\quad`,
`\\left`, ...) and `\\dfrac`/`\\tfrac` spellings removed, then maximal runs of ASCII
letters/digits or non-ASCII characters (so "x=5" and "x = 5", or "$\\frac{1}{2}$" and "\\frac 1 2",
read the same). `_blank_commands` applies the same command rules to raw UTF-8 bytes for the one
compiled n-gram kernel (`matchers.TokenIndex`), which every n-gram scan uses: the matchers, the
leakage check (`matchers.overlap_stats`), the audit's yardstick and the Ray engine.

The straightforward implementation (a set of word tuples), which tests and `bench/decontam.py`
compare the kernel against row for row and in speed, is `bench/oracles.py:ReferenceIndex`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from mathforge.record import Record

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

    Only ASCII is lower-cased: the compiled kernel works on UTF-8 bytes and must read words the same way.
    """
    text = text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
    return _SPACING.sub(" ", _FRAC.sub(r"\\frac", text))


def words(text: str) -> list[str]:
    """The words n-grams are made of (see the module docstring)."""
    return _WORD.findall(normalize(text))


def record_texts(record: Record, fields: Sequence[str] = FIELDS) -> tuple[str, ...]:
    return tuple(getattr(record, f) or "" for f in fields)


# ---------------------------------------------------------------- compiled hashing


@njit(cache=True, nogil=True, inline="always")
def _is_command(blob: np.ndarray, start: int, end: int, names: np.ndarray, c: int) -> bool:
    """Whether blob[start:end], lower-cased, spells command `c` of `names` (zero-padded rows, as
    long as the span). Indexed, not sliced: a row as an array view cost a reference count."""
    for k in range(end - start):
        b = blob[start + k]
        if 65 <= b <= 90:
            b += 32
        if b != names[c, k]:
            return False
    return True


# Eight bytes at a time: a word holds a backslash iff its xor with eight backslashes has a zero byte
_ONES, _HIGHS = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_ONE = np.uint64(1)


@njit(cache=True, nogil=True)
def _blank_commands(blob: np.ndarray, cmd_names: np.ndarray, cmd_lens: np.ndarray, cmd_frac: np.ndarray,
                    cmd_slots: np.ndarray) -> None:
    """Rewrite LaTeX commands that only change presentation, in place and length-preserving (byte
    offsets stay valid): a spacing command and its backslash become spaces, and "\\dfrac" or
    "\\tfrac" becomes "\\ frac", read as the word "frac". The same rules as `normalize`, done
    once per backslash before the word loop, which then needs no command logic: with it, the
    loop ran 3x slower (bench/decontam.py's rows). Words of eight bytes without a backslash (9 in
    10 in MATH solutions) are skipped with one test, in a loop apart (with the byte loop in its
    body it took 1.4x as long); in the others, each backslash is found by its bit, and the four
    bytes after it are looked up in `cmd_slots` (16 rows of a command's first four letters and
    its number, the multiplier of this perfect hash in row 16). On MATH problems and solutions a
    loop over all bytes took 3.9x as long, and trying each command that starts with the letter
    after a backslash 2.3x ("\\le" and "\\text" are everywhere)."""
    size = len(blob)
    words = size // 8
    view = blob[: words * 8].view(np.uint64)
    flagged = np.empty(words + 1, dtype=np.int64)
    seen = 0
    for w in range(np.uint64(words)):  # branch-free, unsigned (Numba tests a signed index for wrapping)
        x = view[w] ^ _BACKSLASHES
        flagged[seen] = w
        seen += np.int64((x - _ONES) & ~x & _HIGHS != 0)
    if size % 8:  # the bytes after the last whole word: each looked at
        flagged[seen] = words
        seen += 1
    mul = cmd_slots[16, 0]
    for k in range(seen):
        at = flagged[k] * 8
        if at < words * 8:
            x = view[flagged[k]] ^ _BACKSLASHES
            zeros = (x - _ONES) & ~x & _HIGHS  # each backslash's high bit (and maybe a "]"'s after one)
        else:
            zeros = _HIGHS >> np.uint64(8 * (8 - size % 8))
        while zeros:
            i = at + (trailing_zeros(zeros) >> 3)
            zeros &= zeros - _ONE
            if blob[i] != _BACKSLASH or i + 5 > size:
                continue
            # its next four bytes, ASCII lower-cased (or 0x20 turns no other byte into a letter),
            # pick one slot, which must hold them: a perfect hash of the commands' first letters
            four = (np.uint64(blob[i + 1]) | np.uint64(blob[i + 2]) << np.uint64(8) | np.uint64(blob[i + 3])
                    << np.uint64(16) | np.uint64(blob[i + 4]) << np.uint64(24)) | np.uint64(0x20202020)
            slot = ((four * mul) & np.uint64(0xFFFFFFFF)) >> np.uint64(28)
            if cmd_slots[slot, 0] == four:
                _blank_command(blob, i, cmd_slots[slot, 1], cmd_names, cmd_lens, cmd_frac)


@njit(cache=True, nogil=True)
def _blank_command(blob: np.ndarray, i: int, c: int, cmd_names: np.ndarray, cmd_lens: np.ndarray,
                   cmd_frac: np.ndarray) -> None:
    """Blank command c at the backslash at byte i, if it is there as a whole word. A function of
    its own, called: inlined, the loop that calls it ran 2.3x slower."""
    start, end = i + 1, i + 1 + cmd_lens[c]
    if end > len(blob) or (end < len(blob) and _LOWER[blob[end]] != 0):
        return  # not a whole word ("\\leftarrow" stays)
    if _is_command(blob, start, end, cmd_names, c):
        if cmd_frac[c]:
            blob[start] = 32
            return
        for k in range(i, end):
            blob[k] = 32
