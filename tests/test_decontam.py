"""The paper's 30-word filter on the one n-gram kernel (`NgramMatcher(whole=False)`) against the
pinned pure-Python `ReferenceIndex`, on real rows: GSM8K + MATH test as the evaluation sets, MATH
train as data."""

import random
from pathlib import Path

import pytest

from bench.oracles import ReferenceIndex
from mathforge.filters import FilterStats, apply_filter
from mathforge.io import AtomicWriter, read_records, write_records
from mathforge.quality.decontam import _FRAC, _SPACING, _blank_commands, record_texts, words
from mathforge.quality.matchers import (
    _COMMANDS,
    Decontaminator,
    NgramMatcher,
    TokenIndex,
    _blob,
    overlap_stats,
)
from mathforge.record import Record
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def index(test_sets):
    return NgramMatcher(test_sets, n=30, whole=False)


def scan(matcher: NgramMatcher, rows: list[Record]) -> list:
    return [m for start in range(0, len(rows), 1000) for m in matcher.match(rows[start : start + 1000])]


@pytest.fixture(scope="module")
def reference(test_sets):
    return ReferenceIndex(test_sets, n=30)


@pytest.fixture(scope="module")
def math_train():
    return list(load(f"math:{DATA}/math/math_train.jsonl"))


@pytest.mark.parametrize("text, expected", [
    ("Let $x$ and $y$ be", ["let", "x", "and", "y", "be"]),
    ("x=5, X = 5", ["x", "5", "x", "5"]),
    (r"$\dfrac{1}{2}$ vs $\frac 1 2$ vs \tfrac12", ["frac", "1", "2", "vs", "frac", "1", "2", "vs", "tfrac12"]),
    (r"\left( a \right)\quad b\qquad c\,d\;e\!f~g", ["a", "b", "c", "d", "e", "f", "g"]),
    (r"x \leftarrow y \rightarrow z \Left(", ["x", "leftarrow", "y", "rightarrow", "z"]),
    ("café Élan 3·4", ["café", "Élan", "3·4"]),
    ("", []),
])
def test_words_normalise_case_spacing_and_latex(text, expected):
    assert words(text) == expected
    # the compiled kernel reads the same words from the raw bytes (1-grams: one hash per word)
    index = TokenIndex({}, "words", n=1, min_whole=1)
    assert index._run([text], build=True)[0].tolist() == index._run([" ".join(expected)], build=True)[0].tolist()


def test_the_kernel_blanks_latex_commands_as_normalise_does(test_sets):
    # the compiled pass (eight bytes at a time, a perfect hash of command prefixes) against the
    # regular expressions, on every MATH test problem and solution and the edge cases
    edges = ["\\left", "a\\LEFT(", "\\dfrac12", "x\\quad", "\\\\left]", "\\lefty \\left2 \\leq \\le",
             "\\qquad\\quad\\left\\right\\displaystyle\\textstyle\\tfrac", "\\text{\\Right}", "\\qua", "\\"]
    docs = [t for r in test_sets["math_test"] for t in (r.problem, r.solution)] + edges
    for start in range(0, len(docs), 997):  # batches of every length modulo 8
        blob, starts = _blob(docs[start : start + 997])
        raw = blob.copy()
        _blank_commands(blob, *_COMMANDS)
        for d in range(len(starts) - 1):
            text = raw[starts[d] : starts[d + 1] - 1].tobytes().decode("utf-8", "surrogatepass").lower()
            want = _SPACING.sub(lambda m: " " * len(m.group()), _FRAC.sub(lambda m: "\\ " + m.group()[2:], text))
            assert blob[starts[d] : starts[d + 1] - 1].tobytes().decode("utf-8", "surrogatepass").lower() == want


def test_math_train_overlap_counted_by_reference_and_fast_agree_row_for_row(index, reference, math_train):
    fast = [(m.set, m.test_id) if m else None for m in scan(index, math_train)]
    slow = [reference.first_hit(record_texts(r)) for r in math_train]
    assert fast == slow
    overlapping = sum(x is not None for x in slow)
    # a few percent of MATH train legitimately shares a 30-word span with MATH test (FACTS.md)
    assert 0.02 * len(math_train) < overlapping < 0.08 * len(math_train)
    assert all(x[0] == "math_test" for x in slow if x)


