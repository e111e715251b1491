"""The miniature world's simulated teacher: every prompt kind of our templates answered in a format
the pipeline's own parsers take, mistakes at the stated rates, truth only in the log, and a real
server round trip through the engine whose log joins the engine's cache keys."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import sqlite3

import pytest

from mathforge import mini
from mathforge.answers import answer_line
from mathforge.engine import Engine, EngineConfig, Request, Sampling
from mathforge.quality.judge import DifficultyJudge, SolutionVerifier
from mathforge.record import Record
from mathforge.sim.miniteacher import (
    OFF_FORMAT,
    MiniConfig,
    Story,
    answer,
    draw,
    model_name,
    parse,
    render,
)
from mathforge.sim.teachersim import SimConfig, TeacherSim
from mathforge.synth import metamath
from mathforge.synth.common import eliminate, parse_question
from mathforge.synth.contract import check_response
from mathforge.synth.templates import render as render_synth
from mathforge.synth.xwin import critique_of, parse_verdict

CFG = MiniConfig()
SEED = "Ana has 7 shells. Ana finds 5 more. Then Ana gives away 3. How many shells does Ana have now?"
FEWSHOT = [{"problem": "Ben has 4 coins. Ben finds 2 more. How many coins does Ben have now?",
            "solution": "4 + 2 = 6.", "answer": "6"}]


def ask(prompt: str, salt: object = 0, cfg: MiniConfig = CFG, last: str | None = None) -> tuple[str, str, dict]:
    """The teacher's answer, its draws seeded by a request hash as the server seeds them (a long
    string seeds Python's generator poorly: prompts differing in one character draw alike)."""
    fp = hashlib.sha256(f"{salt}/{prompt}".encode()).hexdigest()
    return answer(prompt, last or prompt, random.Random(fp), cfg)


def judge_prompt(judge_cls, record: Record) -> str:
    return judge_cls(engine=None).render(record)


def test_the_world_parses_its_own_and_the_teachers_problems():
    rng = random.Random(0)
    for level in mini.LEVELS:
        for problem, _, ans in mini.test_pool(level)[:50]:
            story, given = parse(problem)
            assert given is None and story.answer == int(ans) and story.level <= level
        for _ in range(50):
            story = draw(level, rng)
            assert parse(render(story, rng))[0].answer == story.answer and story.level == level
    assert parse("What is 2 + 2?") is None


@pytest.mark.parametrize("template", ["solve", "metamath_answer"])
def test_a_solution_meets_the_answer_contract(template):
    kind, reply, truth = ask(render_synth(template, problem=SEED, fewshot=FEWSHOT).text)
    checked = check_response(reply)
    assert checked.ok and checked.repair is None and truth["answer"] == 9 and truth["level"] == 4
    assert (checked.answer == "9") == truth["right"]


def test_fobar_and_self_verification_are_solved_backwards():
    hits = 0
    for salt in range(60):
        built = metamath.fobar_question(SEED, "9", f"k{salt}")
        _, reply, truth = ask(render_synth("metamath_fobar", problem=built[0], fewshot=FEWSHOT).text, salt)
        checked = check_response(reply)
        assert checked.ok and truth["answer"] == int(built[1])
        hits += checked.answer == built[1]
        sv = metamath.sv_question(SEED, f"s{salt}")
        _, said, _ = ask(render_synth("metamath_self_verify", question=sv.question, answer="9").text, salt)
        question, reason = metamath.parse_statement(said, "stop", sv, "9")
        assert reason is None
        _, reply, truth = ask(render_synth("solve", problem=question, fewshot=FEWSHOT).text, salt)
        assert check_response(reply).ok and truth["answer"] == int(sv.value)
    assert hits >= 40  # level 4: right 85% of the time


def test_backward_questions_are_rephrased_and_evolved_as_problems_of_the_world():
    question, x = metamath.fobar_question(SEED, "9", "k1")
    _, reply, truth = ask(render_synth("metamath_rephrase", problem=question).text)
    assert parse(reply)[1] == 9 and truth["answer"] == int(x) and eliminate(question, reply) is None
    _, evolved, _ = ask(render_synth("evol_deepen", problem=question).text)
    story, given = parse(evolved)
    assert given is None and all(b > 0 for _, b in story.ops)


def test_the_multiplier_can_be_the_unknown():
    problem = "Ana has 7 shells. Then the number of shells is multiplied by X. How many shells does Ana have now?"
    question = f"{problem} {metamath.FOBAR_SUFFIX.format(answer=21)}"
    _, reply, truth = ask(render_synth("metamath_fobar", problem=question, fewshot=[]).text)
    assert truth["answer"] == 3 and check_response(reply).ok


