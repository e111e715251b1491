"""Batch mode at 1/500 of the paper recipe against the simulator: the same kept ids as online mode,
at about half the billed cost, through three SIGKILLs, with no batch created twice and no request
answered twice.

Two simulators (`mathforge teacher-sim`, one log each): the recipe at 1/SCALE runs online against
the first; then in batch mode (`engine.backend=openai-batch`) against the second, killed three
times: by the test hook right after its 3rd batch create (before the ledger records it), then twice
with SIGKILL while it polls (after a random number of further batches were created), then run to
the end. Printed: kept ids per dataset equal or not, requests answered (200) in each mode, billed
cost in each mode (every answer in the run's request cache, which holds each answered request once,
at the recipe's prices; batch mode at the batch discount) and their ratio, batches created, and the
largest number of times one batch (by content hash) was created and one request answered in batch mode.

    nice python bench/batch_rehearsal.py --scale 500 --work /tmp/batch-rehearsal

Measured at 1/500 (2 cores shared, load average ~9): the same ids in all three datasets; 18,259
requests answered online, 18,585 in batch mode; billed $63.43 online against $32.23 in batches
(0.508x); 37 batches created, none twice (by content hash), no request answered twice; 350 s
online, 432 s in batch mode with its three kills and a 1 s batch delay.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth_scale import ids, overrides  # noqa: E402 - the bench folder is not a package

from mathforge.engine.batch import DIE_AFTER_CREATE  # noqa: E402

SCALE_SCRIPT = Path(__file__).resolve().parent / "synth_scale.py"
BATCH = ["engine.backend=openai-batch", "engine.batch_settle_s=0.3", "engine.batch_poll_s=0.3",
         "engine.batch_poll_max_s=1.0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim(port: int, log: Path, a: argparse.Namespace) -> subprocess.Popen:
    sim = subprocess.Popen([sys.executable, "-m", "mathforge.cli", "teacher-sim", "--port", str(port), "--median",
                            str(a.median), "--sigma", "0.6", "--log", str(log), "--batch-delay", str(a.batch_delay)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    return sim


def synth(run_dir: Path, args: list[str], env: dict | None = None) -> subprocess.Popen:
    """The synthesis in a child process; its output goes to `<run_dir>.log` (a pipe could fill and block it)."""
    import os

    out = open(run_dir.with_suffix(".log"), "a")  # noqa: SIM115 - the child holds it; closed at exit
    return subprocess.Popen([sys.executable, str(SCALE_SCRIPT), "--child", str(run_dir), *args],
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def failed(run_dir: Path) -> str:
    return run_dir.with_suffix(".log").read_text()[-3000:]


def log_rows(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def created(log: Path) -> int:
    return sum(1 for r in log_rows(log) if r["status"] == "batch_created")


def billed(run_dir: Path, discount: float) -> float:
    """USD of every answer in the run's cache at the recipe's prices (gpt-4-turbo: $10 / $30 per M)."""
    db = sqlite3.connect(run_dir / "cache.sqlite")
    pt, ct = db.execute("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM responses").fetchone()
    return (pt * 10.0 + ct * 30.0) / 1e6 * discount


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=500)
    p.add_argument("--work", type=Path, default=Path("/tmp/batch-rehearsal"))
    p.add_argument("--median", type=float, default=0.05, help="the simulator's median latency (s)")
    p.add_argument("--batch-delay", type=float, default=1.0, help="seconds a batch takes at the least")
    p.add_argument("--concurrency", type=int, default=128, help="online window")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    online_port, batch_port = free_port(), free_port()
    online_log, batch_log = a.work / "sim-online.jsonl", a.work / "sim-batch.jsonl"
    sims = [start_sim(online_port, online_log, a), start_sim(batch_port, batch_log, a)]
    try:
        start = time.monotonic()
        run = synth(a.work / "online", overrides(a.scale, online_port, a.concurrency))
        if run.wait():
            raise SystemExit(f"online run failed:\n{failed(a.work / 'online')}")
        online_s = time.monotonic() - start
        args = overrides(a.scale, batch_port, 20_000) + BATCH  # the window: every unit a wave can hold
        start = time.monotonic()
        died = synth(a.work / "batch", args, {DIE_AFTER_CREATE: "3"})
        print(f"kill 1 (hook, after its 3rd create): exit {died.wait()}")
        for k in (2, 3):
            before = created(batch_log)
            proc = synth(a.work / "batch", args)
            more = rng.randrange(2, 12)
            while created(batch_log) < before + more and proc.poll() is None:
                time.sleep(0.1)
            time.sleep(rng.uniform(0, a.batch_delay))  # somewhere in its polling
            proc.send_signal(signal.SIGKILL)
            print(f"kill {k} (SIGKILL after {created(batch_log) - before} more batches): exit {proc.wait()}")
        final = synth(a.work / "batch", args)
        if final.wait():
            raise SystemExit(f"batch run failed:\n{failed(a.work / 'batch')}")
        batch_s = time.monotonic() - start
    finally:
        for sim in sims:
            sim.terminate()
            sim.wait()
    same = {part: ids(a.work / "online")[part] == ids(a.work / "batch")[part] for part in ids(a.work / "online")}
    rows = log_rows(batch_log)
    made = Counter(r["hash"] for r in rows if r["status"] == "batch_created")
    answered = Counter(r["fp"] for r in rows if r["status"] == 200)
    online_answered = sum(1 for r in log_rows(online_log) if r["status"] == 200)
    usd_online, usd_batch = billed(a.work / "online", 1.0), billed(a.work / "batch", 0.5)
    print(json.dumps({"scale": a.scale, "same_ids": same, "online_answered": online_answered,
                      "batch_answered": sum(answered.values()), "usd_online": round(usd_online, 2),
                      "usd_batch": round(usd_batch, 2), "batch_over_online": round(usd_batch / usd_online, 3),
                      "batches_created": sum(made.values()), "max_creates_per_hash": max(made.values()),
                      "max_answers_per_request": max(answered.values()), "online_s": round(online_s, 1),
                      "batch_s": round(batch_s, 1)}, indent=1))


if __name__ == "__main__":
    main()
