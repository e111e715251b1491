"""Benchmark: n-gram decontamination, fast (compiled hashed n-grams) vs. a pure-Python reference.

Rows (~1 KB each) are built from the shared MATH and GSM8K train sets: a problem plus pieces of
three solutions, so some rows legitimately share 30-word spans with MATH test. The evaluation sets
are GSM8K test + MATH test. Both implementations scan the same rows; they must agree row for row
(the first evaluation item hit, or none). The reference is slow, so by default it runs on a
subsample (--ref-rows), and the fast engine's throughput is measured on that same subsample, on
one thread and on --workers threads (default: all cores), and on all rows. Peak memory (max RSS) is printed after the index build and after the full scan:
it is set by the index and one batch, not by the number of rows.

Then each n-gram matcher of `mathforge.quality.matchers` (ngram, math-ngram, masked-ngram: the
scans behind `mathforge decontam --matchers`) against the same reference on the same rows, timed
in turns (--matcher-rows), and the embedding matcher's rate on --embed-rows problems, extrapolated
to 100k rows (the model load and the test sets' embeddings are timed apart: paid once per run).

    python bench/decontam.py                      # 1M rows, reference on 32k of them
    python bench/decontam.py --rows 100000 --ref-rows 100000
    python bench/decontam.py --rows 0 --matcher-rows 20000 --embed-rows 2000   # the matchers only
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mathforge.quality.decontam import NgramIndex, ReferenceIndex, Scanner, scan_records
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


def fast_scan(scanner: Scanner, pool: list[Record], count: int, batch_size: int,
              keep: int) -> tuple[list, int, float]:
    """First hits of the first `keep` rows, the number of contaminated rows, and the time spent
    scanning (row building excluded)."""
    firsts, contaminated, spent = [], 0, 0.0
    for batch in batches(make_rows(pool, count), batch_size):
        t = time.perf_counter()
        hits = scanner.scan(batch, max_hits=1)
        spent += time.perf_counter() - t
        contaminated += sum(bool(h) for h in hits)
        if len(firsts) < keep:
            firsts.extend((h[0].set, h[0].test_id) if h else None for h in hits)
    return firsts[:keep], contaminated, spent


def as_records(rows: Iterator[tuple[str, str]]) -> Iterator[Record]:
    return (Record(id=str(i), source="bench", problem=p, solution=s) for i, (p, s) in enumerate(rows))


def side_by_side(scanner: Scanner, reference: ReferenceIndex, pool: list[Record], count: int,
                 batch_size: int, workers: int) -> tuple[list, list, list, float, float, float]:
    """First hits and scan times of the reference and of the fast scanner on 1 and on `workers`
    threads, timed in turns of 8 x `workers` batches, so a change in machine load (other jobs on
    a shared box) hits all three alike. Turns much shorter than that time the fast side with
    caches just emptied by the reference's half a million tuples: with 2 batches per thread, 2
    threads measured 1.1-1.2x the rate of 1 thread, against 1.6x alone or in these turns."""
    fast, par, ref, fast_s, par_s, ref_s = [], [], [], 0.0, 0.0, 0.0
    first = lambda h: (h[0].set, h[0].test_id) if h else None  # noqa: E731
    with ThreadPoolExecutor(workers) as threads:
        for turn in batches(make_rows(pool, count), 8 * workers * batch_size):
            chunks = list(batches(iter(turn), batch_size))
            t = time.perf_counter()
            hits = [h for batch in chunks for h in scanner.scan(batch, max_hits=1)]
            fast_s += time.perf_counter() - t
            fast.extend(map(first, hits))
            t = time.perf_counter()
            hits = [h for out in threads.map(lambda b: scanner.scan(b, max_hits=1), chunks) for h in out]
            par_s += time.perf_counter() - t
            par.extend(map(first, hits))
            t = time.perf_counter()
            ref.extend(reference.first_hit(row) for row in turn)
            ref_s += time.perf_counter() - t
    return fast, par, ref, fast_s, par_s, ref_s


def threaded_scan(index: NgramIndex, records: Iterable[Record], batch_size: int, workers: int) -> float:
    """Wall time of `scan_records` over `records` on `workers` threads (row building included)."""
    t = time.perf_counter()
    for _ in scan_records(records, index, batch_size=batch_size, workers=workers, max_hits=1):
        pass
    return time.perf_counter() - t


def matchers_side_by_side(sets: dict, pool: list[Record], count: int, batch_size: int) -> None:
    """Each n-gram matcher (one thread) against the pure-Python reference on the same rows, in
    turns of 8 batches so that load changes on a shared machine hit both sides alike. Timed in
    CPU seconds of this process (all of it is one thread): on a shared 2-core box wall time
    counted other users' jobs, and the ratios moved 2x between runs."""
    from mathforge.quality.matchers import Decontaminator

    reference = ReferenceIndex(sets, n=30)
    gc.freeze()
    names = ("ngram", "math-ngram", "masked-ngram")
    matchers = {name: Decontaminator(sets, [name]) for name in names}
    spent, removed = dict.fromkeys(("reference", *names), 0.0), dict.fromkeys(("reference", *names), 0)
    for turn in batches(make_rows(pool, count), 8 * batch_size):
        records = list(as_records(iter(turn)))
        t = time.process_time()
        removed["reference"] += sum(reference.first_hit(row) is not None for row in turn)
        spent["reference"] += time.process_time() - t
        for name, dc in matchers.items():
            t = time.process_time()
            for start in range(0, len(records), batch_size):
                removed[name] += sum(m is not None for m in dc.matches(records[start : start + batch_size]))
            spent[name] += time.process_time() - t
    print(f"\nmatchers on the same {count:,} rows, timed in turns (1 thread each, rows per CPU second):")
    for name in spent:
        ratio = "" if name == "reference" else f", ratio {spent['reference'] / spent[name]:.1f}x"
        print(f"  {name:<13} {count / spent[name]:>9,.0f} rows/s{ratio}; {removed[name]:,} rows removed")
    print(f"  peak RSS {rss_mb():.0f} MiB")


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
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--ref-rows", type=int, default=32_768, help="rows the pure-Python reference scans")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="threads of the parallel scan")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--matcher-rows", type=int, default=32_768, help="rows for the matchers' side by side (0: skip)")
    ap.add_argument("--embed-rows", type=int, default=0, help="problems the embedding matcher embeds (0: skip)")
    args = ap.parse_args()

    sets = {"gsm8k_test": list(load(f"gsm8k:{args.data}/gsm8k/test.jsonl?allow_test=1")),
            "math_test": list(load(f"math:{args.data}/math/math_test.jsonl?allow_test=1"))}
    pool = list(load(f"math:{args.data}/math/math_train.jsonl")) + list(load(f"gsm8k:{args.data}/gsm8k/train.jsonl"))
    mean = sum(len(p) + len(s) for p, s in make_rows(pool, 2000)) / 2000
    print(f"rows: {args.rows:,} of ~{mean:.0f} characters; evaluation sets: GSM8K test + MATH test; n = {args.n}")
    if args.matcher_rows:
        matchers_side_by_side(sets, pool, args.matcher_rows, args.batch_size)
    if args.embed_rows:
        embedding_rate(sets, pool, args.embed_rows)
    if not args.rows:
        return

    t = time.perf_counter()
    index = NgramIndex(sets, n=args.n)
    print(f"fast index: {time.perf_counter() - t:.1f} s, {len(index.hashes):,} n-grams, "
          f"{index.nbytes / 2**20:.1f} MiB arrays; peak RSS {rss_mb():.0f} MiB")
    scanner = Scanner(index)
    ref_rows = min(args.ref_rows, args.rows)
    firsts, contaminated, full_s = fast_scan(scanner, pool, args.rows, args.batch_size, ref_rows)
    print(f"all {args.rows:,} rows, fast (1 thread): {args.rows / full_s:,.0f} rows/s, "
          f"{full_s:.1f} s scanning, {contaminated:,} contaminated; peak RSS {rss_mb():.0f} MiB")

    t = time.perf_counter()
    reference = ReferenceIndex(sets, n=args.n)
    print(f"reference index: {time.perf_counter() - t:.1f} s, {len(reference.grams):,} word tuples")
    # The reference's half a million word tuples would otherwise be walked by every full garbage
    # collection, which either side's allocations trigger: frozen, they slow neither side's scan.
    gc.freeze()
    fast_sub, par_sub, ref_sub, fast_sub_s, par_s, ref_s = side_by_side(
        scanner, reference, pool, ref_rows, args.batch_size, args.workers)
    assert firsts == fast_sub  # the same rows give the same answers in both runs
    agree = min(sum(a == b for a, b in zip(x, ref_sub, strict=True)) for x in (fast_sub, par_sub))
    print(f"\nsame {ref_rows:,} rows, timed in turns (row building excluded from all):")
    print(f"  reference (pure Python, 1 thread): {ref_rows / ref_s:,.0f} rows/s")
    print(f"  fast (1 thread):                   {ref_rows / fast_sub_s:,.0f} rows/s, ratio {ref_s / fast_sub_s:.1f}x")
    print(f"  fast ({args.workers} threads):                  {ref_rows / par_s:,.0f} rows/s, "
          f"ratio {ref_s / par_s:.1f}x")
    print(f"  agreement row for row (both):      {agree:,}/{ref_rows:,} "
          f"({sum(x is not None for x in ref_sub):,} contaminated rows)")
    if ref_rows < args.rows:
        print(f"  (the reference ran on a {ref_rows:,}-row subsample: at its rate all {args.rows:,} rows would "
              f"take ~{args.rows / (ref_rows / ref_s):,.0f} s)")
    wall = threaded_scan(index, as_records(make_rows(pool, args.rows)), args.batch_size, args.workers)
    print(f"all {args.rows:,} rows through scan_records ({args.workers} threads, row building included): "
          f"{args.rows / wall:,.0f} rows/s; peak RSS {rss_mb():.0f} MiB (the reference's tuples included)")
    if agree != ref_rows:
        raise SystemExit("fast and reference implementations disagree")


if __name__ == "__main__":
    main()
