"""Tokenising SFT data at scale: `prepare` (batched, on disk, memory-mapped) vs per-record encoding.

On simulated records (`mathforge.simdata`: unique MATH/GSM8K-train texts, ~1.2 KB a row) and a
2k-vocab byte-level BPE trained on the first 20k of them:

1. side by side on the same first `--side` records: the per-record reference (one tokenizer call
   per prompt and per target, samples kept as numpy arrays in a list: what training did before)
   vs `prepare` with packing; the ratio of wall times, and each arm's peak RSS;
2. `prepare` on all `--records` records (packed, max length 2048): time, peak RSS of the process
   and of its workers, and the peak RSS of the whole process tree sampled every 0.2 s;
3. a rerun with the same fingerprint in a fresh process: time until the set is open and its first
   row read.

Every arm runs in a fresh subprocess, so its peak RSS is its own.

    python bench/sft_scale.py                          # 1M records, 100k side by side, 2 workers
    python bench/sft_scale.py --records 200000 --side 20000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import psutil

MAX_LENGTH = 2048
VOCAB = 2048


def arm_reference(data: str, tokenizer_dir: str, n: int) -> dict:
    """Per-record encoding, as training did before `prepare`: every sample in memory as numpy arrays."""
    import numpy as np
    from transformers import AutoTokenizer

    from mathforge.answers import sft_target
    from mathforge.prompt import format_prompt
    from mathforge.train.data import IGNORE, load_records

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    start = time.perf_counter()
    samples, tokens = [], 0
    for record in load_records(data, n):
        target = sft_target(record.solution, record.answer)
        if target is None:
            continue
        prompt_ids = tokenizer(format_prompt(record.problem), add_special_tokens=True)["input_ids"]
        response_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt_ids) + len(response_ids) > MAX_LENGTH:
            continue
        ids = np.asarray(prompt_ids + response_ids, np.int32)
        labels = np.asarray([IGNORE] * len(prompt_ids) + response_ids, np.int32)
        samples.append((record.id, ids, labels))
        tokens += len(ids)
    return {"seconds": time.perf_counter() - start, "samples": len(samples), "tokens": tokens}


def arm_prepare(data: str, tokenizer_dir: str, n: int, root: str, workers: int) -> dict:
    """`prepare` with packing, then the set opened and its first row read, as training starts."""
    from transformers import AutoTokenizer

    from mathforge.train.prepare import SFTRows, prepare

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    start = time.perf_counter()
    prepared = prepare(data, tokenizer, style="alpaca", max_length=MAX_LENGTH, packing=True, root=root,
                       max_samples=n, num_proc=workers)
    rows = SFTRows(prepared.path)
    first = rows[0]
    assert len(first["input_ids"]) <= MAX_LENGTH
    return {"seconds": time.perf_counter() - start, "samples": prepared.samples, "tokens": prepared.tokens,
            "rows": prepared.rows, "cached": prepared.cached, "dropped": prepared.dropped}


def run_arm(args: list[str]) -> dict:
    """Run one arm in a fresh process; its result plus peak RSS (own, largest worker, sampled tree)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--arm", *args], stdout=subprocess.PIPE, text=True)
    tree_peak = 0
    while proc.poll() is None:
        tree_peak = max(tree_peak, _tree_rss(proc.pid))
        time.sleep(0.2)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"arm {args[0]} failed (exit {proc.returncode})")
    result = {**json.loads(out.strip().splitlines()[-1]), "wall": time.perf_counter() - start,
              "tree_peak_gb": tree_peak / 2**30}
    print(f"arm {' '.join(args[:1] + args[3:4])}: {json.dumps(result)}", flush=True)  # kept if a later arm fails
    return result


def _tree_rss(pid: int) -> int:
    try:
        parent = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
    except psutil.Error:
        return 0


def arm_main(argv: list[str]) -> None:
    kind, data, tokenizer_dir, n = argv[0], argv[1], argv[2], int(argv[3])
    if kind == "reference":
        result = arm_reference(data, tokenizer_dir, n)
    else:
        result = arm_prepare(data, tokenizer_dir, n, argv[4], int(argv[5]))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(json.dumps({**result, "peak_gb": own, "worker_peak_gb": workers}))


def build_tokenizer(data: Path, out: Path) -> None:
    from mathforge.answers import sft_target
    from mathforge.prompt import format_prompt
    from mathforge.train.data import load_records
    from mathforge.train.students import train_tokenizer

    texts = (format_prompt(r.problem) + (sft_target(r.solution, r.answer) or "") for r in islice(load_records(str(data)), 20_000))
    train_tokenizer(texts, VOCAB).save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--side", type=int, default=100_000, help="records encoded by both arms, side by side")
    parser.add_argument("--workers", type=int, default=2, help="prepare's num_proc")
    parser.add_argument("--data", help="an existing simulated-records file (else one is generated)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sft-scale-") as tmp:
        root = Path(tmp)
        data = Path(args.data) if args.data else root / "sim.jsonl"
        if not args.data:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mathforge.simdata", str(args.records), str(data)], check=True,
                           stdout=subprocess.DEVNULL)
            print(f"simulated {args.records} records in {time.perf_counter() - t:.0f} s "
                  f"({data.stat().st_size / 2**30:.2f} GB)", flush=True)
        build_tokenizer(data, root / "tokenizer")
        common = [str(data), str(root / "tokenizer")]
        ref = run_arm(["reference", *common, str(args.side)])
        side = run_arm(["prepare", *common, str(args.side), str(root / "side"), str(args.workers)])
        full = run_arm(["prepare", *common, str(args.records), str(root / "full"), str(args.workers)])
        rerun = run_arm(["prepare", *common, str(args.records), str(root / "full"), str(args.workers)])
    report(args, ref, side, full, rerun)


def report(args, ref: dict, side: dict, full: dict, rerun: dict) -> None:
    print(f"\nside by side, first {args.side} records ({side['samples']} samples, {side['tokens']} tokens):")
    print(f"{'arm':<22}{'seconds':>9}{'records/s':>11}{'peak RSS GB':>13}")
    for name, r in (("per-record reference", ref), (f"prepare ({args.workers} workers)", side)):
        print(f"{name:<22}{r['seconds']:>9.1f}{args.side / r['seconds']:>11.0f}{r['peak_gb']:>13.2f}")
    print(f"prepare / per-record speed: {ref['seconds'] / side['seconds']:.1f}x "
          f"(same samples: {ref['samples'] == side['samples']}, same tokens: {ref['tokens'] == side['tokens']})")
    print(f"\nall {args.records} records -> {full['samples']} samples, {full['tokens']} tokens, {full['rows']} packed "
          f"rows of <= {MAX_LENGTH}; dropped {full['dropped']}")
    print(f"prepare: {full['seconds']:.0f} s ({args.records / full['seconds']:.0f} records/s); peak RSS: process "
          f"{full['peak_gb']:.2f} GB, largest worker {full['worker_peak_gb']:.2f} GB, whole tree (sampled) "
          f"{full['tree_peak_gb']:.2f} GB")
    print(f"rerun, same fingerprint (cached={rerun['cached']}): ready in {rerun['seconds']:.2f} s "
          f"({rerun['wall']:.1f} s with interpreter start and imports), peak RSS {rerun['peak_gb']:.2f} GB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--arm":
        arm_main(sys.argv[2:])
    else:
        main()
