"""Difficulty-aware rejection sampling against the simulated teacher (a real local OpenAI-compatible
server, per-level correctness): only correct, distinct solutions kept; per-problem ledger and
targets never passed; prop2diff spends on hard seeds; a stopped run resumes to the same rows; the
method runs in the mix through run_synth; selection `hard` reads the measured pass rate."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mathforge.config import load_config
from mathforge.engine import Engine, EngineConfig
from mathforge.engine.limits import Budget
from mathforge.engine.types import BudgetExceeded, Sampling
from mathforge.io import read_records
from mathforge.ledger import Ledger
from mathforge.quality.dedup import near_duplicate
from mathforge.quality.select import SelectConfig, describe, select
from mathforge.record import Record, annotate
from mathforge.sim.teachersim import SimConfig, TeacherSim, truth_of
from mathforge.sources import load
from mathforge.synth.common import Ctx
from mathforge.synth.contract import with_answer
from mathforge.synth.pipeline import SynthConfig, run_synth, synthesize
from mathforge.synth.rejection import Problem, RejectionConfig, Sampler, needed

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MATH = DATA / "math" / "math_train.jsonl"


@pytest.fixture(scope="module")
def sim():
    server = TeacherSim(SimConfig(median_s=0.0, sigma=0.0))
    server.url = server.start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    """40 MATH-train problems (8 per level) whose answer is the simulated teacher's right answer."""
    per_level: dict[int, list[Record]] = defaultdict(list)
    for r in load(f"math:{MATH}?limit=600"):
        if r.level and len(per_level[r.level]) < 8:
            per_level[r.level].append(r)
    rows = [{"problem": r.problem, "level": f"Level {r.level}", "type": r.subject, "unique_id": f"train/t/{r.id}.json",
             "solution": f"Done. $\\boxed{{{truth_of('Problem: ' + r.problem + chr(10) + 'Solution:')}}}$"}
            for lv in sorted(per_level) for r in per_level[lv]]
    path = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    return path


# (quota, min_correct, trials, correct, needed)
NEEDED = [("uniform", 3, 0, 0, 3), ("uniform", 3, 10, 0, 3), ("prop2diff", 2, 0, 0, 1), ("prop2diff", 2, 1, 0, 2),
          ("prop2diff", 2, 1, 1, 1), ("prop2diff", 4, 8, 0, 4), ("prop2diff", 4, 8, 8, 1), ("prop2diff", 4, 8, 4, 2)]


@pytest.mark.parametrize(("quota", "min_correct", "trials", "correct", "expected"), NEEDED)
def test_what_a_seed_needs(quota: str, min_correct: int, trials: int, correct: int, expected: int) -> None:
    assert needed(RejectionConfig(quota=quota, min_correct=min_correct), trials, correct) == expected


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="rejection.quota"):
        RejectionConfig(quota="random")
    with pytest.raises(ValueError, match="max_trials"):
        RejectionConfig(max_trials=0)


def sample(sim, seeds: Path, out: Path, rcfg: RejectionConfig, target: int = 1000,
           max_requests: int | None = None) -> tuple[dict, dict[str, Counter], list[Record]]:
    """synthesize() with the rejection method alone; (stage stats, per-problem ledger, kept rows)."""
    cfg = SynthConfig(mix={"rejection": 1}, fewshot=0, rejection=rcfg, shard_rows=8, engine={"progress": False})
    ecfg = EngineConfig(backend="openai", model="sim", base_url=sim.url, concurrency=16, progress=False,
                        sim_hints=True, backoff_base_s=0.01, timeout_s=10)
    records = list(load(f"math:{seeds}"))
    with Engine(ecfg, cache_path=out / "cache.sqlite", budget=Budget(max_requests=max_requests)) as engine:
        ledger = Ledger(out / "ledger.sqlite")
        base = Ctx(teacher=engine, stage="t", teacher_name="sim", fewshot=0, solve_sampling=Sampling(max_tokens=256))
        try:
            stats = engine.drive(synthesize(cfg, base, records, target, out / "rows", ledger, "t", 24))
        finally:
            problems = ledger.read("t:rejection")
            ledger.close()
    return stats, problems, list(read_records(out / "rows"))


def test_only_correct_distinct_solutions_within_the_targets(sim, seeds: Path, tmp_path: Path) -> None:
    rcfg = RejectionConfig(quota="uniform", min_correct=3, max_trials=6, round_trials=2)
    stats, problems, rows = sample(sim, seeds, tmp_path, rcfg)
    answer = {r.id: r.answer for r in load(f"math:{seeds}")}
    assert rows and all(r.answer == answer[r.lineage.parent_id] and r.meta["synth"]["agrees"] for r in rows)
    by_seed = defaultdict(list)
    for r in rows:
        by_seed[r.lineage.parent_id].append(r)
    for pid, kept in by_seed.items():
        assert not any(near_duplicate(r, kept[:i], fields=("solution",)) for i, r in enumerate(kept)), pid
    assert len(problems) == 40 and all(p["trials"] <= 6 and p["kept"] <= 3 for p in problems.values())
    assert all(p["kept"] == len(by_seed[pid]) for pid, p in problems.items())
    for r in rows:
        d = r.meta["difficulty"]
        assert d["pass_rate"] == pytest.approx(d["correct"] / d["trials"], abs=1e-4) and d["trials"] <= 6
    dropped = stats["yield"]["rejection"]["dropped"]
    assert dropped["wrong_answer"] > 0
    report = stats["rejection"]
    hopeless = sorted(pid for pid, p in problems.items() if p["trials"] == 6 and p["correct"] == 0)
    assert hopeless and report["hopeless"] == hopeless and report["over_max_trials"] == 0
    assert report["pass_rate_by_level"]["5"] < report["pass_rate_by_level"]["3"] < report["pass_rate_by_level"]["1"]


