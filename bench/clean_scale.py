"""Benchmark: the whole cleaning chain at scale, ours vs the reference chain, side by side.

The chain: decontam -> exact dedup -> near dedup -> format -> length -> answer check -> select
(random, budget N/2) -> export with the card's token statistics, on simulated synthetic records
(`mathforge.simdata`: 5% planted near-duplicates, 1% exact ones).

- ours: `mathforge.quality.clean.clean` (sharded; 2 worker processes; dedup from keys and band
  hashes with signatures on disk; batched tokenizer calls) then the streamed `export`;
- reference (today's approach before it): one process, one stream, `datasketch.MinHashLSH` in
  memory (`NearDedup`), a tokenizer call per row for the length check and for the card, the kept
  rows in a list for the answer check and selection. Its decontamination is the same step as ours
  (the recipe's default matchers, batched), so the verdicts compare the chains, not two
  decontamination policies.

Each chain runs in its own process; the parent samples the RSS of the chain's whole process tree
(workers included) every 0.2 s. Printed: rows/s of each and their ratio, peak RSS, the share of
input rows with the same verdict before selection (kept, or the step that dropped it), and the
verdicts on the planted duplicates. The answer check uses the strict grader in both chains (the
symbolic one would measure math-verify, 2.5 ms a pair, in both).

    python bench/clean_scale.py --rows 100000          # both chains
    python bench/clean_scale.py --rows 1000000 --ours-only
    python bench/clean_scale.py --rows 400000 --resume   # SIGKILL at 3 random moments of work, rerun, compare bytes
    python bench/clean_scale.py --rows 400000 --ray      # executor=ray vs local: bytes, driver USS

`--resume` and `--ray` run the `mathforge clean` command itself (an uninterrupted local run is the
reference for both, made once per work folder).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--ours-only", action="store_true")
    ap.add_argument("--resume", action="store_true", help="kill-and-resume check instead of the speed race")
    ap.add_argument("--ray", action="store_true", help="Ray executor check instead of the speed race")
    ap.add_argument("--seed", type=int, default=0, help="--resume: the random kill moments")
    ap.add_argument("--shard-rows", type=int, default=20_000, help="--resume, --ray: rows per shard")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--chain", choices=("ours", "reference"), help=argparse.SUPPRESS)
    ap.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.chain:
        result = (ours if args.chain == "ours" else reference)(args.input, args.work, args.rows)
        (args.work / "result.json").write_text(json.dumps(result))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="clean_scale."))
    data, seeds = prepare(work, args.rows)
    if args.resume or args.ray:
        CLEAN.append(f"shard_rows={args.shard_rows}")
        whole = command_run(data, work / "whole", [])
        print(f"local, uninterrupted: {whole['seconds']:.1f} s, driver peak USS {whole['uss_mb']:,.0f} MB")
        (resume_check(data, work, args.seed) if args.resume else ray_check(data, work))
        return
    results = {name: run_chain(name, data, work / name, args.rows)
               for name in (("ours",) if args.ours_only else ("ours", "reference"))}
    report(results, data, work)


def prepare(work: Path, rows: int) -> tuple[Path, Path]:
    """The simulated rows and a seeds file (MATH/GSM8K train, whose answers are known answers)."""
    from mathforge.io import write_records
    from mathforge.simdata import simulated_records
    from mathforge.sources import SourceSpec, load

    data, seeds = work / f"sim-{rows}.jsonl", work / "seeds.jsonl"
    if not data.exists():
        write_records(data, simulated_records(rows, data_dir=DATA))
    if not seeds.exists():
        write_records(seeds, (r for kind, rel in (("math", "math/math_train.jsonl"), ("gsm8k", "gsm8k/train.jsonl"))
                              for r in load(SourceSpec(kind, str(DATA / rel)))))
    return data, seeds


def run_chain(name: str, data: Path, work: Path, rows: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    proc = psutil.Popen([sys.executable, __file__, "--chain", name, "--input", str(data), "--work", str(work),
                         "--rows", str(rows)], stderr=subprocess.DEVNULL)
    peak = [0]
    thread = threading.Thread(target=sample_rss, args=(proc, peak), daemon=True)
    thread.start()
    if proc.wait() != 0:
        raise SystemExit(f"{name} chain failed (exit {proc.returncode})")
    thread.join()
    return {**json.loads((work / "result.json").read_text()), "peak_rss_mb": peak[0] / 2**20}


def sample_rss(proc: psutil.Process, peak: list[int]) -> None:
    while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.2)


# ---------------------------------------------------------------- the command: resume and Ray


CLEAN = ["answer_check.grader=strict"]


def command_run(data: Path, out: Path, extra: list[str], kill_at: int | None = None, delay: float = 0.0) -> dict:
    """`mathforge clean` in its own process group (its workers die with it); the driver's USS sampled.
    With `kill_at`, SIGKILL the group `delay` seconds after the run holds `kill_at` shard markers."""
    if (out / "report.json").exists() and kill_at is None and not extra:
        return json.loads((out / "whole.json").read_text())
    cmd = [sys.executable, "-m", "mathforge.cli", "clean", str(data), "--out", str(out), *CLEAN, *extra,
           "--seeds", str(data.parent / "seeds.jsonl")]
    start = time.time()
    proc = psutil.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    peak = [0]
    thread = threading.Thread(target=sample_uss, args=(proc, peak), daemon=True)
    thread.start()
    if kill_at is not None:
        while proc.poll() is None and markers(out) < kill_at:
            time.sleep(0.1)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"killed": True, "seconds": time.time() - start}
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"mathforge clean failed (exit {proc.returncode})")
    result = {"seconds": time.time() - start, "uss_mb": peak[0] / 2**20}
    if not extra:
        (out / "whole.json").write_text(json.dumps(result))
    return result


def markers(out: Path) -> int:
    return sum(1 for _ in (out / "work").rglob("*.done.json")) if (out / "work").exists() else 0


def sample_uss(proc: psutil.Process, peak: list[int]) -> None:
    while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
        with contextlib.suppress(psutil.Error):
            peak[0] = max(peak[0], proc.memory_full_info().uss)
        time.sleep(0.2)


def output_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "data").glob("part-*"))}


def resume_check(data: Path, work: Path, seed: int) -> None:
    """Kill 3 times at a random moment of a run, rerun after each, then finish; compare with the whole.
    A moment is drawn in work done, not in seconds (a timed kill lands after the end on a faster
    machine): a random count of finished shards still ahead, then a random 0.1-1 s into the next."""
    out = work / "killed"
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(seed)
    total = markers(work / "whole")
    redone = 0
    for kill in range(3):
        done = markers(out)
        # the work left is shared among the kills to come; the last tenth of the markers (select's
        # shards, a fraction of a second each) is left alone, where a kill would land after the end
        room = max(1, (total - total // 10 - done) // (3 - kill))
        target, delay = rng.randint(done + 1, done + room), rng.uniform(0.1, 1.0)
        before = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*.done.json")} if out.exists() else {}
        result = command_run(data, out, ["workers=2"], kill_at=target, delay=delay)
        redone += sum(p.stat().st_mtime_ns != t for p, t in before.items() if p.exists())
        print(f"{'SIGKILL' if result.get('killed') else 'finished first'} after {result['seconds']:.0f} s, "
              f"{delay:.1f} s past shard marker {target} of {total}; {len(before)} markers before this run")
    before = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*.done.json")}
    command_run(data, out, ["workers=2"])
    redone += sum(p.stat().st_mtime_ns != t for p, t in before.items() if p.exists())
    same = output_bytes(out) == output_bytes(work / "whole")
    print(f"after 3 kills and a final rerun: output byte-identical to the uninterrupted run: {same}; "
          f"finished shards redone: {redone}")


def ray_check(data: Path, work: Path) -> None:
    out = work / "ray"
    shutil.rmtree(out, ignore_errors=True)
    result = command_run(data, out, ["executor=ray", "workers=2"])
    same = output_bytes(out) == output_bytes(work / "whole")
    print(f"ray executor (local Ray, 2 CPUs, object store 256 MB): {result['seconds']:.1f} s, driver peak USS "
          f"{result['uss_mb']:,.0f} MB; output byte-identical to the local executor: {same}")


# ---------------------------------------------------------------- the two chains


def ours(data: Path, work: Path, rows: int) -> dict:
    from mathforge.io import read_records
    from mathforge.quality.clean import AnswerCheckConfig, CleanConfig, clean
    from mathforge.quality.export import export
    from mathforge.quality.formatcheck import load_tokenizer
    from mathforge.quality.select import SelectConfig

    cfg = CleanConfig(answer_check=AnswerCheckConfig(grader="strict"), select=SelectConfig(budget=rows // 2),
                      workers=2)
    start = time.time()
    result = clean(data, work / "clean", cfg, data_dir=DATA, seeds=data.parent / "seeds.jsonl")
    summary = export(read_records(result["output"]), work / "export", reports=[result],
                     tokenizer=load_tokenizer("smollm2"), tokenizer_name="smollm2")
    seconds = time.time() - start
    dropped = {r.id: r.meta["rejected"]["filter"] for r in read_records(work / "clean" / "rejects" / "scan")}
    dropped |= {r.id: r.meta["rejected"]["filter"] for r in read_records(work / "clean" / "rejects" / "filter")}
    _verdicts(data, dropped, work)
    return {"seconds": seconds, "selected": summary["rows"], "tokens": summary["tokens"]["total"]}


class PerRow:
    """A filter without its batch form: the reference calls the tokenizer once per row."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def decide(self, record):
        return self.inner.decide(record)


