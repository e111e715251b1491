"""The simulated teacher (`mathforge teacher-sim`): our prompt kinds answered in format, the same
answer for the same request, right per level, faults as flags; and the streamed synthesis against
it (every method in both stages, hard caps, resume with a raised cap)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from mathforge.config import load_config
from mathforge.engine import Engine, EngineConfig, Request, Sampling
from mathforge.engine.types import BudgetExceeded
from mathforge.io import read_records
from mathforge.sim.teachersim import SimConfig, TeacherSim
from mathforge.synth.pipeline import DEFAULT_MIX, SynthConfig, run_synth
from mathforge.synth.templates import render

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MATH = DATA / "math" / "math_train.jsonl"


@pytest.fixture
def sim():
    log = io.StringIO()
    server = TeacherSim(SimConfig(median_s=0.0, sigma=0.0), log)
    server.url = server.start_in_thread()
    yield server
    server.stop()


def engine_cfg(sim, **kw) -> EngineConfig:
    return EngineConfig(**{"backend": "openai", "model": "sim", "base_url": sim.url, "concurrency": 16, "progress": False,
                           "sim_hints": True, "backoff_base_s": 0.01, "timeout_s": 5, **kw})


def ask(sim, prompts: list[str], levels: list[int | None], **kw) -> list[str]:
    reqs = [Request(key=f"k{i}", messages=[{"role": "user", "content": p}], level=lv,
                    sampling=Sampling(seed=i, max_tokens=64)) for i, (p, lv) in enumerate(zip(prompts, levels, strict=True))]
    with Engine(engine_cfg(sim, **kw)) as engine:
        return [r.texts[0] if r.ok else r.error for r in engine.run(reqs)]


def test_each_prompt_kind_is_answered_in_format_and_deterministically(sim):
    problem = "Tom has 8 marbles and gives 3 to Ann. How many marbles does Tom have left?"
    prompts = [render("solve", problem=problem, fewshot=[]).text, render("evol_deepen", problem=problem).text,
               render("xwin_verify", problem=problem).text,
               render("metamath_self_verify", question="How many marbles does X have?", answer="5").text]
    first = ask(sim, prompts, [1, 1, 1, 1])
    assert first[0].splitlines()[-1].startswith("The answer is ")
    assert first[1].endswith("?") and "marbles" not in first[1]  # a new problem, not the old one
    assert first[2].splitlines()[-1] in ("Verdict: correct", "Verdict: incorrect")
    assert first[3].startswith("Statement: ") and " 5." in first[3] and "X" in first[3]
    assert ask(sim, prompts, [1, 1, 1, 1]) == first  # same request, same answer
    assert sim.snapshot()["kinds"] == {"solve": 2, "question": 2, "check": 2, "statement": 2}


def test_a_solution_is_right_with_the_probability_of_its_level(sim):
    prompts = [render("solve", problem=f"What is {i} plus the number of sides of a square?", fewshot=[]).text
               for i in range(150)]
    truths = {}
    for level in (1, 5):
        answers = [t.splitlines()[-1] for t in ask(sim, prompts, [level] * len(prompts))]
        truths[level] = answers
    # The right answer is the same at every level; level 1 gets it far more often than level 5.
    agree = sum(a == b for a, b in zip(truths[1], truths[5], strict=True)) / len(prompts)
    assert 0.0 <= agree <= 0.3  # P(both right) = .9 * .1, plus rare equal wrong answers


def test_faults_are_flags_and_the_engine_retries_them(tmp_path):
    log = io.StringIO()
    server = TeacherSim(SimConfig(median_s=0.0, sigma=0.0, rate_429=0.3, rate_500=0.2, retry_after_s=0.01), log)
    server.url = server.start_in_thread()
    try:
        texts = ask(server, [f"Solve: Problem: what is {i} + 1?" for i in range(30)], [None] * 30, max_retries=12)
    finally:
        server.stop()
    assert all(t.splitlines()[-1].startswith("The answer is") for t in texts)
    faults = server.snapshot()["faults"]
    assert faults.get("429", 0) >= 3 and faults.get("500", 0) >= 2
    statuses = [json.loads(line)["status"] for line in log.getvalue().splitlines()]
    assert statuses.count(200) == 30 and len(statuses) == 30 + faults["429"] + faults["500"]


def sim_config(url: str, *extra: str) -> SynthConfig:
    return load_config(SynthConfig, None, [
        f"seeds=['math:{MATH}?limit=60']", "engine.backend=openai", f"engine.base_url={url}", "engine.model=sim",
        "engine.concurrency=16", "engine.progress=false", "engine.sim_hints=true", "stage1.initial_target=12",
        "stage1.coreset_budget=4", "stage1.target=12", "stage2.target=12", "shard_rows=4", "evol_max_steps=3", *extra])


def test_streamed_synthesis_yields_every_method_in_sharded_datasets(sim, tmp_path):
    table = run_synth(sim_config(sim.url), tmp_path)
    datasets = table.pop("datasets")
    for stage, target in (("stage1_initial", 12), ("stage1_normal", 12), ("stage2_hard", 12)):
        assert set(table[stage]) == set(DEFAULT_MIX) and all(y["kept"] >= 1 for y in table[stage].values()), stage
        assert sum(y["kept"] for y in table[stage].values()) == target
    normal = list(read_records(datasets["normal"]))
    assert len(normal) == 12 and len(list(Path(datasets["normal"]).glob("part-*.jsonl"))) >= 3  # 4 rows a shard
    assert len({r.id for r in normal}) == 12 and all(r.solution.endswith(f"The answer is {r.answer}") for r in normal)


def test_a_dollar_cap_stops_cleanly_and_a_raised_cap_finishes_like_an_uncapped_run(sim, tmp_path):
    priced = ("stage2.enabled=false", "engine.prices={sim: [100.0, 300.0]}")
    run_synth(sim_config(sim.url, *priced), tmp_path / "free")
    stats = json.loads(next((tmp_path / "free" / "stats").glob("engine-*.json")).read_text())
    cap, per_call = stats["cost_usd"] / 2, stats["cost_usd"] / stats["calls"]
    with pytest.raises(BudgetExceeded, match="max_usd"):
        run_synth(sim_config(sim.url, *priced, f"budget.max_usd={cap}"), tmp_path / "capped")
    spent = json.loads(next((tmp_path / "capped" / "stats").glob("engine-*.json")).read_text())["cost_usd"]
    assert cap - 16 * per_call * 2 <= spent <= cap + 16 * per_call * 2  # within about one window (16 calls) of it
    run_synth(sim_config(sim.url, *priced, f"budget.max_usd={cap * 4}"), tmp_path / "capped")
    for part in ("stage1/initial", "stage1/normal"):
        ids = [{r.id for r in read_records(tmp_path / d / part)} for d in ("free", "capped")]
        assert ids[0] == ids[1], part


def test_the_simulator_command_serves_until_stopped(tmp_path):
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "sim.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "mathforge.cli", "teacher-sim", "--port", str(port), "--median", "0.01",
                             "--log", str(log)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4)
        server = type("S", (), {"url": f"http://127.0.0.1:{port}/v1"})()
        [text] = ask(server, ["Solve it. Problem: 2 + 2?"], [2])
        assert text.splitlines()[-1].startswith("The answer is")
        assert json.loads(log.read_text().splitlines()[0])["level"] == 2
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "mathforge.cli", "teacher-sim", "--levels", "0.9,2"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "--levels" in bad.stdout + bad.stderr and "Traceback" not in bad.stderr


def test_the_engine_loop_drives_synthesis_from_a_running_loop_too(sim, tmp_path):
    """A notebook calls run_synth from inside a running event loop: the engine drives its own loop
    from a worker thread."""
    async def in_loop() -> dict:
        return run_synth(sim_config(sim.url, "stage2.enabled=false", "stage1.initial_target=6",
                                    "stage1.coreset_budget=3", "stage1.target=6"), tmp_path)

    table = asyncio.run(in_loop())
    assert sum(y["kept"] for y in table["stage1_normal"].values()) == 6


def test_plan_forecasts_the_run_from_a_pilot_whose_answers_the_run_reuses(sim, tmp_path):
    from mathforge.synth.plan import plan, render

    cfg = sim_config(sim.url, "stage2.enabled=false", "stage1.initial_target=36", "stage1.coreset_budget=6",
                     "stage1.target=36", "engine.prices={sim: [1.0, 2.0]}")
    fc = plan(cfg, tmp_path, fraction=0.25)
    assert set(fc) >= {"requests", "prompt_tokens", "completion_tokens", "usd", "seconds", "stages"}
    for stage in ("stage1_initial", "stage1_normal"):
        s = fc["stages"][stage]
        assert set(s["methods"]) == set(DEFAULT_MIX) and s["requests"] == sum(m["requests"] for m in s["methods"].values())
    assert fc["usd"] == pytest.approx((fc["prompt_tokens"] * 1.0 + fc["completion_tokens"] * 2.0) / 1e6, abs=0.01)
    assert "| **total** |" in render(fc)
    run_synth(cfg, tmp_path)
    used = json.loads(next((tmp_path / "stats").glob("engine-*.json")).read_text())
    assert used["cached"] > 0  # the pilot's first units are the run's first units
    assert 0.6 <= fc["requests"] / (used["calls"] + used["cached"]) <= 1.4