def test_rephrase_and_paraphrase_keep_the_quantities():
    for salt in range(30):
        _, reply, truth = ask(render_synth("metamath_rephrase", problem=SEED).text, salt)
        question, reason = parse_question(reply, "stop")
        assert reason is None and eliminate(SEED, question) is None
        assert parse(question)[0].answer == 9 == truth["answer"]
    from mathforge.quality.judge import load_template

    template, _ = load_template("paraphrase_v1.j2")
    _, reply, _ = ask(template.render(problem=SEED))
    assert parse(reply)[0].values() == parse(SEED)[0].values()


@pytest.mark.parametrize("strategy", ["rewrite", "constraints", "deepen", "concretize", "reasoning"])
def test_each_evol_strategy_writes_a_problem_of_the_world(strategy):
    levels = []
    for salt in range(40):
        _, reply, truth = ask(render_synth(f"evol_{strategy}", problem=SEED).text, salt)
        problem, reason = parse_question(reply, "stop")
        assert reason is None and eliminate(SEED, problem) is None
        story = parse(problem)[0]
        assert truth["answer"] == story.answer and truth["level"] == story.level
        levels.append(truth["level"])
    if strategy == "rewrite":
        assert levels.count(4) >= 30  # the level kept (a planted leak or an ill-posed one aside)
    else:
        assert sum(lv >= 4 for lv in levels) >= 36 and max(levels) == 5


def test_chained_evol_reaches_past_two_operations():
    problem = SEED
    for step in range(4):
        _, problem, _ = ask(render_synth("evol_reasoning", problem=problem).text, f"chain{step}")
    assert len(parse(problem)[0].ops) == 4


def test_xwin_checks_and_revises_on_its_own_critique():
    flawed = "Ana has 7 shells. Then Ana gives away 12. How many shells does Ana have now?"
    right = 0
    for salt in range(40):
        _, check, truth = ask(render_synth("xwin_verify", problem=flawed).text, salt)
        verdict = parse_verdict(check)
        assert verdict in ("sound", "flawed") and not truth["well_posed"]
        right += verdict == "flawed"
        if verdict == "flawed":
            prompt = render_synth("xwin_revise", problem=flawed, critique=critique_of(check)).text
            _, revised, truth = ask(prompt, salt)
            question, reason = parse_question(revised, "stop")
            assert reason is None and truth["well_posed"] and parse(question)[0].well_posed
    assert right >= 30
    _, new, truth = ask(render_synth("xwin_generate", problem=SEED).text)
    assert parse_question(new, "stop")[0] == new and truth["level"] in (4, 5)


def test_the_judges_answer_in_their_parsers_formats():
    seed = Record(id="s", source="mini", problem=SEED, solution="7 + 5 = 12. 12 - 3 = 9.\nThe answer is 9", answer="9")
    wrong = Record(id="w", source="mini", problem=SEED, solution="7 + 5 = 13. 13 - 3 = 10.\nThe answer is 10")
    said = [SolutionVerifier(None).parse(ask(judge_prompt(SolutionVerifier, r), salt)[1])
            for r in (seed, wrong) for salt in range(100)]
    assert sum(said[:100]) >= 80 and sum(said[100:]) <= 20  # right 90% of the time
    scores = [DifficultyJudge(None).parse(ask(judge_prompt(DifficultyJudge, seed), salt)[1]) for salt in range(100)]
    assert all(s in (3, 4, 5) for s in scores) and scores.count(4) >= 80
    from mathforge.quality.judge import load_template
    from mathforge.quality.matchers import _VERDICT as SAME_VERDICT  # the decontamination judge's parser

    template, _ = load_template("decontam_v1.j2")
    other = SEED.replace("Ana", "Kira").replace("shells", "seeds")
    same = [bool(SAME_VERDICT.search(ask(template.render(test=SEED, row=other), s)[1])) for s in range(100)]
    differ = [bool(SAME_VERDICT.search(ask(template.render(test=SEED, row=FEWSHOT[0]["problem"]), s)[1]))
              for s in range(100)]
    assert sum(same) >= 80 and sum(differ) <= 20


def test_an_unreadable_prompt_gets_an_off_format_reply_and_elicit_reads_the_last_reply():
    kind, reply, truth = ask(render_synth("solve", problem="What is 2 + 2?", fewshot=[]).text)
    assert (kind, reply, truth) == ("solve", OFF_FORMAT, {"parsed": False})
    assert check_response(reply).reason == "no_answer_line"
    follow = render_synth("elicit", what="the final answer", form="The answer is <final answer>").text
    assert ask(f"Problem: {SEED}\nSolution: 7 + 5 = 12.\nThe answer is 12\n{follow}", last=follow)[1] == "The answer is 12"
    assert ask(f"Problem: x\nSolution: {OFF_FORMAT}\n{follow}", last=follow)[1] == OFF_FORMAT


