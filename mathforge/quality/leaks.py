"""Leak generators for the decontamination audit: test items planted into clean training rows.

Kinds (`LEAKS`): a whole short test problem as the row's problem; a verbatim 35-token span of a
test problem or solution inside the row's problem or solution; a test problem with every number
swapped; a test problem paraphrased by deterministic edits (synonyms, sentence order, casing,
punctuation) or by a teacher's rewrite when one is given.

This module shares no code, word list or table with the matchers (`matchers.py`, `decontam.py`):
a generator that reused the matchers' tokenizer would plant exactly what they can see. Tokens here
are whitespace-separated pieces of the raw text, as a person copying text would count them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from mathforge.record import Record

SPAN_TOKENS = 35
SHORT_TOKENS = 30
_NUMBER = re.compile(r"\d+")
_SKELETON = re.compile(r"[a-z]+|#")
_SENTENCE = re.compile(r"(?<=[.?!])\s+(?=[A-Z])")
# Synonyms used only by the paraphrase generator (its own table, written for prose of math problems).
SYNONYMS = {
    "find": "determine", "determine": "find", "compute": "calculate", "calculate": "compute",
    "what is": "find", "how many": "what number of", "suppose": "assume", "total": "sum",
    "integer": "whole number", "integers": "whole numbers", "number": "quantity", "each": "every",
    "value": "amount", "smallest": "least", "largest": "greatest", "positive": "strictly positive",
    "buys": "purchases", "bought": "purchased", "has": "owns", "make": "produce", "uses": "needs",
    "if": "given that", "then": "in that case", "there are": "we have", "equal to": "the same as",
}
_SYNONYM = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SYNONYMS), key=len, reverse=True)) + r")\b", re.I)


def sibling_key(text: str) -> str:
    """A problem's letters with every number read as "#", ignoring case, spacing, punctuation and
    markup: two problems with the same key are number-swapped siblings (the audit splits the
    unplanted rows by it). "What is $f(12)-f(2)?$" and "What is $f(3) - f(7)$?" are siblings."""
    return " ".join(_SKELETON.findall(_NUMBER.sub("#", text.lower())))


def _prose_edit(text: str, edit: Callable[[str], str]) -> str:
    """Apply `edit` to the prose between $...$ math only, so formulas stay intact."""
    parts = text.split("$")
    return "$".join(edit(p) if k % 2 == 0 else p for k, p in enumerate(parts))


def swap_numbers(rng: random.Random, text: str) -> str:
    """Every number replaced by a different one with as many digits."""
    def other(m: re.Match) -> str:
        old = m.group()
        for _ in range(20):
            new = str(rng.randrange(10 ** (len(old) - 1) if len(old) > 1 else 0, 10 ** len(old)))
            if new != old:
                return new
        return old + "1"
    return _NUMBER.sub(other, text)


def paraphrase(rng: random.Random, text: str) -> str:
    """Deterministic edits a careless copier or a teacher makes: synonyms, the question moved to
    the front, casing and punctuation changed. The mathematics is left as it was."""
    text = _prose_edit(text, lambda p: _SYNONYM.sub(lambda m: _match_case(m.group(), SYNONYMS[m.group().lower()]), p))
    sentences = _SENTENCE.split(text)
    if len(sentences) > 1:
        sentences = [sentences[-1], *sentences[:-1]]  # ask first, then give the facts
        text = " ".join(sentences)
    text = _prose_edit(text, lambda p: p.replace(",", "") if rng.random() < 0.5 else p.replace(", ", " , "))
    text = text.rstrip("?.") + rng.choice(["", ".", "?", " ?"])
    return _prose_edit(text, str.upper) if rng.random() < 0.1 else text[:1].lower() + text[1:]


def _match_case(old: str, new: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def verbatim_span(rng: random.Random, text: str, size: int = SPAN_TOKENS) -> str | None:
    """`size` consecutive whitespace-separated tokens of `text`, or None when it is shorter."""
    pieces = text.split()
    if len(pieces) < size:
        return None
    start = rng.randrange(len(pieces) - size + 1)
    return " ".join(pieces[start : start + size])


def insert_span(rng: random.Random, host: str, span: str) -> str:
    """`span` put between two whitespace-separated tokens of `host`."""
    pieces = host.split(" ")
    at = rng.randrange(len(pieces) + 1)
    return " ".join([*pieces[:at], span, *pieces[at:]])


def _leaky(host: Record, kind: str, test: Record, test_set: str, evidence: str, **changes: str) -> Record:
    meta = {**host.meta, "leak": {"kind": kind, "set": test_set, "test_id": test.id, "text": evidence}}
    return Record(**{**host.to_dict(), **changes, "id": f"leak-{kind}-{host.id}", "lineage": host.lineage,
                     "meta": meta})


def plant(rng: random.Random, kind: str, host: Record, test: Record, test_set: str,
          rewrite: Callable[[str], str] | None = None) -> Record | None:
    """`host` with a leak of `kind` from `test`, tagged `meta["leak"]`; None when `test` cannot
    give that kind (too long to be short, too short for a span, no number to swap)."""
    if kind == "short":
        if len(test.problem.split()) >= SHORT_TOKENS:
            return None
        return _leaky(host, kind, test, test_set, test.problem, problem=test.problem)
    if kind == "span":
        where = rng.choice(["problem", "solution"])
        span = verbatim_span(rng, rng.choice([test.problem, test.solution or ""]))
        if span is None:
            return None
        return _leaky(host, kind, test, test_set, span, **{where: insert_span(rng, getattr(host, where) or "", span)})
    if kind == "swapped":
        if not _NUMBER.search(test.problem):
            return None
        text = swap_numbers(rng, test.problem)
        return _leaky(host, kind, test, test_set, text, problem=text)
    if kind == "paraphrase":
        text = rewrite(test.problem) if rewrite else paraphrase(rng, test.problem)
        return _leaky(host, kind, test, test_set, text, problem=text)
    raise ValueError(f"unknown leak kind '{kind}' (choose from {', '.join(LEAKS)})")


LEAKS = ("short", "span", "swapped", "paraphrase")


def plant_leaks(rng: random.Random, hosts: Sequence[Record], sets: dict[str, list[Record]], kind: str,
                count: int, rewrite: Callable[[str], str] | None = None) -> list[Record]:
    """`count` rows with a leak of `kind`, each on its own host and from a random test item."""
    tests = [(name, r) for name, records in sets.items() for r in records]
    hosts = list(hosts)
    rng.shuffle(hosts)
    out: list[Record] = []
    for _ in range(50 * count):
        if len(out) == count or not hosts:
            break
        name, test = rng.choice(tests)
        row = plant(rng, kind, hosts[-1], test, name, rewrite)
        if row is not None:
            out.append(row)
            hosts.pop()
    if len(out) < count:
        raise ValueError(f"could plant only {len(out)} '{kind}' leaks of {count} (too few hosts or test items)")
    return out
