"""Synthesis at scale against the simulated teacher: throughput, excess requests, memory, kill/resume.

The paper recipe (recipes/synth_paper.yaml) with every target divided by a scale (50: about 60k
samples; 500: about 6k), against `mathforge teacher-sim` (lognormal latency, median 0.5 s, sigma
0.6, concurrency 128), each scale in its own process so its peak RSS is its own. Printed per scale:

- requests/s from the simulator's own log (answered attempts / span from first arrival to last
  answer), against the ideal: concurrency / mean latency (the mean measured in the same log);
- excess requests: sent beyond those of the units that filled the quotas (from the quota ledger);
- peak RSS of the synthesis process (and of its embedding helper, see quality/coreset.py), and the
  ratio between the largest and the smallest scale;
- CPU milliseconds per request of the client (the synthesis process), its embedding helper and the
  simulator, whole-run totals over requests sent (start-up and the core-set step included);
- with --kills K, a second run at the smallest scale killed with SIGKILL at K random moments while
  requests flow (at random shares of the requests the first run needed) and resumed: per kill, the answers of the killed run asked again later against those it had not stored (a stored one must never be asked again),
  the final datasets' ids against the uninterrupted run, and kept rows per method against quotas;
- with --plan, `mathforge plan --json` (a 1% pilot) at the smallest scale beside what its run used.

    nice python bench/synth_scale.py --scales 500,50 --kills 5 --plan --work /tmp/synth-scale

The client and the simulator share the machine's cores: the load average is printed with the
numbers, since a CPU-starved client cannot fill its window.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER = {"stage1.initial_target": 500_000, "stage1.coreset_budget": 100_000, "stage1.target": 2_100_000,
         "stage2.target": 400_000}
SCOPES = ("stage1_initial", "stage1_normal", "stage2_hard")


def overrides(scale: int, port: int, concurrency: int) -> list[str]:
    """The paper recipe at 1/scale, pointed at the simulator (the judge step is off: a rehearsal of
    the three synthesis stages)."""
    return [f"{k}={v // scale}" for k, v in PAPER.items()] + [
        "engine.backend=openai", f"engine.base_url=http://127.0.0.1:{port}/v1", f"engine.concurrency={concurrency}",
        "engine.rpm=null", "engine.tpm=null", "engine.sim_hints=true", "engine.progress=false", "stage2.judge=false"]


def child(run_dir: str, args: list[str]) -> None:
    """Run the synthesis in this process and print its wall time and peak RSS as JSON."""
    from mathforge.config import load_config
    from mathforge.synth.pipeline import SynthConfig, run_synth

    cfg = load_config(SynthConfig, REPO / "recipes" / "synth_paper.yaml", args)
    start = time.monotonic()
    run_synth(cfg, run_dir)
    me, helper = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": round(time.monotonic() - start, 1), "peak_rss_mb": round(me.ru_maxrss / 1024, 1),
                      "cpu_s": round(me.ru_utime + me.ru_stime, 1), "helper_cpu_s": round(helper.ru_utime + helper.ru_stime, 1),
                      "helper_peak_rss_mb": round(helper.ru_maxrss / 1024, 1)}))


def start_sim(port: int, log: Path, median: float, sigma: float) -> subprocess.Popen:
    sim = subprocess.Popen([sys.executable, "-m", "mathforge.cli", "teacher-sim", "--port", str(port), "--median",
                            str(median), "--sigma", str(sigma), "--log", str(log)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    return sim


def run_child(run_dir: Path, args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(run_dir), *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"synthesis failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def server_rate(log: Path, concurrency: int) -> dict:
    """Requests/s and mean latency from the simulator's log, and the ideal at this concurrency."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    ok = [r for r in rows if r["status"] == 200]
    span = max(r["t"] + r["s"] for r in rows) - min(r["t"] for r in rows)
    mean = sum(r["s"] for r in ok) / len(ok)
    ideal = concurrency / mean
    busy = _busy_seconds(rows)
    return {"answered": len(ok), "span_s": round(span, 1), "rps": round(len(ok) / span, 1),
            "mean_latency_s": round(mean, 3), "ideal_rps": round(ideal, 1), "of_ideal": round(len(ok) / span / ideal, 3),
            "busy_s": round(busy, 1), "of_ideal_busy": round(len(ok) / busy / ideal, 3)}


