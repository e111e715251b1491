"""Benchmark: the n-gram decontamination scans (one compiled kernel, `matchers.TokenIndex`) vs the
pinned pure-Python reference (`decontam.ReferenceIndex`), and the embedding matcher's rate.

Rows (~1 KB each) are built from the shared MATH and GSM8K train sets: a problem plus pieces of
three solutions, so some rows legitimately share 30-word spans with MATH test. The evaluation sets
are GSM8K test + MATH test. Each scan runs on the same rows as the reference, in turns of 8
batches so that load changes on a shared machine hit all sides alike, timed in CPU seconds of this
process (one thread each): `paper` (the 30-word filter as it was, `ngram` with `whole=False`,
which must agree with the reference row for row), `ngram`, `math-ngram` and `masked-ngram` (the
scans behind `mathforge decontam --matchers`). Peak memory (max RSS) is printed at the end.

Then, with --embed-rows, the embedding matcher's rate on that many problems, extrapolated to 100k
rows (the model load and the test sets' embeddings are timed apart: paid once per run).

    python bench/decontam.py                                  # 32k rows
    python bench/decontam.py --matcher-rows 0 --embed-rows 5000   # the embedding matcher only
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from mathforge.quality.decontam import ReferenceIndex
from mathforge.record import Record
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_rows(pool: list[Record], count: int, size: int = 1024) -> Iterator[tuple[str, str]]:
    """Deterministic ~`size`-character (problem, solution) rows mixing several real items."""
    p = len(pool)
    for i in range(count):
        a, b, c = pool[i % p], pool[(i * 7919 + 13) % p], pool[(i * 104729 + 7) % p]
        budget = max(size - len(a.problem), 0)
        solution = "\n".join(x.solution or "" for x in (a, b, c))[:budget]
        yield a.problem, solution.rsplit(" ", 1)[0]


def batches(rows: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def as_records(rows: Iterator[tuple[str, str]]) -> Iterator[Record]:
    return (Record(id=str(i), source="bench", problem=p, solution=s) for i, (p, s) in enumerate(rows))


def matchers_side_by_side(sets: dict, pool: list[Record], count: int, batch_size: int) -> None:
    """Each n-gram scan (one thread) against the pure-Python reference on the same rows, in turns
    of 8 batches. Timed in CPU seconds of this process (all of it is one thread): on a shared
    2-core box wall time counted other users' jobs, and the ratios moved 2x between runs."""
    from mathforge.quality.matchers import Decontaminator, NgramMatcher

    reference = ReferenceIndex(sets, n=30)
    gc.freeze()  # the reference's half a million word tuples, walked by every full collection
    scans = {"paper": NgramMatcher(sets, n=30, whole=False).match}
    scans |= {name: Decontaminator(sets, [name]).matches for name in ("ngram", "math-ngram", "masked-ngram")}
    spent, removed = dict.fromkeys(("reference", *scans), 0.0), dict.fromkeys(("reference", *scans), 0)
    disagree = 0
    for turn in batches(make_rows(pool, count), 8 * batch_size):
        records = list(as_records(iter(turn)))
        t = time.process_time()
        slow = [reference.first_hit(row) for row in turn]
        spent["reference"] += time.process_time() - t
        removed["reference"] += sum(x is not None for x in slow)
        for name, scan in scans.items():
            t = time.process_time()
            found = [m for start in range(0, len(records), batch_size) for m in scan(records[start : start + batch_size])]
            spent[name] += time.process_time() - t
            removed[name] += sum(m is not None for m in found)
            if name == "paper":
                disagree += sum((m.set, m.test_id) != x if m else x is not None for m, x in zip(found, slow, strict=True))
    print(f"\nscans of the same {count:,} rows, timed in turns (1 thread each, rows per CPU second):")
    for name in spent:
        ratio = "" if name == "reference" else f", ratio {spent['reference'] / spent[name]:.1f}x"
        print(f"  {name:<13} {count / spent[name]:>9,.0f} rows/s{ratio}; {removed[name]:,} rows removed")
    print(f"  paper vs reference, row for row (first test item hit or none): {count - disagree:,}/{count:,} agree")
    print(f"  peak RSS {rss_mb():.0f} MiB")
    if disagree:
        raise SystemExit("the kernel and the reference disagree")


def embedding_rate(sets: dict, pool: list[Record], count: int) -> None:
    """The embedding matcher's rows/s on `count` problems (cut at 512 characters), and 100k at that rate."""
    from mathforge.quality.matchers import EmbeddingMatcher

    t = time.perf_counter()
    matcher = EmbeddingMatcher(sets)
    setup = time.perf_counter() - t
    records = [pool[(i * 7919) % len(pool)] for i in range(count)]
    t, cpu = time.perf_counter(), time.process_time()
    for start in range(0, count, 1024):
        matcher.match(records[start : start + 1024])
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    cores = len(os.sched_getaffinity(0))
    print(f"\nembedding matcher: model load + {len(matcher.owners):,} test problems {setup:.0f} s; "
          f"{count:,} problems in {wall:.1f} s wall, {cpu:.1f} CPU s -> 100k rows in {100_000 / count * wall / 60:.1f} "
          f"min at this wall rate, {100_000 / count * cpu / cores / 60:.1f} min if the {cores} cores were ours; "
          f"peak RSS {rss_mb():.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--matcher-rows", type=int, default=32_768, help="rows for the side by side (0: skip)")
    ap.add_argument("--embed-rows", type=int, default=0, help="problems the embedding matcher embeds (0: skip)")
    args = ap.parse_args()

    sets = {"gsm8k_test": list(load(f"gsm8k:{args.data}/gsm8k/test.jsonl?allow_test=1")),
            "math_test": list(load(f"math:{args.data}/math/math_test.jsonl?allow_test=1"))}
    pool = list(load(f"math:{args.data}/math/math_train.jsonl")) + list(load(f"gsm8k:{args.data}/gsm8k/train.jsonl"))
    mean = sum(len(p) + len(s) for p, s in make_rows(pool, 2000)) / 2000
    print(f"rows of ~{mean:.0f} characters; evaluation sets: GSM8K test + MATH test")
    if args.matcher_rows:
        matchers_side_by_side(sets, pool, args.matcher_rows, args.batch_size)
    if args.embed_rows:
        embedding_rate(sets, pool, args.embed_rows)


if __name__ == "__main__":
    main()