def test_prop2diff_spends_its_trials_on_hard_seeds(sim, seeds: Path, tmp_path: Path) -> None:
    _, problems, _ = sample(sim, seeds, tmp_path, RejectionConfig(quota="prop2diff", min_correct=2, max_trials=8))
    level = {r.id: r.level for r in load(f"math:{seeds}")}
    trials = defaultdict(list)
    for pid, p in problems.items():
        trials[level[pid]].append(p["trials"])
    mean = {lv: sum(t) / len(t) for lv, t in trials.items()}
    assert mean[5] > 2 * mean[1] and mean[4] > mean[2]


def test_a_stopped_run_resumes_to_the_rows_of_an_uninterrupted_one(sim, seeds: Path, tmp_path: Path) -> None:
    rcfg = RejectionConfig(quota="prop2diff", min_correct=2, max_trials=8)
    _, whole_problems, whole = sample(sim, seeds, tmp_path / "whole", rcfg, target=30)
    assert len(whole) == 30  # the row quota binds
    with pytest.raises(BudgetExceeded):
        sample(sim, seeds, tmp_path / "cut", rcfg, target=30, max_requests=40)
    partial = list(read_records(tmp_path / "cut" / "rows"))
    assert 0 < len(partial) < 30
    _, cut_problems, resumed = sample(sim, seeds, tmp_path / "cut", rcfg, target=30)
    assert sorted(r.to_dict().__repr__() for r in resumed) == sorted(r.to_dict().__repr__() for r in whole)
    assert cut_problems == whole_problems


def test_in_the_mix_with_the_other_methods(sim, seeds: Path, tmp_path: Path) -> None:
    cfg = load_config(SynthConfig, None, [
        f"seeds=['math:{seeds}']", "engine.backend=openai", f"engine.base_url={sim.url}", "engine.model=sim",
        "engine.progress=false", "engine.sim_hints=true", "mix={metamath/answer_aug: 1, rejection: 1}",
        "mix.evol=0", "mix.xwin=0", "mix.metamath/rephrase=0", "mix.metamath/fobar=0", "mix.metamath/self_verify=0",
        "stage1.initial_target=10", "stage1.coreset_budget=4", "stage1.target=6", "stage2.target=10",
        "rejection.max_trials=4", "fewshot=0"])
    table = run_synth(cfg, tmp_path)
    for stage in ("stage1_initial", "stage2_hard"):
        assert set(table[stage]) == {"metamath/answer_aug", "rejection"} and table[stage]["rejection"]["kept"] == 5
    hard = [r for r in read_records(tmp_path / "stage2" / "hard") if r.lineage.method == "rejection"]
    assert all(r.level >= 4 and "pass_rate" in r.meta["difficulty"] for r in hard)
    report = json.loads((tmp_path / "stats" / "stage2_hard.json").read_text())["rejection"]
    assert report["problems"] == 16 and report["over_max_trials"] == 0  # the 16 level 4-5 seeds
    assert set(report["hopeless"]) <= {r.id for r in load(f"math:{seeds}") if r.level >= 4}
    assert f"stage2_hard, rejection (prop2diff): 16 seeds, {report['trials']} trials" in (tmp_path / "yield.md").read_text()


def test_the_pass_rate_counts_every_form_the_graders_accept() -> None:
    """`select hard` ranks by this pass rate: `1/2` for a gold of 0.5 is a correct solution."""
    sampler, p = Sampler(RejectionConfig(), {}, []), Problem()
    seed = Record("s", "math", "What is half of one?", answer="0.5")
    for i, found in enumerate(("1/2", "\\frac12", "$\\dfrac{1}{2}$", "x = 0.5", "2")):
        sampler._judge(seed, with_answer(f"Step {i}.", found), p)
    assert p.correct == 4


def test_a_correct_solution_that_copies_a_kept_one_is_a_near_duplicate_as_cleaning_defines_it() -> None:
    sampler, p = Sampler(RejectionConfig(), {}, []), Problem()
    seed = Record("s", "math", "How many apples are left?", answer="7")
    steps = " ".join(f"Then step {i} removes {i} apples from the basket." for i in range(1, 9))
    p.solutions = [f"{steps}\nThe answer is 7"]
    copy = with_answer(f"{steps.upper()}  We are done.", "7")  # case, spacing and a closing sentence
    other = with_answer("Count the rest directly: ten minus three is seven.", "7")
    assert sampler._judge(seed, copy, p) == "near_duplicate"
    assert sampler._judge(seed, other, p) is None


def test_selection_hard_and_its_difficulty_table_read_the_pass_rate() -> None:
    def row(i: int, rate: float | None) -> Record:
        r = Record(id=f"r{i}", problem=f"p{i}", source="test", level=2)
        return annotate(r, "difficulty", {"pass_rate": rate}) if rate is not None else r

    rows = [row(0, 0.9), row(1, 0.0), row(2, None), row(3, 0.3), row(4, 1.0)]
    picked = select(rows, SelectConfig(strategy="hard", budget=2)).records
    assert [r.id for r in picked] == ["r1", "r3"]  # never solved, then solved 30% of the time
    assert describe(rows)["pass_rates"] == {"0": 1, "1": 1, "<0.5": 1, "<1.0": 1, "unmeasured": 1}