def _busy_seconds(rows: list[dict]) -> float:
    """Seconds with at least one request at the server: the span minus the gaps where the client
    sent nothing (the core-set step between stage 1's two synthesis rounds, once stage 2 is done)."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted((r["t"], r["t"] + r["s"]) for r in rows):
        if start > end:
            busy += stop - start
        elif stop > end:
            busy += stop - end
        end = max(end, stop)
    return busy


def ledger_totals(run_dir: Path) -> tuple[int, dict[str, dict[str, int]]]:
    """Requests of committed units, and kept rows per stage and method, from the quota ledger."""
    db = sqlite3.connect(run_dir / "ledger.sqlite")
    needed = db.execute("SELECT COALESCE(SUM(value), 0) FROM counters WHERE counter='requests'").fetchone()[0]
    cached = db.execute("SELECT COALESCE(SUM(value), 0) FROM counters WHERE counter='cached'").fetchone()[0]
    kept: dict[str, dict[str, int]] = {}
    for scope, key, value in db.execute("SELECT scope, key, value FROM counters WHERE counter='kept'"):
        kept.setdefault(scope, {})[key] = value
    return needed - cached, kept


def ids(run_dir: Path) -> dict[str, set[str]]:
    from mathforge.io import read_records

    return {p: {r.id for r in read_records(run_dir / p)} for p in ("stage1/initial", "stage1/normal", "stage2/hard")}


def one_scale(scale: int, work: Path, a: argparse.Namespace, port: int) -> dict:
    run_dir, log = work / f"run-{scale}", work / f"sim-{scale}.jsonl"
    sim = start_sim(port, log, a.median, a.sigma)
    try:
        res = run_child(run_dir, overrides(scale, port, a.concurrency))
    finally:
        before = _children_cpu()
        sim.terminate()
        sim.wait()
    res["sim_cpu_s"] = round(_children_cpu() - before, 1)
    rate = server_rate(log, a.concurrency)
    needed, _ = ledger_totals(run_dir)
    sent = sum(1 for _ in log.open())
    samples = sum(len(v) for v in ids(run_dir).values())
    res.update(rate, samples=samples, sent=sent, needed=needed, excess=round((sent - needed) / sent, 4),
               load=os.getloadavg()[0])
    print(f"1/{scale}: {samples} samples, {sent} requests in {rate['span_s']} s: {rate['rps']} req/s = "
          f"{rate['of_ideal']} of ideal {rate['ideal_rps']} (mean latency {rate['mean_latency_s']} s; "
          f"{rate['of_ideal_busy']} over the {rate['busy_s']} s with requests at the server); "
          f"excess {res['excess']:.2%} ({sent - needed} beyond {needed}); peak RSS {res['peak_rss_mb']} MB "
          f"(embedding helper {res['helper_peak_rss_mb']} MB); CPU per request: client "
          f"{res['cpu_s'] * 1000 / sent:.2f} ms + embedding helper {res['helper_cpu_s'] * 1000 / sent:.2f} ms, "
          f"simulator {res['sim_cpu_s'] * 1000 / sent:.2f} ms; load {res['load']:.1f}", flush=True)
    return res


def killed_run(scale: int, work: Path, a: argparse.Namespace, port: int, reference: Path, total: int) -> None:
    """SIGKILL the synthesis at `a.kills` random moments while requests flow (when the simulator
    has answered a random share of the `total` the uninterrupted run needed), resume, compare."""
    run_dir, log = work / f"killed-{scale}", work / f"sim-killed-{scale}.jsonl"
    sim = start_sim(port, log, a.median, a.sigma)
    rng = random.Random(a.seed)
    targets = sorted(rng.randrange(total // 20, total * 19 // 20) for _ in range(a.kills))
    report = []
    try:
        for target in targets:
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(run_dir), *overrides(scale, port, a.concurrency)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while _answered(log) < target and proc.poll() is None:
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            report.append((target, _cache_rows(run_dir), _answered(log)))
        run_child(run_dir, overrides(scale, port, a.concurrency))
    finally:
        sim.terminate()
        sim.wait()
    lines = log.read_text().splitlines()
    bounds = [0] + [ans for _, _, ans in report] + [len(lines)]
    segments = [{json.loads(x)["fp"] for x in lines[lo:hi] if '"status": 200' in x} for lo, hi in pairwise(bounds)]
    stored = [0] + [st for _, st, _ in report]
    print(f"killed after {bounds[1:-1]} simulator log lines (cache rows then: {stored[1:]})")
    for k in range(len(report)):
        # Run k answered segments[k]; what it stored is the cache's growth over the run. Every
        # answer it did not store may be asked again later; an answer it stored must never be.
        unstored = len(segments[k]) - (stored[k + 1] - stored[k])
        again = len(segments[k] & set().union(*segments[k + 1:]))
        print(f"  run {k + 1}: answered {len(segments[k])}, stored {stored[k + 1] - stored[k]}, unstored {unstored}; "
              f"answered again later {again} (must be <= {unstored}: {'ok' if again <= unstored else 'STORED ANSWERS SENT AGAIN'})")
    mine, ref = ids(run_dir), ids(reference)
    print(f"same ids as the uninterrupted run: { {p: mine[p] == ref[p] for p in mine} }")
    _, kept = ledger_totals(run_dir)
    print(f"kept per method equal to the uninterrupted run's (its quotas): {kept == ledger_totals(reference)[1]}; {kept}")


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the simulator's, once it has been waited for)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _answered(log: Path) -> int:
    return sum(1 for _ in log.open()) if log.exists() else 0


def plan_vs_run(scale: int, work: Path, a: argparse.Namespace, port: int, run_dir: Path) -> None:
    """`mathforge plan --json` from a 1% pilot, side by side with what the full run at this scale used."""
    log = work / f"sim-plan-{scale}.jsonl"
    sim = start_sim(port, log, a.median, a.sigma)
    try:
        out = subprocess.run([sys.executable, "-m", "mathforge.cli", "plan", str(REPO / "recipes" / "synth_paper.yaml"),
                              "--json", "--out", str(work / f"plan-{scale}"), *overrides(scale, port, a.concurrency)],
                             capture_output=True, text=True)
    finally:
        sim.terminate()
        sim.wait()
    if out.returncode:
        raise SystemExit(f"plan failed:\n{out.stderr[-3000:]}")
    fc = json.loads(out.stdout.strip().splitlines()[-1])
    used = Counter()
    for stats in (run_dir / "stats").glob("engine-*.json"):
        used.update({k: v for k, v in json.loads(stats.read_text()).items() if k in ("calls", "prompt_tokens", "completion_tokens")})
    for key, actual in (("requests", used["calls"]), ("prompt_tokens", used["prompt_tokens"]),
                        ("completion_tokens", used["completion_tokens"])):
        print(f"plan 1/{scale} {key}: forecast {fc[key]:,} (± {fc['relative_error']:.0%}) vs used {actual:,}: "
              f"{fc[key] / actual - 1:+.1%}")


def _cache_rows(run_dir: Path) -> int:
    if not (run_dir / "cache.sqlite").exists():
        return 0
    db = sqlite3.connect(run_dir / "cache.sqlite", timeout=60)
    try:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    finally:
        db.close()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="500,50", help="divisors of the paper's targets, smallest data first")
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--median", type=float, default=0.5)
    p.add_argument("--sigma", type=float, default=0.6)
    p.add_argument("--kills", type=int, default=0, help="kill/resume check at the first scale with this many kills")
    p.add_argument("--plan", action="store_true", help="also forecast the first scale with `mathforge plan`")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in --work (e.g. to add --plan)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=8791)
    p.add_argument("--work", type=Path, default=Path("/tmp/synth-scale"))
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    scales = [int(s) for s in a.scales.split(",")]
    results = {s: json.loads((a.work / f"result-{s}.json").read_text()) if a.reuse else one_scale(s, a.work, a, a.port)
               for s in scales}
    for s, res in results.items():
        (a.work / f"result-{s}.json").write_text(json.dumps(res))
    if len(scales) > 1:
        small, big = results[scales[0]], results[scales[-1]]
        print(f"peak RSS 1/{scales[-1]} / 1/{scales[0]}: {big['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
              f"({big['samples']} vs {small['samples']} samples)")
    if a.plan:
        plan_vs_run(scales[0], a.work, a, a.port, a.work / f"run-{scales[0]}")
    if a.kills:
        killed_run(scales[0], a.work, a, a.port, a.work / f"run-{scales[0]}", results[scales[0]]["sent"])


if __name__ == "__main__":
    main()