def test_solutions_are_right_at_the_stated_rate_per_level():
    rng = random.Random(1)
    for level, p in zip(mini.LEVELS, CFG.levels, strict=True):
        rights = []
        for i in range(400):
            problem = render(draw(level, rng), rng)
            _, reply, truth = ask(render_synth("solve", problem=problem, fewshot=[]).text, i)
            rights.append(truth["right"])
            assert (answer_line(reply) == str(truth["answer"])) == truth["right"]
        assert abs(sum(rights) / 400 - p) < 0.075, (level, sum(rights) / 400)  # 3 standard errors at p = .5


def test_the_truth_never_appears_in_a_reply():
    prompts = [render_synth(t, problem=SEED, fewshot=FEWSHOT).text for t in ("solve", "evol_deepen", "xwin_verify")]
    for salt in range(50):
        for prompt in prompts:
            _, reply, truth = ask(prompt, salt)
            assert not re.search(r"well.posed|truth|right|leak|\{", reply)


def test_written_problems_plant_leaks_and_ill_posed_ones_at_their_rates():
    cfg = MiniConfig(ill_posed=0.2, leak=0.1)
    tests = {p for lv in mini.LEVELS for p, _, _ in mini.test_pool(lv)}
    leaks = ill = 0
    for salt in range(1000):
        _, reply, truth = ask(render_synth("evol_constraints", problem=SEED).text, salt, cfg)
        assert (reply in tests) == truth["leak"]
        leaks += truth["leak"]
        ill += not truth["well_posed"]
    assert 70 <= leaks <= 135 and 145 <= ill <= 215  # ill-posed: 20% of the 90% not leaked


def test_a_round_trip_through_the_engine_logs_the_truth_under_the_cache_key(tmp_path):
    log = io.StringIO()
    server = TeacherSim(SimConfig(median_s=0.0, sigma=0.0, world="mini"), log)
    url = server.start_in_thread()
    try:
        model = model_name(CFG)
        cfg = EngineConfig(backend="openai", model=model, base_url=url, progress=False, timeout_s=5)
        prompt = render_synth("solve", problem=SEED, fewshot=FEWSHOT).text
        req = Request(key="k", messages=[{"role": "user", "content": prompt}], sampling=Sampling(seed=3, max_tokens=64),
                      level=1)
        with Engine(cfg, cache_path=tmp_path / "cache.sqlite") as engine:
            [result] = engine.run([req])
        assert check_response(result.texts[0]).ok
    finally:
        server.stop()
    [line] = [json.loads(x) for x in log.getvalue().splitlines()]
    [key] = [k for (k,) in sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT key FROM responses")]
    assert line["key"] == key and line["level"] == 4 and line["answer"] == 9  # the level hint is ignored
    assert model.startswith("mini-sim@") and model != model_name(MiniConfig(leak=0.02))


def test_a_story_beyond_the_ladder_is_level_five():
    assert Story("Ana", "shells", 7, (("+", 5),) * 3).level == 5
    assert mini.level_of(7, []) == 1 and mini.level_of(7, [("+", 5)]) == 2 and mini.level_of(30, [("+", 5)]) == 5


def test_a_flat_accuracy_sets_every_level_and_reaches_the_simulator_and_its_name(tmp_path):
    from mathforge.config import ConfigError, build
    from mathforge.rehearsal import TeacherSimStage, _command

    half = TeacherSimStage(world="mini", accuracy=0.5)
    assert half.mini().levels == (0.5,) * 5 and half.mini() == MiniConfig(levels=(0.5,) * 5)
    command = _command(half, 1234, tmp_path / "log.jsonl")
    assert command[command.index("--levels") + 1] == "0.5,0.5,0.5,0.5,0.5"
    names = {model_name(s.mini()) for s in (half, TeacherSimStage(world="mini", accuracy=0.75), TeacherSimStage())}
    assert len(names) == 3
    rng = random.Random(2)
    for level in (1, 5):  # the easiest and the hardest level alike
        rights = [ask(render_synth("solve", problem=render(draw(level, rng), rng), fewshot=[]).text, i, half.mini())[2]
                  ["right"] for i in range(300)]
        assert abs(sum(rights) / 300 - 0.5) < 0.087, level  # 3 standard errors
    with pytest.raises(ConfigError, match="accuracy"):
        build(TeacherSimStage, {"world": "mini", "accuracy": 1.5}, "recipe")
