"""Synthesis: the answer contract, each method's prompt construction and parsing on real MATH and
GSM8K seeds with a scripted teacher, the two-stage pipeline through the real engine and its SQLite
cache (kill and resume), and one end-to-end run with the real llama.cpp teacher."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import pytest

from mathforge.config import ConfigError, load_config
from mathforge.engine import Engine, EngineConfig
from mathforge.engine.types import Completion, Result
from mathforge.io import read_records
from mathforge.ledger import Ledger
from mathforge.record import Lineage, Record
from mathforge.rundir import RunDir
from mathforge.sources import load
from mathforge.synth import evol, metamath, xwin
from mathforge.synth.common import Ctx, eliminate, parse_question, unanswerable
from mathforge.synth.contract import check_response
from mathforge.synth.pipeline import DEFAULT_MIX, SynthConfig, quotas, run_synth, synthesize
from mathforge.synth.templates import PROMPT_DIR, template_id

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MATH = DATA / "math" / "math_train.jsonl"
GSM = DATA / "gsm8k" / "train.jsonl"


def seeds(spec: str) -> list[Record]:
    return list(load(spec))


# ---------------------------------------------------------------- a scripted teacher


def scripted_reply(text: str, flawed_first: bool = True) -> str:
    """What a cooperative teacher would say to each of our prompts (dispatch on the prompt's words)."""
    if "Restate a math problem" in text:
        problem = text.rsplit("Problem: ", 1)[1].rsplit("\nRestated problem:", 1)[0]
        sentences = re.split(r"(?<=[.?!])\s+", problem)
        return "Restated problem: Told the other way round: " + " ".join(reversed(sentences))
    if "as one declarative sentence" in text:
        answer = re.findall(r"Answer: (.*)", text)[-1]
        return f"Statement: The result equals {answer}."
    if "harder and more varied" in text:
        problem = text.rsplit("Original exercise: ", 1)[1].rsplit("\nNew exercise:", 1)[0]
        return f"New exercise: Suppose the setting changes slightly. {problem} Then find twice that amount."
    if "as inspiration" in text:
        return f"New problem: A tank holds {len(text) % 97 + 20} liters and leaks 3 liters per hour. How many hours until it is empty?"
    if "Check a math problem" in text:
        problem = text.rsplit("Problem: ", 1)[1]
        sound = "(fixed)" in problem or not flawed_first
        return "All quantities are defined.\nVerdict: " + ("correct" if sound else "incorrect")
    if "checked by a reviewer" in text:
        problem = text.rsplit("Problem: ", 1)[1].split("\nCorrected problem:", 1)[0]
        return f"Corrected problem: {problem} (fixed)"
    if "Now state only" in text:
        return "The answer is 7"
    if "unknown variable X" in text.rsplit("Problem:", 1)[-1]:
        return "Setting up the equation and solving for X.\nThe answer is 48"
    return "First we add the numbers, then we simplify.\nThe answer is 42"


def conversation(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


class ScriptedTeacher:
    """A Teacher (engine.run contract) answering with `scripted_reply`; records every request."""

    def __init__(self, reply=scripted_reply):
        self.reply = reply
        self.requests = []

    def run(self, requests, desc=""):
        return [self.answer(r) for r in requests]

    async def asubmit(self, request):
        return self.answer(request)

    def answer(self, request):
        self.requests.append(request)
        return Result(request.key, [self.reply(conversation(request.messages))], ["stop"], 10, 5)


class ScriptedBackend:
    """An engine backend answering with `scripted_reply`; `kill_after` calls raise KeyboardInterrupt."""

    name = "scripted"
    model_id = "scripted-v1"
    batch_size = 1
    max_concurrency = 1

    def __init__(self, kill_after: int | None = None):
        self.calls = 0
        self.kill_after = kill_after

    async def generate(self, calls):
        if self.kill_after is not None and self.calls >= self.kill_after:
            raise KeyboardInterrupt
        self.calls += len(calls)
        return [Completion(scripted_reply(conversation(c.messages)), "stop", 10, 5) for c in calls]

    async def aclose(self):
        pass


def ctx_for(teacher, pool=(), **kw) -> Ctx:
    return Ctx(teacher=teacher, stage="stage1", teacher_name="scripted", fewshot_pool=tuple(pool), **kw)


# ---------------------------------------------------------------- the answer contract


@pytest.mark.parametrize(("text", "finish", "answer", "repair", "reason"), [
    ("2 + 2 = 4.\nThe answer is 4", "stop", "4", None, None),
    ("So x = 1/2.\nThe answer is: $\\frac{1}{2}$.", "stop", "\\frac{1}{2}", None, None),
    ("We get 5.\nThe answer is \\boxed{5}", "stop", "5", None, None),
    ("We get 5.\nThe answer is 5\n\nProblem: next question?", "stop", "5", "cut_trailing_text", None),
    ("Thus the area is $\\boxed{12\\pi}$.", "stop", "12\\pi", "boxed", None),
    ("The roots are $\\boxed{2}$ and $\\boxed{3}$.", "stop", "2, 3", "boxed", None),
    ("Adding gives 9.\nFinal answer: 9", "stop", "9", "final_line", None),
    ("Adding gives 9.\n#### 9", "stop", "9", "final_line", None),
    ("We find $\\boxed{3}$ early, then keep going " + "on and on " * 20, "stop", None, None, "no_answer_line"),
    ("I think it is probably nine", "stop", None, None, "no_answer_line"),
    ("Step 1: add.\nThe answer is 4", "length", None, None, "truncated"),
    # Cut by the budget only after a finished solution (a raw completion running into a new item):
    ("We get 100.\nThe answer is 100.\n\nQuestion: A bat and a ball", "length", "100", "cut_after_answer", None),
    ("The answer is 3.\n\n[asy]\nimport", "length", "3", "cut_after_answer", None),
    ("Step 1.\nThe answer is 4\nand then more\n\nQuestion: next", "length", None, None, "truncated"),
    ("So it is 5.\n\nThen we go on and on", "length", None, None, "truncated"),
    ("   ", "stop", None, None, "empty"),
    ("Hmm.\nThe answer is ", "stop", None, None, "no_answer_line"),
    ("x.\nThe answer is " + "9" * 300, "stop", None, None, "answer_too_long"),
])
def test_answer_contract(text, finish, answer, repair, reason):
    checked = check_response(text, finish)
    assert (checked.answer, checked.repair, checked.reason) == (answer, repair, reason)
    if checked.ok:
        assert checked.solution.endswith(f"\nThe answer is {answer}") or checked.solution == f"The answer is {answer}"


# ---------------------------------------------------------------- MetaMath on real seeds


def test_fobar_masks_one_number_of_real_gsm8k_and_math_seeds():
    rows = seeds(f"gsm8k:{GSM}?limit=30") + seeds(f"math:{MATH}?limit=30")
    built = 0
    for r in rows:
        out = metamath.fobar_question(r.problem, r.answer, r.id)
        if out is None:
            continue
        built += 1
        question, x = out
        suffix = f" If we know the answer to the above question is {r.answer}, what is the value of the unknown variable X?"
        assert question.endswith(suffix)
        masked = question[: -len(suffix)]
        assert masked.count("X") == 1 and masked.replace("X", x, 1) == r.problem.rstrip()
        assert re.fullmatch(r"\d+(\.\d+)?", x) and len(re.findall(rf"(?<![\d.]){re.escape(x)}(?!\d|\.\d)", r.problem)) == 1
    assert built >= 45


def test_fobar_on_natalia_and_unmaskable_problems():
    natalia = seeds(f"gsm8k:{GSM}?limit=1")[0]
    question, x = metamath.fobar_question(natalia.problem, natalia.answer, "salt")
    assert (x, question.startswith("Natalia sold clips to X of her friends")) == ("48", True)
    assert metamath.mask_number("What is 5 + 5?", "s") is None  # only a repeated number
    assert metamath.mask_number("Let X = 4. Find X^2.", "s") is None  # X already names something
    assert metamath.mask_number("Find $x^2$ for $x_1$.", "s") is None  # exponents and subscripts are not quantities


def test_backward_methods_skip_seeds_they_can_never_use():
    rows = seeds(f"math:{MATH}?limit=30")
    unusable = {r.id: metamath.unusable("fobar", r) for r in rows}
    assert set(unusable.values()) == {None, "no_maskable_number"}  # e.g. "What is 5 + 5?"-like problems
    for r in rows:
        assert (unusable[r.id] is None) == (metamath.fobar_question(r.problem, r.answer, "any salt") is not None)
    assert metamath.unusable("answer_aug", rows[0]) is None
    assert metamath.unusable("self_verify", dataclasses.replace(rows[0], answer=None)) == "no_answer"


def test_self_verification_statement_on_a_real_gsm8k_seed():
    weng = seeds(f"gsm8k:{GSM}?limit=2")[1]  # Weng earns $12 an hour ... How much did she earn? -> 10
    sv = metamath.sv_question(weng.problem, "salt")
    assert sv.question == "How much did she earn?" and "X" in sv.context
    assert sv.context.replace("X", sv.value, 1) + " " + sv.question == weng.problem
    question, reason = metamath.parse_statement("Statement: She earned $10.", "stop", sv, weng.answer)
    assert reason is None
    assert question == f"{sv.context} She earned $10. What is the value of the unknown variable X?"
    for bad, why in [("She earned a lot.", "answer_missing"), ("Did she earn 10?", "not_declarative"),
                     ("", "empty"), ("She earned 10 dollars", None)]:
        assert metamath.parse_statement(bad, "stop", sv, weng.answer)[1] == why
    one = metamath.sv_question("What is the degree of $x^3 + 4x + 10$?", "s")
    assert one.context == "" and "X" in one.question
    assert metamath.parse_statement("The degree is 3.", "stop", one, "3")[1] == "no_unknown"


def test_metamath_sub_methods_build_requests_and_parse_with_a_scripted_teacher():
    rows = seeds(f"gsm8k:{GSM}?limit=4")
    teacher = ScriptedTeacher()
    ctx = ctx_for(teacher, pool=rows, fewshot=2)
    out = {sub: asyncio.run(metamath.run(ctx, sub, [(r, 0) for r in rows])) for sub in metamath.SUBMETHODS}
    assert all(len(v) == 4 for v in out.values()), ctx.meter.as_dict()
    fobar = out["fobar"][0]
    assert fobar.problem.startswith("Natalia sold clips to X") and fobar.meta["synth"]["expected"] == "48"
    assert fobar.answer == "48" and fobar.meta["synth"]["agrees"] is True
    assert out["answer_aug"][0].problem == rows[0].problem and out["answer_aug"][0].meta["synth"]["agrees"] is False
    assert out["rephrase"][0].problem.startswith("Told the other way round: How many clips")
    assert "The result equals 72. What is the value of the unknown variable X?" in out["self_verify"][0].problem
    for sub, recs in out.items():
        for rec in recs:
            assert rec.lineage.method == f"metamath/{sub}" and rec.lineage.seed_id == rec.lineage.parent_id
            assert rec.lineage.prompt_version and "@" in rec.lineage.prompt_version
            assert rec.solution.endswith(f"The answer is {rec.answer}")
    prompts = [r.messages[0]["content"] for r in teacher.requests]
    solve_prompts = [p for p in prompts if p.startswith("Here is a math problem")]
    assert all(p.count("\nProblem: ") == 3 for p in solve_prompts)  # 2 few-shot seeds + the question
    assert len({r.key for r in teacher.requests}) == len(teacher.requests)
    assert ctx.meter.requests == len(teacher.requests) == 4 + 8 + 4 + 8


def test_elicitation_turn_repairs_a_missing_answer_line_only_when_the_teacher_gives_one():
    rows = seeds(f"gsm8k:{GSM}?limit=2")

    def reply(text):
        return "The answer is 3" if "Now state only" in text and "Natalia" in text else "We add things up."

    ctx = ctx_for(ScriptedTeacher(lambda t: reply(t)), elicit=True)
    [kept] = asyncio.run(metamath.run(ctx, "answer_aug", [(r, 0) for r in rows]))
    assert kept.answer == "3" and kept.meta["synth"]["repair"] == "elicited"
    assert kept.solution == "We add things up.\nThe answer is 3"
    assert dict(ctx.meter.dropped) == {"no_answer_line": 1} and ctx.meter.requests == 4


# ---------------------------------------------------------------- Evol and its elimination rules


@pytest.mark.parametrize(("child", "reason"), [
    ("A shop sells 12 pens at 3 dollars each and 5 more at 4 dollars. What is the total cost?", None),
    ("A shop sells 12 pens at 3 dollars each. What is the total cost?", "unchanged"),
    ("A shop sells 12 pens at 3 dollars each. What is the total cost? ", "unchanged"),
    ("What?", "degenerate"),
    ("pens " * 40, "degenerate"),
    ("A pen costs 2.\nA pen costs 2.\nA pen costs 2.\nHow much?", "degenerate"),
    ("Here is the new exercise: a shop sells 12 pens. How much?", "copied_prompt"),
    ("Rewrite the original problem so that it has 13 pens. How much?", "copied_prompt"),
])
def test_evol_elimination_rules(child, reason):
    assert eliminate("A shop sells 12 pens at 3 dollars each. What is the total cost?", child) == reason


@pytest.mark.parametrize(("text", "problem", "reason"), [
    ("New exercise: A cube has side 3. Find its volume.", "A cube has side 3. Find its volume.", None),
    ("**New problem:** How many primes are below 20?\n\nSolution: 2, 3, 5...", "How many primes are below 20?", None),
    ("How many primes are below 20? The answer is 8", "How many primes are below 20?", None),
    ("The answer to this problem is 28.", None, "not_a_problem"),
    ("A cube has side 3 and volume 27.", None, "not_a_problem"),
    ("", None, "empty"),
])
def test_parse_question(text, problem, reason):
    assert parse_question(text, "stop") == (problem, reason)
    assert parse_question(text, "length")[1] == ("truncated")


@pytest.mark.parametrize(("solution", "answer", "expected"), [
    ("Sorry, this cannot be determined from the data.", "none", True),
    ("There is not enough information to find the speed.", "5", True),
    ("We add 2 and 3.", "5", False),
    ("x is undefined here.", "undefined", True),
])
def test_unanswerable(solution, answer, expected):
    assert unanswerable(solution, answer) is expected


def test_evol_trajectory_keeps_every_step_with_its_number_and_parent():
    rows = seeds(f"math:{MATH}?limit=2")
    ctx = ctx_for(ScriptedTeacher())
    kept = asyncio.run(evol.run(ctx, [(r, 0) for r in rows], max_steps=3))
    assert len(kept) == 6 and ctx.meter.kept == 6
    for seed in rows:
        chain = [r for r in kept if r.lineage.seed_id == seed.id]
        assert [r.lineage.step for r in chain] == [1, 2, 3]
        assert chain[0].lineage.parent_id == seed.id
        assert [r.lineage.parent_id for r in chain[1:]] == [r.id for r in chain[:-1]]
        assert all(r.lineage.method in {f"evol/{s}" for s in evol.STRATEGIES} for r in chain)
        assert chain[2].problem.count("Then find twice that amount.") == 3


def test_evol_stops_a_trajectory_at_its_first_failed_step():
    rows = seeds(f"math:{MATH}?limit=1")

    def reply(text):
        if "Original exercise: Suppose the setting" in text:
            return "New exercise: " + text.rsplit("Original exercise: ", 1)[1].rsplit("\nNew exercise:", 1)[0]
        return scripted_reply(text)

    ctx = ctx_for(ScriptedTeacher(reply))
    kept = asyncio.run(evol.run(ctx, [(rows[0], 0)], max_steps=5))
    assert [r.lineage.step for r in kept] == [1] and dict(ctx.meter.dropped) == {"evol_unchanged": 1}


def test_evol_drops_an_unanswerable_evolution():
    rows = seeds(f"math:{MATH}?limit=1")

    def reply(text):
        if text.startswith("Work through"):
            return "Sorry, this cannot be determined.\nThe answer is undefined"
        return scripted_reply(text)

    ctx = ctx_for(ScriptedTeacher(reply))
    assert asyncio.run(evol.run(ctx, [(rows[0], 0)], max_steps=2)) == []
    assert dict(ctx.meter.dropped) == {"evol_unanswerable": 1}


def test_evol_strategy_choice_is_seeded_and_covers_all_five():
    picks = {evol.pick_strategy(f"seed{i}/0", 1) for i in range(60)}
    assert picks == set(evol.STRATEGIES)
    assert evol.pick_strategy("a/0", 2) == evol.pick_strategy("a/0", 2)


# ---------------------------------------------------------------- Xwin's revise loop


def test_xwin_revises_a_flawed_question_then_solves_it():
    rows = seeds(f"math:{MATH}?limit=2")
    teacher = ScriptedTeacher()
    ctx = ctx_for(teacher)
    kept = asyncio.run(xwin.run(ctx, [(r, 0) for r in rows], max_rounds=2))
    assert len(kept) == 2
    rec = kept[0]
    assert rec.problem.endswith("(fixed)") and rec.meta["synth"]["revisions"] == 1
    assert [h["verdict"] for h in rec.meta["synth"]["history"]] == ["flawed", "sound"]
    kinds = [r.messages[-1]["content"].split(" ", 2)[:2] for r in teacher.requests]
    assert kinds.count(["Check", "a"]) == 4 and kinds.count(["Each", "math"]) == 2
    revise = next(r.messages[-1]["content"] for r in teacher.requests if r.messages[-1]["content"].startswith("Each"))
    assert "Review: All quantities are defined.\nProblem: " in revise and "Verdict" not in revise.rsplit("Review:", 1)[1]
    assert rec.lineage.method == "xwin" and rec.answer == "42"


def test_xwin_drops_a_question_still_flawed_after_the_last_round():
    rows = seeds(f"math:{MATH}?limit=1")
    ctx = ctx_for(ScriptedTeacher(lambda t: "Verdict: incorrect" if "Check a math" in t else scripted_reply(t)))
    assert asyncio.run(xwin.run(ctx, [(rows[0], 0)], max_rounds=2)) == []
    assert dict(ctx.meter.dropped) == {"xwin_still_flawed": 1}
    assert ctx.meter.requests == 1 + 3 + 2  # generate, 3 checks, 2 revisions


def test_xwin_asks_once_for_a_missing_verdict():
    rows = seeds(f"math:{MATH}?limit=1")

    def reply(text):
        if "Now state only your conclusion" in text:
            return "Verdict: correct"
        return "Looks fine to me." if "Check a math" in text else scripted_reply(text)

    ctx = ctx_for(ScriptedTeacher(reply))
    assert len(asyncio.run(xwin.run(ctx, [(rows[0], 0)], max_rounds=0))) == 1


@pytest.mark.parametrize(("check", "verdict", "critique"), [
    ("Length = 20 / 4, a single value.\nVerdict: correct", "sound", "Length = 20 / 4, a single value."),
    ("18 + 15 = 33 contradicts the 30 students.\nVerdict: incorrect\n\nIn general, more text", "flawed",
     "18 + 15 = 33 contradicts the 30 students."),
    ("All defined.\n**Verdict:** Sound", "sound", "All defined."),
    ("Verdict: flawed", "flawed", ""),
    ("First it said Verdict: incorrect, then on reflection\nVerdict: correct", "sound", ""),
    ("28 * (29 / 2) = 37.\nVerdict: equal", None, "28 * (29 / 2) = 37."),
    ("The answer is correct.", None, "The answer is correct."),
])
def test_xwin_verdict_and_critique(check, verdict, critique):
    assert xwin.parse_verdict(check) == verdict
    assert xwin.critique_of(check) == critique


def test_xwin_drops_a_revision_that_changes_nothing_or_answers_instead():
    rows = seeds(f"math:{MATH}?limit=2")

    def reply(text):
        if "as inspiration" in text:
            liters = 40 if rows[0].problem in text else 50
            return f"New problem: A tank holds {liters} liters and leaks 3 liters per hour. How many hours until it is empty?"
        if "checked by a reviewer" in text:  # SmolLM2's two habits: copy the draft, or solve it
            problem = text.rsplit("Problem: ", 1)[1].split("\nCorrected problem:", 1)[0]
            return problem if "40 liters" in problem else "It takes 13 hours."
        return "Verdict: incorrect" if "Check a math" in text else scripted_reply(text)

    ctx = ctx_for(ScriptedTeacher(reply))
    assert asyncio.run(xwin.run(ctx, [(r, 0) for r in rows], max_rounds=1)) == []
    assert dict(ctx.meter.dropped) == {"xwin_revise_unchanged": 1, "xwin_revise_not_a_problem": 1}


# ---------------------------------------------------------------- templates and mix


def test_templates_are_versioned_and_their_identity_is_in_every_request_key():
    names = [p.stem for p in PROMPT_DIR.glob("*.j2")]
    assert len(names) >= 15
    ids = {template_id(n) for n in names}
    assert len(ids) == len(names) and all(re.fullmatch(r"[\w]+@\w+#[0-9a-f]{8}", i) for i in ids)
    teacher = ScriptedTeacher()
    asyncio.run(metamath.run(ctx_for(teacher), "answer_aug", [(seeds(f"gsm8k:{GSM}?limit=1")[0], 0)]))
    assert teacher.requests[0].key.startswith(template_id("metamath_answer") + "/")


@pytest.mark.parametrize(("target", "mix", "expected"), [
    (10, {"evol": 0.4, "xwin": 0.2, "metamath/fobar": 0.4}, {"evol": 4, "xwin": 2, "metamath/fobar": 4}),
    (7, {"evol": 2, "xwin": 1, "metamath/fobar": 1, "metamath/rephrase": 0}, {"evol": 3, "xwin": 2, "metamath/fobar": 2}),
    (1, {"evol": 1, "xwin": 1}, {"evol": 1, "xwin": 0}),
])
def test_quotas_follow_shares_and_sum_to_the_target(target, mix, expected):
    got = quotas(target, mix)
    assert sum(got.values()) == target
    assert got == expected


@pytest.mark.parametrize(("fail_first", "passes", "sent", "units", "kept"), [
    (0, 3, 1, 1, 1),  # the first attempt succeeds: no more units
    # After each failure the measured yield drops and more units run at once (3 failures: yield
    # (0 + 2) / (3 + 2), so 3 units for the last sample): the 4th fills the quota, 2 are spare.
    (3, 3, 6, 4, 1),
    (100, 3, 1 + 2 + 4, 1 + 2 + 4, 0),  # bounded: a method that never succeeds stops after (2**max_passes - 1) units
    (1, 2, 3, 2, 1),
])
def test_a_method_short_of_its_quota_gets_more_units_up_to_its_budget(tmp_path, fail_first, passes, sent, units, kept):
    rows = seeds(f"gsm8k:{GSM}?limit=5")
    calls = []

    def reply(text):
        calls.append(text)
        return "We add things up." if len(calls) <= fail_first else "We add.\nThe answer is 5"

    cfg = load_config(SynthConfig, None, ["mix={metamath/answer_aug: 1}", f"max_passes={passes}"])
    ledger = Ledger(tmp_path / "ledger.sqlite")
    stats = asyncio.run(synthesize(cfg, ctx_for(ScriptedTeacher(reply), elicit=False), rows, 1, tmp_path / "out",
                                   ledger, "s", window=8))
    y = stats["yield"]["metamath/answer_aug"]
    assert (len(calls), stats["records"], y["kept"], y["units"], stats["launched"]["metamath/answer_aug"]) == \
        (sent, kept, kept, units, sent)
    assert y["dropped"].get("no_answer_line", 0) == min(units, fail_first)
    assert len(list(read_records(tmp_path / "out"))) == kept


# ---------------------------------------------------------------- the two-stage pipeline


def small_config(*extra: str) -> SynthConfig:
    return load_config(SynthConfig, None, [
        f"seeds=['math:{MATH}?limit=30', 'gsm8k:{GSM}?limit=10']",
        "mix={metamath/answer_aug: 1, metamath/rephrase: 1, metamath/fobar: 1, metamath/self_verify: 1, evol: 2, xwin: 1}",
        "stage1.initial_target=14", "stage1.coreset_budget=6", "stage1.target=14", "stage2.target=7",
        "evol_max_steps=2", "fewshot=1", "engine.progress=false", *extra,
    ])


def scripted_engine(root: Path, backend: ScriptedBackend) -> Engine:
    root.mkdir(parents=True, exist_ok=True)
    return Engine(EngineConfig(progress=False, concurrency=1), cache_path=root / "cache.sqlite", backend=backend)


def test_two_stages_every_method_lineage_and_yield_table(tmp_path):
    cfg = small_config()
    with scripted_engine(tmp_path, ScriptedBackend()) as engine:
        table = run_synth(cfg, tmp_path, teacher=engine)
    assert table.pop("datasets") == {"seeds": str(tmp_path / "seeds.jsonl"), "normal": str(tmp_path / "stage1" / "normal"),
                                     "hard": str(tmp_path / "stage2" / "hard")}
    assert set(table) == {"stage1_initial", "stage1_normal", "stage2_hard"}
    for stage, methods in table.items():
        assert set(methods) == set(DEFAULT_MIX), stage
        assert all(y["kept"] >= 1 and y["requests"] >= 1 for y in methods.values()), (stage, methods)
    normal = list(read_records(tmp_path / "stage1" / "normal"))
    hard = list(read_records(tmp_path / "stage2" / "hard"))
    core = list(read_records(tmp_path / "stage1" / "seed_synthetic.jsonl"))
    assert len(normal) == 14 and len(hard) == 7 and len(core) == 6
    core_ids = {r.id for r in core}
    seed_ids = {r.id for r in read_records(tmp_path / "seeds.jsonl")}
    hard_seed = {r.id: r for r in read_records(tmp_path / "stage2" / "hard_seeds.jsonl")}
    assert hard_seed and all(r.level >= 4 for r in hard_seed.values())
    for r in normal + hard:
        lin = r.lineage
        assert lin.method and lin.teacher == "scripted" and lin.prompt_version and lin.step >= 1
        assert lin.seed_id in seed_ids and r.solution.endswith(f"The answer is {r.answer}")
    assert all(r.lineage.stage == "stage1" for r in normal) and all(r.lineage.stage == "stage2" for r in hard)
    # Stage 1's second round grows from the core-set picks; stage 2 from level 4-5 seeds.
    assert all(r.lineage.parent_id in core_ids or r.lineage.step > 1 for r in normal if r.lineage.method != "xwin")
    assert {r.lineage.seed_id for r in hard} <= set(hard_seed)
    assert {r.lineage.method.split("/")[0] for r in hard} == {"metamath", "evol", "xwin"}
    yield_md = (tmp_path / "yield.md").read_text()
    assert all(m in yield_md for m in DEFAULT_MIX) and "stage2_hard" in yield_md
    rows = [line.split(" | ") for line in yield_md.splitlines() if line.startswith("| stage |")]
    assert len(rows) == 1 and rows[0][-1] == "repaired |"
    coverage = json.loads((tmp_path / "stats" / "stage1_coreset.json").read_text())["coverage"]
    assert coverage["after"]["max_dist"] < coverage["before"]["max_dist"]


def test_a_random_core_set_takes_the_budget_by_seeded_hash_without_embedding(tmp_path):
    from mathforge.quality.coreset import vectors_path
    from mathforge.record import hash_fraction
    from mathforge.synth.pipeline import step_specs

    cfg = small_config("stage1.coreset=random", "mix={evol: 1}", "stage2.enabled=false", "stage1.target=4")
    with scripted_engine(tmp_path, ScriptedBackend()) as engine:
        run_synth(cfg, tmp_path, teacher=engine)
    last = {}  # each problem stands for its last row by id, as for k-center
    for r in sorted(read_records(tmp_path / "stage1" / "initial"), key=lambda r: r.id):
        last[r.problem] = r.id
    expected = sorted(last.values(), key=lambda rid: hash_fraction(rid, "0"))[:6]
    assert [r.id for r in read_records(tmp_path / "stage1" / "seed_synthetic.jsonl")] == expected
    assert json.loads((tmp_path / "stats" / "stage1_coreset.json").read_text())["coverage"]["method"] == "random"
    assert not any(vectors_path(s).exists() for s in (tmp_path / "stage1" / "initial").glob("part-*"))
    keys = {c: step_specs(small_config(f"stage1.coreset={c}")) for c in ("kcenter", "random")}
    assert keys["kcenter"]["stage1_coreset"].key != keys["random"]["stage1_coreset"].key
    assert keys["kcenter"]["stage1_initial"].key == keys["random"]["stage1_initial"].key
    with pytest.raises(ConfigError, match="stage1.coreset"):
        small_config("stage1.coreset=kmeans")


def test_a_killed_run_resumes_without_repeating_completed_requests(tmp_path):
    fresh = ScriptedBackend()
    with scripted_engine(tmp_path / "fresh", fresh) as engine:
        run_synth(small_config(), tmp_path / "fresh", teacher=engine)
    total = fresh.calls

    killed = ScriptedBackend(kill_after=total // 2)
    with pytest.raises(KeyboardInterrupt), scripted_engine(tmp_path / "run", killed) as engine:
        run_synth(small_config(), tmp_path / "run", teacher=engine)
    assert not RunDir(tmp_path / "run").is_done("stage1_normal")
    resumed = ScriptedBackend()
    with scripted_engine(tmp_path / "run", resumed) as engine:
        run_synth(small_config(), tmp_path / "run", teacher=engine)
        assert engine.stats()["cached"] > 0  # the killed stage's finished requests, replayed from the cache
    assert killed.calls == total // 2 and killed.calls + resumed.calls == total
    for part in ("stage1/normal", "stage2/hard"):
        same = [sorted(json.dumps(r.to_dict(), sort_keys=True) for r in read_records(tmp_path / d / part))
                for d in ("fresh", "run")]
        assert same[0] == same[1]
    again = ScriptedBackend()
    with scripted_engine(tmp_path / "run", again) as engine:
        run_synth(small_config(), tmp_path / "run", teacher=engine)
    assert again.calls == 0


def test_judge_step_adds_seeds_rated_hard(tmp_path):
    def reply(text):
        return "Needs several ideas.\nDifficulty: 5" if "Difficulty:" in text else scripted_reply(text)

    teacher = ScriptedTeacher(reply)
    cfg = small_config("stage2.judge=true", "stage2.judge_limit=5", "stage1.initial_target=7", "stage1.target=7")
    run_synth(cfg, tmp_path, teacher=teacher)
    judged = list(read_records(tmp_path / "stage2" / "judged_hard.jsonl"))
    assert len(judged) == 5 and all(r.meta["difficulty"]["score"] == 5 for r in judged)
    hard_seeds = {r.lineage.seed_id for r in read_records(tmp_path / "stage2" / "hard")}
    assert hard_seeds  # drawn from level 4-5 seeds plus the judged ones


def test_bad_recipes_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        run_synth(small_config("mix={evol: 1, wizard: 1}"), tmp_path / "a", teacher=ScriptedTeacher())
    with pytest.raises(ValueError, match="evol_strategies"):
        run_synth(small_config("evol_strategies=[deepen, telepathy]"), tmp_path / "b", teacher=ScriptedTeacher())


def test_synth_offline_recipe_loads_and_points_at_existing_seeds():
    from mathforge.synth.pipeline import resolve_spec

    repo = Path(__file__).resolve().parents[1]
    for name in ("synth_offline.yaml", "synth_paper.yaml"):
        cfg = load_config(SynthConfig, repo / "recipes" / name)
        for spec in cfg.seeds:
            resolved = resolve_spec(spec)
            if resolved.startswith("math:"):
                assert Path(resolved.split(":", 1)[1].split("?")[0]).exists(), resolved
    paper = load_config(SynthConfig, repo / "recipes" / "synth_paper.yaml")
    assert (paper.stage1.target, paper.stage2.target, paper.sampling.temperature) == (2_100_000, 400_000, 0.7)
    assert max(paper.mix, key=paper.mix.get) == "evol"


# ---------------------------------------------------------------- the real llama.cpp teacher


@pytest.mark.slow
def test_end_to_end_with_the_real_llama_teacher(tmp_path):
    """SmolLM2 through in-process llama.cpp, both stages, tiny budgets: the machinery must hold up
    (its mathematics is wrong, so only structure is checked); a rerun is served from the cache."""
    pytest.importorskip("llama_cpp")
    repo = Path(__file__).resolve().parents[1]
    overrides = [
        f"seeds=['rg:gsm_symbolic?size=4&seed=1', 'math:{MATH}?limit=12']",
        "max_passes=2",  # the recipe's mix: with these targets, Evol and answer augmentation get the quota
        "stage1.initial_target=2", "stage1.coreset_budget=1", "stage1.target=1", "stage2.target=1",
        "sampling.solve_max_tokens=128", "sampling.question_max_tokens=48", "engine.progress=false",
    ]
    cfg = load_config(SynthConfig, repo / "recipes" / "synth_offline.yaml", overrides)
    table = run_synth(cfg, tmp_path)
    assert set(table) == {"stage1_initial", "stage1_normal", "stage2_hard", "datasets"}
    initial = table["stage1_initial"].values()
    assert sum(y["requests"] for y in initial) >= 2 and sum(y["completion_tokens"] for y in initial) > 0
    assert sum(y["kept"] for y in initial) >= 1  # else the core-set stage would have had nothing to pick
    for name in ("initial", "normal"):
        for r in read_records(tmp_path / "stage1" / name):
            assert isinstance(r.lineage, Lineage) and r.lineage.teacher == "llama:smollm2"
            assert r.solution.endswith(f"The answer is {r.answer}")
    engine_stats = sorted((tmp_path / "stats").glob("engine-*.json"))
    first_calls = json.loads(engine_stats[-1].read_text())["calls"]
    assert first_calls > 0
    before = {p: sorted(r.id for r in read_records(tmp_path / p)) for p in ("stage1/initial", "stage1/normal", "stage2/hard")}
    for stage in ("stage1_initial", "stage1_normal", "stage2_hard"):  # as if killed after its last shard
        marker = tmp_path / "steps" / f"{stage}.json"
        marker.write_text(marker.read_text().replace('"state": "done"', '"state": "running"'))
    import time

    time.sleep(1.1)  # a new engine-stats file name
    run_synth(cfg, tmp_path)
    rerun = json.loads(sorted((tmp_path / "stats").glob("engine-*.json"))[-1].read_text())
    # The quota ledger says every unit is committed: nothing is re-walked, not even through the cache.
    assert rerun["calls"] == 0 and rerun["cached"] == 0
    assert before == {p: sorted(r.id for r in read_records(tmp_path / p)) for p in before}