def _plant(rng: random.Random, host: Record, donor: Record, field: str, n: int) -> tuple[Record, list[str]]:
    """Copy n consecutive words of a test item into a clean row, with case/spacing/LaTeX noise."""
    ws = words(getattr(donor, field))
    start = rng.randrange(len(ws) - n + 1)
    span = ws[start : start + n]
    noisy = " ".join(w.upper() if rng.random() < 0.2 else w for w in span)
    noisy = noisy.replace(" ", "  \\quad ", 1).replace(" ", "\n", 1)
    where = rng.choice(["problem", "solution"])
    text = getattr(host, where) or ""
    cut = rng.randrange(len(text) + 1)
    while cut < len(text) and text[cut - 1 : cut].isalnum():
        cut += 1  # plant on a word boundary so the span stays whole
    planted = text[:cut] + " " + noisy + ". " + text[cut:]
    return Record(**{**host.to_dict(), where: planted, "lineage": host.lineage}), span


def test_planted_30gram_overlaps_are_all_caught_with_item_and_span(index, reference, test_sets, math_train):
    rng = random.Random(7)
    clean = [r for r in math_train[:3000] if reference.first_hit(record_texts(r)) is None]
    donors = [(d, f) for s in test_sets.values() for d in s for f in ("problem", "solution")
              if len(words(getattr(d, f) or "")) >= 30]
    planted, spans = [], []
    for host in rng.sample(clean, 200):
        donor, field = rng.choice(donors)
        row, span = _plant(rng, host, donor, field, 30)
        planted.append(row)
        spans.append(span)
    found = scan(index, planted)
    assert all(found)
    for m, span in zip(found, spans, strict=True):
        # the planted window, or one shifted by a word where the host's next word continues the test text
        assert " ".join(span[1:]) in m.span or " ".join(span[:-1]) in m.span


def test_rows_sharing_only_29_words_are_kept(index, test_sets, math_train, reference):
    rng = random.Random(3)
    clean = [r for r in math_train[:400] if reference.first_hit(record_texts(r)) is None]
    donors = [d for d in test_sets["math_test"] if len(words(d.problem)) >= 40]
    rows = [_plant(rng, host, rng.choice(donors), "problem", 29)[0] for host in clean[:100]]
    fast = [m is not None for m in scan(index, rows)]
    slow = [reference.first_hit(record_texts(r)) is not None for r in rows]
    assert fast == slow
    assert sum(fast) <= 2  # a 29-word plant can only be caught by joining an adjacent real word


def test_ten_gram_removes_a_superset_of_thirty_gram(test_sets, math_train):
    rows = math_train[:1500]
    hit30 = {r.id for r, m in zip(rows, scan(NgramMatcher(test_sets, n=30, whole=False), rows), strict=True) if m}
    hit10 = {r.id for r, m in zip(rows, scan(NgramMatcher(test_sets, n=10, whole=False), rows), strict=True) if m}
    assert hit30 < hit10  # strictly more: 10-grams catch common phrasing (the paper's Figure 9)


def test_ngrams_never_span_two_fields(index, test_sets):
    donor = test_sets["gsm8k_test"][0]
    ws = words(donor.problem)[:30]
    row = Record(id="x", source="t", problem=" ".join(ws[:15]), solution=" ".join(ws[15:]))
    assert index.match([row]) == [None]


def test_decontaminate_writes_rejects_with_reasons(tmp_path, test_sets, math_train):
    rows = math_train[:1200]
    dc = Decontaminator(test_sets, ["ngram"])
    stats = FilterStats(dc.name)
    with AtomicWriter(tmp_path / "rejects.jsonl") as rejects:
        kept = list(apply_filter(rows, dc, stats, rejects, batch_size=100))
    removed = list(read_records(tmp_path / "rejects.jsonl"))
    assert len(kept) + len(removed) == len(rows) and removed
    assert stats.to_dict()["dropped_by_reason"] == {"contaminated_ngram": len(removed)}
    first = removed[0].meta
    assert first["rejected"]["reason"].startswith("contaminated_ngram: ")
    assert first["decontam"]["test_id"].startswith("test/") and first["decontam"]["matcher"] == "ngram"
    assert dc.removals.to_dict()["removed_by_matcher"] == {"ngram": len(removed)}
    write_records(tmp_path / "kept.parquet", kept)
    assert len(list(read_records(tmp_path / "kept.parquet"))) == len(kept)


def test_overlap_stats_for_the_evaluation_leakage_check(test_sets, math_train):
    stats = overlap_stats(math_train[:2000], test_sets["math_test"], n=30, name="math_test")
    assert stats["train_rows"] == 2000
    assert 0 < stats["train_rows_overlapping"] <= stats["train_rows"]
    assert stats["benchmark_items"] == 5000
    assert 0 < stats["benchmark_items_hit"] == len(stats["hit_item_ids"])
    clean = overlap_stats(math_train[:200], test_sets["gsm8k_test"], n=30, name="gsm8k_test")
    assert clean["benchmark_items_hit"] == 0
