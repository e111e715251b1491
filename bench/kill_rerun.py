"""A run killed at random moments, then rerun, ends with the same result as a run never killed.

    python bench/kill_rerun.py --kills 3 --span 300 --seed 0 --result report.json \
        --reference runs/paper_mini -- python -m mathforge.cli run recipes/paper_mini.yaml --out runs/paper_mini_k

The command runs in a process group of its own and is SIGKILLed (the whole group: its teacher and
training workers too) at `--kills` moments drawn uniformly in the `--span` seconds an unkilled run
takes, each attempt resuming the last; then it runs to the end. `--result` (a file under the command's `--out`) is then
compared with the same file under `--reference`, a run of the same recipe never killed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--span", type=float, required=True, help="seconds an unkilled run takes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup", type=float, default=15.0, help="seconds a resumed run takes before new work")
    ap.add_argument("--result", default="report.json")
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    out = Path(command[command.index("--out") + 1])
    rng = random.Random(args.seed)
    # moments in the run's own work time, sorted: attempt k resumes where attempt k-1 was killed, so
    # it runs (moment k - moment k-1) of new work, after `--startup` seconds of imports
    moments = sorted(rng.uniform(0.05, 0.95) * args.span for _ in range(args.kills))
    for k, (before, at) in enumerate(zip([0.0, *moments], moments, strict=False)):
        moment = at - before + args.startup
        proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(moment)
            print(f"kill {k + 1}: the run ended before {moment:.0f} s", flush=True)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"kill {k + 1}: SIGKILL at {moment:.0f} s", flush=True)
    start = time.monotonic()
    code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    print(f"rerun: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
    got = json.loads((out / args.result).read_text(encoding="utf-8"))
    want = json.loads((args.reference / args.result).read_text(encoding="utf-8"))
    same = got == want
    diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    print(json.dumps({"same": same, "differing_keys": diff}))
    sys.exit(0 if same and code == 0 else 1)


if __name__ == "__main__":
    main()
