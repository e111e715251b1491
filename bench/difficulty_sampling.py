"""Difficulty-aware rejection sampling vs plain answer augmentation at an equal request budget, and
a kill-and-resume run of the sampler.

The simulated teacher (`mathforge teacher-sim`, in-process) answers a solve prompt right with
probability .9/.7/.5/.3/.1 for MATH levels 1-5. Seeds are MATH-train problems (their real levels)
whose answer is set to the simulator's right answer, so "correct" means what it would with a real
teacher and a real answer key. Each arm synthesises from the same seeds with the same
`budget.max_requests` (a cap the engine enforces over the run's request cache), quota large enough
that the budget binds; printed side by side per level: the share of seeds with at least one correct
kept solution, requests spent, rows kept.

Then prop2diff is run to completion in a subprocess, killed with SIGKILL part-way, resumed, and
compared with an uninterrupted run: the same kept rows, no seed past `max_trials`, no row quota
passed, and requests paid (answered by the simulator) in both.

    python bench/difficulty_sampling.py [--seeds 600] [--per-seed 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MATH_TRAIN = REPO.parent / "shared" / "data" / "math" / "math_train.jsonl"
LEVELS = (0.9, 0.7, 0.5, 0.3, 0.1)


def write_seeds(path: Path, n: int, seed: int) -> None:
    """n MATH-train problems (a seeded sample) in MATH format, each answer the simulator's truth."""
    from mathforge.sim.teachersim import truth_of
    from mathforge.sources import load

    records = [r for r in load(f"math:{MATH_TRAIN}") if r.level]
    random.Random(seed).shuffle(records)
    rows = [{"problem": r.problem, "level": f"Level {r.level}", "type": r.subject or "algebra",
             "unique_id": f"train/bench/{i}.json",
             "solution": f"Worked. $\\boxed{{{truth_of(f'Problem: {r.problem}{chr(10)}Solution:')}}}$"}
            for i, r in enumerate(records[:n])]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def arm(url: str, seeds: Path, out: Path, mix: dict, target: int, max_requests: int | None,
        overrides: dict | None = None) -> dict:
    """One synthesis arm (stage 1's first step only) on the simulator; returns its stage stats."""
    from mathforge.engine import Engine, EngineConfig
    from mathforge.engine.limits import Budget
    from mathforge.engine.types import BudgetExceeded, Sampling
    from mathforge.ledger import Ledger
    from mathforge.sources import load
    from mathforge.synth.common import Ctx
    from mathforge.synth.pipeline import SynthConfig, synthesize
    from mathforge.synth.rejection import RejectionConfig

    over = dict(overrides or {})
    cfg = SynthConfig(mix=mix, fewshot=0, rejection=RejectionConfig(**over.pop("rejection", {})), **over)
    ecfg = EngineConfig(backend="openai", model="sim", base_url=url, concurrency=32, progress=False, sim_hints=True,
                        backoff_base_s=0.01, timeout_s=30)
    records = list(load(f"math:{seeds}"))
    out.mkdir(parents=True, exist_ok=True)
    with Engine(ecfg, cache_path=out / "cache.sqlite", budget=Budget(max_requests=max_requests)) as engine:
        ledger = Ledger(out / "ledger.sqlite")
        base = Ctx(teacher=engine, stage="bench", teacher_name="sim", fewshot=0, elicit=True,
                   solve_sampling=Sampling(temperature=0.7, max_tokens=256))
        try:
            stats = engine.drive(synthesize(cfg, base, records, target, out / "rows", ledger, "bench", 48))
        except BudgetExceeded:
            stats = {"stopped_by": "budget.max_requests"}
        stats["problems"] = {k: dict(v) for k, v in ledger.read("bench:rejection").items()}
        stats["requests"] = engine.stats().get("calls")
        ledger.close()
    return stats


def coverage(rows_dir: Path, seeds: Path) -> dict[int, tuple[int, int]]:
    """Per level: (seeds with >= 1 correct kept solution, seeds)."""
    from mathforge.io import read_records
    from mathforge.sources import load

    level = {r.id: r.level for r in load(f"math:{seeds}")}
    covered = {r.lineage.parent_id for r in read_records(rows_dir) if (r.meta.get("synth") or {}).get("agrees")}
    out = {}
    for lv in range(1, 6):
        ids = [i for i, v in level.items() if v == lv]
        out[lv] = (sum(i in covered for i in ids), len(ids))
    return out


def kept_rows(rows_dir: Path) -> list[str]:
    from mathforge.io import read_records

    return sorted(json.dumps(r.to_dict(), sort_keys=True) for r in read_records(rows_dir))


