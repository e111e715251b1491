"""Tiny-student trainings of a scaling study: one after the other with `--threads` torch threads
each, against `--workers` side by side with one thread each (`mathforge.scale.run_jobs`).

Every training is the study's student (recipes/scale_offline.yaml: the same width, depth, batch and
prompt) on `--size` miniature problems for exactly `--steps` optimizer steps, so both arms do the
same work; each arm runs its trainings in spawned worker processes, so process start-up costs
both the same. Prints the wall seconds of each arm, their ratio, CPU seconds per training and the
peak RSS of a worker. The machine's load average is printed at start and end: other processes on
the cores decide how much threads can help.

    python bench/scale_workers.py                       # 2 trainings of 200 steps
    python bench/scale_workers.py --runs 4 --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "scale_offline.yaml"


def one_training(size: int, steps: int, seed: int, out: str) -> dict[str, float]:
    """Train the study's student for `steps` steps on `size` problems; its CPU seconds and peak RSS."""
    from mathforge.config import load_config
    from mathforge.scale import ScaleConfig
    from mathforge.train.sft import train

    cfg = load_config(ScaleConfig, RECIPE)
    stage = dataclasses.replace(cfg.train.stages[0], dataset=f"mini:train?levels=1-5&size={size}&seed=0")
    train(dataclasses.replace(cfg.train, stages=(stage,), seed=seed, max_steps=steps, num_proc=1), Path(out) / "train")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def arm(label: str, runs: int, size: int, steps: int, workers: int, threads: int, root: Path) -> float:
    from mathforge.scale import run_jobs

    jobs = [(size, steps, seed, str(root / f"{label}-{seed}")) for seed in range(runs)]
    start = time.monotonic()
    stats = [r for _, r in run_jobs(one_training, jobs, workers=workers, threads=threads)]
    wall = time.monotonic() - start
    cpu = sum(s["cpu_s"] for s in stats) / runs
    rss = max(s["rss_mb"] for s in stats)
    print(f"{label}: {runs} trainings, {workers} at a time x {threads} thread(s): {wall:.1f} s wall, "
          f"{cpu:.1f} CPU s per training, worker peak RSS {rss:.0f} MB", flush=True)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--size", type=int, default=400)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per training, one at a time")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        serial = arm("one at a time", args.runs, args.size, args.steps, 1, args.threads, Path(tmp))
        side = arm("side by side", args.runs, args.size, args.steps, args.workers, 1, Path(tmp))
    print(f"load average at end: {os.getloadavg()}")
    print(f"side by side / one at a time, wall: {side / serial:.2f}")


if __name__ == "__main__":
    main()
