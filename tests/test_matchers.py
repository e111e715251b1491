"""Decontamination matchers on real rows: GSM8K + MATH test as the evaluation sets, MATH train as data."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.oracles import ReferenceIndex
from mathforge.cli import app
from mathforge.embed import embed_texts
from mathforge.engine import Engine, EngineConfig
from mathforge.filters import FilterStats, apply_filter
from mathforge.io import AtomicWriter, read_records, write_records
from mathforge.quality.decontam import record_texts
from mathforge.quality.leaks import plant_leaks
from mathforge.quality.matchers import (
    MIN_WHOLE,
    SAMPLE_EVERY,
    Decontaminator,
    EmbeddingMatcher,
    NgramMatcher,
    TokenIndex,
    parse_matchers,
    restates,
    tokens,
)
from mathforge.record import Record
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def math_train():
    return list(load(f"math:{DATA}/math/math_train.jsonl"))


@pytest.fixture(scope="module")
def ngrams(test_sets):
    return Decontaminator(test_sets, ["ngram", "math-ngram", "masked-ngram"])


def _row(problem: str, solution: str = "", rid: str = "r") -> Record:
    return Record(id=rid, source="t", problem=problem, solution=solution)


@pytest.mark.parametrize("text, mode, expected", [
    (r"$x + 1 \neq 0,$ we divide", "words", ["x", "1", "neq", "0", "we", "divide"]),
    (r"$x + 1 \neq 0,$ we divide", "math", ["x", "+", "1", "neq", "0", "we", "divide"]),
    (r"$x + 12 \neq 0,$ we divide", "masked", ["x", "+", "#", "neq", "#", "we", "divide"]),
    (r"$2x-3 \le y$ & $a<=b$ -- c", "math", ["2x", "-", "3", "le", "y", "&", "a", "<", "=", "b", "--", "c"]),
    (r"\dfrac{1}{2}\quad \left( a \right) | A", "math", ["frac", "1", "2", "a", "|", "a"]),
    ("What is\xa0it? café 3·4", "math", ["what", "is", "it", "café", "3·4"]),
    ("12x [asy]draw((0,0)--(1,1));[/asy] done", "masked", ["#", "x", "done"]),
    ("", "math", []),
])
def test_tokens_and_the_compiled_kernel_read_the_same(text, mode, expected):
    assert tokens(text, mode) == expected
    # one document per token text, read by the kernel as 1-grams: the same hashes as the raw text
    index = TokenIndex({}, mode, n=1, min_whole=1)
    raw = index._run([text], build=True)[0].tolist()
    assert raw == index._run([" ".join(t.replace("#", "7") for t in expected)], build=True)[0].tolist()


@pytest.mark.parametrize("n", [30, 13, 5])
def test_a_copied_n_gram_is_found_wherever_it_starts_and_one_token_less_nowhere(n):
    # the kernel looks n-grams up only around every (n // SAMPLE_EVERY)-th window of a row
    stride = max(1, n // SAMPLE_EVERY)
    test = [f"t{i}" for i in range(3 * n)]
    matcher = NgramMatcher({"t": [_row(" ".join(test), "x " * 40, "t1")]}, n=n, min_whole=min(n, MIN_WHOLE), whole=False)
    rows, expected = [], []
    for lead in range(2 * stride + 2):
        for start in (0, 1, n - 1, 2 * n):
            for copied in (n, n - 1):
                filler = [f"f{k}" for k in range(lead)]
                rows.append(_row(" ".join([*filler, *test[start : start + copied], "f", "g"][: lead + copied + lead % 3])))
                expected.append(" ".join(test[start : start + n]) if copied == n else None)
    found = matcher.match(rows)
    assert [m.span if m else None for m in found] == expected
    assert matcher.match([]) == []


def test_ngram_matcher_finds_every_reference_hit_and_short_test_problems_whole(test_sets, math_train, ngrams):
    rows = math_train[:1500]
    reference = ReferenceIndex(test_sets, n=30)
    slow = [reference.first_hit(record_texts(r)) for r in rows]
    fast = ngrams.ngrams[0].match(rows)
    assert all(f is not None for s, f in zip(slow, fast, strict=True) if s)
    extra = [f for s, f in zip(slow, fast, strict=True) if f and not s]
    assert all(len(f.span.split()) < 30 for f in extra)  # only short test texts matched whole
    assert sum(s is not None for s in slow) > 30


def test_short_test_problems_are_caught_whole_tiny_ones_only_as_the_whole_field(test_sets, ngrams):
    short = [r for r in test_sets["math_test"] if MIN_WHOLE <= len(tokens(r.problem)) < 20][:50]
    tiny = [r for r in test_sets["math_test"] if 3 <= len(tokens(r.problem)) < MIN_WHOLE][:20]
    math = ngrams.ngrams[1]
    assert all(math.match([_row(r.problem)]) for r in short + tiny)
    quoted = [_row("Solve this: " + r.problem + " Show your work.") for r in short]
    assert all(m and m.matcher == "math-ngram" and m.test_field == "problem" for m in math.match(quoted))
    inside = [_row("First we note this. " + r.problem + " Then we go on.") for r in tiny]
    assert not any(math.match(inside))  # "Compute $\dbinom{8}{4}$." inside a text is no evidence
    # a short problem making up less than half of a longer one (WHOLE_COVER) is no evidence either
    padding = " ".join(f"word{k}" for k in range(40))
    assert not any(math.match([_row(f"{padding} {r.problem} {padding}") for r in short]))
    assert all(Decontaminator(test_sets, ["math-ngram"], cover=0.0).matches(
        [_row(f"{padding} {r.problem} {padding}") for r in short]))


def test_latex_heavy_span_is_caught_by_math_ngram_not_by_words(test_sets, math_train, ngrams):
    rng = random.Random(5)
    donors = [r.solution for r in test_sets["math_test"]
              if len(tokens(r.solution, "words")) < 30 <= len(tokens(r.solution, "math"))]
    assert len(donors) > 10
    rows = [_row(h.problem, h.solution + " " + d) for h, d in zip(rng.sample(math_train[:300], 10), donors, strict=False)]
    found = [ngrams.ngrams[1].match([r])[0] for r in rows]
    assert all(m is not None and m.field == "solution" for m in found)
    assert not any(ngrams.ngrams[0].match(rows))


def test_number_swapped_problem_is_caught_only_by_masked_ngram(test_sets, ngrams):
    test = test_sets["gsm8k_test"][3]
    swapped = "".join(str((int(c) + 3) % 10) if c.isdigit() else c for c in test.problem)
    row = _row(swapped, "We compute it.")
    words, math, masked = (m.match([row])[0] for m in ngrams.ngrams)
    assert words is None and math is None
    assert masked.test_id == test.id and masked.matcher == "masked-ngram" and "#" in masked.span
    # a masked match needs the whole problem (or 50 tokens of it): one sentence of it is not enough
    first = test.problem.split(".")[0] + "."
    assert ngrams.ngrams[2].match([_row(first + " And then something else entirely happens here.")]) == [None]


def test_decontaminator_as_a_filter_counts_per_matcher_and_keeps_evidence(tmp_path, test_sets, math_train, ngrams):
    test = test_sets["math_test"][10]
    sibling = next(r for r in test_sets["math_test"] if 10 < len(tokens(r.problem)) < 25 and "7" in r.problem)
    planted = [_row(test.problem, "x", "leak1"), _row(sibling.problem.replace("7", "8"), "y", "leak2")]
    rows = [*math_train[:300], *planted]
    stats = FilterStats("decontam")
    with AtomicWriter(tmp_path / "removed.jsonl") as rejects:
        kept = list(apply_filter(rows, ngrams, stats, rejects, batch_size=64))
    removed = list(read_records(tmp_path / "removed.jsonl"))
    assert len(kept) + len(removed) == len(rows) and {"leak1", "leak2"} <= {r.id for r in removed}
    by = {r.id: r.meta for r in removed}
    assert by["leak1"]["rejected"]["reason"].startswith("contaminated_ngram: problem matches math_test/")
    assert by["leak2"]["decontam"]["matcher"] == "masked-ngram"
    assert by["leak2"]["decontam"]["test_id"] == sibling.id
    report = ngrams.removals.to_dict()
    assert sum(report["removed_by_matcher"].values()) == len(removed) == stats.to_dict()["dropped"]
    assert report["removed_by_matcher"]["masked-ngram"] >= 1
    assert set(stats.dropped) <= {"contaminated_ngram", "contaminated_math-ngram", "contaminated_masked-ngram"}


def test_unknown_matcher_is_a_clear_error():
    assert parse_matchers("math-ngram, masked-ngram") == ("math-ngram", "masked-ngram")
    with pytest.raises(ValueError, match="unknown matcher.*bigram.*choose from ngram"):
        parse_matchers("math-ngram,bigram")


@pytest.fixture(scope="module")
def small_sets(test_sets):
    return {"gsm8k_test": test_sets["gsm8k_test"][:100], "math_test": test_sets["math_test"][:200]}


def test_embedding_catches_paraphrases_and_leaves_other_problems(small_sets, math_train):
    dc = Decontaminator(small_sets, ["embedding"], threshold=0.85, word_change=None)  # similarity alone
    tests = small_sets["gsm8k_test"][:20]
    # reworded enough that no n-gram survives: every third word dropped, questions asked differently
    paraphrased = [_row(" ".join(w for k, w in enumerate(t.problem.replace("How many", "What number of").split())
                                 if k % 3 != 2), "", f"p{i}") for i, t in enumerate(tests)]
    found = dc.matches(paraphrased + math_train[:40])
    caught = [m for m in found[:20] if m]
    assert len(caught) >= 14 and all(m.matcher == "embedding" and m.similarity >= 0.85 for m in caught)
    assert all(m.test_id == t.id for m, t in zip(found[:20], tests, strict=True) if m)
    assert sum(m is not None for m in found[20:]) <= 2


@pytest.mark.parametrize("row, test, expected", [
    # sentences reordered, a word swapped, case and punctuation edited: a rewording
    ("how much does he pay in all? Tom buys 3 pens at $2$ each, and 4 books.",
     "Tom buys 3 pens at $2$ each and 4 books. How much does he pay in total?", True),
    ("A farm has 72361 hens. How many eggs?", "A farm has 72,361 hens. How many eggs?", True),  # digits, not runs
    ("Tom buys 5 pens at $2$ each and 4 books. How much does he pay in total?",
     "Tom buys 3 pens at $2$ each and 4 books. How much does he pay in total?", False),  # a number changed
    (r"In cylindrical coordinates, find the shape of \[\theta = c.\]",
     r"In cylindrical coordinates, find the shape of \[z = c.\]", False),  # a formula changed
    ("What is the smallest three-digit multiple of 13?", "How many positive multiples of 13 are three-digit integers?",
     False),  # the same topic and numbers, another question
    ("What is the sum of the positive factors of 48?", "How many positive factors does 48 have?", False),
    # a negation added or dropped turns the question around, a few words apart
    ("How many ways are there to put 5 balls in 3 boxes if the balls are not distinguishable but the boxes are?",
     "How many ways are there to put 5 balls in 3 boxes if the balls are distinguishable and the boxes are?", False),
    ("Can it be that the total isn't 12?", "Can it be that the sum isn't 12?", True),
    # prose set in a formula is words, and an escaped dollar is currency, not a delimiter
    (r"$f(x) = x \text{ when } x>3$", r"$f(x) = x \text{ if } x>3$", True),
    (r"He pays \$0.5 for a pen and \$15 for rent.", r"He pays \$15 for rent and \$0.5 for a pen.", True),
])
def test_restates_keeps_digits_formulas_and_most_words(row, test, expected):
    assert restates(row, test) is expected


def test_embedding_removes_rewordings_not_neighbours_that_ask_something_else(small_sets):
    tests = [t for t in small_sets["math_test"] if 12 <= len(t.problem.split()) <= 40 and "$" in t.problem][:12]
    # our own rewordings: case, the last sentence first, a few words dropped at the end of sentences
    reworded = [_row(t.problem.rstrip(".?").upper() if k % 2 else t.problem.replace(", ", " , ").lower(), "", f"p{k}")
                for k, t in enumerate(tests)]
    # the same problems with one number changed: MiniLM still rates them close
    changed = [_row(t.problem.replace(next(c for c in t.problem if c.isdigit() and c != "9"), "9", 1), "", f"c{k}")
               for k, t in enumerate(tests) if any(c.isdigit() and c != "9" for c in t.problem)]
    dc = Decontaminator(small_sets, ["embedding"])
    found = dc.matches(reworded + changed)
    assert all(m is not None and m.test_id == t.id for m, t in zip(found, tests, strict=False))
    _, sims = dc.embedding.neighbours(changed)
    assert np.sum(sims >= dc.embedding.threshold) >= len(changed) // 2  # similarity alone would remove them...
    assert not any(found[len(reworded):])  # ...the check keeps them: a number differs


@pytest.fixture(scope="module")
def prefilter_case(test_sets, math_train):
    """100 test problems, and rows: 40 planted paraphrases and 10 number-swapped copies of them
    (`quality/leaks.py`), 40 MATH-train and 20 GSM8K-train rows."""
    sets = {"gsm8k_test": test_sets["gsm8k_test"][:40], "math_test": test_sets["math_test"][:60]}
    rng = random.Random(0)
    leaks = [*plant_leaks(rng, math_train[200:300], sets, "paraphrase", 40),
             *plant_leaks(rng, math_train[300:400], sets, "swapped", 10)]
    gsm8k_train = list(load(f"gsm8k:{DATA}/gsm8k/train.jsonl"))[:20]
    return sets, [*leaks, *math_train[:40], *gsm8k_train]


def test_prefiltered_embedding_removes_exactly_what_embedding_everything_removes(prefilter_case):
    sets, rows = prefilter_case
    matcher = EmbeddingMatcher(sets, threshold=0.85)
    found = matcher.match(rows)
    # the reference: every row and every test problem embedded, `restates` tried on every pair
    tests = [t for records in sets.values() for t in records]
    sims = embed_texts([r.problem[:512] for r in rows]) @ embed_texts([t.problem[:512] for t in tests]).T
    expected = []
    for i, row in enumerate(rows):
        restated = [j for j, t in enumerate(tests) if restates(row.problem, t.problem)]
        best = max(restated, key=lambda j: sims[i, j], default=None)
        expected.append(tests[best].id if best is not None and sims[i, best] >= 0.85 else None)
    assert [m and m.test_id for m in found] == expected
    assert sum(x is not None for x in expected) >= 20  # most paraphrases, no swapped copy
    assert all(m.similarity >= 0.85 for m in found if m)
    assert not any(m for m, r in zip(found, rows, strict=True) if r.meta.get("leak", {}).get("kind") == "swapped")


def test_minilm_embeds_only_rows_with_a_restated_test_problem_and_those_once(prefilter_case, monkeypatch):
    import mathforge.embed

    sets, rows = prefilter_case
    embedded: list[str] = []
    real = mathforge.embed.embed_texts
    monkeypatch.setattr(mathforge.embed, "embed_texts", lambda texts, *a, **k: embedded.extend(texts) or real(texts, *a, **k))
    matcher = EmbeddingMatcher(sets)
    assert embedded == []  # no test problem embedded up front
    matcher.match(rows)
    # what must reach MiniLM (cut at max_chars): rows restating a test problem, and those problems
    tests = [t.problem for records in sets.values() for t in records]
    restated = [[t for t in tests if restates(r.problem, t)] for r in rows]
    asked = [r.problem[:512] for r, c in zip(rows, restated, strict=True) if c]
    needed = {t[:512] for c in restated for t in c}
    assert 20 <= len(asked) < len(rows) // 2
    assert sorted(embedded) == sorted([*asked, *needed])
    embedded.clear()
    matcher.match(rows)
    assert sorted(embedded) == sorted(asked)  # the test problems' vectors are kept


def test_a_restated_test_problem_counts_when_a_sibling_of_it_is_nearer():
    test = Record(id="t", source="t", problem="Tom has 3 apples and buys 4 more. How many apples does he have now?")
    row = _row("How many apples does Tom have now? He has 3 apples and buys 4 more.")
    sibling = Record(id="s", source="t", problem="How many apples does Tom have now? He has 5 apples and buys 4 more.")
    sets = {"toy": [test, sibling]}
    best, _ = EmbeddingMatcher(sets, word_change=None).neighbours([row])
    assert best.tolist() == [1]  # the number-changed sibling is nearest, and does not restate
    (match,) = EmbeddingMatcher(sets, threshold=0.8).match([row])
    assert match.test_id == "t" and match.similarity >= 0.8


@pytest.mark.parametrize("opts, message", [
    ({"threshold": 1.5}, r"threshold must be a number in \[0, 1\], got 1.5"),
    ({"threshold": None}, "threshold must be a number"),
    ({"word_change": -0.1}, r"word_change must be a number in \[0, 1\] or None, got -0.1"),
])
def test_bad_embedding_settings_are_clear_errors(opts, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingMatcher({"toy": [_row("What is 1 + 1?")]}, **opts)


def test_llm_judges_only_the_embedding_candidates_on_real_smollm2(small_sets, math_train):
    with Engine(EngineConfig(backend="llama", progress=False)) as engine:
        dc = Decontaminator(small_sets, ["llm"], engine=engine, candidate_threshold=0.6)
        rows = [_row(small_sets["gsm8k_test"][0].problem.upper(), "", "near"), *math_train[:12]]
        near = dc.embedding.neighbours(rows)
        found = dc.matches(rows)
        asked = int(np.sum(near[1] >= 0.6))
        assert 1 <= asked < len(rows) and engine.stats()["requests"] == asked
    assert all(m is None or (m.matcher == "llm" and m.similarity >= 0.6) for m in found)
    assert all(m is None for m, s in zip(found, near[1].tolist(), strict=True) if s < 0.6)


def test_decontam_cli_uses_the_default_matchers_and_reports_per_matcher(tmp_path, test_sets, math_train):
    test_file = tmp_path / "math_test.jsonl"
    write_records(test_file, test_sets["math_test"][:300])
    short = next(r for r in test_sets["math_test"][:300] if len(r.problem.split()) < 12)
    write_records(tmp_path / "in.jsonl", [*math_train[:100], _row(short.problem, "s", "leak")])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["decontam", str(tmp_path / "in.jsonl"), "--against",
                                      f"math:{test_file}?name=math_test", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["decontam"]["matchers"] == ["math-ngram", "masked-ngram"]
    assert report["decontam"]["removed_by_matcher"]["math-ngram"] >= 1
    assert "leak" in {r.id for r in read_records(tmp_path / "out.removed.jsonl")}
    bad = CliRunner().invoke(app, ["decontam", str(tmp_path / "in.jsonl"), "--against", f"math:{test_file}",
                                   "--matchers", "nope", "--out", str(out)])
    assert bad.exit_code == 1 and "unknown matcher" in bad.output