def compare_arms(url: str, seeds: Path, tmp: Path, n: int, per_seed: int) -> None:
    budget = n * per_seed
    arms = {
        "answer augmentation": ({"metamath/answer_aug": 1}, {}),
        "rejection uniform": ({"rejection": 1}, {"rejection": {"quota": "uniform", "min_correct": 1}}),
        "rejection prop2diff": ({"rejection": 1}, {"rejection": {"quota": "prop2diff", "min_correct": 2}}),
    }
    results = {}
    for name, (mix, over) in arms.items():
        start = time.monotonic()
        stats = arm(url, seeds, tmp / name.replace(" ", "_"), mix, 50 * n, budget, over)
        results[name] = (coverage(tmp / name.replace(" ", "_") / "rows", seeds), stats, time.monotonic() - start)
    print(f"\n{n} MATH-train seeds, teacher-sim right at {LEVELS} for levels 1-5, budget.max_requests = {budget} "
          f"({per_seed} per seed) for every arm")
    print(f"{'share of seeds with >= 1 correct kept':40s}" + "".join(f"{'level ' + str(lv):>10s}" for lv in range(1, 6))
          + f"{'requests':>10s}{'rows':>8s}{'correct':>9s}")
    for name, (cov, stats, _) in results.items():
        rows = list(open_rows(tmp / name.replace(" ", "_") / "rows"))
        right = sum(bool((r.meta.get("synth") or {}).get("agrees")) for r in rows)
        print(f"{name:40s}" + "".join(f"{c / t:10.2f}" for c, t in cov.values())
              + f"{stats['requests']:>10}{len(rows):>8}{right:>9}")
    base = results["answer augmentation"][0]
    for name in ("rejection uniform", "rejection prop2diff"):
        cov = results[name][0]
        l5 = (cov[5][0] / cov[5][1]) / max(base[5][0] / base[5][1], 1e-9)
        l14 = min((cov[lv][0] / cov[lv][1]) / max(base[lv][0] / base[lv][1], 1e-9) for lv in range(1, 5))
        print(f"{name}: level-5 coverage {l5:.2f} x augmentation's (want >= 1.5), "
              f"levels 1-4 at least {l14:.2f} x (want >= 0.9)")
        problems = results[name][1]["problems"]
        print(f"  {len(problems)} seeds sampled, trials per seed max {max(p.get('trials', 0) for p in problems.values())}, "
              f"hopeless (0 correct after max_trials) {sum(p.get('trials', 0) >= 16 and not p.get('correct') for p in problems.values())}")


def open_rows(rows_dir: Path):
    from mathforge.io import read_records

    return read_records(rows_dir)


def kill_and_resume(url: str, seeds: Path, tmp: Path, n: int) -> None:
    """An uninterrupted prop2diff run and a run killed with SIGKILL then resumed: same rows?"""
    quota = n // 2  # binds before every seed is closed: the quota is what is checked

    def args(out: Path) -> list[str]:
        return [sys.executable, __file__, "--worker", str(out), "--url", url, "--seed-file", str(seeds),
                "--target", str(quota)]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    whole, cut = tmp / "uninterrupted", tmp / "killed"
    before = _answered(url)
    subprocess.run(args(whole), check=True, env=env)
    paid_whole, before = _answered(url) - before, _answered(url)
    proc = subprocess.Popen(args(cut), env=env)
    while not _committed_shards(cut) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = _committed_shards(cut)
    subprocess.run(args(cut), check=True, env=env)
    paid_cut = _answered(url) - before
    same = kept_rows(whole / "rows") == kept_rows(cut / "rows")
    c = json.loads((cut / "stats.json").read_text())
    over_trials = sum(p.get("trials", 0) > 16 for p in c["problems"].values())
    print(f"\nkill and resume (prop2diff, row quota {quota}): killed after {at_kill} committed shard(s); "
          f"resumed rows identical to the uninterrupted run's: {same} ({len(kept_rows(cut / 'rows'))} rows, "
          f"quota {quota}); seeds past max_trials: {over_trials}; rows dropped over quota: "
          f"{c['yield']['rejection']['dropped'].get('over_quota', 0)}")
    print(f"requests answered by the simulator: uninterrupted {paid_whole}, killed + resumed {paid_cut} "
          "(the difference: requests in flight at the kill, sent again)")


def _committed_shards(out: Path) -> int:
    if not (out / "ledger.sqlite").exists():
        return 0
    from mathforge.ledger import Ledger

    ledger = Ledger(out / "ledger.sqlite")
    try:
        return ledger.read("bench").get("_shards", Counter())["count"]
    finally:
        ledger.close()


def worker(out: Path, url: str, seeds: Path, target: int) -> None:
    """One prop2diff run (or its resumption) into `out`; its stage stats go to `out/stats.json`."""
    stats = arm(url, seeds, out, {"rejection": 1}, target, None,
                {"rejection": {"quota": "prop2diff", "min_correct": 2}, "shard_rows": 10})
    (out / "stats.json").write_text(json.dumps(stats))


def _answered(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as r:
        return json.loads(r.read())["answered_total"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=600)
    ap.add_argument("--per-seed", type=int, default=4, help="budget.max_requests per seed, every arm")
    ap.add_argument("--worker", type=Path)
    ap.add_argument("--url")
    ap.add_argument("--seed-file", type=Path)
    ap.add_argument("--target", type=int)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.url, args.seed_file, args.target)
    from mathforge.sim.teachersim import SimConfig, TeacherSim

    sim = TeacherSim(SimConfig(median_s=0.005, sigma=0.5, levels=LEVELS))
    url = sim.start_in_thread()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-rejection-") as d:
        tmp = Path(d)
        write_seeds(tmp / "seeds.jsonl", args.seeds, 0)
        compare_arms(url, tmp / "seeds.jsonl", tmp, args.seeds, args.per_seed)
        kill_and_resume(url, tmp / "seeds.jsonl", tmp, min(args.seeds, 200))
    sim.stop()
    print(f"\n{time.monotonic() - start:.0f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