class Sink:
    def __init__(self):
        self.dropped: dict[str, str] = {}

    def write(self, record):
        self.dropped[record.id] = record.meta["rejected"]["filter"]


def reference(data: Path, work: Path, rows: int) -> dict:
    from mathforge.filters import FilterStats, apply_filter
    from mathforge.io import read_records
    from mathforge.quality.clean import CleanConfig, Decontaminate
    from mathforge.quality.dedup import ExactDedup, NearDedup
    from mathforge.quality.formatcheck import AnswerLineFilter, LengthFilter, load_tokenizer
    from mathforge.quality.select import SelectConfig, select
    from mathforge.quality.verify import check_answers

    start = time.time()
    sink = Sink()
    cfg = CleanConfig()
    step = Decontaminate(str(DATA), cfg.against, cfg.decontam_n, cfg.matchers)
    stream, _ = step.run(read_records(data), FilterStats(step.name), sink)
    for flt in (ExactDedup(), NearDedup(), AnswerLineFilter(), PerRow(LengthFilter("smollm2", 2048, "alpaca"))):
        stream = apply_filter(stream, flt, FilterStats(flt.name), sink)
    kept = list(stream)
    seeds = {r.id: r.answer for r in read_records(data.parent / "seeds.jsonl") if r.answer}
    kept = check_answers(kept, grader="strict", seed_answers=seeds)
    chosen = select(kept, SelectConfig(budget=rows // 2))
    tokens = reference_export(chosen.records, work / "export", load_tokenizer("smollm2"))
    seconds = time.time() - start
    _verdicts(data, sink.dropped, work)
    return {"seconds": seconds, "selected": len(chosen.records), "tokens": tokens}


def reference_export(records: list, out: Path, tokenizer) -> int:
    """Today's export before it was streamed: JSONL + Parquet, a tokenizer call per row for the card."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mathforge.io import AtomicWriter
    from mathforge.quality.export import SCHEMA, flat_row

    rows, tokens = [], 0
    with AtomicWriter(out / "train.jsonl") as w:
        for record in records:
            row = flat_row(record)
            tokens += len(tokenizer(row["text_prompt"] + row["text_response"], add_special_tokens=False)["input_ids"])
            w.write(row)
            rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "train-00000.parquet")
    return tokens


def _verdicts(data: Path, dropped: dict[str, str], work: Path) -> None:
    """Per input row: the step that dropped it (decontam, dedup_exact, ...) or "kept", with its planted kind."""
    from mathforge.io import read_records

    with open(work / "verdicts.tsv", "w", encoding="utf-8") as f:
        for r in read_records(data):
            step = dropped.get(r.id, "kept")
            f.write(f"{r.id}\t{'decontam' if step.startswith('decontam') else step}\t{r.meta['sim']['kind']}\n")


# ---------------------------------------------------------------- the report


def report(results: dict, data: Path, work: Path) -> None:
    with open(data, encoding="utf-8") as f:
        rows = sum(1 for _ in f)
    for name, r in results.items():
        print(f"{name:9s}: {rows} rows in {r['seconds']:.1f} s = {rows / r['seconds']:,.0f} rows/s, "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB (process tree), selected {r['selected']}, tokens {r['tokens']}")
    if "reference" not in results:
        return
    print(f"speed-up: {results['reference']['seconds'] / results['ours']['seconds']:.2f}x the reference's rows/s")
    ours, ref = (_read_verdicts(work / n / "verdicts.tsv") for n in ("ours", "reference"))
    same = sum(ours[i][0] == ref[i][0] for i in ref)
    print(f"same verdict before selection: {same}/{len(ref)} rows = {100 * same / len(ref):.3f}%")
    for kind in ("near", "exact"):
        planted = [i for i, (_, k) in ref.items() if k == kind]
        agree = sum(ours[i][0] == ref[i][0] for i in planted)
        print(f"planted {kind} duplicates: {agree}/{len(planted)} identical verdicts; "
              f"ours {dict(Counter(ours[i][0] for i in planted))}, reference {dict(Counter(ref[i][0] for i in planted))}")


def _read_verdicts(path: Path) -> dict[str, tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        return {i: (v, k) for i, v, k in (line.rstrip("\n").split("\t") for line in f)}


if __name__ == "__main__":
    main()
