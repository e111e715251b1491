"""Verification (answer agreement, self-consistency, verifier model), LLM judges and format checks."""

import dataclasses
from pathlib import Path

import pytest

from bench.oracles import VerifiedFilter
from mathforge.engine import Engine, EngineConfig, Result, Sampling
from mathforge.filters import FilterStats, apply_filter
from mathforge.quality.formatcheck import AnswerLineFilter, LengthFilter
from mathforge.quality.judge import DifficultyJudge, SolutionVerifier
from mathforge.quality.verify import check_answers, self_consistency, verdict
from mathforge.record import Lineage, Record
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def seeds():
    return [r for r in load(f"math:{DATA}/math/math_train.jsonl?limit=200") if r.answer]


def _sample(seed: Record, i: int, answer: str, method: str = "metamath/answer_aug", expected=None) -> Record:
    meta = {"synth": {"expected": expected}} if expected is not None else {}
    return Record(id=f"{seed.id}#{i}", source="synth", problem=seed.problem,
                  solution=f"{seed.solution}\nThe answer is {answer}", answer=answer, level=seed.level,
                  subject=seed.subject, lineage=Lineage(seed_id=seed.id, parent_id=seed.id, method=method),
                  meta=meta)


@pytest.mark.parametrize("grader", ["strict", "symbolic"])
def test_answer_agreement_with_seed_answers_and_fobar_expected(seeds, grader):
    seed_answers = {s.id: s.answer for s in seeds}
    good = [_sample(s, 0, s.answer) for s in seeds[:20]]
    bad = [dataclasses.replace(_sample(s, 1, "-12345"), solution="A wrong derivation.\nThe answer is -12345")
           for s in seeds[20:30]]
    fobar = [_sample(seeds[30], 2, "7", "metamath/fobar", expected="7"),
             _sample(seeds[31], 3, "8", "metamath/fobar", expected="9")]
    evolved = [_sample(seeds[32], 4, "5", "evol/deepen")]  # its question changed: no known answer
    checked = check_answers(good + bad + fobar + evolved, grader=grader, seed_answers=seed_answers)
    info = [r.meta["answer_check"] for r in checked]
    assert [i["correct"] for i in info] == [True] * 20 + [False] * 10 + [True, False, None]
    assert info[-1]["reason"] == "no_known_answer"
    stats = FilterStats("verified")
    kept = list(apply_filter(checked, VerifiedFilter(), stats))
    assert len(kept) == 22 and stats.dropped == {"answer_check_failed": 11}
    assert len(list(apply_filter(checked, VerifiedFilter(require_decided=True), FilterStats("v")))) == 21


def test_self_consistency_keeps_the_majority(seeds):
    s, t, u = seeds[:3]
    rows = [_sample(s, 0, "5"), _sample(s, 1, "5"), _sample(s, 2, "6"),  # majority 5
            _sample(t, 0, "1"), _sample(t, 1, "2"),  # tie: undecided
            _sample(u, 0, "\\frac{1}{2}"), _sample(u, 1, "\\frac12"), _sample(u, 2, "0.3"),
            _sample(u, 3, "1/2"), _sample(u, 4, "0.5")]  # one answer, as every grader reads it
    voted = self_consistency(rows)
    agrees = [r.meta["consistency"]["agrees"] for r in voted]
    assert agrees == [True, True, False, None, None, True, True, False, True, True]
    assert voted[0].meta["consistency"]["samples"] == 3
    assert [verdict(r) for r in voted] == agrees


class ScriptedEngine:
    """Fault injection: a fixed reply per request, or a failure."""

    def __init__(self, reply: str | None):
        self.reply = reply

    def run(self, requests, desc=""):
        if self.reply is None:
            return [Result(key=r.key, texts=[""], finish_reasons=["error"], error="timeout: slow") for r in requests]
        return [Result(key=r.key, texts=[self.reply], finish_reasons=["stop"]) for r in requests]


@pytest.mark.parametrize("reply, score, hard, error", [
    ("Two steps of algebra.\nDifficulty: 2", 2, False, None),
    ("Looks like level 3 at first... Difficulty: 3\nOn reflection, Difficulty: **5**", 5, True, None),
    ("I cannot rate this.", None, None, "unparsed"),
    (None, None, None, "engine: timeout: slow"),
])
def test_difficulty_judge_parses_the_last_rating(seeds, reply, score, hard, error):
    info = DifficultyJudge(ScriptedEngine(reply)).annotate(seeds[:1])[0].meta["difficulty"]
    assert (info["score"], info["hard"], info["error"]) == (score, hard, error)
    assert info["prompt_version"].startswith("difficulty_v1@")


@pytest.mark.parametrize("reply, correct", [
    ("Step 2 is wrong.\nVerdict: incorrect", False),
    ("All steps check out.\nVerdict: Correct", True),
    ("Hmm.", None),
])
def test_solution_verifier_parses_the_verdict(seeds, reply, correct):
    record = _sample(seeds[0], 0, seeds[0].answer)
    assert SolutionVerifier(ScriptedEngine(reply)).annotate([record])[0].meta["verifier"]["correct"] is correct


def test_judges_run_on_the_real_llama_engine(tmp_path, seeds):
    short = min(seeds, key=lambda r: len(r.problem) + len(r.solution))  # prompt time dominates on CPU
    records = [dataclasses.replace(short, solution=short.solution + "\nThe answer is " + short.answer)]
    cfg = EngineConfig(backend="llama", model="smollm2", progress=False)
    with Engine(cfg, cache_path=tmp_path / "cache.sqlite") as engine:
        sampling = Sampling(temperature=0.0, max_tokens=24)
        judged = DifficultyJudge(engine, sampling).annotate(records)
        verified = SolutionVerifier(engine, sampling).annotate(records)
        again = DifficultyJudge(engine, sampling).judge(records)
        stats = engine.stats()
    assert judged[0].meta["difficulty"]["error"] in (None, "unparsed")  # a 135M model may not follow the format
    assert verified[0].meta["verifier"]["prompt_version"].startswith("verifier_v1@")
    assert again[0].value == judged[0].meta["difficulty"]["score"]
    assert stats["cached"] >= 1  # the repeated judgement came from the request cache


@pytest.mark.parametrize("solution, reason", [
    ("x = 2, so\nThe answer is 2", None),
    ("so the value is $\\frac{1}{2}$.\nThe answer is: $\\frac{1}{2}$.", None),
    ("no final line here", "no_answer_line"),
    (None, "no_solution"),
])
def test_answer_line_filter(solution, reason):
    record = Record(id="r", source="t", problem="p", solution=solution)
    assert AnswerLineFilter().decide(record) == reason


def test_length_filter_counts_with_the_student_tokenizer(seeds):
    flt = LengthFilter(max_tokens=2048)
    record = dataclasses.replace(seeds[0], solution=seeds[0].solution + "\nThe answer is 1")
    n = flt.count(record)
    assert 20 < n < 2048 and flt.decide(record) is None
    long = dataclasses.replace(record, solution=" ".join(["step"] * 3000) + "\nThe answer is 1")
    assert flt.decide(long).startswith("too_long: ")
    assert LengthFilter(flt.tokenizer, max_tokens=n).decide(record) is None
    assert LengthFilter(flt.tokenizer, max_tokens=n - 1).decide(record) is not None
